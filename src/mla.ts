/**
 * Multi-head Latent Attention (MLA) of DeepSeek-V3.2 with DeepSeek Sparse Attention, as the official
 * inference demo computes it (`inference/model.py` MLA.forward, V3.2 final) [paper §2.1; docs/spec-notes.md#mla,
 * docs/spec-notes.md#selection].
 *
 * Per call (T new tokens at absolute positions startPos .. startPos+T−1, S = end_pos = startPos + T):
 *
 * 1. query path: `qr = RMSNorm_q(wq_a · x)` [T, Dq] (shared with the indexer), `q = wq_b · qr` [T, H, Dqk],
 *    split `[q_nope (Dn) | q_pe (R)]`, `q_pe ← RoPE_interleaved(q_pe, t)`;
 * 2. kv path: `wkv_a · x` [T, C + R] split `[c | k_pe]`, `c ← RMSNorm_kv(c)`, `c ← FP8 round trip(c)`
 *    (act_quant, block 128, V3.2 final: simulates the FP8 KV cache), `k_pe ← RoPE_interleaved(k_pe, t)`;
 *    both appended to the latent cache (one [C] latent and one [R] rope key per position, shared by all heads);
 * 3. the lightning indexer scores every cached position for each query (`indexerScores`, same `qr`) and
 *    `selectTopK` picks S_t (paper Eq. 2);
 * 4. attention over S_t only, in one of two equivalent modes:
 *    - **MHA** (official prefill, T > 1): `[k_nope | v] = wkv_b · c` per head, `k = [k_nope ; k_pe]`,
 *      `o = softmax(scale · q·kᵀ + M) · v`;
 *    - **MQA / absorbed** (official decode, T = 1): `q̃ = W_UKᵀ q_nope` (weight dequantized, activations not
 *      quantized), `ō = softmax(scale · (q̃·cᵀ + q_pe·k_peᵀ) + M) · c`, `o = W_UV · ō`;
 * 5. `out = wo · concat_h o`.
 *
 * `attention` picks how step 4 is computed: `'sparse'` (default, readable reference: gather the selected
 * keys, src/sparse_attention.ts), `'dense'` (official: −∞-masked full score matrix) or `'fast'` (the
 * wasm-tuned kernels of src/sparse_fast.ts, `selectTopKFast` + `sparseAttentionMqaFast`, always in the
 * absorbed form; they read values back with `dataSync`, so no gradient flows through them).
 *
 * `scale = Dqk^−0.5 · mscale²` (YaRN active when maxSeqLen > original_max_position_embeddings).
 *
 * @module
 */
import { tf } from './backend.ts';
import type { AttentionWeights } from './checkpoint.ts';
import { type ModelConfig, qkHeadDim, scaleFmt, softmaxScale } from './config.ts';
import type { Deviations } from './deviations.ts';
import { actQuantDequant, linear, probeAt, type RoundingProbe } from './fp8.ts';
import { createIndexerCache, disposeIndexerCache, indexerScores, type IndexerCache } from './indexer.ts';
import { rmsNorm } from './norms.ts';
import { asActivation, type Precision } from './precision.ts';
import { applyRope, ropeAngles, ropeParams, yarnFrequencies } from './rope.ts';
import { denseAttentionMha, denseAttentionMqa, sparseAttentionMha, sparseAttentionMqa } from './sparse_attention.ts';
import { selectTopKFast, sparseAttentionMqaFast } from './sparse_fast.ts';
import { selectTopK } from './topk.ts';
import { ATTENTION_WEIGHTS, checkChoice, checkInteger, checkObject, checkQueryPositions, checkTensors, CONFIG_LETTERS, configDims, type Contract, defineContract, MLA_CACHE, under } from './internal/contract.ts';

const MLA_QUERY = defineContract('mlaQuery', { x: '[T, D]', ...under('w', ATTENTION_WEIGHTS) }, CONFIG_LETTERS);
const MLA_LATENT = defineContract('mlaLatent', { x: '[T, D]', ...under('w', ATTENTION_WEIGHTS) }, CONFIG_LETTERS);
const MLA_ATTEND = defineContract(
  'mlaAttend',
  { qNope: '[T, H, Dn]', qPe: '[T, H, R]', kv: '[S, C]', pe: '[S, R]', topk: { shape: '[T, K]', dtype: 'int32' }, ...under('w', ATTENTION_WEIGHTS) },
  CONFIG_LETTERS,
);
const MLA_FORWARD = defineContract('mlaForward', { x: '[T, D]', ...under('w', ATTENTION_WEIGHTS), ...under('cache', MLA_CACHE) }, CONFIG_LETTERS);

