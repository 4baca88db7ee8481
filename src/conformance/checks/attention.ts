/**
 * Teacher-forced golden rows of the MLA (fixtures/golden/README.md), per step and layer:
 *
 * - `attn.qr` [1, n, Dq]: `q_norm(wq_a(x))`;
 * - `attn.out` [1, n, D]: the MLA output after wo (prefill: MHA mode, decode: absorbed MQA mode, as the
 *   official code; sparse gather attention by default),
 *
 * every step of a layer running `mlaForward` on the RECORDED `attn.in` of that step, in order, so the
 * caches hold what the earlier steps computed from their recorded inputs. Tolerance
 * `max|a−b| ≤ 1e-4 · max(1, max|b|)` per tensor.
 *
 * A miss is re-examined by the FP8 flip search (../fp8/midpoints.ts `explainByFlips`): the quantizer
 * inputs of the call on an e4m3 midpoint (for `attn.out` of every row up to the last failing one: the
 * KV latent, wq_a / wq_b / wkv_b / wo inputs, the indexer's q and k) are rounded the other way, subsets
 * smallest first; the row passes only if that reproduces the whole recorded tensor, and names the flips.
 * The layer's cache keeps the flipped rounding for the later steps (as the official run's did).
 *
 * A layer the config has but the trace does not record at a step (no `attn.in`) is one failed `trace`
 * row per step and layer; after a step that could not run, the later steps of that layer are `skipped`
 * rows: the cache is no longer teacher-forced.
 */
import { tf } from '../../backend.ts';
import type { AttentionWeights } from '../../checkpoint.ts';
import type { RoundingProbe } from '../../fp8.ts';
import { createMlaCache, disposeMlaCache, mlaForward, mlaQuery, truncateMlaCache, type MlaCache, type MlaOptions } from '../../mla.ts';
import type { GoldenCase } from '../core/case.ts';
import { GOLDEN_RTOL, layerTraced, skippedRow, type GoldenStep } from '../core/fixture.ts';
import { traceKey, type TracedTensor } from '../core/trace_names.ts';
import { failure, numericRow, type CheckResult } from '../core/rows.ts';
import { explainByFlips } from '../fp8/midpoints.ts';

/** Check family: the teacher-forced MLA rows of a traced case (`attention`: the `mlaForward` attention checked). */
export function attentionCheck(attention?: MlaOptions['attention']) {
  return {
    name: 'attention',
    appliesTo: (c: GoldenCase): boolean => c.steps.length > 0,
    run: (c: GoldenCase): CheckResult[] => checkAttention(c, attention),
  };
}

/**
 * The teacher-forced `attn.qr` / `attn.out` rows of one case (see the module doc). Never throws.
 *
 * @example
 * ```ts
 * // on a case opened once (core/case.ts `openCase`), as checks/golden.ts does:
 * // checkAttention(openCase(readGolden({ name: 'public-fp32', dir: 'fixtures/golden/public-fp32' })));
 * ```
 */
export function checkAttention(c: GoldenCase, attention?: MlaOptions['attention']): CheckResult[] {
  const { steps, trace, config } = c;
  const rows: CheckResult[] = [];
  for (let layer = 0; layer < config.num_hidden_layers; layer++) {
    const traced = steps.map((st) => layerTraced(trace, st.step, layer));
    steps.forEach((st, i) => {
      if (!traced[i]) rows.push(failure(c.name, 'trace', `layer ${layer} not traced at step ${st.step}`, st.step, layer));
    });
    if (!traced[0]) {
      // no step of this layer can be teacher-forced: the traced later steps are skipped
      steps.forEach((st, i) => traced[i] && rows.push(skippedRow(c.name, 'attn.out', st.step, layer)));
      continue;
    }
    const cache = createMlaCache();
    try {
      let ok = true;
      for (const [i, st] of steps.entries()) {
        if (!traced[i]) ok = false; // reported above
        else if (!ok) rows.push(skippedRow(c.name, 'attn.out', st.step, layer));
        else {
          const r = checkStep(c, attention, c.weights.layers[layer]!.attn, cache, st, layer);
          rows.push(...r.rows);
          ok = r.ok;
        }
      }
    } catch (e) {
      rows.push(failure(c.name, 'attention', `layer ${layer}: attention checks threw: ${message(e)}`, null, layer));
    } finally {
      disposeMlaCache(cache);
    }
  }
  return rows;
}

