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
 * A tensor the trace lacks is replaced by the reference value. A module whose recorded input failed its
 * own check passes when its recorded output matches the reference applied to the recorded input OR to the
 * reference value in its place (the two sides of a `Pair`, src/check/compare.ts): a failure is not smeared
 * over the modules after it. Selections are always the trace's own when they are well-formed (attention
 * and experts are judged for the choices the trace made).
 *
 * @module
 */
import { tf } from '../backend.ts';
import { scaleFmt, type ModelConfig } from '../config.ts';
import type { Deviations } from '../deviations.ts';
import { createIndexerCache, disposeIndexerCache, indexerScores, type IndexerCache } from '../indexer.ts';
import { mlaAttend, mlaLatent, mlaQuery } from '../mla.ts';
import { headLogits, type ModelWeights } from '../model.ts';
import { moe, swigluFfn } from '../moe.ts';
import { rmsNorm } from '../norms.ts';
import { both, isDirty, judgeFloat, samePair, type Pair, type Side } from './compare.ts';
import type { CheckRow } from './report.ts';
import { judgeGate, judgeTopk } from './selections.ts';
import type { FloatCheck, Thresholds } from './thresholds.ts';
import type { OpenedTrace } from './trace.ts';

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
  t: { latents: tf.Tensor2D | null; ropeKeys: tf.Tensor2D | null; indexer: IndexerCache };
  s: { latents: tf.Tensor2D | null; ropeKeys: tf.Tensor2D | null; indexer: IndexerCache } | null;
}

function disposeLayerState(state: LayerState): void {
  for (const c of [state.t, state.s]) {
    if (!c) continue;
    tf.dispose([c.latents, c.ropeKeys].filter((t): t is tf.Tensor2D => t !== null));
    disposeIndexerCache(c.indexer);
  }
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
  const states: LayerState[] = Array.from({ length: L }, () => ({ t: { latents: null, ropeKeys: null, indexer: createIndexerCache() }, s: null }));
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
    state.s = { latents: c.latents && tf.keep(c.latents.clone()), ropeKeys: c.ropeKeys && tf.keep(c.ropeKeys.clone()), indexer: cloneIndexerCache(c.indexer) };
  }
  const caches = { t: state.t, s: state.s ?? state.t };
  const scoresT = indexerScores(x.t, qr.t, w.attn.indexer, caches.t.indexer, startPos, { config, maxSeqLen, deviations });
  const scores: Pair = state.s
    ? { t: scoresT, s: indexerScores(x.s, qr.s, w.attn.indexer, state.s.indexer, startPos, { config, maxSeqLen, deviations }) }
    : samePair(scoresT);
  const S = startPos + T;
  judge('indexer.score', [x, qr], (v) => scores[v], (i) => i % S <= startPos + Math.floor(i / S));
  const selected = judgeTopk(trace, opts, rows, step, l, scores, startPos, config.index_topk);
  const cacheRows = { t: mlaLatent(x.t, w.attn, startPos, mla), s: isDirty(x) ? mlaLatent(x.s, w.attn, startPos, mla) : null };
  const latent = both([x], (v) => (v === 's' && cacheRows.s ? cacheRows.s : cacheRows.t).latent);
  const kPe = both([x], (v) => (v === 's' && cacheRows.s ? cacheRows.s : cacheRows.t).kPe);
  const grown = (cached: tf.Tensor2D | null, rows: tf.Tensor2D) => (cached ? tf.concat([cached, rows], 0) : rows) as tf.Tensor2D;
  const sides = [latent, kPe, scores]; // dirty when x is, or when the s side has caches of its own
  const kv = both(sides, (v) => grown(caches[v].latents, latent[v]));
  const pe = both(sides, (v) => grown(caches[v].ropeKeys, kPe[v]));
  for (const v of ['t', 's'] as const) {
    const c = state[v];
    if (!c) continue;
    tf.dispose([c.latents, c.ropeKeys].filter((t): t is tf.Tensor2D => t !== null));
    [c.latents, c.ropeKeys] = [tf.keep(kv[v].clone()), tf.keep(pe[v].clone())];
  }
  const mode = T > 1 ? 'mha' : 'mqa';
  const a = judge('attn.out', [x, kv], (v) => mlaAttend(q(v).qNope, q(v).qPe, kv[v], pe[v], selected, w.attn, startPos, { ...mla, mode }));

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