/** Options and positions shared by the MLA functions; returns the letters the config fixes. */
function checkMlaCall(c: Contract, params: Record<string, unknown>, startPos: unknown, opts: unknown): Record<string, number> {
  const o = checkObject(c.fn, 'opts', opts);
  checkObject(c.fn, 'w', params.w);
  checkInteger(c.fn, 'startPos', startPos, 0);
  checkInteger(c.fn, 'opts.maxSeqLen', o.maxSeqLen, 1);
  return checkTensors(c, params, configDims(c.fn, o.config));
}
import { materialize, type WeightMatrix } from './weight_matrix.ts';

/** Block size of the FP8 round trip of the latent (official `block_size`). */
const LATENT_BLOCK = 128;

// --- Latent KV cache ---

/**
 * Per-layer cache of MLA: the FP8-rounded normalized latents and the rotated rope keys of every position so
 * far (official `kv_cache` [S, C], `pe_cache` [S, R]), plus the indexer's own key cache. Grows by T rows per
 * {@link mlaForward} call; `null` before the first call. Owned by the caller: free it with {@link disposeMlaCache}.
 */
export interface MlaCache {
  /** [S, C] latents c_s (after kv_norm and the FP8 round trip). */
  kv: tf.Tensor2D | null;
  /** [S, R] rope keys k_pe_s, already rotated by position s. */
  pe: tf.Tensor2D | null;
  /** the lightning indexer's key cache of the same layer. */
  indexer: IndexerCache;
}

/**
 * An empty MLA cache (S = 0).
 *
 * @example
 * ```ts
 * const cache = createMlaCache();
 * cache.kv; // => null
 * mlaCacheLength(cache); // => 0
 * ```
 */
export function createMlaCache(): MlaCache {
  return { kv: null, pe: null, indexer: createIndexerCache() };
}

/**
 * Disposes every tensor held by the cache (latents, rope keys, indexer keys) and empties it.
 *
 * @example
 * ```ts
 * const cache = createMlaCache();
 * cache.kv = tf.zeros([2, 8]) as tf.Tensor2D;
 * cache.pe = tf.zeros([2, 4]) as tf.Tensor2D;
 * disposeMlaCache(cache);
 * cache.kv; // => null
 * ```
 */
export function disposeMlaCache(cache: MlaCache): void {
  checkObject('disposeMlaCache', 'cache', cache);
  cache.kv?.dispose();
  cache.pe?.dispose();
  cache.kv = null;
  cache.pe = null;
  disposeIndexerCache(cache.indexer);
}

/**
 * Number of cached positions S (the next call's startPos).
 *
 * @example
 * ```ts
 * mlaCacheLength(createMlaCache()); // => 0
 * ```
 */
export function mlaCacheLength(cache: MlaCache): number {
  checkObject('mlaCacheLength', 'cache', cache);
  return cache.kv ? cache.kv.shape[0] : 0;
}

/**
 * Drops every cached position ≥ `length` (latents, rope keys and the indexer's keys and scales): the
 * cache then holds what it held before the call that started at position `length`. This is the one
 * edit of a cache from outside a forward; the conformance suite uses it to run a layer call again
 * (with other FP8 roundings, src/conformance/fp8/steer.ts).
 *
 * @param cache the layer's cache, holding S ≥ length positions
 * @param length positions to keep, 0 ≤ length ≤ S
 * @throws RangeError when `length` is not an integer in [0, S]
 * @example
 * ```ts
 * const cache = createMlaCache();
 * cache.kv = tf.zeros([3, 8]) as tf.Tensor2D;
 * cache.pe = tf.zeros([3, 4]) as tf.Tensor2D;
 * truncateMlaCache(cache, 1);
 * mlaCacheLength(cache); // => 1
 * truncateMlaCache(cache, 0);
 * cache.kv; // => null
 * ```
 */
