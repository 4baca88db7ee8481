/**
 * The lightning indexer of DeepSeek Sparse Attention: index scores I_{t,s} (paper Eq. 1), computed as
 * the official V3.2 inference code computes them (`inference/model.py` Indexer.forward and
 * `kernel.py` fp8_index; docs/spec-notes.md#lightning-indexer):
 *
 *   I_{t,s} = Σ_{j=1}^{HI} w_{t,j} · ReLU(q_{t,j} · k_s)                                   (Eq. 1)
 *
 * with one key k_s per position shared by the HI indexer heads. The official code evaluates it in FP8:
 * q and k are Hadamard-rotated, block-quantized to e4m3 (one scale per token and head for q, one per
 * token for k), and the dot products are taken between the e4m3 values; the scales are folded into
 * the head weights (q) and applied after the head sum (k):
 *
 *   I[t,s] = s_k[s] · Σ_j w'[t,j] · ReLU(q₈[t,j] · k₈[s]),   w'[t,j] = weights_proj(x_t)_j · HI^-½ · s_q[t,j] · DI^-½
 *
 * which equals Eq. 1 on the dequantized q̂ = s_q·q₈, k̂ = s_k·k₈ because the scales are positive.
 *
 * Pipeline (one call, T new tokens at absolute positions startPos..startPos+T−1):
 *   queries  q = wq_b(qr) → [T, HI, DI], RoPE (non-interleaved) on the FIRST R dims of each head
 *   key      k = LayerNorm(wk(x)) → [T, DI], same RoPE on its first R dims; appended to the cache
 *   rotate   Hadamard on q and k (orthonormal: changes only the FP8 error)
 *   quantize act_quant (block 128 = DI) of q and k
 *   weights  w' as above;   scores   fp8Index(q₈, w', cache keys, cache scales)
 *
 * @module
 */
import { tf } from './backend.ts';
import type { ModelConfig } from './config.ts';
import { scaleFmt } from './config.ts';
import type { IndexerWeights } from './checkpoint.ts';
import type { Deviations } from './deviations.ts';
import { actQuant, linear, probeAt, type RoundingProbe } from './fp8.ts';
import { hadamard } from './hadamard.ts';
import { layerNorm } from './norms.ts';
import { asActivation, type Precision } from './precision.ts';
import { applyRope, ropeAngles, ropeParams, yarnFrequencies } from './rope.ts';
import { checkInteger, checkObject, checkTensors, CONFIG_LETTERS, configDims, type Contract, defineContract, INDEXER_WEIGHTS, under } from './internal/contract.ts';

const FP8_INDEX = defineContract('fp8Index', { q8: '[T, HI, DI]', weights: '[T, HI]', keys: '[S, DI]', keyScales: '[S]' });
const INDEXER_ARGS = {
  x: '[T, D]',
  qr: '[T, Dq]',
  ...under('w', INDEXER_WEIGHTS),
  'cache.keys': { shape: '[S, DI]', optional: true },
  'cache.scales': { shape: '[S]', optional: true },
};
const INDEXER_SCORES = defineContract('indexerScores', INDEXER_ARGS, CONFIG_LETTERS);
const INDEXER_SCORES_EXACT = defineContract('indexerScoresExact', INDEXER_ARGS, CONFIG_LETTERS);
import type { WeightMatrix } from './weight_matrix.ts';

/** LayerNorm eps of `k_norm` (official `LayerNorm(head_dim)` default). */
export const INDEXER_K_NORM_EPS = 1e-6;

// --- Indexer key cache ---

/**
 * Per-layer cache of indexer keys (official `k_cache` / `k_scale_cache`): row s holds the key of
 * absolute position s. The tensors are owned by the cache (kept out of any `tf.tidy`); growing the
 * cache disposes the previous ones. Create with {@link createIndexerCache}, free with
 * {@link disposeIndexerCache}.
 */
