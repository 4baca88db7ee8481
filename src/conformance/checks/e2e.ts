/**
 * End-to-end golden rows (`e2e.*`): the whole model from `input.tokens` through the manifest's prefill
 * and decode steps, each layer fed with the previous layer's output (not the recorded input), every
 * recorded tensor compared — `attn.in`, `attn.qr`, `indexer.score`, `indexer.topk` (as sets),
 * `attn.out`, `ffn.in`, `gate.*`, `ffn.out` — and the logits of every step.
 *
 * The run follows the official rounding at verified FP8 midpoints of every quantizer (../fp8/steer.ts):
 * a steer is named in the `reason` of the row of the recorded tensor that decided it.
 *
 * A layer not recorded at a step (no `attn.in`) gets no rows; the run still goes through it.
 */
import { tf } from '../../backend.ts';
import { scaleFmt } from '../../config.ts';
import { embedTokens, headLogits, createModelCache, disposeModelCache } from '../../model.ts';
import type { LayerRouting } from '../../moe.ts';
import { recorded, guard, type GoldenCase } from '../core/case.ts';
import { GOLDEN_RTOL, layerTraced, type GoldenStep } from '../core/fixture.ts';
import { traceKey, type TracedTensor } from '../core/trace_names.ts';
import { failure, numericRow, setsRow, withNote, type CheckResult } from '../core/rows.ts';
import { judgeScores, steeredBlock, type LayerRecord, type LayerSnapshot, type Steer } from '../fp8/steer.ts';
import { gateRows } from './gate.ts';

/** Check family: the end-to-end rows of a traced case. */
export const e2eCheck = {
  name: 'e2e',
  appliesTo: (c: GoldenCase): boolean => c.steps.length > 0,
  run: endToEnd,
};

/**
 * The e2e rows of one case (see the module doc). Never throws.
 *
 * @example
 * ```ts
 * // on a case opened once (core/case.ts `openCase`), as checks/golden.ts does:
 * // endToEnd(openCase(readGolden({ name: 'public2-fp8', dir: 'fixtures/golden/public2-fp8' })));
 * ```
 */
export function endToEnd(c: GoldenCase): CheckResult[] {
  const { config, weights, trace } = c;
  const rows: CheckResult[] = [];
  const cache = createModelCache(config);
  const keyFlags: boolean[][] = weights.layers.map(() => []);
  const opts = { config, maxSeqLen: c.maxSeqLen };
  try {
    for (const s of c.steps) {
      let h = embedTokens(c.tokens.slice(s.start_pos, s.start_pos + s.length), weights.global.embed);
      let residual: tf.Tensor2D | null = null;
      try {
        for (let l = 0; l < config.num_hidden_layers; l++) {
          const traced = layerTraced(trace, s.step, l);
          const record = traced ? layerRecord(c, s.step, l) : {};
          const b = steeredBlock(h, residual, weights.layers[l]!, cache.layers[l]!, s.start_pos, { ...opts, layer: l }, record, GOLDEN_RTOL, keyFlags[l]);
          h.dispose();
          residual?.dispose();
          h = b.out;
          residual = b.residual;
          if (traced) {
            try {
              // the flags of the positions cached before this call (steeredBlock appended this call's)
              rows.push(...layerRows(c, s, l, b.snap, b.steers, keyFlags[l]!.slice(0, s.start_pos)));
            } catch (e) {
              rows.push(failure(c.name, 'e2e', `layer ${l}: check threw: ${(e as Error).message}`, s.step, l));
            }
          }
        }
        const logits = headLogits(h, residual!, weights.global, config.rms_norm_eps);
        try {
          rows.push(...guard(c.name, 'e2e.logits', s.step, null, () => [
            numericRow(c.name, 'e2e.logits', s.step, null, logits.dataSync(), recorded(trace, traceKey(s.step, null, 'logits')), GOLDEN_RTOL),
          ]));
        } finally {
          logits.dispose();
        }
      } finally {
        h.dispose();
        (residual as tf.Tensor2D | null)?.dispose();
      }
    }
  } catch (e) {
    rows.push(failure(c.name, 'e2e', `end-to-end run threw: ${(e as Error).message}`));
  } finally {
    disposeModelCache(cache);
  }
  return rows;
}

/** The recorded tensors of one step and layer that decide steers (a misshapen or unreadable one decides nothing). */
function layerRecord(c: GoldenCase, step: number, layer: number): LayerRecord {
  const out: LayerRecord = {};
  const read = (t: TracedTensor) => {
    try {
      return c.trace.has(traceKey(step, layer, t)) ? recorded(c.trace, traceKey(step, layer, t)) : undefined;
    } catch {
      return undefined;
    }
  };
  for (const t of ['attn.qr', 'indexer.score', 'attn.out', 'ffn.in', 'ffn.out'] as const) {
    const v = read(t);
    if (v) out[t] = v;
  }
  const topk = read('indexer.topk');
  if (topk) out['indexer.topk'] = { data: topk, k: c.trace.info(traceKey(step, layer, 'indexer.topk')).shape.at(-1)! };
  return out;
}

/**
 * The e2e rows of one layer call: every tensor the trace records for (step, layer).
 * @param keyFlags the layer's indexer-key midpoint flags of the positions cached before this call
 */
function layerRows(c: GoldenCase, s: GoldenStep, l: number, snap: LayerSnapshot, steers: Steer[], keyFlags: boolean[]): CheckResult[] {
  const { trace } = c;
  const key = (t: TracedTensor) => traceKey(s.step, l, t);
  const steered = (tensor: string, r: CheckResult) => steers.filter((st) => st.decidedBy === tensor).reduce((row, st) => withNote(row, st.note), r);
  const rows: CheckResult[] = [];
  const dense: Array<[TracedTensor, Float32Array]> = [['attn.in', snap.attnIn], ['attn.qr', snap.qr]];
  const numeric = (t: TracedTensor, actual: Float32Array) => {
    if (!trace.has(key(t))) return;
    rows.push(...guard(c.name, `e2e.${t}`, s.step, l, () => [steered(t, numericRow(c.name, `e2e.${t}`, s.step, l, actual, recorded(trace, key(t)), GOLDEN_RTOL))]));
  };
  for (const [t, actual] of dense) numeric(t, actual);
  if (trace.has(key('indexer.score'))) {
    rows.push(...guard(c.name, 'e2e.indexer.score', s.step, l, () => {
      const expected = recorded(trace, key('indexer.score'));
      const judged = judgeScores(snap, expected, keyFlags, scaleFmt(c.config) === 'ue8m0', GOLDEN_RTOL, { case: c.name, step: s.step, layer: l });
      return [steered('indexer.score', judged)];
    }));
  }
  if (trace.has(key('indexer.topk'))) {
    rows.push(...guard(c.name, 'e2e.indexer.topk', s.step, l, () => {
      const k = trace.info(key('indexer.topk')).shape.at(-1)!;
      return [setsRow(c.name, 'e2e.indexer.topk', s.step, l, snap.selected, recorded(trace, key('indexer.topk')), k, snap.K)];
    }));
  }
  numeric('attn.out', snap.attnOut);
  numeric('ffn.in', snap.ffnIn);
  numeric('ffn.out', snap.ffnOut);
  const routing: LayerRouting | null = snap.routing;
  if (routing && (trace.has(key('gate.indices')) || trace.has(key('gate.weights')))) rows.push(...gateRows(c, 'e2e.', s.step, l, routing));
  return rows;
}
