/** RMSNorm, fused residual RMSNorm and LayerNorm against float64 loops, on every backend. */
import { it, expect } from 'vitest';
import fc from 'fast-check';
import { tf } from '../src/backend.ts';
import { layerNorm, rmsNorm, rmsNormResidual } from '../src/norms.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';

const rows = (r: number, d: number, seed: number): number[][] =>
  Array.from({ length: r }, (_, i) => Array.from({ length: d }, (_, j) => Math.sin(seed + i * 13.1 + j * 0.77) * (1 + i)));

function oracleRms(x: number[], w: number[], eps: number): number[] {
  const ms = x.reduce((s, v) => s + v * v, 0) / x.length;
  return x.map((v, i) => (w[i]! * v) / Math.sqrt(ms + eps));
}

function oracleLayer(x: number[], w: number[], b: number[], eps: number): number[] {
  const mu = x.reduce((s, v) => s + v, 0) / x.length;
  const varB = x.reduce((s, v) => s + (v - mu) ** 2, 0) / x.length;
  return x.map((v, i) => ((v - mu) / Math.sqrt(varB + eps)) * w[i]! + b[i]!);
}

const expectClose = (got: ArrayLike<number>, want: number[], tol: number): void => {
  expect(got.length).toBe(want.length);
  want.forEach((w, i) => expect(Math.abs(got[i]! - w)).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(w))));
};

describeEachBackend('rmsNorm', () => {
  it('matches the float64 formula w ⊙ x / sqrt(mean(x²) + eps) row by row', () => {
    const x = rows(3, 64, 1);
    const w = rows(1, 64, 2)[0]!;
    for (const eps of [1e-6, 0.5]) {
      const y = rmsNorm(tf.tensor2d(x), tf.tensor1d(w), eps);
      expectClose(y.dataSync(), x.flatMap((r) => oracleRms(r, w, eps)), 1e-5);
      y.dispose();
    }
  });

  it('property: scale invariant for eps = 0 (rmsNorm(c·x) = rmsNorm(x), c > 0)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.float({ noNaN: true, min: -10, max: 10 }), { minLength: 8, maxLength: 8 }).filter((a) => a.some((v) => Math.abs(v) > 1e-3)),
        fc.float({ noNaN: true, min: Math.fround(0.01), max: 100 }),
        async (a, c) => {
          const w = tf.ones([8]);
          const y1 = rmsNorm(tf.tensor1d(a), w, 0);
          const y2 = rmsNorm(tf.tensor1d(a.map((v) => v * c)), w, 0);
          expectClose(y2.dataSync(), Array.from(y1.dataSync()), 1e-5);
          tf.dispose([w, y1, y2]);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('rejects a weight of the wrong length and a negative eps', () => {
    const x = tf.zeros([2, 8]);
    expect(() => rmsNorm(x, tf.ones([7]), 1e-6)).toThrow(/rmsNorm\(\): weight must be \[D\] = \[8\] but got \[7\] \(D from x\)/);
    expect(() => rmsNorm(x, tf.ones([8]), -1)).toThrow(/rmsNorm\(\): eps must be a finite number ≥ 0 but got -1/);
    expect(() => rmsNorm(tf.scalar(1), tf.ones([1]), 0)).toThrow(/rmsNorm\(\): x must be \[\.\.\., D\] \(rank ≥ 1\) but got \[\]/);
    x.dispose();
  });
});

describeEachBackend('rmsNormResidual', () => {
  it('returns r′ = x + r and rmsNorm(r′), as the official fused Block norm', () => {
    const x = rows(2, 16, 3);
    const r = rows(2, 16, 4);
    const w = rows(1, 16, 5)[0]!;
    const { out, residual } = rmsNormResidual(tf.tensor2d(x), tf.tensor2d(r), tf.tensor1d(w), 1e-6);
    const sum = x.map((row, i) => row.map((v, j) => v + r[i]![j]!));
    expectClose(residual.dataSync(), sum.flat(), 1e-6);
    expectClose(out.dataSync(), sum.flatMap((row) => oracleRms(row, w, 1e-6)), 1e-5);
    tf.dispose([out, residual]);
  });

  it('with residual = null the residual is a copy of x', () => {
    const x = tf.tensor2d(rows(2, 16, 6));
    const { out, residual } = rmsNormResidual(x, null, tf.ones([16]), 1e-6);
    expect(residual).not.toBe(x);
    expectClose(residual.dataSync(), Array.from(x.dataSync()), 0);
    tf.dispose([x, out, residual]);
  });

  it('rejects a residual of another shape', () => {
    expect(() => rmsNormResidual(tf.zeros([2, 8]), tf.zeros([3, 8]), tf.ones([8]), 1e-6)).toThrow(
      /rmsNormResidual\(\): residual must have the shape of x \[2,8\] but got \[3,8\]/,
    );
  });
});

describeEachBackend('layerNorm', () => {
  it('matches the float64 formula (x − μ)/sqrt(σ² + eps) ⊙ w + b with the biased variance', () => {
    const x = rows(3, 128, 7);
    const w = rows(1, 128, 8)[0]!;
    const b = rows(1, 128, 9)[0]!;
    const y = layerNorm(tf.tensor2d(x), tf.tensor1d(w), tf.tensor1d(b), 1e-5);
    expectClose(y.dataSync(), x.flatMap((r) => oracleLayer(r, w, b, 1e-5)), 1e-5);
    y.dispose();
  });

  it('rejects a bias of the wrong length', () => {
    expect(() => layerNorm(tf.zeros([2, 8]), tf.ones([8]), tf.ones([4]), 1e-5)).toThrow(
      /layerNorm\(\): bias must be \[D\] = \[8\] but got \[4\] \(D from x\)/,
    );
  });
});

describeEachBackend('norms: no tensor leaks', () => {
  it('rmsNorm, rmsNormResidual and layerNorm dispose their intermediates', async () => {
    const x = tf.tensor2d(rows(2, 16, 1));
    const w = tf.ones([16]);
    const b = tf.zeros([16]);
    await expectNoTensorLeak(() => rmsNorm(x, w, 1e-6).dispose());
    await expectNoTensorLeak(() => {
      const { out, residual } = rmsNormResidual(x, x, w, 1e-6);
      tf.dispose([out, residual]);
    });
    await expectNoTensorLeak(() => layerNorm(x, w, b, 1e-5).dispose());
    tf.dispose([x, w, b]);
  });
});