export interface IndexerCache {
  /** [S, DI] e4m3 values of k₈ as float32 (the exact variant: unquantized k), or null when empty. */
  keys: tf.Tensor2D | null;
  /** [S] per-token k scales s_k (the exact variant: 1), or null when empty. */
  scales: tf.Tensor1D | null;
  /** which variant filled the cache (they must not be mixed); null when empty. */
  mode: 'fp8' | 'exact' | null;
}

/**
 * An empty indexer cache.
 * @example
 * ```ts
 * const cache = createIndexerCache();
 * indexerCacheLength(cache); // => 0
 * ```
 */
export function createIndexerCache(): IndexerCache {
  return { keys: null, scales: null, mode: null };
}

/**
 * Disposes the cache's tensors and empties it (idempotent).
 * @example
 * ```ts
 * const cache = createIndexerCache();
 * disposeIndexerCache(cache);
 * cache.keys; // => null
 * ```
 */
export function disposeIndexerCache(cache: IndexerCache): void {
  checkObject('disposeIndexerCache', 'cache', cache);
  cache.keys?.dispose();
  cache.scales?.dispose();
  cache.keys = null;
  cache.scales = null;
  cache.mode = null;
}

/**
 * Number of cached positions S (the next call's startPos).
 * @example
 * ```ts
 * indexerCacheLength(createIndexerCache()); // => 0
 * ```
 */
export function indexerCacheLength(cache: IndexerCache): number {
  checkObject('indexerCacheLength', 'cache', cache);
  return cache.keys ? cache.keys.shape[0] : 0;
}

/** Options of {@link indexerScores}. */
export interface IndexerOptions {
  /** the checkpoint config (`index_n_heads`, `index_head_dim`, `qk_rope_head_dim`, `quantization_config`, ...). */
  config: ModelConfig;
  /** the run's maximum sequence length (official `max_seq_len`; decides whether YaRN is active). */
  maxSeqLen: number;
  /** true = the pre-fix interleaved RoPE layout (the bug fixed on 2025-11-17); default false (shipped). */
  ropeInterleaved?: boolean;
  /** true = the readers' variant without Hadamard and FP8 (see {@link indexerScoresExact}); default false. */
  exact?: boolean;
  /** activation precision (src/precision.ts); default 'fp32'. */
  precision?: Precision | undefined;
  /** catalogue deviations (src/deviations.ts): `indexer-rope-interleaved` (as `ropeInterleaved`), `indexer-weights-no-scale`. */
  deviations?: Deviations | undefined;
  /**
   * Conformance seam: sees the quantizers of the call (`attn.qr` before wq_b, `attn.in` before wk,
   * `indexer.q` / `indexer.k` after the Hadamard; src/fp8.ts `QuantSite`) and may replace their e4m3 rounding.
   */
  probe?: RoundingProbe;
}

// --- Index scores (Eq. 1), FP8 form of the official kernel ---

/**
 * The official `fp8_index` kernel: index scores from quantized queries and cached quantized keys,
 *
 *   I[t,s] = s_k[s] · Σ_j w'[t,j] · ReLU(q₈[t,j] · k₈[s])          (Eq. 1, scales folded)
 *
 * The dot products are float32 sums of products of e4m3 values (the kernel also accumulates in fp32).
 * Each product of two e4m3 values has ≤ 8 significant bits and is a multiple of 2⁻¹⁸, so a float64
 * sum of 128 of them is exact; float32 rounds partial sums above 2⁶ (2⁻¹⁸ · 2²⁴), i.e. the dot
 * product carries a float32 rounding error ≤ ~DI · 2⁻²⁴ · Σ|q₈ k₈| — the same order as the official
 * kernel's, whose summation order differs.
 *
 * @deviation a float32 `matMul` of the e4m3 values instead of the TileLang FP8 GEMM: equal up to the
 *   float32 summation order (see docs/deviations.md).
 * @param q8 [T, HI, DI] quantized queries (any float values work; the exact variant passes q).
 * @param weights [T, HI] head weights w' (q scales and constants folded in).
 * @param keys [S, DI] cached quantized keys k₈.
 * @param keyScales [S] key scales s_k.
 * @returns [T, S] float32 index scores (no causal mask).
 * @example
 * ```ts
 * const I = fp8Index(tf.tensor3d([[[1, 0], [0, 1]]]), tf.tensor2d([[1, 2]]), tf.tensor2d([[1, 1], [-1, 3]]), tf.tensor1d([1, 0.5]));
 * I.arraySync(); // => [[3, 3]]
 * // s = 0: 1·ReLU(1) + 2·ReLU(1) = 3;   s = 1: 0.5 · (1·ReLU(−1) + 2·ReLU(3)) = 3
 * ```
 */
