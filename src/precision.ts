/**
 * Activation precision of the reference forward: `'fp32'` (default; what the golden fixtures record) or
 * `'bf16'`, which rounds to bfloat16 where DeepSeek's official inference code holds bf16 tensors on GPU
 * (`inference/model.py` under `torch.set_default_dtype(torch.bfloat16)`): the outputs of every `Linear`
 * except the float32 ones (MoE gate, indexer `weights_proj`, lm head), the outputs of the norms (computed
 * in float32, then `.to(dtype)`), the residual stream, RoPE outputs (`apply_rotary_emb` computes in
 * float32 and casts back), the Hadamard rotation, the attention output, the SwiGLU product and the MoE
 * combine weights and output. Everything else (norm statistics, RoPE angles, the gate scores, the FP8
 * index scores, the softmax) stays float32.
 *
 * bfloat16 = the upper 16 bits of a float32 (1 sign, 8 exponent, 7 mantissa bits); rounding a float32 to it
 * is round-to-nearest, ties to even, on the bit pattern (torch's `.to(torch.bfloat16)`).
 *
 * @module
 */
import { tf } from './backend.ts';
import { checkChoice, checkTensors, defineContract } from './internal/contract.ts';

const ROUND_TO_BF16 = defineContract('roundToBf16', { x: '[...]' });
const AS_ACTIVATION = defineContract('asActivation', { x: '[...]' });

/** Activation dtype of a forward: float32 everywhere, or bfloat16 where the official code is bf16. */
export type Precision = 'fp32' | 'bf16';

/**
 * Rounds float32 values to the nearest bfloat16 (ties to even), kept as float32:
 * `bits' = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000`; NaN stays NaN, ±∞ stay ±∞.
 *
 * @param x any float tensor
 * @returns a new float32 tensor of the same shape whose values are bfloat16 values
 * @example
 * ```ts
 * // 1 + 2⁻⁸ is a tie between 1 and 1 + 2⁻⁷: ties go to the even mantissa, 1
 * roundToBf16(tf.tensor1d([1 + 2 ** -8, 1 + 3 * 2 ** -8, -3.14159])).arraySync(); // => [1, 1.015625, -3.140625]
 * ```
 */
export function roundToBf16(x: tf.Tensor): tf.Tensor {
  checkTensors(ROUND_TO_BF16, { x });
  const values = Float32Array.from(x.dataSync() as Float32Array);
  const bits = new Uint32Array(values.buffer);
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i]!;
    if (Number.isNaN(values[i]!)) continue;
    bits[i] = ((b + 0x7fff + ((b >>> 16) & 1)) & 0xffff0000) >>> 0;
  }
  return tf.tensor(values, x.shape, 'float32');
}

/**
 * A tensor in the activation dtype of `precision`: `x` itself for `'fp32'` (or undefined), its
 * {@link roundToBf16} copy for `'bf16'` (the official `.to(dtype)` / bf16 `Linear` output).
 *
 * @example
 * ```ts
 * asActivation(tf.scalar(1 + 2 ** -9), 'bf16').arraySync(); // => 1
 * asActivation(tf.scalar(1 + 2 ** -9), 'fp32').arraySync(); // => 1.001953125
 * ```
 */
export function asActivation(x: tf.Tensor, precision: Precision | undefined): tf.Tensor {
  checkTensors(AS_ACTIVATION, { x });
  checkChoice('asActivation', 'precision', precision, ['fp32', 'bf16', undefined as unknown as 'fp32']);
  return precision === 'bf16' ? roundToBf16(x) : x;
}
