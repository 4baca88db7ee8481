/**
 * The module-by-module judge of `dsv32 check`: every module of every traced layer is recomputed by the
 * float32 reference from the trace's OWN recorded inputs (teacher forcing) and compared with what the
 * trace recorded, so a deviation shows at the module and layer where it happens:
 *
 * ```
 * r_0 = embed(tokens);  for each layer l (and step s, caches carried across steps):
 *   attn.in       = RMSNorm(r_l)                                  r_l from the trace's own a_j, f_j (j < l)
 *   attn.qr       = q_norm(wq_a(x))                               x = the trace's attn.in
 *   indexer.score = I(x, qr, keys of every earlier x)            qr = the trace's attn.qr (Eq. 1)
 *   indexer.topk  = top-k(indexer.score)                          as sets, near-ties allowed (Eq. 2)
 *   attn.out      = MLA(x, latents of every earlier x, S_t)       S_t = the trace's own selections
 *   ffn.in        = RMSNorm(r_l + a)                              a = the trace's attn.out
 *   gate.indices  = top-Ek(σ_b)    gate.weights = σ[ids]          from the trace's ffn.in, for its ids
 *   ffn.out       = Σ w · Expert(x) + Shared(x)                    with the trace's ids and weights
 *   r_{l+1} = r_l + a + f;   logits = head(norm(r_L))[last]
 * ```
 *
 * A tensor the trace lacks, and a float tensor that failed its own check, is replaced by the reference
 * value downstream (a failure is not smeared over the modules after it); selections are always the
 * trace's own when they are well-formed (attention and experts are judged for the choices the trace made).
 *
 * @module
 */
import { tf } from '../backend.ts';
import { scaleFmt, type ModelConfig } from '../config.ts';
import type { Deviations } from '../deviations.ts';
import { createIndexerCache, disposeIndexerCache, indexerScores, type IndexerCache } from '../indexer.ts';
import { mlaAttend, mlaLatent, mlaQuery } from '../mla.ts';
import { headLogits, type ModelWeights } from '../model.ts';
import { moe, moeGate, routingScores, swigluFfn } from '../moe.ts';
import { rmsNorm } from '../norms.ts';
import { selectTopK } from '../topk.ts';
import { floatErrors, fmt, selectionErrors } from './metrics.ts';
import type { CheckRow } from './report.ts';
import type { FloatCheck, Thresholds } from './thresholds.ts';
import { traceName, type OpenedTrace } from './trace.ts';

/** A fixture opened for judging: everything the reference forward needs. */
export interface JudgeFixture {
  config: ModelConfig;
  maxSeqLen: number;
  steps: { step: number; start_pos: number; length: number }[];
  tokens: number[];
  weights: ModelWeights;
}

/** Options of {@link judgeTrace}. */
export interface JudgeOptions {
  caseName: string;
  thresholds: Thresholds;
  /** catalogue deviations switched on in the reference (diagnosis); empty = the spec. */
  deviations?: Deviations;
  /** judge layers 0..lastLayer only (and no logits unless it is the last layer); default all. */
  lastLayer?: number;
}

interface LayerState {
  kv: tf.Tensor2D | null;
  pe: tf.Tensor2D | null;
  indexer: IndexerCache;
}

/**
 * Judges every tensor the trace holds, module by module (see the module comment). Returns one row per
 * traced tensor, in forward order.
 *
 * @param fixture the opened fixture (config, steps, tokens, weights)
 * @param trace the validated trace
 * @param opts thresholds, deviations, last layer
 */