export function truncateMlaCache(cache: MlaCache, length: number): void {
  checkObject('truncateMlaCache', 'cache', cache);
  const S = mlaCacheLength(cache);
  if (!Number.isInteger(length) || length < 0 || length > S) {
    throw new RangeError(`truncateMlaCache(): length must be an integer in [0, ${S}] (the cached positions) but got ${length}`);
  }
  if (length === S) return;
  const keep = <T extends tf.Tensor>(t: T | null): T | null => {
    if (t === null) return null;
    const kept = length === 0 ? null : tf.keep(tf.slice(t, 0, length) as T);
    t.dispose();
    return kept;
  };
  cache.kv = keep(cache.kv);
  cache.pe = keep(cache.pe);
  const ix = cache.indexer;
  ix.keys = keep(ix.keys);
  ix.scales = keep(ix.scales);
  if (length === 0) ix.mode = null;
}

// --- Forward ---

/** Options of {@link mlaForward}. */
export interface MlaOptions {
  config: ModelConfig;
  /** inference-time maximum sequence length (official `max_seq_len`): sets YaRN and the softmax scale. */
  maxSeqLen: number;
  /** 'mha' (expand keys/values per head) or 'mqa' (absorbed). Default as the official code: mha iff T > 1. */
  mode?: 'mha' | 'mqa';
  /**
   * 'sparse' = O(T·k) gather (default, the readable reference), 'dense' = −∞-masked full score matrix
   * (official), 'fast' = the wasm-tuned kernels of src/sparse_fast.ts (`selectTopKFast`,
   * `sparseAttentionMqaFast`): same results up to float32 summation order, always computed in the absorbed
   * MQA form (also for mode 'mha'), and not differentiable (the kernels read values back with `dataSync`).
   */
  attention?: 'sparse' | 'dense' | 'fast';
  /** indexer RoPE layout; default the V3.2 final non-interleaved layout (true reproduces the pre-fix bug). */
  indexerRopeInterleaved?: boolean;
  /** activation precision (src/precision.ts); default 'fp32'. */
  precision?: Precision;
  /** catalogue deviations to apply (src/deviations.ts): `kv-latent-no-fp8-roundtrip`, `softmax-no-mscale`, the indexer's. */
  deviations?: Deviations;
  /**
   * Conformance seam: sees every FP8 activation quantizer of the call (`attn.in` before wq_a / wkv_a /
   * indexer wk, `attn.qr` before wq_b / indexer wq_b, `kv.latent`, `wkv_b.in`, `wo.in`, `indexer.q`,
   * `indexer.k`; src/fp8.ts `QuantSite`) and may replace its e4m3 rounding. Absent: the plain computation.
   */
  probe?: RoundingProbe;
}

/** What {@link mlaForward} returns (all owned by the caller). */
export interface MlaOutput {
  /** [T, D] attention output after wo. */
  out: tf.Tensor2D;
  /** [T, Dq] q_norm(wq_a(x)), shared with the indexer. */
  qr: tf.Tensor2D;
  /** [T, S] index scores I_{t,s} (before the causal mask). */
  indexScores: tf.Tensor2D;
  /** [T, min(k, S)] int32 selected positions per query, ascending, −1 padded. */
  topk: tf.Tensor2D;
}

// --- Query path (official MLA.forward: wq_a → q_norm → wq_b) ---

/**
 * The queries of T tokens: `qr = RMSNorm_q(wq_a · x)`, `q = wq_b · qr` split per head into
 * `[q_nope | q_pe]`, `q_pe` rotated (interleaved pairs) by its position. FP8 linears quantize their inputs.
 *
 * @param x [T, D]
 * @param w attention weights
 * @param startPos position of row 0
 * @param opts config and maxSeqLen (YaRN frequencies)
 * @returns qr [T, Dq], qNope [T, H, Dn], qPe [T, H, R] (caller disposes)
 * @example
 * ```ts
 * import { loadConfig, openCheckpoint } from 'dsv32/node';
 * import { loadLayerWeights } from 'dsv32/checkpoint';
 * const dir = 'fixtures/golden/public-fp32'; // H = 4, Dq = 128, C = 128, Dn = 64, R = 32, Dv = 64, k = 16
 * const config = loadConfig(`${dir}/config.json`);
 * const layer = loadLayerWeights(openCheckpoint(dir), config, 1);
 * const x = tf.randomNormal([3, config.hidden_size], 0, 1, 'float32', 1) as tf.Tensor2D;
 * const { qr, qNope, qPe } = mlaQuery(x, layer.attn, 0, { config, maxSeqLen: 8192 });
 * qr.shape; // => [3, 128]
 * qNope.shape; // => [3, 4, 64]
 * qPe.shape; // => [3, 4, 32]
 * ```
 */
