/**
 * The indexer RoPE regression case, end to end (fixtures/golden/README.md: the rope-bug folder has no
 * weights of its own; its trace holds `stepS.interleaved_bug.layerL.indexer.topk`).
 *
 * `e2e.rope_bug.interleaved_reproduces_bug` per record: the whole model, run on the base folder's weights
 * through its steps up to the last recorded one with the pre-fix interleaved indexer RoPE, must make the
 * bug's selections in every layer (later layers see inputs changed by the bug's own earlier selections,
 * so only a full forward can check them). The indexer side (checks/indexer.ts) checks layer 0 by teacher
 * forcing and the shipped layout against the base folder.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createModelCache, disposeModelCache, modelForward, type ModelCache } from '../../model.ts';
import type { GoldenCase } from '../core/case.ts';
import { FixtureError, parseSteps, readTokens, type GoldenStep } from '../core/fixture.ts';
import { ropeBugRecord } from '../core/trace_names.ts';
import { failure, setsRow, type CheckResult } from '../core/rows.ts';

/** Check family: the e2e rows of the RoPE-bug case (a case without `steps`). */
export const ropeBugCheck = {
  name: 'rope_bug',
  appliesTo: (c: GoldenCase): boolean => c.steps.length === 0,
  run: ropeBugEndToEnd,
};


/**
 * The RoPE-bug case: bug records `stepS.interleaved_bug.layerL.indexer.topk` at any steps S of the base
 * folder's run (its manifest `steps`). The whole model runs those steps, up to the last recorded one,
 * with the interleaved indexer RoPE; each record must hold the step's n rows and equal the selections.
 *
 * @example
 * ```ts
 * // on a case opened once (core/case.ts `openCase`), as checks/golden.ts does:
 * // ropeBugEndToEnd(openCase(readGolden({ name: 'bug', dir: 'fixtures/golden/public-fp32-indexer-rope-bug' })));
 * ```
 */
export function ropeBugEndToEnd(fx: GoldenCase): CheckResult[] {
  const check = 'e2e.rope_bug.interleaved_reproduces_bug';
  const { trace, config, weights } = fx;
  const rows: CheckResult[] = [];
  let cache: ModelCache | null = null;
  try {
    const records = trace.names().flatMap((nm) => {
      const r = ropeBugRecord(nm);
      return r ? [{ name: nm, ...r }] : [];
    });
    if (records.length === 0) return [];
    // the base run's steps: a bug record at step S covers the positions of the base folder's step S
    const baseManifest = join(fx.weightsDir, 'manifest.json');
    if (fx.weightsDir === fx.dir || !existsSync(baseManifest)) {
      return [failure(fx.name, check, 'manifest.json `weights` must name a base golden folder (manifest.json with `steps`, config.json, weights)')];
    }
    let steps: GoldenStep[];
    const lastStep = Math.max(...records.map((r) => r.step));
    try {
      steps = parseSteps((JSON.parse(readFileSync(baseManifest, 'utf8')) as Record<string, unknown>).steps);
      const upTo = steps.findIndex((st) => st.step === lastStep);
      if (upTo < 0) throw new FixtureError(`the base folder's manifest has no step ${lastStep} (bug record ${records.find((r) => r.step === lastStep)!.name})`);
      steps = steps.slice(0, upTo + 1);
    } catch (e) {
      if (!(e instanceof FixtureError) && !(e instanceof SyntaxError)) throw e;
      return [failure(fx.name, check, `base folder ${fx.weightsDir}: ${(e as Error).message}`)];
    }
    // every record at a step the run reaches; its rows must be the step's n query rows
    const byStep = new Map<number, typeof records>();
    for (const r of records) {
      const st = steps.find((x) => x.step === r.step);
      const shape = trace.info(r.name).shape;
      if (!st) rows.push(failure(fx.name, check, `bug record ${r.name}: the base run has no step ${r.step} before step ${lastStep}`, r.step, r.layer));
      else if (shape.length !== 2 || shape[0] !== st.length) {
        rows.push(failure(fx.name, check, `bug record ${r.name} must have shape [${st.length}, k] (step ${st.step} has ${st.length} query rows) but has [${shape.join(', ')}]`, r.step, r.layer));
      } else if (r.layer >= config.num_hidden_layers) {
        rows.push(failure(fx.name, check, `bug record ${r.name}: the model has ${config.num_hidden_layers} layers`, r.step, r.layer));
      } else byStep.set(r.step, [...(byStep.get(r.step) ?? []), r]);
    }
    // the bug run's tokens (the same as the base run's, which the indexer side checks): they must cover its steps
    let tokens: number[];
    try {
      tokens = readTokens(trace, steps, config);
    } catch (e) {
      if (!(e instanceof FixtureError)) throw e;
      return [...rows, failure(fx.name, check, e.message)];
    }
    if (byStep.size === 0) return rows;
    cache = createModelCache(config);
    for (const st of steps) {
      const due = byStep.get(st.step) ?? [];
      const { logits } = modelForward(tokens.slice(st.start_pos, st.start_pos + st.length), weights, cache, st.start_pos, {
        config, maxSeqLen: fx.maxSeqLen, indexerRopeInterleaved: true,
        probe: {
          layer: (l, t) => {
            const r = due.find((x) => x.layer === l);
            if (!r) return;
            const k = trace.info(r.name).shape[1]!;
            rows.push(setsRow(fx.name, check, st.step, l, t.selected.dataSync(), Array.from(trace.read(r.name), Number), k, t.selected.shape[1]));
          },
        },
      });
      logits.dispose();
    }
  } catch (e) {
    rows.push(failure(fx.name, check, `end-to-end run threw: ${(e as Error).message}`));
  } finally {
    if (cache) disposeModelCache(cache);
  }
  return rows;
}