export function fp8Index(q8: tf.Tensor3D, weights: tf.Tensor2D, keys: tf.Tensor2D, keyScales: tf.Tensor1D): tf.Tensor2D {
  const { T, HI, DI } = checkTensors(FP8_INDEX, { q8, weights, keys, keyScales }) as Record<'T' | 'HI' | 'DI', number>;
  // a long prefill goes in blocks of query rows, so that the [rows, HI, S] intermediates stay within
  // 2²⁴ elements (64 MB); each row's scores are computed on their own, so no value changes
  const rows = Math.max(1, Math.floor(2 ** 24 / (HI * Math.max(1, keys.shape[0]))));
  if (T > rows) {
    return tf.tidy(() => {
      const blocks: tf.Tensor2D[] = [];
      for (let t = 0; t < T; t += rows) {
        const n = Math.min(rows, T - t);
        blocks.push(fp8Index(tf.slice(q8, [t, 0, 0], [n, -1, -1]), tf.slice(weights, [t, 0], [n, -1]), keys, keyScales));
      }
      return tf.concat(blocks, 0) as tf.Tensor2D;
    });
  }
  return tf.tidy(() => {
    const logits = tf.matMul(tf.reshape(q8, [T * HI, DI]), keys, false, true); // [T·HI, S]
    const S = keys.shape[0];
    const perHead = tf.mul(tf.relu(tf.reshape(logits, [T, HI, S])), tf.expandDims(weights, -1)); // [T, HI, S]
    return tf.mul(tf.sum(perHead, 1), tf.expandDims(keyScales, 0)) as tf.Tensor2D; // [T, S]
  });
}

// --- RoPE on the first R dims (indexer layout) ---

/**
 * RoPE of the indexer: the rotary slice is the FIRST R dims of each head ([pe | nope], the opposite of
 * MLA's [nope | pe]) and uses the non-interleaved (rotate-half) pairs (i, i + R/2) — unless
 * `interleaved` asks for the pre-fix layout.
 */
function ropeFirst(v: tf.Tensor, cos: tf.Tensor2D, sin: tf.Tensor2D, R: number, interleaved: boolean): tf.Tensor {
  return tf.tidy(() => {
    const d = v.shape[v.rank - 1]!;
    const [pe, nope] = tf.split(v, [R, d - R], -1) as [tf.Tensor, tf.Tensor];
    return tf.concat([applyRope(pe, cos, sin, interleaved), nope], -1);
  });
}

// --- The indexer forward ---