export function mlaQuery(
  x: tf.Tensor2D,
  w: AttentionWeights<WeightMatrix>,
  startPos: number,
  opts: Pick<MlaOptions, 'config' | 'maxSeqLen' | 'precision' | 'probe'>,
): { qr: tf.Tensor2D; qNope: tf.Tensor3D; qPe: tf.Tensor3D } {
  const { T } = checkMlaCall(MLA_QUERY, { x, w }, startPos, opts) as Record<'T', number>;
  const { config, maxSeqLen } = opts;
  const act = (t: tf.Tensor) => asActivation(t, opts.precision); // bf16 mode: the official tensor dtype
  const H = config.num_attention_heads;
  const Dn = config.qk_nope_head_dim;
  const R = config.qk_rope_head_dim;
  const sf = scaleFmt(config);
  return tf.tidy(() => {
    const { cos, sin } = ropeAngles(yarnFrequencies(ropeParams(config, maxSeqLen)), startPos, T); // [T, R/2]
    const qr = act(rmsNorm(act(linear(x, w.wq_a, sf, probeAt(opts.probe, { input: 'attn.in', linear: 'wq_a' }))), w.q_norm, config.rms_norm_eps)) as tf.Tensor2D; // [T, Dq]
    const q = act(linear(qr, w.wq_b, sf, probeAt(opts.probe, { input: 'attn.qr', linear: 'wq_b' }))).reshape([T, H, Dn + R]); // [T, H, Dqk]
    const qNope = q.slice([0, 0, 0], [T, H, Dn]) as tf.Tensor3D; // [T, H, Dn]
    const qPe = act(applyRope(q.slice([0, 0, Dn], [T, H, R]), cos, sin, true)) as tf.Tensor3D; // [T, H, R]
    return { qr, qNope, qPe };
  });
}

// --- KV path (official MLA.forward: wkv_a → kv_norm → FP8 round trip; k_pe rotated) ---

/**
 * The cache entries of T tokens: `[c | k_pe] = wkv_a · x`, `c ← RMSNorm_kv(c)`, then the V3.2 FP8 round trip
 * `latent = dequant(act_quant(c, scaleFmt(config), 128))` (official: "we use fp8 kv cache in actual
 * deployment, so here we simulate the precision"), and `k_pe` rotated (interleaved pairs). k_pe is not quantized.
 *
 * @param x [T, D]
 * @param w attention weights
 * @param startPos position of row 0
 * @param opts config and maxSeqLen
 * @returns normalized c [T, C] (before the round trip, for diagnostics), latent [T, C], kPe [T, R]
 * @example
 * ```ts
 * import { loadConfig, openCheckpoint } from 'dsv32/node';
 * import { loadLayerWeights } from 'dsv32/checkpoint';
 * const dir = 'fixtures/golden/public-fp32'; // H = 4, Dq = 128, C = 128, Dn = 64, R = 32, Dv = 64, k = 16
 * const config = loadConfig(`${dir}/config.json`);
 * const layer = loadLayerWeights(openCheckpoint(dir), config, 1);
 * const x = tf.randomNormal([3, config.hidden_size], 0, 1, 'float32', 1) as tf.Tensor2D;
 * const { normalized, latent, kPe } = mlaLatent(x, layer.attn, 0, { config, maxSeqLen: 8192 });
 * latent.shape; // => [3, 128]
 * kPe.shape; // => [3, 32]
 * tf.any(tf.notEqual(latent, normalized)).arraySync(); // => 1   (the FP8 round trip moved some values)
 * ```
 */