export function judgeTrace(fixture: JudgeFixture, trace: OpenedTrace, opts: JudgeOptions): CheckRow[] {
  const { config, weights } = fixture;
  const L = Math.min(config.num_hidden_layers, (opts.lastLayer ?? Infinity) + 1);
  const rows: CheckRow[] = [];
  const states: LayerState[] = Array.from({ length: L }, () => ({ kv: null, pe: null, indexer: createIndexerCache() }));
  try {
    for (const st of fixture.steps) {
      let resid = tf.tidy(() => tf.gather(weights.global.embed, Int32Array.from(fixture.tokens.slice(st.start_pos, st.start_pos + st.length))) as tf.Tensor2D);
      let lastFfn: tf.Tensor2D | null = null;
      let lastResid: tf.Tensor2D | null = null;
      for (let l = 0; l < L; l++) {
        const out = judgeLayer(fixture, trace, opts, st, l, resid, states[l]!, rows);
        resid.dispose();
        lastFfn?.dispose();
        lastResid?.dispose();
        [resid, lastFfn, lastResid] = [out.next, out.ffnOut, out.resid];
      }
      if (L === config.num_hidden_layers && lastFfn && lastResid) {
        const [f, r] = [lastFfn, lastResid];
        tf.tidy(() => {
          const ref = headLogits(f, r, weights.global, config.rms_norm_eps, 'last');
          judgeFloat(trace, opts, rows, st.step, null, 'logits', ref);
        });
      }
      tf.dispose([resid, ...(lastFfn ? [lastFfn] : []), ...(lastResid ? [lastResid] : [])]);
    }
  } finally {
    for (const s of states) {
      tf.dispose([s.kv, s.pe].filter((t): t is tf.Tensor2D => t !== null));
      disposeIndexerCache(s.indexer);
    }
  }
  return rows;
}

/** One layer of one step; returns the next residual r_{l+1}, this layer's FFN output and r_l + a (kept). */
function judgeLayer(
  fixture: JudgeFixture,
  trace: OpenedTrace,
  opts: JudgeOptions,
  st: { step: number; start_pos: number; length: number },
  l: number,
  resid: tf.Tensor2D,
  state: LayerState,
  rows: CheckRow[],
): { next: tf.Tensor2D; ffnOut: tf.Tensor2D; resid: tf.Tensor2D } {
  const { config, maxSeqLen, weights } = fixture;
  const w = weights.layers[l]!;
  const { step, start_pos: startPos, length: T } = st;
  const deviations = opts.deviations;
  const mla = { config, maxSeqLen, deviations: deviations ?? new Set() };
  const eps = config.rms_norm_eps;
  return tf.tidy(() => {
    // --- attention: x, qr, indexer, top-k, attn.out ---
    const x = judgeFloat(trace, opts, rows, step, l, 'attn.in', rmsNorm(resid, w.attn_norm, eps) as tf.Tensor2D);
    const { qr: qrRef, qNope, qPe } = mlaQuery(x, w.attn, startPos, mla);
    const qr = judgeFloat(trace, opts, rows, step, l, 'attn.qr', qrRef);
    const { latent, kPe } = mlaLatent(x, w.attn, startPos, mla);
    state.kv = appendKept(state.kv, latent);
    state.pe = appendKept(state.pe, kPe);
    const scores = indexerScores(x, qr, w.attn.indexer, state.indexer, startPos, { config, maxSeqLen, deviations });
    const S = startPos + T;
    judgeFloat(trace, opts, rows, step, l, 'indexer.score', scores, (i) => i % S <= startPos + Math.floor(i / S));
    const topk = judgeTopk(trace, opts, rows, step, l, scores, startPos, config.index_topk);
    const mode = T > 1 ? 'mha' : 'mqa';
    const a = judgeFloat(trace, opts, rows, step, l, 'attn.out', mlaAttend(qNope, qPe, state.kv, state.pe, topk, w.attn, startPos, { ...mla, mode }));

    // --- FFN: ffn.in, gate, ffn.out ---
    const r2 = tf.add(resid, a) as tf.Tensor2D;
    const fx = judgeFloat(trace, opts, rows, step, l, 'ffn.in', rmsNorm(r2, w.ffn_norm, eps) as tf.Tensor2D);
    let f: tf.Tensor2D;
    if (w.ffn.kind === 'dense') {
      f = swigluFfn(fx, w.ffn.dense, scaleFmt(config));
    } else {
      const routing = judgeGate(trace, opts, rows, step, l, fx, w.ffn.moe.gate, config);
      f = moe(fx, w.ffn.moe, config, { routing, combine: 'replay' }).out;
    }
    const ffnOut = judgeFloat(trace, opts, rows, step, l, 'ffn.out', f);
    return { next: tf.add(r2, ffnOut) as tf.Tensor2D, ffnOut: ffnOut.clone(), resid: r2 };
  });
}

