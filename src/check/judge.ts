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
import { floatErrors, fmt, selectionErrors, type FloatErrors, type SelectionErrors } from './metrics.ts';
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

/**
 * The caches of one layer across steps, for both sides of {@link Pair}: `s` is null while the two sides
 * agree (no cached position came from a failed tensor), else a cache of its own.
 */
interface LayerState {
  t: { kv: tf.Tensor2D | null; pe: tf.Tensor2D | null; indexer: IndexerCache };
  s: { kv: tf.Tensor2D | null; pe: tf.Tensor2D | null; indexer: IndexerCache } | null;
}

function disposeLayerState(state: LayerState): void {
  for (const c of [state.t, state.s]) {
    if (!c) continue;
    tf.dispose([c.kv, c.pe].filter((t): t is tf.Tensor2D => t !== null));
    disposeIndexerCache(c.indexer);
  }
}

/**
 * A value as the trace has it (`t`: the recorded tensor, or the reference where the trace lacks it) and
 * with every failed tensor upstream replaced by the reference (`s`). `t === s` when nothing upstream
 * failed. A module passes when its recorded output matches the reference applied to either: a wrong
 * recorded input (a bug upstream) does not fail the modules after it, whether they consumed the wrong
 * value (a real deviation) or the right one (a dump of one tensor gone wrong).
 */
interface Pair {
  t: tf.Tensor2D;
  s: tf.Tensor2D;
}
type Side = keyof Pair;

const isDirty = (...pairs: Pair[]): boolean => pairs.some((p) => p.t !== p.s);
const samePair = (x: tf.Tensor2D): Pair => ({ t: x, s: x });
/** `f` on both sides (once when the inputs are clean). */
function both(inputs: Pair[], f: (side: Side) => tf.Tensor2D): Pair {
  const t = f('t');
  return isDirty(...inputs) ? { t, s: f('s') } : samePair(t);
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
  const states: LayerState[] = Array.from({ length: L }, () => ({ t: { kv: null, pe: null, indexer: createIndexerCache() }, s: null }));
  try {
    for (const st of fixture.steps) {
      tf.tidy(() => {
        const ids = Int32Array.from(fixture.tokens.slice(st.start_pos, st.start_pos + st.length));
        let resid = samePair(tf.gather(weights.global.embed, ids) as tf.Tensor2D); // r_0 = embed(tokens)
        let last: { f: Pair; r2: Pair } | null = null;
        for (let l = 0; l < L; l++) {
          last = judgeLayer(fixture, trace, opts, st, l, resid, states[l]!, rows);
          const { f, r2 } = last;
          resid = both([f, r2], (v) => tf.add(r2[v], f[v]) as tf.Tensor2D); // r_{l+1} = r_l + a + f
        }
        if (L === config.num_hidden_layers && last) {
          const { f, r2 } = last;
          judgeFloat(trace, opts, rows, st.step, null, 'logits', [f, r2], (v) => headLogits(f[v], r2[v], weights.global, config.rms_norm_eps, 'last'));
        }
      });
    }
  } finally {
    states.forEach(disposeLayerState);
  }
  return rows;
}