export function mlaLatent(
  x: tf.Tensor2D,
  w: AttentionWeights<WeightMatrix>,
  startPos: number,
  opts: Pick<MlaOptions, 'config' | 'maxSeqLen' | 'precision' | 'deviations' | 'probe'>,
): { normalized: tf.Tensor2D; latent: tf.Tensor2D; kPe: tf.Tensor2D } {
  const { T } = checkMlaCall(MLA_LATENT, { x, w }, startPos, opts) as Record<'T', number>;
  const { config, maxSeqLen } = opts;
  const act = (t: tf.Tensor) => asActivation(t, opts.precision); // bf16 mode: the official tensor dtype
  const roundTrip = !opts.deviations?.has('kv-latent-no-fp8-roundtrip'); // V3.2-Exp had no round trip
  const C = config.kv_lora_rank;
  const R = config.qk_rope_head_dim;
  const sf = scaleFmt(config);
  return tf.tidy(() => {
    const { cos, sin } = ropeAngles(yarnFrequencies(ropeParams(config, maxSeqLen)), startPos, T); // [T, R/2]
    const kvA = act(linear(x, w.wkv_a, sf, probeAt(opts.probe, { input: 'attn.in', linear: 'wkv_a' }))); // [T, C + R]
    const normalized = act(rmsNorm(kvA.slice([0, 0], [T, C]), w.kv_norm, config.rms_norm_eps)) as tf.Tensor2D; // [T, C]
    const latent = (roundTrip
      ? act(actQuantDequant(normalized, sf, latentBlock(C), probeAt(opts.probe, { input: 'kv.latent', linear: 'kv_norm' })))
      : normalized.clone()) as tf.Tensor2D; // [T, C] FP8 round trip
    const kPe = act(applyRope(kvA.slice([0, C], [T, R]), cos, sin, true)) as tf.Tensor2D; // [T, R]
    return { normalized, latent, kPe };
  });
}

// --- Attention over the selected set (Eq. 2), MHA or absorbed MQA mode, then wo ---

/**
 * Core attention of T queries over the latent cache, restricted to each query's selected positions, then
 * the output projection: `out = wo · concat_h o[t,h]`.
 *
 * - 'mha': `[k_nope | v] = wkv_b · c_s` per head (an FP8 wkv_b quantizes the latent again, as the official
 *   prefill does), `k = [k_nope ; k_pe]`, `o = Σ_s softmax(scale · [q_nope ; q_pe]·k) v`.
 *   FLOPs beyond attention: `2 · S · C · H(Dn + Dv)` to expand every cached latent.
 * - 'mqa': `q̃ = W_UKᵀ q_nope` with the dequantized wkv_b (no activation quantization, official decode),
 *   `ō = Σ_s softmax(scale · (q̃·c_s + q_pe·k_pe_s)) c_s`, `o = W_UV ō`.
 *   FLOPs beyond attention: `2 · T · H · C(Dn + Dv)` (absorption), independent of S.
 *
 * `attention: 'fast'` runs the 'mqa' computation with `sparseAttentionMqaFast` in either mode (no
 * gradient: the kernel reads its inputs back with `dataSync`).
 *
 * @deviation scores and softmax in float32 (the V3.2 demo computes them in bf16).
 * @deviation `attention: 'fast'` with mode 'mha' computes the absorbed form, so an FP8 wkv_b does not
 *   quantize the latent again (the official prefill does; the golden traces pass either way).
 * @param qNope [T, H, Dn]
 * @param qPe [T, H, R] rotated
 * @param kv [S, C] cached latents
 * @param pe [S, R] cached rope keys
 * @param topk [T, K] int32 selected positions (−1 padded)
 * @param w attention weights (wkv_b, wo)
 * @param startPos position of query row 0
 * @param opts config, maxSeqLen (softmax scale), mode (required), attention (default 'sparse'; 'fast' always absorbed)
 * @returns out [T, D]
 * @example
 * ```ts
 * import { loadConfig, openCheckpoint } from 'dsv32/node';
 * import { loadLayerWeights } from 'dsv32/checkpoint';
 * const dir = 'fixtures/golden/public-fp32'; // H = 4, Dq = 128, C = 128, Dn = 64, R = 32, Dv = 64, k = 16
 * const config = loadConfig(`${dir}/config.json`);
 * const layer = loadLayerWeights(openCheckpoint(dir), config, 1);
 * const x = tf.randomNormal([3, config.hidden_size], 0, 1, 'float32', 1) as tf.Tensor2D;
 * const opts = { config, maxSeqLen: 8192 };
 * const { qNope, qPe } = mlaQuery(x, layer.attn, 0, opts);
 * const { latent, kPe } = mlaLatent(x, layer.attn, 0, opts);
 * const topk = tf.tensor2d([[0, -1, -1], [0, 1, -1], [0, 1, 2]], [3, 3], 'int32'); // dense causal
 * const mha = mlaAttend(qNope, qPe, latent, kPe, topk, layer.attn, 0, { ...opts, mode: 'mha' });
 * const mqa = mlaAttend(qNope, qPe, latent, kPe, topk, layer.attn, 0, { ...opts, mode: 'mqa' });
 * mha.shape; // => [3, 256]
 * tf.max(tf.abs(tf.sub(mha, mqa))).arraySync() < 1e-5; // => true
 * ```
 */