/**
 * Lightning-indexer scores for T new tokens (official `Indexer.forward` up to the top-k): computes the
 * new keys, appends them to `cache`, and scores every query against all S = startPos + T cached keys.
 *
 *   q[t]  = RoPE_first(wq_b(qr_t))              [HI, DI]   (FP8 linear when wq_b is FP8)
 *   k[t]  = RoPE_first(LayerNorm(wk(x_t)))      [DI]       (eps 1e−6)
 *   q₈, s_q = act_quant(Hd(q)),  k₈, s_k = act_quant(Hd(k))  (block DI = 128, `scaleFmt(config)`)
 *   w'[t,j] = weights_proj(x_t)_j · HI^-½ · s_q[t,j] · DI^-½   (weights_proj in float32)
 *   I[t,s]  = s_k[s] · Σ_j w'[t,j] · ReLU(q₈[t,j] · k₈[s])      (Eq. 1, {@link fp8Index})
 *
 * Semantics that are easy to get wrong: the RoPE slice comes FIRST in each indexer head and uses
 * the non-interleaved pair layout (the November 2025 fix; `ropeInterleaved: true` reproduces the
 * pre-fix bug); k is a single head shared by all HI heads; the FP8 quantization also happens for
 * float32 checkpoints (scale_fmt null → plain amax/448 scales); scores are returned BEFORE the causal
 * mask (row t holds values for s > t too; {@link topk!selectTopK} in src/topk.ts ignores them).
 *
 * @deviation the official code quantizes q and k in blocks of 128 and supports only DI = 128 (one
 *   block per head); here the block is DI, so toy configs with DI < 128 work too (identical for DI = 128).
 *
 * @param x [T, D] the attention input (after attn_norm), D = hidden_size.
 * @param qr [T, Dq] MLA's normalized query latent q_norm(wq_a(x)), Dq = q_lora_rank.
 * @param w the layer's indexer weights (src/checkpoint.ts `IndexerWeights`).
 * @param cache this layer's indexer cache; must hold exactly `startPos` positions; grows by T.
 * @param startPos absolute position of the first token (official `start_pos`).
 * @param opts config, maxSeqLen, `ropeInterleaved` (default false), `exact` (default false).
 * @returns [T, S] float32 index scores, S = startPos + T, before the causal mask.
 * @throws RangeError / TypeError naming the argument on shape, position or cache-mode mismatches.
 * @example
 * ```ts
 * import { CONFIG_671B } from 'dsv32/config';
 * import { selectTopK } from 'dsv32/topk';
 * // a toy layer: D = 8, Dq = 4, HI = 2, DI = 4, R = 2, float32 weights
 * const config = { ...CONFIG_671B, hidden_size: 8, q_lora_rank: 4, index_n_heads: 2, index_head_dim: 4, qk_rope_head_dim: 2, index_topk: 2 };
 * const lin = (o: number, i: number) => ({ weight: tf.randomNormal([o, i], 0, 1, 'float32', 7) as tf.Tensor2D, fp8: false });
 * const w = { wq_b: lin(8, 4), wk: lin(4, 8), weights_proj: lin(2, 8), k_norm: { weight: tf.ones([4]) as tf.Tensor1D, bias: tf.zeros([4]) as tf.Tensor1D } };
 * const cache = createIndexerCache();
 * const x = tf.randomNormal([3, 8], 0, 1, 'float32', 1) as tf.Tensor2D;
 * const qr = tf.randomNormal([3, 4], 0, 1, 'float32', 2) as tf.Tensor2D;
 * const I = indexerScores(x, qr, w, cache, 0, { config, maxSeqLen: 4096 });
 * I.shape; // => [3, 3]
 * selectTopK(I, 0, config.index_topk).shape; // => [3, 2]
 * indexerCacheLength(cache); // => 3  (the next call starts at position 3)
 * ```
 */
