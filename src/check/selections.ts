/**
 * The selection checks of the judge (src/check/judge.ts): `indexer.topk` (paper Eq. 2) and the MoE gate
 * (`gate.indices`, `gate.weights`), each compared as sets where a swap between two scores within the
 * noise of the precision is allowed.
 *
 * @module
 */
import { tf } from '../backend.ts';
import type { ModelConfig } from '../config.ts';
import type { Deviations } from '../deviations.ts';
import { moeGate, routingScores } from '../moe.ts';
import { selectTopK } from '../topk.ts';
import { isDirty, judgeFloat, row, selectionRow, type Pair, type RowContext, type Side } from './compare.ts';
import { selectionErrors } from './metrics.ts';
import type { CheckRow } from './report.ts';
import { traceName } from './names.ts';
import type { OpenedTrace } from './trace.ts';

/** Rows of a [T, K] id matrix. */
function idRows(ids: ArrayLike<number>, T: number): number[][] {
  const K = ids.length / T;
  return Array.from({ length: T }, (_, t) => Array.from({ length: K }, (_, j) => ids[t * K + j]!));
}

/**
 * `indexer.topk`: the trace's selections against top-k of the reference scores; a differing position
 * passes when its reference score is within `topkGap · max|score|` of the row's cut. Returns the
 * selections attention uses (the trace's when well-formed, else the reference's).
 */
export function judgeTopk(
  trace: OpenedTrace,
  opts: RowContext,
  rows: CheckRow[],
  step: number,
  layer: number,
  scores: Pair,
  startPos: number,
  k: number,
): tf.Tensor2D {
  const ref = selectTopK(scores.t, startPos, k);
  const traced = trace.get(traceName(step, layer, 'indexer.topk')) as Int32Array | undefined;
  if (!traced) return ref;
  const [T, S] = scores.t.shape;
  const K = ref.shape[1];
  const bad = Array.from(traced).findIndex((s, i) => s < -1 || s > startPos + Math.floor(i / K));
  if (bad >= 0) {
    rows.push(row(opts, step, layer, 'indexer.topk', { pass: false, reason: `position ${traced[bad]} at [${Math.floor(bad / K)}, ${bad % K}] is not a causal position (−1 pads)` }));
    return ref;
  }
  selectionRow(opts, rows, step, layer, 'indexer.topk', [scores], (side) => {
    const values = scores[side].dataSync() as Float32Array;
    const refIds = (side === 't' ? ref : selectTopK(scores[side], startPos, k)).dataSync() as Int32Array;
    let maxScore = 0;
    for (let t = 0; t < T; t++) for (let s = 0; s <= startPos + t; s++) maxScore = Math.max(maxScore, Math.abs(values[t * S + s]!));
    const gap = opts.thresholds.topkGap * maxScore;
    const score = (t: number, s: number) => (s <= startPos + t ? values[t * S + s]! : -Infinity);
    return { e: selectionErrors(idRows(traced, T), idRows(refIds, T), score, gap), gap, scale: maxScore };
  });
  return tf.tensor2d(traced, ref.shape, 'int32');
}

/**
 * `gate.indices` and `gate.weights`: the trace's experts against top-Ek of the reference σ_b (a differing
 * expert passes when its σ_b, or its group's score when a group swapped, is within `gateGap` of the cut),
 * and the trace's combine weights against the reference weights for the trace's own experts. Returns the
 * expert ids and the weights `ffn.out` is judged with.
 */
export function judgeGate(
  trace: OpenedTrace,
  opts: RowContext & { deviations?: Deviations | undefined },
  rows: CheckRow[],
  step: number,
  layer: number,
  fx: Pair,
  gate: Parameters<typeof moeGate>[1],
  config: ModelConfig,
): { ids: { tokens: number; experts: number; indices: Int32Array }; weights: Pair } {
  const [T] = fx.t.shape;
  const Ek = config.num_experts_per_tok;
  const E = config.n_routed_experts;
  const deviations = opts.deviations;
  const refIds = (side: Side) => moeGate(fx[side], gate, config, { deviations }).indices.dataSync() as Int32Array;
  let ids = refIds('t');
  const traced = trace.get(traceName(step, layer, 'gate.indices')) as Int32Array | undefined;
  const bad = traced ? Array.from(traced).findIndex((e) => e < 0 || e >= E) : -1;
  if (traced && bad >= 0) {
    rows.push(row(opts, step, layer, 'gate.indices', { pass: false, reason: `expert id ${traced[bad]} at [${Math.floor(bad / Ek)}, ${bad % Ek}] is not in [0, ${E})` }));
  } else if (traced) {
    selectionRow(opts, rows, step, layer, 'gate.indices', [fx], (side) => {
      const sigma = tf.sigmoid(tf.matMul(fx[side], gate.weight, false, true)) as tf.Tensor2D; // [T, E] (sigmoid gate, noaux_tc)
      const { biased, selection } = routingScores(sigma, gate, config, deviations);
      const b = biased.dataSync() as Float32Array;
      const m = selection.dataSync() as Float32Array;
      // a differing expert of a dropped group counts with its σ_b only when its group nearly made the cut
      const groupNearCut = (t: number, e: number) => groupGap(b, t, e, config) <= opts.thresholds.gateGap;
      const score = (t: number, e: number) => (Number.isFinite(m[t * E + e]!) ? m[t * E + e]! : groupNearCut(t, e) ? b[t * E + e]! : -Infinity);
      const gap = opts.thresholds.gateGap;
      return { e: selectionErrors(idRows(traced, T), idRows(side === 't' ? ids : refIds(side), T), score, gap), gap, scale: 1 };
    });
    ids = Int32Array.from(traced);
  }
  const recorded = { tokens: T, experts: Ek, indices: ids };
  const weights = judgeFloat(trace, opts, rows, step, layer, 'gate.weights', [fx], (side) =>
    moeGate(fx[side], gate, config, { routing: { ...recorded, weights: new Float32Array(T * Ek) }, deviations }).weights);
  return { ids: recorded, weights };
}

/** How far expert e's group is below the `topk_group`-th group score in row t (0 when kept; σ_b group score = sum of its top 2). */
function groupGap(biased: Float32Array, t: number, e: number, config: ModelConfig): number {
  const { n_routed_experts: E, n_group: G, topk_group } = config;
  if (G <= 1) return 0;
  const size = E / G;
  const groupScore = (g: number) => {
    const v = Array.from(biased.subarray(t * E + g * size, t * E + (g + 1) * size)).sort((p, q) => q - p);
    return v[0]! + (v[1] ?? 0);
  };
  const scores = Array.from({ length: G }, (_, g) => groupScore(g));
  const cut = [...scores].sort((p, q) => q - p)[topk_group - 1]!;
  return Math.max(0, cut - scores[Math.floor(e / size)]!);
}