export function mlaAttend(
  qNope: tf.Tensor3D,
  qPe: tf.Tensor3D,
  kv: tf.Tensor2D,
  pe: tf.Tensor2D,
  topk: tf.Tensor2D,
  w: AttentionWeights<WeightMatrix>,
  startPos: number,
  opts: Pick<MlaOptions, 'config' | 'maxSeqLen' | 'attention' | 'precision' | 'deviations' | 'probe'> & { mode: 'mha' | 'mqa' },
): tf.Tensor2D {
  const { T, H, Dn, S, C } = checkMlaCall(MLA_ATTEND, { qNope, qPe, kv, pe, topk, w }, startPos, opts) as Record<'T' | 'H' | 'Dn' | 'S' | 'C', number>;
  checkQueryPositions('mlaAttend', startPos, S, T, 'S from kv, T from qNope');
  checkChoice('mlaAttend', 'opts.mode', opts.mode, ['mha', 'mqa']);
  checkChoice('mlaAttend', 'opts.attention', opts.attention ?? 'sparse', ['sparse', 'dense', 'fast']);
  const { config, mode } = opts;
  const attention = opts.attention ?? 'sparse';
  const R = config.qk_rope_head_dim;
  const Dv = config.v_head_dim;
  const sf = scaleFmt(config);
  const scale = opts.deviations?.has('softmax-no-mscale')
    ? qkHeadDim(config) ** -0.5 // the deviation: YaRN's mscale² left out
    : softmaxScale(config, opts.maxSeqLen);
  const act = (t: tf.Tensor) => asActivation(t, opts.precision); // bf16 mode: the official tensor dtype
  return tf.tidy(() => {
    let o: tf.Tensor3D; // [T, H, Dv]
    if (mode === 'mha' && attention !== 'fast') {
      const cached = { input: 'wkv_b.in', linear: 'wkv_b', tokens: Array.from({ length: S }, (_, s) => s - startPos) } as const; // rows = positions
      const kvB = act(linear(kv, w.wkv_b, sf, probeAt(opts.probe, cached))).reshape([S, H, Dn + Dv]); // [S, H, Dn + Dv]
      const kNope = kvB.slice([0, 0, 0], [S, H, Dn]); // [S, H, Dn]
      const v = kvB.slice([0, 0, Dn], [S, H, Dv]) as tf.Tensor3D; // [S, H, Dv]
      const k = tf.concat([kNope, tf.broadcastTo(pe.reshape([S, 1, R]), [S, H, R])], 2) as tf.Tensor3D; // [S, H, Dqk]
      const q = tf.concat([qNope, qPe], 2) as tf.Tensor3D; // [T, H, Dqk]
      o = attention === 'sparse'
        ? sparseAttentionMha(q, k, v, topk, startPos, scale)
        : denseAttentionMha(q, k, v, topk, startPos, scale);
    } else {
      const wkvB = materialize(w.wkv_b.weight).reshape([H, Dn + Dv, C]); // [H, Dn + Dv, C], dequantized, no act_quant
      const wUK = wkvB.slice([0, 0, 0], [H, Dn, C]); // [H, Dn, C]
      const wUV = wkvB.slice([0, Dn, 0], [H, Dv, C]); // [H, Dv, C]
      const qLatent = act(tf.matMul(qNope.transpose([1, 0, 2]), wUK).transpose([1, 0, 2])) as tf.Tensor3D; // [T, H, C]
      const oLatent = attention === 'fast'
        ? sparseAttentionMqaFast(qLatent, qPe, kv, pe, topk, startPos, scale)
        : attention === 'sparse'
          ? sparseAttentionMqa(qLatent, qPe, kv, pe, topk, startPos, scale)
          : denseAttentionMqa(qLatent, qPe, kv, pe, topk, startPos, scale); // [T, H, C]
      o = tf.matMul(act(oLatent).transpose([1, 0, 2]), wUV, false, true).transpose([1, 0, 2]) as tf.Tensor3D; // [T, H, Dv]
    }
    return act(linear(act(o).reshape([T, H * Dv]), w.wo, sf, probeAt(opts.probe, { input: 'wo.in', linear: 'wo' }))) as tf.Tensor2D; // [T, D]
  });
}

