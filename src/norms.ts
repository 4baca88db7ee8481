/**
 * Normalizations of the official V3.2 inference code [inference/model.py RMSNorm, LayerNorm; docs/spec-notes.md#block]:
 * RMSNorm (block norms, q_norm, kv_norm, final norm), its fused-residual form used by `Block`, and the
 * LayerNorm with bias of the indexer's key (`k_norm`). All in float32.
 *
 * @module
 */
import { tf } from './backend.ts';
import { checkTensors, defineContract } from './internal/contract.ts';

const RMS_NORM = defineContract('rmsNorm', { x: '[..., D]', weight: '[D]' });
const RMS_NORM_RESIDUAL = defineContract('rmsNormResidual', { x: '[..., D]', residual: { shape: '[..., D]', optional: true }, weight: '[D]' });
const LAYER_NORM = defineContract('layerNorm', { x: '[..., D]', weight: '[D]', bias: '[D]' });

function checkEps(fn: string, eps: number): void {
  if (!(typeof eps === 'number' && Number.isFinite(eps) && eps >= 0)) {
    throw new RangeError(`${fn}(): eps must be a finite number ≥ 0 but got ${String(eps)}`);
  }
}

// --- RMSNorm ---

/**
 * RMSNorm over the last dim: y = w ⊙ x · rsqrt(mean(x²) + eps), float32 [official RMSNorm.forward].
 *
 * @deviation the official output is cast to bf16; here it stays float32.
 * @param x [..., D]
 * @param weight [D]
 * @param eps e.g. `rms_norm_eps` = 1e−6
 * @returns [..., D]
 * @throws RangeError when weight is not [D] or eps is negative
 * @example
 * ```ts
 * // rms = √((9 + 16)/2) = √12.5
 * rmsNorm(tf.tensor1d([3, 4]), tf.tensor1d([1, 2]), 0); // => [0.8485281, 2.2627417]
 * ```
 */
export function rmsNorm(x: tf.Tensor, weight: tf.Tensor, eps: number): tf.Tensor {
  checkTensors(RMS_NORM, { x, weight });
  checkEps('rmsNorm', eps);
  return tf.tidy(() => {
    const xf = tf.cast(x, 'float32');
    const variance = tf.mean(tf.square(xf), -1, true); // [..., 1]
    return tf.mul(weight, tf.mul(xf, tf.rsqrt(tf.add(variance, eps))));
  });
}

/**
 * Fused residual RMSNorm of the official `Block`: r' = x + r (float32), out = rmsNorm(r'); returns both, the
 * new residual stream r' and the normalized input of the next sub-layer. With `residual = null` (the first
 * block's attention norm) r' = x.
 *
 * Layer order: `(h, r) = attn_norm(x, r); a = attn(h); (h, r) = ffn_norm(a, r); x = ffn(h)`.
 *
 * @param x [..., D] sub-layer output (or embedding)
 * @param residual [..., D] residual stream, or null
 * @param weight [D]
 * @param eps e.g. 1e−6
 * @returns out [..., D], residual [..., D] (a new tensor; the caller disposes both)
 * @throws RangeError when shapes differ
 * @example
 * ```ts
 * const { out, residual } = rmsNormResidual(tf.tensor1d([1, 2]), tf.tensor1d([2, 2]), tf.ones([2]), 0);
 * residual; // => [3, 4]
 * out; // => [0.8485281, 1.1313708]
 * ```
 */
export function rmsNormResidual(
  x: tf.Tensor,
  residual: tf.Tensor | null,
  weight: tf.Tensor,
  eps: number,
): { out: tf.Tensor; residual: tf.Tensor } {
  checkTensors(RMS_NORM_RESIDUAL, { x, residual, weight });
  checkEps('rmsNormResidual', eps);
  if (residual && !tf.util.arraysEqual(residual.shape, x.shape)) {
    throw new RangeError(`rmsNormResidual(): residual must have the shape of x [${x.shape}] but got [${residual.shape}]`);
  }
  const r = tf.tidy(() => (residual ? tf.add(tf.cast(x, 'float32'), tf.cast(residual, 'float32')) : tf.cast(x, 'float32').clone()));
  return { out: rmsNorm(r, weight, eps), residual: r };
}

// --- LayerNorm ---

/**
 * LayerNorm over the last dim with weight and bias: y = (x − μ) / sqrt(σ² + eps) ⊙ w + b, σ² the biased
 * variance, float32 [official LayerNorm (indexer `k_norm`), `F.layer_norm`; torch default eps 1e−5].
 *
 * @param x [..., D]
 * @param weight [D]
 * @param bias [D]
 * @param eps e.g. 1e−5 (nn.LayerNorm default)
 * @returns [..., D]
 * @throws RangeError when weight/bias are not [D]
 * @example
 * ```ts
 * layerNorm(tf.tensor1d([1, 3]), tf.tensor1d([1, 1]), tf.tensor1d([0, 10]), 0); // => [-1, 11]
 * ```
 */
export function layerNorm(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor, eps: number): tf.Tensor {
  checkTensors(LAYER_NORM, { x, weight, bias });
  checkEps('layerNorm', eps);
  return tf.tidy(() => {
    const xf = tf.cast(x, 'float32');
    const { mean, variance } = tf.moments(xf, -1, true); // [..., 1] each
    const xhat = tf.mul(tf.sub(xf, mean), tf.rsqrt(tf.add(variance, eps)));
    return tf.add(tf.mul(xhat, weight), bias);
  });
}