/** One layer of one step (inside the caller's tidy); returns the FFN output f and r_l + a. */
function judgeLayer(
  fixture: JudgeFixture,
  trace: OpenedTrace,
  opts: JudgeOptions,
  st: { step: number; start_pos: number; length: number },
  l: number,
  resid: Pair,
  state: LayerState,
  rows: CheckRow[],
): { f: Pair; r2: Pair } {
  const { config, maxSeqLen, weights } = fixture;
  const w = weights.layers[l]!;
  const { step, start_pos: startPos, length: T } = st;
  const deviations = opts.deviations;
  const mla = { config, maxSeqLen, deviations: deviations ?? new Set() };
  const eps = config.rms_norm_eps;
  const judge = (check: FloatCheck, inputs: Pair[], refOf: (side: Side) => tf.Tensor2D, include?: (i: number) => boolean) =>
    judgeFloat(trace, opts, rows, step, l, check, inputs, refOf, include);

  // --- attention: x, qr, indexer scores and top-k, attn.out ---
  const x = judge('attn.in', [resid], (v) => rmsNorm(resid[v], w.attn_norm, eps) as tf.Tensor2D);
  const query = { t: mlaQuery(x.t, w.attn, startPos, mla), s: isDirty(x) ? mlaQuery(x.s, w.attn, startPos, mla) : null };
  const q = (v: Side) => (v === 's' && query.s ? query.s : query.t);
  const qr = judge('attn.qr', [x], (v) => q(v).qr);
  // the s side gets caches of its own from the first step where it differs
  if (!state.s && isDirty(x, qr)) {
    const c = state.t;
    state.s = { kv: c.kv && tf.keep(c.kv.clone()), pe: c.pe && tf.keep(c.pe.clone()), indexer: cloneIndexerCache(c.indexer) };
  }
  const caches = { t: state.t, s: state.s ?? state.t };
  const scoresT = indexerScores(x.t, qr.t, w.attn.indexer, caches.t.indexer, startPos, { config, maxSeqLen, deviations });
  const scores: Pair = state.s
    ? { t: scoresT, s: indexerScores(x.s, qr.s, w.attn.indexer, state.s.indexer, startPos, { config, maxSeqLen, deviations }) }
    : samePair(scoresT);
  const S = startPos + T;
  judge('indexer.score', [x, qr], (v) => scores[v], (i) => i % S <= startPos + Math.floor(i / S));
  const topk = judgeTopk(trace, opts, rows, step, l, scores, startPos, config.index_topk);
  const cacheRows = { t: mlaLatent(x.t, w.attn, startPos, mla), s: isDirty(x) ? mlaLatent(x.s, w.attn, startPos, mla) : null };
  const latent = both([x], (v) => (v === 's' && cacheRows.s ? cacheRows.s : cacheRows.t).latent);
  const kPe = both([x], (v) => (v === 's' && cacheRows.s ? cacheRows.s : cacheRows.t).kPe);
  const grown = (cached: tf.Tensor2D | null, rows: tf.Tensor2D) => (cached ? tf.concat([cached, rows], 0) : rows) as tf.Tensor2D;
  const sides = [latent, kPe, scores]; // dirty when x is, or when the s side has caches of its own
  const kv = both(sides, (v) => grown(caches[v].kv, latent[v]));
  const pe = both(sides, (v) => grown(caches[v].pe, kPe[v]));
  for (const v of ['t', 's'] as const) {
    const c = state[v];
    if (!c) continue;
    tf.dispose([c.kv, c.pe].filter((t): t is tf.Tensor2D => t !== null));
    [c.kv, c.pe] = [tf.keep(kv[v].clone()), tf.keep(pe[v].clone())];
  }
  const mode = T > 1 ? 'mha' : 'mqa';
  const a = judge('attn.out', [x, kv], (v) => mlaAttend(q(v).qNope, q(v).qPe, kv[v], pe[v], topk, w.attn, startPos, { ...mla, mode }));

  // --- FFN: ffn.in, gate, ffn.out ---
  const r2 = both([resid, a], (v) => tf.add(resid[v], a[v]) as tf.Tensor2D);
  const fx = judge('ffn.in', [r2], (v) => rmsNorm(r2[v], w.ffn_norm, eps) as tf.Tensor2D);
  if (w.ffn.kind === 'dense') {
    const dense = w.ffn.dense;
    return { f: judge('ffn.out', [fx], (v) => swigluFfn(fx[v], dense, scaleFmt(config))), r2 };
  }
  const moeWeights = w.ffn.moe;
  const routing = judgeGate(trace, opts, rows, step, l, fx, moeWeights.gate, config);
  const f = judge('ffn.out', [fx, routing.weights], (v) => moe(fx[v], moeWeights, config, {
    routing: { ...routing.ids, weights: Float32Array.from(routing.weights[v].dataSync() as Float32Array) },
    combine: 'replay',
  }).out);
  return { f, r2 };
}

/** A copy of an indexer cache (its own tensors, kept; dispose with disposeIndexerCache). */
function cloneIndexerCache(c: IndexerCache): IndexerCache {
  return { keys: c.keys ? tf.keep(c.keys.clone()) : null, scales: c.scales ? tf.keep(c.scales.clone()) : null, mode: c.mode };
}