export function indexerScores(
  x: tf.Tensor2D,
  qr: tf.Tensor2D,
  w: IndexerWeights<WeightMatrix>,
  cache: IndexerCache,
  startPos: number,
  opts: IndexerOptions,
): tf.Tensor2D {
  const { HI, DI, R, T } = checkArguments(INDEXER_SCORES, x, qr, w, cache, startPos, opts);
  const { config, maxSeqLen } = opts;
  const interleaved = opts.ropeInterleaved ?? opts.deviations?.has('indexer-rope-interleaved') ?? false;
  const exact = opts.exact ?? false;
  const noScale = opts.deviations?.has('indexer-weights-no-scale') ?? false; // the deviation drops HI^-½ · DI^-½
  const act = (t: tf.Tensor) => asActivation(t, opts.precision); // bf16 mode: the official tensor dtype
  const fmt = scaleFmt(config);
  const { cos, sin } = ropeAngles(yarnFrequencies(ropeParams(config, maxSeqLen)), startPos, T); // [T, R/2]

  let newKeys: tf.Tensor2D | null = null;
  let newScales: tf.Tensor1D | null = null;
  let scores: tf.Tensor2D;
  try {
    scores = tf.tidy(() => {
      // --- Queries: q = wq_b(qr), [pe | nope] per head, RoPE on pe ---
      let q = tf.reshape(act(linear(qr, w.wq_b, fmt, probeAt(opts.probe, { input: 'attn.qr', linear: 'indexer.wq_b' }))), [T, HI, DI]); // [T, HI, DI]
      q = act(ropeFirst(q, cos, sin, R, interleaved));

      // --- Key: k = LayerNorm(wk(x)), one head shared by all indexer heads ---
      let k = act(layerNorm(act(linear(x, w.wk, fmt, probeAt(opts.probe, { input: 'attn.in', linear: 'indexer.wk' }))), w.k_norm.weight, w.k_norm.bias, INDEXER_K_NORM_EPS)); // [T, DI]
      k = act(ropeFirst(k, cos, sin, R, interleaved));

      // --- Hadamard rotation and FP8 block quantization (skipped by the exact variant) ---
      let q8: tf.Tensor = q;
      let qScale: tf.Tensor = tf.ones([T, HI]); // [T, HI]
      let k8: tf.Tensor = k;
      let kScale: tf.Tensor = tf.ones([T]); // [T]
      if (!exact) {
        q = act(hadamard(q));
        k = act(hadamard(k));
        const qq = actQuant(q, fmt, DI, probeAt(opts.probe, { input: 'indexer.q', linear: 'indexer.q' })); // one block per (token, head)
        const kq = actQuant(k, fmt, DI, probeAt(opts.probe, { input: 'indexer.k', linear: 'indexer.k' })); // one block per token
        q8 = qq.q;
        qScale = tf.reshape(qq.scale, [T, HI]);
        k8 = kq.q;
        kScale = tf.reshape(kq.scale, [T]);
      }
      // --- Cache: append k₈ and s_k at [startPos, startPos + T) ---
      newKeys = tf.keep(cache.keys ? tf.concat([cache.keys, k8], 0) : tf.reshape(k8, [T, DI])) as tf.Tensor2D; // [S, DI]
      newScales = tf.keep(cache.scales ? tf.concat([cache.scales, kScale], 0) : tf.reshape(kScale, [T])) as tf.Tensor1D; // [S]

      // --- Head weights: w' = weights_proj(x) · HI^-½ · s_q · DI^-½ (official order, float32) ---
      const headW = noScale
        ? tf.mul(linear(x, w.weights_proj, fmt), qScale)
        : tf.mul(tf.mul(tf.mul(linear(x, w.weights_proj, fmt), HI ** -0.5), qScale), DI ** -0.5); // [T, HI]

      // --- Index scores (Eq. 1) ---
      return fp8Index(q8 as tf.Tensor3D, headW as tf.Tensor2D, newKeys, newScales); // [T, S]
    });
  } catch (e) {
    // a throw inside the tidy leaves the kept tensors to us; the cache is unchanged
    tf.dispose([newKeys, newScales].filter((t) => t !== null) as tf.Tensor[]);
    throw e;
  } finally {
    cos.dispose();
    sin.dispose();
  }
  cache.keys?.dispose();
  cache.scales?.dispose();
  cache.keys = newKeys;
  cache.scales = newScales;
  cache.mode = exact ? 'exact' : 'fp8';
  return scores;
}

