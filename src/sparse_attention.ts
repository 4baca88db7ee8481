/**
 * DeepSeek Sparse Attention: core attention restricted to the keys the lightning indexer selected
 * (V3.2 report §2.1, Eq. 2: `u_t = Attn(h_t, { c_s | I_{t,s} ∈ Top-k(I_{t,:}) })`).
 *
 * Two ways to compute the same thing, kept side by side:
 *
 * - **gather** ({@link sparseAttentionMqa}, {@link sparseAttentionMha}): for a block of queries, gather the
 *   selected keys of every query (k rows, not S) and attend over them only. Never builds a T×S score
 *   matrix: O(T·k) work and memory. Slots padded with −1 (rows with t + 1 < k select every earlier
 *   position and nothing else) get score −∞, i.e. weight exp(−∞) = 0, and read position 0 instead of a
 *   real key, so a padding slot can never touch a future key.
 * - **dense masked** ({@link denseAttentionMqa}, {@link denseAttentionMha}): what the official demo does
 *   (`inference/model.py` MLA.forward): the full [T, S] score matrix of every head plus an additive
 *   mask, 0 on selected positions s ≤ t and −∞ elsewhere ({@link causalSelectionMask}). O(T·S) work.
 *
 * Both normalize the softmax over the selected set S_t only, so they agree up to float summation order
 * (docs/spec-notes.md#selection). MQA mode = MLA's absorbed mode (one latent key c_s and one rope key shared by all heads,
 * queries already multiplied by W_UK); MHA mode = per-head keys and values expanded by `wkv_b`.
 *
 * Shape letters: docs/conventions.md (T queries, S key positions, K selected slots, H heads, C latent,
 * R rope dim, Dqk = Dn + R, Dv value dim).
 *
 * @module
 */
import { tf } from './backend.ts';
import { selectionMask } from './topk.ts';
import { checkFiniteNumber, checkInteger, checkQueryPositions, checkTensors, defineContract, MHA_ARGS, MQA_ARGS } from './internal/contract.ts';

const CAUSAL_SELECTION_MASK = defineContract('causalSelectionMask', { topk: { shape: '[T, K]', dtype: 'int32' } });
const SPARSE_MQA = defineContract('sparseAttentionMqa', MQA_ARGS);
const SPARSE_MHA = defineContract('sparseAttentionMha', MHA_ARGS);
const DENSE_MQA = defineContract('denseAttentionMqa', MQA_ARGS);
const DENSE_MHA = defineContract('denseAttentionMha', MHA_ARGS);

/** Options of the gather path. */
export interface GatherOptions {
  /** queries per block (memory bound: one block holds [Tb, K, C + R] gathered keys). Default 64. */
  queryBlock?: number;
}

// --- Selection as an additive mask (official MLA.forward index_mask + causal mask) ---

/**
 * The additive mask the official code adds to every head's scores: `M[t, s] = 0` when s is selected for
 * query t and s ≤ t, −∞ otherwise (official: `index_mask = full(−inf).scatter_(topk, 0)`, then
 * `index_mask += causal_mask`). The selection part is `selectionMask` of src/topk.ts; −1 selects nothing.
 *
 * @param topk [T, K] int32 selected absolute positions per query row (any order; −1 = empty slot)
 * @param S number of key positions (columns of the mask)
 * @param startPos absolute position of query row 0 (row i is at t = startPos + i)
 * @returns [T, S] float32 of 0 and −∞
 * @example
 * ```ts
 * // row 0 is t = 1: position 2 is in its future
 * causalSelectionMask(tf.tensor2d([[0, 2], [0, 2]], [2, 2], 'int32'), 3, 1).arraySync(); // => [[0, -Infinity, -Infinity], [0, -Infinity, 0]]
 * ```
 */
export function causalSelectionMask(topk: tf.Tensor2D, S: number, startPos: number): tf.Tensor2D {
  const fn = 'causalSelectionMask';
  const { T } = checkTensors(CAUSAL_SELECTION_MASK, { topk }) as Record<'T', number>;
  checkInteger(fn, 'S', S, 1);
  checkQueryPositions(fn, startPos, S, T, 'S is the argument S, T from topk');
  return tf.tidy(() => {
    const selection = selectionMask(topk, S); // [T, S] 0 | −∞
    return tf.where(causalMask(T, S, startPos), selection, tf.fill([T, S], -Infinity)) as tf.Tensor2D;
  });
}

// --- Gather path, MQA / absorbed mode (Eq. 2 as deployed: FlashMLA sparse) ---