// --- The whole layer call ---

/**
 * One MLA + DSA attention call for T tokens at positions startPos .. startPos+T−1 (official `MLA.forward`;
 * formulas in the module comment): {@link mlaQuery}, {@link mlaLatent}, the lightning indexer and
 * `selectTopK`, append to `cache`, then {@link mlaAttend} from each query t to its selected set S_t ⊆ {0..t}
 * over all cached positions.
 *
 * Equivalences (tested): prefill of n ≡ prefill m + decode n−m ≡ prefill m + prefill n−m; mode 'mha' ≡ 'mqa';
 * attention 'sparse' ≡ 'dense' ≡ 'fast' (all up to float32 rounding; 'fast' selects with `selectTopKFast`,
 * which returns the same sets as `selectTopK`, and is not differentiable).
 *
 * @deviation the official prefill branch attends only to the keys of the current call (it assumes
 *   startPos = 0); here a prefill at startPos > 0 attends to every cached key, so chunked prefill is exact.
 * @deviation default `attention: 'sparse'` gathers the selected keys instead of masking the dense score
 *   matrix (official); the softmax sums the same terms in another order.
 * @param x [T, D] attention input (after attn_norm)
 * @param w the layer's attention weights (src/checkpoint.ts)
 * @param cache this layer's cache; must hold exactly startPos positions
 * @param startPos absolute position of x's first row
 * @param opts config, maxSeqLen, mode, attention, indexerRopeInterleaved
 * @returns out [T, D], qr [T, Dq], indexScores [T, S], topk [T, min(k, S)]
 * @throws RangeError for shapes that do not match the config, startPos ≠ cache length, or
 *   startPos + T > maxSeqLen; TypeError for an unknown mode or attention
 * @example
 * ```ts
 * import { loadConfig, openCheckpoint } from 'dsv32/node';
 * import { loadLayerWeights } from 'dsv32/checkpoint';
 * const dir = 'fixtures/golden/public-fp32'; // H = 4, Dq = 128, C = 128, Dn = 64, R = 32, Dv = 64, k = 16
 * const config = loadConfig(`${dir}/config.json`);
 * const layer = loadLayerWeights(openCheckpoint(dir), config, 1);
 * const x = tf.randomNormal([3, config.hidden_size], 0, 1, 'float32', 1) as tf.Tensor2D;
 * const cache = createMlaCache();
 * const pre = mlaForward(x, layer.attn, cache, 0, { config, maxSeqLen: 8192 }); // MHA prefill of 3 tokens
 * pre.out.shape; // => [3, 256]
 * pre.topk.arraySync(); // => [[0, -1, -1], [0, 1, -1], [0, 1, 2]]
 * const dec = mlaForward(x.slice([0, 0], [1, -1]), layer.attn, cache, 3, { config, maxSeqLen: 8192 }); // MQA decode at t = 3
 * dec.indexScores.shape; // => [1, 4]
 * mlaCacheLength(cache); // => 4
 * disposeMlaCache(cache);
 * ```
 */