/**
 * The readers' variant of {@link indexerScores}: Eq. 1 in float32 without the Hadamard rotation and
 * without the FP8 quantization of q and k (what HF transformers and mlx-lm compute,
 * docs/spec-notes.md#other-implementations):
 *
 *   I[t,s] = Σ_j weights_proj(x_t)_j · HI^-½ · DI^-½ · ReLU(q[t,j] · k[s])
 *
 * The linears (wq_b, wk) run as the checkpoint stores them (FP8 weights still quantize their inputs);
 * only steps "Hadamard" and "FP8 quantization of q/k" are skipped. Hd is orthonormal, so without
 * quantization it would not change q·k. Its cache holds unquantized keys (scale 1) and must not be mixed
 * with the FP8 variant's.
 *
 * @deviation not the official numerics: selections can differ from the official code's where two
 *   scores are within FP8 error of each other at the k-th boundary (see docs/deviations.md).
 * @param x [T, D]  @param qr [T, Dq]  (as {@link indexerScores})
 * @returns [T, S] float32 scores before the causal mask.
 * @example
 * ```ts
 * import { CONFIG_671B } from 'dsv32/config';
 * const config = { ...CONFIG_671B, hidden_size: 8, q_lora_rank: 4, index_n_heads: 1, index_head_dim: 2, qk_rope_head_dim: 2 };
 * const lin = (weight: number[][]) => ({ weight: tf.tensor2d(weight), fp8: false });
 * const w = {
 *   wq_b: lin([[0, 0, 0, 0], [0, 0, 0, 0]]),          // q = 0 → every ReLU(q·k) = 0
 *   wk: lin([[1, 0, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0]]),
 *   weights_proj: lin([[1, 0, 0, 0, 0, 0, 0, 0]]),
 *   k_norm: { weight: tf.ones([2]) as tf.Tensor1D, bias: tf.zeros([2]) as tf.Tensor1D },
 * };
 * const I = indexerScoresExact(tf.ones([2, 8]) as tf.Tensor2D, tf.ones([2, 4]) as tf.Tensor2D, w, createIndexerCache(), 0, { config, maxSeqLen: 16 });
 * I.arraySync(); // => [[0, 0], [0, 0]]
 * ```
 */
export function indexerScoresExact(
  x: tf.Tensor2D,
  qr: tf.Tensor2D,
  w: IndexerWeights<WeightMatrix>,
  cache: IndexerCache,
  startPos: number,
  opts: Omit<IndexerOptions, 'exact'>,
): tf.Tensor2D {
  checkArguments(INDEXER_SCORES_EXACT, x, qr, w, cache, startPos, { ...opts, exact: true });
  return indexerScores(x, qr, w, cache, startPos, { ...opts, exact: true });
}

// --- Argument checks ---

function checkArguments(
  contract: Contract,
  x: tf.Tensor2D,
  qr: tf.Tensor2D,
  w: IndexerWeights<WeightMatrix>,
  cache: IndexerCache,
  startPos: number,
  opts: IndexerOptions,
): { HI: number; DI: number; R: number; T: number } {
  const fn = contract.fn;
  checkObject(fn, 'opts', opts);
  checkObject(fn, 'cache', cache);
  const { config, maxSeqLen } = opts;
  const known = configDims(fn, config);
  const { T, HI, DI } = checkTensors(contract, { x, qr, w, cache }, known) as Record<'T' | 'HI' | 'DI', number>;
  const R = config.qk_rope_head_dim;
  if (R % 2 !== 0 || R > DI) {
    throw new RangeError(`${fn}(): config.qk_rope_head_dim must be even and ≤ index_head_dim ${DI} but got ${R}`);
  }
  if (T < 1) throw new RangeError(`${fn}(): x must hold at least one token but got [${x.shape.join(', ')}]`);
  checkInteger(fn, 'startPos', startPos, 0);
  if (!Number.isInteger(maxSeqLen) || maxSeqLen < 1) {
    throw new RangeError(`${fn}(): opts.maxSeqLen must be an integer ≥ 1 but got ${maxSeqLen}`);
  }
  const cached = indexerCacheLength(cache);
  if (!Number.isInteger(startPos) || startPos !== cached) {
    throw new RangeError(`${fn}(): startPos must equal the cache length ${cached} but got ${startPos}`);
  }
  if (startPos + T > maxSeqLen) {
    throw new RangeError(`${fn}(): startPos + T must be ≤ opts.maxSeqLen ${maxSeqLen} but got ${startPos + T}`);
  }
  const mode = opts.exact ? 'exact' : 'fp8';
  if (cache.mode !== null && cache.mode !== mode) {
    throw new TypeError(`${fn}(): cache holds '${cache.mode}' keys but this call computes '${mode}' keys (do not mix the variants)`);
  }
  return { HI, DI, R, T };
}