/**
 * Sparse attention over the latent cache in MLA's absorbed (MQA) mode, by gathering the selected rows.
 * For query t, head h, selected slot j (position s = topk[t, j]):
 *
 *   `z[h,t,j] = scale · (q̃[t,h] · c_s + q_pe[t,h] · k_pe_s)`, `p = softmax_j(z)` over valid slots only,
 *   `ō[t,h] = Σ_j p[h,t,j] · c_s`
 *
 * where `q̃ = W_UKᵀ q_nope` (absorbed, size C) — official MLA.forward decode branch, restricted to S_t.
 * Each query's latents [K, C] and rope keys [K, R] are gathered once and serve all H heads.
 * A slot is valid iff `0 ≤ topk[t, j] ≤ t`; invalid slots (−1 padding, or a future position, which the
 * official causal mask would remove) score −∞ and read row 0 instead, so rows > t are never read.
 * Every row must have at least one valid slot (else the softmax is 0/0 = NaN, as in the official code).
 *
 * FLOPs: `T · K · 2H(2C + R)` (scores 2H(C+R) + weighted sum 2HC per (query, slot)); memory per block
 * `Tb · K · (C + R)` gathered floats + `Tb · H · K` scores. Independent of S.
 *
 * @param qLatent [T, H, C] absorbed no-rope queries q̃
 * @param qPe [T, H, R] rotated rope queries
 * @param kv [S, C] latent cache (normalized, FP8-rounded latents c_s); rows ≥ startPos + T are never read
 * @param pe [S, R] rotated rope keys
 * @param topk [T, K] int32 selected positions per query (any order, −1 = padding)
 * @param startPos absolute position of query row 0
 * @param scale softmax scale (`softmaxScale(config, maxSeqLen)`)
 * @returns ō [T, H, C] (apply W_UV and wo outside)
 * @example
 * ```ts
 * // one query at t = 1 selecting both keys: plain softmax attention over 2 latents
 * const o = sparseAttentionMqa(tf.ones([1, 1, 2]), tf.zeros([1, 1, 1]), tf.tensor2d([[1, 0], [0, 1]]),
 *   tf.zeros([2, 1]), tf.tensor2d([[0, 1]], [1, 2], 'int32'), 1, 1);
 * o.arraySync(); // => [[[0.5, 0.5]]]
 * ```
 */
export function sparseAttentionMqa(
  qLatent: tf.Tensor3D,
  qPe: tf.Tensor3D,
  kv: tf.Tensor2D,
  pe: tf.Tensor2D,
  topk: tf.Tensor2D,
  startPos: number,
  scale: number,
  opts: GatherOptions = {},
): tf.Tensor3D {
  const fn = 'sparseAttentionMqa';
  const { T, H, C, S, R } = checkTensors(SPARSE_MQA, { qLatent, qPe, kv, pe, topk }) as Record<'T' | 'H' | 'C' | 'S' | 'R', number>;
  checkQueryPositions(fn, startPos, S, T, 'S from kv, T from qLatent');
  checkFiniteNumber(fn, 'scale', scale);
  const queryBlock = checkBlock(fn, opts.queryBlock);
  return tf.tidy(() => {
    const blocks: tf.Tensor3D[] = [];
    for (let b0 = 0; b0 < T; b0 += queryBlock) {
      const Tb = Math.min(queryBlock, T - b0);
      const { index, valid } = slots(topk.slice([b0, 0], [Tb, -1]), startPos + b0); // [Tb, K]
      const kvG = tf.gather(kv, index); // [Tb, K, C] — gathered once for all heads
      const peG = tf.gather(pe, index); // [Tb, K, R]
      const qL = qLatent.slice([b0, 0, 0], [Tb, H, C]); // [Tb, H, C]
      const qR = qPe.slice([b0, 0, 0], [Tb, H, R]); // [Tb, H, R]
      const z = tf.add(tf.matMul(qL, kvG, false, true), tf.matMul(qR, peG, false, true)).mul(scale); // [Tb, H, K]
      const p = tf.softmax(tf.where(valid.expandDims(1), z, tf.scalar(-Infinity))); // [Tb, H, K]
      blocks.push(tf.matMul(p, kvG)); // [Tb, H, C]
    }
    return (blocks.length === 1 ? blocks[0]! : tf.concat(blocks, 0)) as tf.Tensor3D;
  });
}

// --- Gather path, MHA mode (per-head keys and values) ---

