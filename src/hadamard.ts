/**
 * The Walsh–Hadamard rotation of the lightning indexer's q and k [docs/spec-notes.md#lightning-indexer step 2; official
 * `rotate_activation` = `fast_hadamard_transform.hadamard_transform(x, scale=n^-0.5)`].
 *
 * H_n is the Sylvester Hadamard matrix, H[i, j] = (−1)^popcount(i AND j) (H_1 = [1], H_2n = [[H, H], [H, −H]]).
 * The scaled transform x ↦ x·H_n·n^−1/2 is orthonormal and symmetric, hence its own inverse: it leaves q·k
 * unchanged and only spreads outliers across dims before the FP8 quantization.
 *
 * @module
 */
import { tf } from './backend.ts';
import { checkInteger, checkTensors, defineContract } from './internal/contract.ts';

const HADAMARD = defineContract('hadamard', { x: '[..., N]' }, { N: 'a power of two ≤ 4096' });

const cache = new Map<number, Float32Array>();

function popcount(v: number): number {
  let c = 0;
  for (let u = v; u !== 0; u &= u - 1) c++;
  return c;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && (n & (n - 1)) === 0;
}

/**
 * The n×n Sylvester Hadamard matrix, row-major, entries ±1 (unscaled).
 *
 * @param n power of two
 * @throws RangeError when n is not a power of two
 * @example
 * ```ts
 * hadamardMatrix(2); // => [1, 1, 1, -1]
 * ```
 */
export function hadamardMatrix(n: number): Float32Array {
  checkInteger('hadamardMatrix', 'n', n, 1);
  if (!isPowerOfTwo(n) || n > 1 << 12) {
    throw new RangeError(`hadamardMatrix(): n must be a power of two ≤ 4096 but got ${n}`);
  }
  let h = cache.get(n);
  if (!h) {
    h = new Float32Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) h[i * n + j] = popcount(i & j) % 2 === 0 ? 1 : -1;
    cache.set(n, h);
  }
  return h;
}

/**
 * Scaled Hadamard transform along the last dim: y = x · H_n · n^−1/2 (Sylvester order), float32.
 *
 * @deviation float32 matrix product instead of the official butterfly kernel on bf16 input with bf16 output
 * (same values up to float32 rounding; no bf16 rounding).
 * @param x [..., n], n a power of two (128 in the indexer)
 * @returns [..., n]
 * @throws RangeError when the last dim is not a power of two, or x is a scalar
 * @example
 * ```ts
 * hadamard(tf.tensor1d([1, 0, 0, 0])); // => [0.5, 0.5, 0.5, 0.5]
 * // [3 + 1, 3 − 1] / √2
 * hadamard(tf.tensor1d([3, 1])); // => [2.8284271, 1.4142136]
 * ```
 */
export function hadamard(x: tf.Tensor): tf.Tensor {
  const { N: n } = checkTensors(HADAMARD, { x }) as Record<'N', number>;
  if (!isPowerOfTwo(n) || n > 1 << 12) {
    throw new RangeError(`hadamard(): x must be [..., N] with N a power of two ≤ 4096 but got [${x.shape.join(', ')}]`);
  }
  const h = hadamardMatrix(n);
  return tf.tidy(() => {
    const y = tf.matMul(tf.reshape(tf.cast(x, 'float32'), [-1, n]), tf.tensor2d(h, [n, n])); // [M, n]
    return tf.reshape(tf.mul(y, tf.scalar(n ** -0.5)), x.shape);
  });
}