function row(opts: JudgeOptions, step: number, layer: number | null, check: string, fields: Partial<CheckRow> & { pass: boolean; reason: string }): CheckRow {
  return { case: opts.caseName, check, step, layer, max_abs_err: null, max_rel_err: null, cos_diff: null, recall: null, ...fields };
}

/**
 * Compares the trace's tensor (when present) with the reference `refOf('t')` [rows, cols], and, when that
 * fails and an input is dirty, with `refOf('s')`; returns the pair the modules downstream use.
 */
function judgeFloat(
  trace: OpenedTrace,
  opts: JudgeOptions,
  rows: CheckRow[],
  step: number,
  layer: number | null,
  check: FloatCheck,
  inputs: Pair[],
  refOf: (side: Side) => tf.Tensor2D,
  include?: (i: number) => boolean,
): Pair {
  const refT = refOf('t');
  let refS: tf.Tensor2D | undefined;
  const sideS = () => (refS ??= isDirty(...inputs) ? refOf('s') : refT);
  const traced = trace.get(traceName(step, layer, check)) as Float32Array | undefined;
  if (!traced) return { t: refT, s: sideS() };
  const t = opts.thresholds.float[check];
  const ok = (e: FloatErrors) => e.nonFinite === 0 && e.maxRel <= t.maxRel && e.cosDiff <= t.cosDiff;
  let e = floatErrors(traced, refT.dataSync() as Float32Array, include);
  let pass = ok(e);
  let note = '';
  if (!pass && isDirty(...inputs)) {
    const e2 = floatErrors(traced, sideS().dataSync() as Float32Array, include);
    if (ok(e2)) [e, pass, note] = [e2, true, ' (computed from the reference value of a failed tensor upstream)'];
  }
  const why = e.nonFinite ? `${e.nonFinite} NaN/inf value(s) where the reference is finite; ` : '';
  rows.push(row(opts, step, layer, check, {
    pass, max_abs_err: e.maxAbs, max_rel_err: e.maxRel, cos_diff: e.cosDiff,
    reason: `${why}${pass ? 'within' : 'outside'} max_rel_err ≤ ${fmt(t.maxRel)}, cos_diff ≤ ${fmt(t.cosDiff)}${note}`,
  }));
  const recorded = tf.tensor2d(traced, refT.shape) as tf.Tensor2D;
  return pass ? samePair(recorded) : { t: recorded, s: sideS() };
}

/** Rows of an [T, K] id matrix. */
function idRows(ids: ArrayLike<number>, T: number): number[][] {
  const K = ids.length / T;
  return Array.from({ length: T }, (_, t) => Array.from({ length: K }, (_, j) => ids[t * K + j]!));
}

/**
 * Pushes the row of a selection check: `compare(side)` judges the trace's ids against the reference of one
 * side; the `s` side is tried when the `t` side fails and an input is dirty.
 */
function selectionRow(
  opts: JudgeOptions,
  rows: CheckRow[],
  step: number,
  layer: number,
  check: 'indexer.topk' | 'gate.indices',
  inputs: Pair[],
  compare: (side: Side) => { e: SelectionErrors; gap: number; scale: number },
): void {
  let { e, gap, scale } = compare('t');
  let note = '';
  if (e.unexplained > 0 && isDirty(...inputs)) {
    const retry = compare('s');
    if (retry.e.unexplained === 0) [{ e, gap, scale }, note] = [retry, ' (computed from the reference value of a failed tensor upstream)'];
  }
  const pass = e.unexplained === 0;
  const what = check === 'indexer.topk' ? 'position(s)' : 'expert(s)';
  rows.push(row(opts, step, layer, check, {
    pass, recall: e.recall, max_abs_err: e.maxGap, max_rel_err: scale > 0 ? e.maxGap / scale : e.maxGap,
    reason: (pass ? `${e.nearTies} ${what} differ within the score gap ${fmt(gap)}` : `${e.unexplained} ${what} differ beyond the score gap ${fmt(gap)}; ${e.example}`) + note,
  }));
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
function judgeGate(
  trace: OpenedTrace,
  opts: JudgeOptions,
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