/**
 * Sparse attention with per-head keys and values (MLA's MHA mode, keys `[k_nope ; k_pe]`, values from
 * `wkv_b`), by gathering the selected rows: `o[t,h] = Σ_j softmax_j(scale · q[t,h]·k[s_j,h]) · v[s_j,h]`
 * over valid slots `0 ≤ s_j ≤ t` only (same slot rule as {@link sparseAttentionMqa}).
 *
 * FLOPs: `T · K · 2H(Dqk + Dv)`; memory per block `Tb · K · H · (Dqk + Dv)` gathered floats.
 *
 * @param q [T, H, Dqk] queries `[q_nope ; q_pe]`
 * @param k [S, H, Dqk] keys; rows > t are never read for query t
 * @param v [S, H, Dv] values
 * @param topk [T, K] int32 selected positions (any order, −1 = padding)
 * @param startPos absolute position of query row 0
 * @param scale softmax scale
 * @returns o [T, H, Dv]
 * @example
 * ```ts
 * const o = sparseAttentionMha(tf.zeros([1, 1, 2]), tf.zeros([2, 1, 2]), tf.tensor3d([[[2]], [[4]]]),
 *   tf.tensor2d([[1, -1]], [1, 2], 'int32'), 1, 1);
 * o.arraySync(); // => [[[4]]]   (only position 1 selected)
 * ```
 */
export function sparseAttentionMha(
  q: tf.Tensor3D,
  k: tf.Tensor3D,
  v: tf.Tensor3D,
  topk: tf.Tensor2D,
  startPos: number,
  scale: number,
  opts: GatherOptions = {},
): tf.Tensor3D {
  const fn = 'sparseAttentionMha';
  const { T, H, Dqk, S, Dv } = checkTensors(SPARSE_MHA, { q, k, v, topk }) as Record<'T' | 'H' | 'Dqk' | 'S' | 'Dv', number>;
  checkQueryPositions(fn, startPos, S, T, 'S from k, T from q');
  checkFiniteNumber(fn, 'scale', scale);
  const queryBlock = checkBlock(fn, opts.queryBlock);
  return tf.tidy(() => {
    const blocks: tf.Tensor3D[] = [];
    for (let b0 = 0; b0 < T; b0 += queryBlock) {
      const Tb = Math.min(queryBlock, T - b0);
      const { index, valid } = slots(topk.slice([b0, 0], [Tb, -1]), startPos + b0); // [Tb, K]
      const kG = tf.gather(k, index).transpose([0, 2, 1, 3]); // [Tb, H, K, Dqk]
      const vG = tf.gather(v, index).transpose([0, 2, 1, 3]); // [Tb, H, K, Dv]
      const qB = q.slice([b0, 0, 0], [Tb, H, Dqk]).expandDims(2); // [Tb, H, 1, Dqk]
      const z = tf.matMul(qB, kG, false, true).mul(scale); // [Tb, H, 1, K]
      const p = tf.softmax(tf.where(valid.reshape([Tb, 1, 1, -1]), z, tf.scalar(-Infinity)));
      blocks.push(tf.matMul(p, vG).reshape([Tb, H, Dv])); // [Tb, H, Dv]
    }
    return (blocks.length === 1 ? blocks[0]! : tf.concat(blocks, 0)) as tf.Tensor3D;
  });
}

// --- Dense masked path (official demo) ---

/**
 * The official decode-branch computation (absorbed MQA mode) with the selection as a −∞ mask over the
 * full score matrix: `z = (q̃·cᵀ + q_pe·k_peᵀ)·scale + M`, `ō = softmax(z)·c` with M = {@link causalSelectionMask}.
 * Rows of `kv`/`pe` beyond the mask's reach still enter the products (0·x), so they must be finite.
 *
 * FLOPs: `T · S · 2H(2C + R)` (every pair, selected or not).
 *
 * @param qLatent [T, H, C] absorbed queries
 * @param qPe [T, H, R]
 * @param kv [S, C]
 * @param pe [S, R]
 * @param topk [T, K] int32
 * @param startPos position of row 0
 * @param scale softmax scale
 * @returns ō [T, H, C]
 * @example
 * ```ts
 * const o = denseAttentionMqa(tf.ones([1, 1, 2]), tf.zeros([1, 1, 1]), tf.tensor2d([[1, 0], [0, 1]]), tf.zeros([2, 1]),
 *   tf.tensor2d([[0, 1]], [1, 2], 'int32'), 1, 1);
 * o.arraySync(); // => [[[0.5, 0.5]]]
 * ```
 */