function checkStep(
  c: GoldenCase, attention: MlaOptions['attention'], w: AttentionWeights, cache: MlaCache, st: GoldenStep, layer: number,
): { rows: CheckResult[]; ok: boolean } {
  const { config, trace } = c;
  const D = config.hidden_size;
  let x: tf.Tensor2D;
  try {
    const info = trace.info(traceKey(st.step, layer, 'attn.in'));
    if (info.shape.join() !== [1, st.length, D].join()) {
      throw new RangeError(`attn.in has shape [${info.shape.join(', ')}], expected [1, ${st.length}, ${D}]`);
    }
    x = tf.tensor2d(trace.read(traceKey(st.step, layer, 'attn.in')) as Float32Array, [st.length, D]);
  } catch (e) {
    return { rows: [failure(c.name, 'attn.in', message(e), st.step, layer)], ok: false };
  }
  const opts = { config, maxSeqLen: c.maxSeqLen, ...(attention ? { attention } : {}) };
  const read = (probe?: RoundingProbe) => {
    truncateMlaCache(cache, st.start_pos);
    const r = mlaForward(x, w, cache, st.start_pos, { ...opts, ...(probe ? { probe } : {}) });
    const out = { qr: r.qr.dataSync() as Float32Array, out: r.out.dataSync() as Float32Array };
    tf.dispose([r.out, r.qr, r.indexScores, r.selected]);
    return out;
  };
  try {
    const rows: CheckResult[] = [];
    const base = read();
    const qr = readExpected(c, st.step, layer, 'attn.qr', [1, st.length, config.q_lora_rank]);
    if (typeof qr === 'string') rows.push(failure(c.name, 'attn.qr', qr, st.step, layer));
    else {
      const row = numericRow(c.name, 'attn.qr', st.step, layer, base.qr, qr, GOLDEN_RTOL);
      const query = (probe: RoundingProbe) => {
        const q = mlaQuery(x, w, st.start_pos, { ...opts, probe });
        const v = q.qr.dataSync() as Float32Array;
        tf.dispose([q.qr, q.qNope, q.qPe]);
        return v;
      };
      rows.push(explainByFlips(row, query, qr, st.length, st.start_pos, GOLDEN_RTOL));
    }
    const expected = readExpected(c, st.step, layer, 'attn.out', [1, st.length, D]);
    if (typeof expected === 'string') rows.push(failure(c.name, 'attn.out', expected, st.step, layer));
    else {
      const row = numericRow(c.name, 'attn.out', st.step, layer, base.out, expected, GOLDEN_RTOL);
      // a flip search re-runs the call (cache cut back to the step's start); the last run is the kept one
      rows.push(explainByFlips(row, (probe) => read(probe).out, expected, st.length, st.start_pos, GOLDEN_RTOL, true));
    }
    return { rows, ok: true };
  } catch (e) {
    return { rows: [failure(c.name, 'attn.out', `mlaForward threw: ${message(e)}`, st.step, layer)], ok: false };
  } finally {
    x.dispose();
  }
}

/** The recorded tensor as float32 values, or why it cannot be compared (missing, or not of `shape`). */
function readExpected(c: GoldenCase, step: number, layer: number, tensor: TracedTensor, shape: number[]): Float32Array | string {
  const n = traceKey(step, layer, tensor);
  if (!c.trace.has(n)) return `trace has no ${n}`;
  const got = c.trace.info(n).shape;
  if (got.join() !== shape.join()) return `shape [${got.join(', ')}] ≠ expected [${shape.join(', ')}] (${n})`;
  const data = c.trace.read(n);
  if (!(data instanceof Float32Array)) return `${n} must hold floats but has dtype ${c.trace.info(n).dtype}`;
  return data;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
