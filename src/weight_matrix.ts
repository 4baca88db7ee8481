/**
 * The weight matrices the model multiplies by. A {@link WeightMatrix} is either an ordinary float32
 * backend tensor or a {@link DeferredMatrix}: a matrix held outside the backend (FP8 e4m3 bytes with
 * their 128×128 block scales, BF16 bytes, or bytes still in a checkpoint shard, src/resident.ts) that
 * becomes float32 only band by band, while a product with it is computed. The model code multiplies
 * through {@link matMulWeightT} and never needs to know which of the two it holds.
 *
 * For a deferred W [out, in] and activations x [M, in]:
 *
 * ```
 * for each band b of at most `bandRows` rows:   y[:, b] = x · W[b]ᵀ    [M, |b|]
 * y = concat_b y[:, b]                                                  [M, out]
 * ```
 *
 * Each output element is the same dot product, summed in the same order, as `x · Wᵀ` on the whole
 * matrix (the same `matMul(x, W, false, true)` kernel), so a deferred weight gives the tensor weight's
 * results bit for bit on every backend. (W[b] · xᵀ would put the band on XNNPACK's faster untransposed
 * GEMM on wasm, but sums in another order: last-bit differences that move FP8 activation quantizer
 * inputs across e4m3 rounding midpoints, e.g. fixtures/golden/public2-fp8.) At most one band of W is a
 * float32 tensor at a time.
 *
 * @module
 */
import { tf } from './backend.ts';
import { checkMatrix, checkTensors, defineContract, kindOf } from './internal/contract.ts';

const MAT_MUL_WEIGHT_T = defineContract('matMulWeightT', { w: '[Out, In]', x: '[M, In]' });

/** A [rows, cols] weight matrix held outside the backend and dequantized to float32 rows on use. */
export interface DeferredMatrix {
  readonly deferred: true;
  /** [rows, cols] */
  readonly shape: [number, number];
  /** rows per band in {@link matMulWeightT} (the float32 band stays within a fixed byte budget) */
  readonly bandRows: number;
  /** rows [first, first + count) as a new float32 tensor [count, cols], owned by the caller */
  rows(first: number, count: number): tf.Tensor2D;
  /** releases what it holds (its bytes); later `rows` calls throw */
  dispose(): void;
}

/** A float32 tensor [rows, cols] or a {@link DeferredMatrix} of that shape. */
export type WeightMatrix = tf.Tensor2D | DeferredMatrix;

/**
 * Whether a weight is deferred (held outside the backend).
 *
 * @example
 * ```ts
 * isDeferred(tf.zeros([2, 2]) as tf.Tensor2D); // => false
 * ```
 */
export function isDeferred(w: WeightMatrix): w is DeferredMatrix {
  if (w === null || typeof w !== 'object') throw new TypeError(`isDeferred(): w must be a tensor or a deferred matrix but got ${kindOf(w)}`);
  return (w as DeferredMatrix).deferred === true;
}

/**
 * [rows, cols] of a weight matrix.
 *
 * @example
 * ```ts
 * weightShape(tf.zeros([3, 4]) as tf.Tensor2D); // => [3, 4]
 * ```
 */
export function weightShape(w: WeightMatrix): [number, number] {
  checkMatrix('weightShape', 'w', w);
  return [w.shape[0]!, w.shape[1]!];
}

/**
 * y = x · Wᵀ: x [M, in], W [out, in] → [M, out]. A tensor W is one `matMul`; a deferred W goes band by
 * band, `y[:, b] = x · W[b]ᵀ` (see the module comment), each band tensor disposed after its product.
 *
 * @param x [M, in] float32
 * @param w [out, in]
 * @returns [M, out]
 * @throws RangeError when the inner dimensions differ
 * @example
 * ```ts
 * matMulWeightT(tf.tensor2d([[1, 2]]), tf.tensor2d([[1, 0], [0, 1], [1, 1]])).arraySync(); // => [[1, 2, 3]]
 * ```
 */
export function matMulWeightT(x: tf.Tensor2D, w: WeightMatrix): tf.Tensor2D {
  const { Out: out, In: inDim } = checkTensors(MAT_MUL_WEIGHT_T, { x, w }) as Record<'Out' | 'In', number>;
  if (!isDeferred(w)) return tf.matMul(x, w, false, true);
  return tf.tidy(() => {
    const parts: tf.Tensor2D[] = [];
    for (let first = 0; first < out; first += w.bandRows) {
      const count = Math.min(w.bandRows, out - first);
      parts.push(
        tf.tidy(() => {
          const band = w.rows(first, count); // [count, in] float32, the only dequantized copy
          return tf.matMul(x, band, false, true); // [M, count]: the same product as on the whole W
        }),
      );
    }
    return parts.length === 1 ? parts[0]! : (tf.concat(parts, 1) as tf.Tensor2D); // [M, out]
  });
}

/**
 * The whole matrix as a float32 tensor: `w` itself when it is a tensor, otherwise a new tensor (inside
 * a `tf.tidy` it is disposed with the scope). For the few places that need W as a tensor (the absorbed
 * `wkv_b` of MLA decode, 16.8 M elements at the 671B widths).
 *
 * @example
 * ```ts
 * const w = tf.tensor2d([[1, 2]]);
 * materialize(w) === w; // => true
 * ```
 */
export function materialize(w: WeightMatrix): tf.Tensor2D {
  checkMatrix('materialize', 'w', w);
  return isDeferred(w) ? w.rows(0, w.shape[0]) : w;
}

/**
 * Rows of W for the given ids, `out[i] = W[ids[i]]` [n, cols] (an embedding lookup): a `gather` on a
 * tensor; on a deferred matrix, only those rows are dequantized (each distinct id once).
 *
 * @example
 * ```ts
 * gatherRows(tf.tensor2d([[1, 2], [3, 4]]), [1, 1, 0]).arraySync(); // => [[3, 4], [3, 4], [1, 2]]
 * ```
 */
export function gatherRows(w: WeightMatrix, ids: ArrayLike<number>): tf.Tensor2D {
  checkMatrix('gatherRows', 'w', w);
  if (ids === null || typeof ids !== 'object' || typeof (ids as ArrayLike<number>).length !== 'number') throw new TypeError(`gatherRows(): ids must be an array of row indices but got ${kindOf(ids)}`);
  const idx = Int32Array.from(ids as ArrayLike<number>);
  if (!isDeferred(w)) return tf.gather(w, idx) as tf.Tensor2D;
  return tf.tidy(() => {
    const distinct = [...new Set(idx)];
    const at = new Map(distinct.map((id, i) => [id, i]));
    const rows = tf.concat(distinct.map((id) => w.rows(id, 1)), 0) as tf.Tensor2D; // [distinct, cols]
    return tf.gather(rows, Int32Array.from(idx, (id) => at.get(id)!)) as tf.Tensor2D;
  });
}