export function denseAttentionMqa(
  qLatent: tf.Tensor3D,
  qPe: tf.Tensor3D,
  kv: tf.Tensor2D,
  pe: tf.Tensor2D,
  topk: tf.Tensor2D,
  startPos: number,
  scale: number,
): tf.Tensor3D {
  const fn = 'denseAttentionMqa';
  const { T, H, C, S, R } = checkTensors(DENSE_MQA, { qLatent, qPe, kv, pe, topk }) as Record<'T' | 'H' | 'C' | 'S' | 'R', number>;
  checkQueryPositions(fn, startPos, S, T, 'S from kv, T from qLatent');
  checkFiniteNumber(fn, 'scale', scale);
  return tf.tidy(() => {
    const zLatent = tf.matMul(qLatent.reshape([T * H, C]), kv, false, true); // [T·H, S]
    const zRope = tf.matMul(qPe.reshape([T * H, R]), pe, false, true); // [T·H, S]
    const z = tf.add(zLatent, zRope).mul(scale).reshape([T, H, S]); // [T, H, S]
    const p = tf.softmax(z.add(causalSelectionMask(topk, S, startPos).expandDims(1))); // [T, H, S]
    return tf.matMul(p.reshape([T * H, S]), kv).reshape([T, H, C]) as tf.Tensor3D; // [T, H, C]
  });
}

/**
 * The official prefill-branch computation (MHA mode) with the selection as a −∞ mask:
 * `z[h,t,s] = scale · q[t,h]·k[s,h] + M[t,s]`, `o[t,h] = Σ_s softmax_s(z)·v[s,h]` (M = {@link causalSelectionMask}).
 *
 * FLOPs: `T · S · 2H(Dqk + Dv)`.
 *
 * @param q [T, H, Dqk]
 * @param k [S, H, Dqk]
 * @param v [S, H, Dv]
 * @param topk [T, K] int32
 * @param startPos position of row 0
 * @param scale softmax scale
 * @returns o [T, H, Dv]
 * @example
 * ```ts
 * const o = denseAttentionMha(tf.zeros([1, 1, 2]), tf.zeros([2, 1, 2]), tf.tensor3d([[[2]], [[4]]]),
 *   tf.tensor2d([[0, 1]], [1, 2], 'int32'), 1, 1);
 * o.arraySync(); // => [[[3]]]   (equal scores: the mean of the two values)
 * ```
 */
export function denseAttentionMha(
  q: tf.Tensor3D,
  k: tf.Tensor3D,
  v: tf.Tensor3D,
  topk: tf.Tensor2D,
  startPos: number,
  scale: number,
): tf.Tensor3D {
  const fn = 'denseAttentionMha';
  const { T, S } = checkTensors(DENSE_MHA, { q, k, v, topk }) as Record<'T' | 'S', number>;
  checkQueryPositions(fn, startPos, S, T, 'S from k, T from q');
  checkFiniteNumber(fn, 'scale', scale);
  return tf.tidy(() => {
    const z = tf.matMul(q.transpose([1, 0, 2]), k.transpose([1, 0, 2]), false, true).mul(scale); // [H, T, S]
    const p = tf.softmax(z.add(causalSelectionMask(topk, S, startPos))); // [H, T, S]
    return tf.matMul(p, v.transpose([1, 0, 2])).transpose([1, 0, 2]) as tf.Tensor3D; // [T, H, Dv]
  });
}

// --- Helpers ---

/** [T, S] bool: s ≤ startPos + i. */
function causalMask(T: number, S: number, startPos: number): tf.Tensor2D {
  const t = tf.range(startPos, startPos + T, 1, 'int32').reshape([T, 1]);
  const s = tf.range(0, S, 1, 'int32').reshape([1, S]);
  return tf.lessEqual(s, t) as tf.Tensor2D;
}

/** Slot validity `0 ≤ s ≤ t` and the row each slot reads (invalid slots read row 0, never a future row). */
function slots(topk: tf.Tensor2D, startPos: number): { index: tf.Tensor2D; valid: tf.Tensor2D } {
  const [Tb] = topk.shape;
  const t = tf.range(startPos, startPos + Tb, 1, 'int32').reshape([Tb, 1]);
  const valid = tf.logicalAnd(tf.greaterEqual(topk, 0), tf.lessEqual(topk, t)) as tf.Tensor2D; // [Tb, K]
  const index = tf.where(valid, topk, tf.zerosLike(topk)) as tf.Tensor2D; // [Tb, K]
  return { index, valid };
}

function checkBlock(fn: string, queryBlock: number | undefined): number {
  const b = queryBlock ?? 64;
  if (!Number.isSafeInteger(b) || b < 1) throw new RangeError(`${fn}(): opts.queryBlock must be an integer ≥ 1 but got ${b}`);
  return b;
}