/** Appends rows to a kept cache tensor (disposing the old one); returns the new kept tensor. */
function appendKept(cache: tf.Tensor2D | null, rows: tf.Tensor2D): tf.Tensor2D {
  const next = tf.keep(cache ? (tf.concat([cache, rows], 0) as tf.Tensor2D) : rows.clone());
  cache?.dispose();
  return next;
}

function row(opts: JudgeOptions, step: number, layer: number | null, check: string, fields: Partial<CheckRow> & { pass: boolean; reason: string }): CheckRow {
  return { case: opts.caseName, check, step, layer, max_abs_err: null, max_rel_err: null, cos_diff: null, recall: null, ...fields };
}

/**
 * Compares the trace's tensor (when present) with the reference `ref` [rows, cols]; returns what the
 * modules downstream use: the trace's values when they passed, else the reference.
 */
function judgeFloat(
  trace: OpenedTrace,
  opts: JudgeOptions,
  rows: CheckRow[],
  step: number,
  layer: number | null,
  check: FloatCheck,
  ref: tf.Tensor2D,
  include?: (i: number) => boolean,
): tf.Tensor2D {
  const traced = trace.get(traceName(step, layer, check)) as Float32Array | undefined;
  if (!traced) return ref;
  const e = floatErrors(traced, ref.dataSync() as Float32Array, include);
  const t = opts.thresholds.float[check];
  const pass = e.nonFinite === 0 && e.maxRel <= t.maxRel && e.cosDiff <= t.cosDiff;
  const why = e.nonFinite ? `${e.nonFinite} NaN/inf value(s) where the reference is finite; ` : '';
  rows.push(row(opts, step, layer, check, {
    pass, max_abs_err: e.maxAbs, max_rel_err: e.maxRel, cos_diff: e.cosDiff,
    reason: `${why}${pass ? 'within' : 'outside'} max_rel_err ≤ ${fmt(t.maxRel)}, cos_diff ≤ ${fmt(t.cosDiff)}`,
  }));
  return pass ? (tf.tensor2d(traced, ref.shape) as tf.Tensor2D) : ref;
}

/** Rows of an [T, K] id matrix. */
function idRows(ids: ArrayLike<number>, T: number): number[][] {
  const K = ids.length / T;
  return Array.from({ length: T }, (_, t) => Array.from({ length: K }, (_, j) => ids[t * K + j]!));
}

/**
 * `indexer.topk`: the trace's selections against top-k of the reference scores; a differing position
 * passes when its reference score is within `topkGap · max|score|` of the row's cut. Returns the
 * selections attention uses (the trace's when well-formed, else the reference's).
 */
function judgeTopk(
  trace: OpenedTrace,
  opts: JudgeOptions,
  rows: CheckRow[],
  step: number,
  layer: number,
  scores: tf.Tensor2D,
  startPos: number,
  k: number,
): tf.Tensor2D {
  const ref = selectTopK(scores, startPos, k);
  const traced = trace.get(traceName(step, layer, 'indexer.topk')) as Int32Array | undefined;
  if (!traced) return ref;
  const [T, S] = scores.shape;
  const values = scores.dataSync() as Float32Array;
  const bad = Array.from(traced).findIndex((s, i) => s < -1 || s > startPos + Math.floor(i / ref.shape[1]));
  if (bad >= 0) {
    rows.push(row(opts, step, layer, 'indexer.topk', { pass: false, reason: `position ${traced[bad]} at [${Math.floor(bad / ref.shape[1])}, ${bad % ref.shape[1]}] is not a causal position (−1 pads)` }));
    return ref;
  }
  let maxScore = 0;
  for (let t = 0; t < T; t++) for (let s = 0; s <= startPos + t; s++) maxScore = Math.max(maxScore, Math.abs(values[t * S + s]!));
  const gap = opts.thresholds.topkGap * maxScore;
  const e = selectionErrors(idRows(traced, T), idRows(ref.dataSync() as Int32Array, T), (t, s) => (s <= startPos + t ? values[t * S + s]! : -Infinity), gap);
  const pass = e.unexplained === 0;
  rows.push(row(opts, step, layer, 'indexer.topk', {
    pass, recall: e.recall, max_abs_err: e.maxGap, max_rel_err: maxScore > 0 ? e.maxGap / maxScore : e.maxGap,
    reason: pass
      ? `${e.nearTies} position(s) differ within the score gap ${fmt(gap)} (${fmt(opts.thresholds.topkGap)} · max|score|)`
      : `${e.unexplained} position(s) differ beyond the score gap ${fmt(gap)}; ${e.example}`,
  }));
  return tf.tensor2d(traced, ref.shape, 'int32');
}

