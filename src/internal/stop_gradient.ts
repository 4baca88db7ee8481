/**
 * `stopGradient`: PyTorch's `x.detach()` for tfjs, shared by the training-side modules (src/grpo.ts,
 * src/indexer_loss.ts, src/sampling_mask.ts).
 *
 * Internal: not a package.json subpath and not re-exported by src/index.ts.
 * @module
 */
import { tf } from '../backend.ts';

/**
 * Identity in the forward pass, zero gradient in the backward pass (PyTorch `x.detach()`).
 *
 * tfjs has no `stopGradient` op; this is `tf.customGrad` returning a zero gradient. Ops that consume its
 * output still sit on the gradient tape, so they need gradient functions of their own (tfjs comparison
 * kernels such as `Greater` have none: decisions are therefore built as constants, see `opsmKeepMask` in
 * src/grpo.ts).
 *
 * @deviation tfjs lacks detach; implemented with `tf.customGrad` (docs/deviations.md, Training-side math).
 * @param x any tensor
 * @returns a copy of `x` of the same shape whose gradient is zero
 * @example
 * ```ts
 * // d/dx of x·c with c = x held constant
 * tf.grad((x: tf.Tensor) => tf.sum(tf.mul(x, stopGradient(x))))(tf.tensor1d([3])).arraySync(); // => [3]
 * ```
 */
export function stopGradient<R extends tf.Rank>(x: tf.Tensor<R>): tf.Tensor<R> {
  const f = tf.customGrad(((a: tf.Tensor) => ({ value: tf.clone(a), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy) })) as unknown as Parameters<typeof tf.customGrad>[0]);
  return f(x) as tf.Tensor<R>;
}
