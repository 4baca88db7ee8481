/**
 * Hadamard rotation: against a float64 oracle built from the recursive Sylvester definition
 * H_2n = [[H_n, H_n], [H_n, −H_n]] (independent of the popcount formula used by the implementation),
 * plus orthonormality and involution.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { tf } from '../src/backend.ts';
import { hadamard, hadamardMatrix } from '../src/hadamard.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';

/** Sylvester matrix by recursion, as nested arrays. */
function sylvester(n: number): number[][] {
  if (n === 1) return [[1]];
  const h = sylvester(n / 2);
  return [...h.map((r) => [...r, ...r]), ...h.map((r) => [...r, ...r.map((v) => -v)])];
}

/** float64 y = x · H · n^-1/2 for each row. */
function oracle(x: number[][]): number[][] {
  const n = x[0]!.length;
  const h = sylvester(n);
  return x.map((row) => h[0]!.map((_, j) => row.reduce((acc, v, i) => acc + v * h[i]![j]!, 0) / Math.sqrt(n)));
}

describe('hadamardMatrix', () => {
  it('equals the recursive Sylvester construction for n = 1 … 64', () => {
    for (let n = 1; n <= 64; n *= 2) expect(Array.from(hadamardMatrix(n))).toEqual(sylvester(n).flat());
  });

  it('rejects n that is not a power of two', () => {
    expect(() => hadamardMatrix(12)).toThrow(/hadamardMatrix\(\): n must be a power of two ≤ 4096 but got 12/);
  });
});

describeEachBackend('hadamard', () => {
  it('matches the float64 oracle for n = 128 (the indexer size) and small n', () => {
    for (const n of [1, 2, 8, 128]) {
      const x = Array.from({ length: 3 }, (_, r) => Array.from({ length: n }, (_, i) => Math.sin(r * 31 + i * 0.7) * 3));
      const y = hadamard(tf.tensor2d(x));
      const got = y.arraySync() as number[][];
      y.dispose();
      const want = oracle(x);
      for (let r = 0; r < 3; r++) for (let i = 0; i < n; i++) expect(Math.abs(got[r]![i]! - want[r]![i]!)).toBeLessThan(1e-5);
    }
  });

  it('acts on the last dim of any rank ([2, 3, 16] keeps its shape, rows independent)', () => {
    const x = tf.randomNormal([2, 3, 16], 0, 1, 'float32', 1);
    const y = hadamard(x);
    expect(y.shape).toEqual([2, 3, 16]);
    const want = oracle(x.reshape([6, 16]).arraySync() as number[][]).flat();
    const got = y.dataSync();
    want.forEach((w, i) => expect(Math.abs(got[i]! - w)).toBeLessThan(1e-5));
    tf.dispose([x, y]);
  });

  it('property: orthonormal (preserves norms and dot products) and involutive (H(H(x)) = x)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.float({ noNaN: true, min: -100, max: 100 }), { minLength: 64, maxLength: 64 }),
        fc.array(fc.float({ noNaN: true, min: -100, max: 100 }), { minLength: 64, maxLength: 64 }),
        async (a, b) => {
          const x = tf.tensor2d([a, b]);
          const y = hadamard(x);
          const z = hadamard(y);
          const [ya, yb] = y.arraySync() as [number[], number[]];
          const zz = z.dataSync();
          tf.dispose([x, y, z]);
          const dot = (u: number[], v: number[]): number => u.reduce((s, ui, i) => s + ui * v[i]!, 0);
          const scale = Math.max(1, dot(a, a), dot(b, b));
          expect(Math.abs(dot(ya, ya) - dot(a, a))).toBeLessThan(1e-5 * scale);
          expect(Math.abs(dot(ya, yb) - dot(a, b))).toBeLessThan(1e-5 * scale);
          [...a, ...b].forEach((v, i) => expect(Math.abs(zz[i]! - v)).toBeLessThan(1e-4 * Math.max(1, Math.sqrt(scale) / 8)));
        },
      ),
      { numRuns: 30 },
    );
  });

  it('rejects a last dim that is not a power of two, and a scalar', () => {
    const x = tf.zeros([2, 96]);
    expect(() => hadamard(x)).toThrow(/hadamard\(\): x must be \[\.\.\., N\] with N a power of two ≤ 4096 but got \[2, 96\]/);
    expect(() => hadamard(tf.scalar(1))).toThrow(/hadamard\(\): x must be \[\.\.\., N\] \(rank ≥ 1\) but got \[\]/);
    x.dispose();
  });

  it('does not leak tensors', async () => {
    const x = tf.ones([4, 128]);
    await expectNoTensorLeak(() => hadamard(x).dispose());
    x.dispose();
  });
});