export function mlaForward(
  x: tf.Tensor2D,
  w: AttentionWeights<WeightMatrix>,
  cache: MlaCache,
  startPos: number,
  opts: MlaOptions,
): MlaOutput {
  const { config, maxSeqLen } = opts;
  const T = checkInputs(x, w, cache, startPos, opts);
  const mode = opts.mode ?? (T > 1 ? 'mha' : 'mqa');

  const { qr, qNope, qPe } = mlaQuery(x, w, startPos, opts);
  const { normalized, latent, kPe } = mlaLatent(x, w, startPos, opts);
  normalized.dispose();

  // --- Lightning indexer and top-k selection (Eq. 1, Eq. 2) ---
  let indexScores: tf.Tensor2D | undefined;
  let topk: tf.Tensor2D;
  try {
    indexScores = indexerScores(x, qr, w.indexer, cache.indexer, startPos, {
      config,
      maxSeqLen,
      ropeInterleaved: opts.indexerRopeInterleaved,
      precision: opts.precision,
      deviations: opts.deviations,
      ...(opts.probe ? { probe: opts.probe } : {}),
    });
    topk = opts.attention === 'fast'
      ? selectTopKFast(indexScores, startPos, config.index_topk)
      : selectTopK(indexScores, startPos, config.index_topk);
  } catch (e) {
    tf.dispose([qr, qNope, qPe, latent, kPe, ...(indexScores ? [indexScores] : [])]);
    throw e;
  }

  // --- Append to the latent cache (official kv_cache / pe_cache at [start_pos, end_pos)) ---
  appendCache(cache, latent, kPe);

  let out: tf.Tensor2D;
  try {
    out = mlaAttend(qNope, qPe, cache.kv!, cache.pe!, topk, w, startPos, { ...opts, mode });
  } catch (e) {
    tf.dispose([qr, indexScores, topk]);
    throw e;
  } finally {
    tf.dispose([qNope, qPe]);
  }
  return { out, qr, indexScores, topk };
}

// --- Helpers ---

/**
 * Block of the latent's FP8 round trip: 128 (official), or C itself for toy configs with C < 128.
 * @deviation the official code supports only C divisible by 128; a C < 128 is quantized as one block.
 */
function latentBlock(C: number): number {
  return C < LATENT_BLOCK ? C : LATENT_BLOCK;
}

/**
 * Appends [T, C] latents and [T, R] rope keys to the cache (takes ownership of both). The cache's tensors
 * are kept out of any enclosing `tf.tidy` (the cache outlives the call), as the indexer's keys are.
 */
function appendCache(cache: MlaCache, latent: tf.Tensor2D, kPe: tf.Tensor2D): void {
  if (cache.kv === null || cache.pe === null) {
    cache.kv = tf.keep(latent);
    cache.pe = tf.keep(kPe);
    return;
  }
  const kv = tf.keep(tf.concat([cache.kv, latent], 0) as tf.Tensor2D);
  const pe = tf.keep(tf.concat([cache.pe, kPe], 0) as tf.Tensor2D);
  tf.dispose([cache.kv, cache.pe, latent, kPe]);
  cache.kv = kv;
  cache.pe = pe;
}

/** Validates everything {@link mlaForward} can check before computing; returns T. */
function checkInputs(x: tf.Tensor2D, w: AttentionWeights<WeightMatrix>, cache: MlaCache, startPos: number, opts: MlaOptions): number {
  const fn = 'mlaForward()';
  checkObject('mlaForward', 'cache', cache);
  const C = checkObject('mlaForward', 'opts', opts).config ? opts.config.kv_lora_rank : undefined;
  if (typeof C === 'number' && C > LATENT_BLOCK && C % LATENT_BLOCK !== 0) {
    throw new RangeError(`${fn}: config.kv_lora_rank must be < ${LATENT_BLOCK} or divisible by ${LATENT_BLOCK} (FP8 latent block) but got ${C}`);
  }
  const { T } = checkMlaCall(MLA_FORWARD, { x, w, cache }, startPos, opts) as Record<'T', number>;
  const { maxSeqLen } = opts;
  if (T < 1) throw new RangeError(`${fn}: x must hold at least one token but got [${x.shape.join(', ')}]`);
  if (opts.mode !== undefined && opts.mode !== 'mha' && opts.mode !== 'mqa') {
    throw new TypeError(`${fn}: opts.mode must be 'mha' or 'mqa' but got '${String(opts.mode)}'`);
  }
  if (opts.attention !== undefined && opts.attention !== 'sparse' && opts.attention !== 'dense' && opts.attention !== 'fast') {
    throw new TypeError(`${fn}: opts.attention must be 'sparse', 'dense' or 'fast' but got '${String(opts.attention)}'`);
  }
  const cached = mlaCacheLength(cache);
  if (!Number.isSafeInteger(startPos) || startPos !== cached) {
    throw new RangeError(`${fn}: startPos must equal the number of cached positions (${cached}) but got ${startPos}`);
  }
  if (startPos + T > maxSeqLen) {
    throw new RangeError(`${fn}: startPos + T must be ≤ maxSeqLen = ${maxSeqLen} but got ${startPos} + ${T} = ${startPos + T}`);
  }
  return T;
}