/**
 * `gate.indices` and `gate.weights`: the trace's experts against top-Ek of the reference σ_b (a differing
 * expert passes when its σ_b, or its group's score when a group swapped, is within `gateGap` of the cut),
 * and the trace's combine weights against the reference weights for the trace's own experts. Returns the
 * routing `ffn.out` is judged with.
 */
function judgeGate(
  trace: OpenedTrace,
  opts: JudgeOptions,
  rows: CheckRow[],
  step: number,
  layer: number,
  fx: tf.Tensor2D,
  gate: Parameters<typeof moeGate>[1],
  config: ModelConfig,
): { tokens: number; experts: number; indices: Int32Array; weights: Float32Array } {
  const [T] = fx.shape;
  const Ek = config.num_experts_per_tok;
  const E = config.n_routed_experts;
  const deviations = opts.deviations;
  const free = moeGate(fx, gate, config, { deviations });
  const refIds = free.indices.dataSync() as Int32Array;
  let ids = Int32Array.from(refIds);
  const traced = trace.get(traceName(step, layer, 'gate.indices')) as Int32Array | undefined;
  if (traced) {
    const bad = Array.from(traced).findIndex((e) => e < 0 || e >= E);
    if (bad >= 0) {
      rows.push(row(opts, step, layer, 'gate.indices', { pass: false, reason: `expert id ${traced[bad]} at [${Math.floor(bad / Ek)}, ${bad % Ek}] is not in [0, ${E})` }));
    } else {
      const sigma = tf.sigmoid(tf.matMul(fx, gate.weight, false, true)) as tf.Tensor2D; // [T, E] (sigmoid gate, noaux_tc)
      const { biased, selection } = routingScores(sigma, gate, config, deviations);
      const b = biased.dataSync() as Float32Array;
      const m = selection.dataSync() as Float32Array;
      // a differing expert of a dropped group counts with its σ_b only when its group nearly made the cut
      const groupNearCut = (t: number, e: number) => groupGap(b, t, e, config) <= opts.thresholds.gateGap;
      const score = (t: number, e: number) => (Number.isFinite(m[t * E + e]!) || groupNearCut(t, e) ? b[t * E + e]! : -Infinity);
      const sel = selectionErrors(idRows(traced, T), idRows(refIds, T), score, opts.thresholds.gateGap);
      const pass = sel.unexplained === 0;
      rows.push(row(opts, step, layer, 'gate.indices', {
        pass, recall: sel.recall, max_abs_err: sel.maxGap, max_rel_err: sel.maxGap,
        reason: pass
          ? `${sel.nearTies} expert(s) differ within the score gap ${fmt(opts.thresholds.gateGap)}`
          : `${sel.unexplained} expert(s) differ beyond the score gap ${fmt(opts.thresholds.gateGap)}; ${sel.example}`,
      }));
      ids = Int32Array.from(traced);
    }
  }
  const recorded = { tokens: T, experts: Ek, indices: ids, weights: new Float32Array(T * Ek) };
  const refWeights = moeGate(fx, gate, config, { routing: recorded, deviations }).weights;
  const weights = judgeFloat(trace, opts, rows, step, layer, 'gate.weights', refWeights);
  return { ...recorded, weights: Float32Array.from(weights.dataSync() as Float32Array) };
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

