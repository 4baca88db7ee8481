/**
 * DSA indexer losses (src/indexer_loss.ts) against a float64 plain-JS reference of DeepSeek-V3.2 §2.1.1
 * Eqs. 3–4 written here, finite-difference gradients, the detach of the main model, and the selection rule.
 */
import { it, expect } from 'vitest';
import fc from 'fast-check';
import { tf } from '../src/backend.ts';
import { indexerTarget, indexerSelection, indexerKlDense, indexerKlSparse } from '../src/indexer_loss.ts';
import { stopGradient } from '../src/internal/stop_gradient.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';

type Mat = number[][];

function refTarget(A: Mat[]): Mat {
  const T = A[0]!.length;
  return Array.from({ length: T }, (_, t) => {
    const row = Array.from({ length: T }, (_, s) => (s <= t ? A.reduce((acc, h) => acc + h[t]![s]!, 0) : 0));
    const z = row.reduce((a, b) => a + b, 0);
    return row.map((v) => v / z);
  });
}
/** top-k of row t over s ≤ t: by score descending, then position ascending; returned ascending. */
function refSelect(I: Mat, k: number): number[][] {
  return I.map((row, t) => {
    const c = Array.from({ length: t + 1 }, (_, s) => s).sort((a, b) => (row[b]! > row[a]! ? 1 : row[b]! < row[a]! ? -1 : a - b));
    return c.slice(0, k).sort((a, b) => a - b);
  });
}
function refKl(A: Mat[], I: Mat, sets: number[][]): number {
  const p = refTarget(A);
  let L = 0;
  sets.forEach((S, t) => {
    const mass = S.reduce((a, s) => a + p[t]![s]!, 0);
    if (!(mass > 0)) return;
    const m = Math.max(...S.map((s) => I[t]![s]!));
    const lse = m + Math.log(S.reduce((a, s) => a + Math.exp(I[t]![s]! - m), 0));
    for (const s of S) {
      const q = p[t]![s]! / mass;
      if (q > 0) L += q * (Math.log(q) - (I[t]![s]! - lse));
    }
  });
  return L;
}
const causalSets = (T: number) => Array.from({ length: T }, (_, t) => Array.from({ length: t + 1 }, (_, s) => s));

const f32 = (lo: number, hi: number) => fc.double({ min: lo, max: hi, noNaN: true }).map(Math.fround);
/** causal attention probabilities (softmax of random logits over s ≤ t, some exact zeros), random or tied scores. */
const arbCase = (tiedScores: boolean) => fc.record({ H: fc.integer({ min: 1, max: 3 }), T: fc.integer({ min: 1, max: 6 }) }).chain(({ H, T }) => fc.record({
  logits: fc.array(fc.array(fc.array(f32(-3, 3), { minLength: T, maxLength: T }), { minLength: T, maxLength: T }), { minLength: H, maxLength: H }),
  zeros: fc.array(fc.array(fc.array(fc.boolean(), { minLength: T, maxLength: T }), { minLength: T, maxLength: T }), { minLength: H, maxLength: H }),
  I: fc.array(fc.array(tiedScores ? fc.constantFrom(0, 0.5, 1) : f32(-3, 3), { minLength: T, maxLength: T }), { minLength: T, maxLength: T }),
  topk: fc.integer({ min: 1, max: T + 1 }),
})).map(({ logits, zeros, I, topk }) => {
  const A = logits.map((h, hi) => h.map((row, t) => {
    const e = row.map((v, s) => (s > t || (zeros[hi]![t]![s] && s !== t) ? 0 : Math.exp(v)));
    const z = e.reduce((a, b) => a + b, 0);
    return e.map((v) => Math.fround(v / z));
  }));
  return { A, I, topk };
});

describeEachBackend('indexer loss', () => {
  it('target, selection, dense (Eq. 3) and sparse (Eq. 4) losses match the float64 reference; ties break to the higher score then the lower position', async () => {
    await fc.assert(fc.asyncProperty(fc.oneof(arbCase(true), arbCase(false)), async ({ A, I, topk }) => {
      const a = tf.tensor3d(A), s = tf.tensor2d(I);
      const T = I.length;
      const p = indexerTarget(a), sel = indexerSelection(s, topk);
      const ld = indexerKlDense(a, s), ls = indexerKlSparse(a, s, topk);
      (p.arraySync() as Mat).flat().forEach((v, i) => expect(v).toBeCloseTo(refTarget(A).flat()[i]!, 6));
      const refSel = refSelect(I, topk);
      expect(sel.arraySync()).toEqual(refSel.map((r) => [...r, ...Array(topk - r.length).fill(-1)]));
      expect(ld.dataSync()[0]).toBeCloseTo(refKl(A, I, causalSets(T)), 5);
      expect(ls.dataSync()[0]).toBeCloseTo(refKl(A, I, refSel), 5);
      tf.dispose([a, s, p, sel, ld, ls]);
    }), { numRuns: 40 });
  });

  it('gradients w.r.t. the index scores match central differences of the reference (dense and sparse)', async () => {
    await fc.assert(fc.asyncProperty(arbCase(false), async ({ A, I, topk }) => {
      const a = tf.tensor3d(A), s = tf.tensor2d(I);
      const sets = refSelect(I, topk); // the selection is discrete: held fixed under the perturbation
      const gd = tf.grad((x: tf.Tensor) => indexerKlDense(a, x as tf.Tensor2D))(s).arraySync() as Mat;
      const gs = tf.grad((x: tf.Tensor) => indexerKlSparse(a, x as tf.Tensor2D, topk))(s).arraySync() as Mat;
      const h = 1e-6;
      I.forEach((row, t) => row.forEach((_, j) => {
        const P = I.map((r) => [...r]); P[t]![j]! += h;
        const M = I.map((r) => [...r]); M[t]![j]! -= h;
        const fdD = (refKl(A, P, causalSets(I.length)) - refKl(A, M, causalSets(I.length))) / (2 * h);
        const fdS = (refKl(A, P, sets) - refKl(A, M, sets)) / (2 * h);
        expect(Math.abs(gd[t]![j]! - fdD)).toBeLessThan(2e-5);
        expect(Math.abs(gs[t]![j]! - fdS)).toBeLessThan(2e-5);
      }));
      tf.dispose([a, s]);
    }), { numRuns: 20 });
  });

  it('with k ≥ T the sparse loss equals the dense loss', async () => {
    await fc.assert(fc.asyncProperty(arbCase(false), async ({ A, I }) => {
      const a = tf.tensor3d(A), s = tf.tensor2d(I);
      const d = indexerKlDense(a, s), sp = indexerKlSparse(a, s, I.length);
      expect(sp.dataSync()[0]).toBeCloseTo(d.dataSync()[0]!, 6);
      tf.dispose([a, s, d, sp]);
    }), { numRuns: 15 });
  });

  it('no gradient reaches the main-attention probabilities (the target is detached)', () => {
    const a = tf.tensor3d([[[1, 0, 0], [0.3, 0.7, 0], [0.2, 0.5, 0.3]], [[1, 0, 0], [0.6, 0.4, 0], [0.1, 0.1, 0.8]]]);
    const s = tf.tensor2d([[0.1, 0, 0], [0.4, -1, 0], [1, 2, -0.5]]);
    for (const loss of [(x: tf.Tensor3D, y: tf.Tensor2D) => indexerKlDense(x, y), (x: tf.Tensor3D, y: tf.Tensor2D) => indexerKlSparse(x, y, 2)]) {
      const [ga, gs] = tf.grads((x: tf.Tensor, y: tf.Tensor) => loss(x as tf.Tensor3D, y as tf.Tensor2D))([a, s]);
      expect(Array.from(ga!.dataSync()).every((v) => v === 0)).toBe(true);
      expect(Array.from(gs!.dataSync()).some((v) => Math.abs(v) > 1e-3)).toBe(true);
      tf.dispose([ga!, gs!]);
    }
    tf.dispose([a, s]);
  });

  it('in a composed toy layer, detaching the indexer input keeps the main model out of the indexer loss', () => {
    // h → main attention (Wq, Wk) → target; h → indexer (Uq, Uk) → scores; loss = Eq. 3
    const T = 4, D = 3;
    const h = tf.tensor2d([[0.3, -1, 0.5], [1, 0.2, -0.4], [-0.6, 0.8, 0.1], [0.2, 0.4, 0.9]]);
    const W = [tf.tensor2d([[0.5, -0.2], [0.1, 0.9], [-0.7, 0.3]]), tf.tensor2d([[0.4, 0.1], [-0.3, 0.6], [0.2, -0.5]])];
    const causal = tf.linalg.bandPart(tf.ones([T, T]), -1, 0).cast('bool');
    const attn = (x: tf.Tensor2D) => {
      const z = tf.matMul(tf.matMul(x, W[0]!), tf.matMul(x, W[1]!), false, true);
      return tf.expandDims(tf.softmax(tf.where(causal, z, tf.fill([T, T], -1e9))), 0) as tf.Tensor3D; // [1, T, T]
    };
    const scores = (x: tf.Tensor2D, u: tf.Tensor2D) => tf.matMul(tf.matMul(x, u), x, false, true) as tf.Tensor2D;
    const U = tf.tensor2d([[0.2, 0, 0.1], [0, -0.3, 0.2], [0.5, 0.1, 0]]);
    const [gh, gu] = tf.grads((x: tf.Tensor, u: tf.Tensor) =>
      indexerKlDense(attn(x as tf.Tensor2D), scores(stopGradient(x as tf.Tensor2D), u as tf.Tensor2D)))([h, U]);
    expect(Array.from(gh!.dataSync()).every((v) => v === 0)).toBe(true); // nothing reaches h: main model untouched
    expect(Array.from(gu!.dataSync()).some((v) => Math.abs(v) > 1e-4)).toBe(true); // the indexer learns
    // without the detach, the indexer loss would push gradients into h
    const gh2 = tf.grad((x: tf.Tensor) => indexerKlDense(attn(x as tf.Tensor2D), scores(x as tf.Tensor2D, U)))(h);
    expect(Array.from(gh2.dataSync()).some((v) => Math.abs(v) > 1e-4)).toBe(true);
    expect(D).toBe(3);
    tf.dispose([h, ...W, causal, U, gh!, gu!, gh2]);
  });

  it('ignores whatever lies above the diagonal (s > t), NaN included', () => {
    const a = tf.tensor3d([[[1, NaN], [0.25, 0.75]]]);
    const s = tf.tensor2d([[0, Infinity], [0, 1]]);
    expect(indexerKlDense(a, s).dataSync()[0]).toBeCloseTo(refKl([[[1, 0], [0.25, 0.75]]], [[0, 0], [0, 1]], causalSets(2)), 6);
    const g = tf.grad((x: tf.Tensor) => indexerKlDense(a, x as tf.Tensor2D))(s);
    expect(g.dataSync()[1]).toBe(0);
    expect(Array.from(g.dataSync()).every(Number.isFinite)).toBe(true);
    tf.dispose([a, s, g]);
  });

  it('rejects bad inputs with clear messages', () => {
    const a = tf.tensor3d([[[1, 0], [0.5, 0.5]]]);
    expect(() => indexerTarget(tf.tensor3d([[[1, 0, 0], [0.5, 0.5, 0]]]))).toThrow(/indexerTarget\(\): attentionProbs must be \[H, T, T\] = \[H, 2, 2\] but got \[1, 2, 3\]/);
    expect(() => indexerTarget(tf.tensor3d([[[1, 0], [NaN, 0.5]]]))).toThrow(/attentionProbs must be finite for s ≤ t but got NaN/);
    expect(() => indexerTarget(tf.tensor3d([[[1, 0], [0, 0]]]))).toThrow(/row t=1 of attentionProbs has zero mass/);
    expect(() => indexerTarget(tf.tensor3d([[[1, 0], [-0.5, 0.5]]]))).toThrow(/must be ≥ 0 but got -0.5/);
    expect(() => indexerSelection(tf.tensor2d([[0, 0], [0, 0]]), 0)).toThrow(/indexerSelection\(\): topk must be an integer ≥ 1 but got 0/);
    expect(() => indexerKlDense(a, tf.tensor2d([[0, 0, 0], [0, 0, 0], [0, 0, 0]]))).toThrow(/indexerKlDense\(\): indexScores must be \[T, T\] = \[2, 2\] but got \[3, 3\] \(T from attentionProbs\)/);
    expect(() => indexerKlSparse(a, tf.tensor2d([[0]]), 1)).toThrow(/indexerKlSparse\(\): indexScores must be \[T, T\] = \[2, 2\] but got \[1, 1\] \(T from attentionProbs\)/);
    expect(() => indexerKlDense(a, tf.tensor2d([[0, 0], [NaN, 0]]))).toThrow(/indexScores must be finite for s ≤ t/);
    a.dispose();
  });

  it('leaks no tensors', async () => {
    const a = tf.tensor3d([[[1, 0, 0], [0.3, 0.7, 0], [0.2, 0.5, 0.3]]]), s = tf.tensor2d([[0, 0, 0], [1, 0, 0], [0, 2, 1]]);
    await expectNoTensorLeak(() => {
      tf.dispose([indexerSelection(s, 2), indexerSelection(s, 5), indexerKlDense(a, s), indexerKlSparse(a, s, 2), tf.grad((x: tf.Tensor) => indexerKlSparse(a, x as tf.Tensor2D, 2))(s)]);
    });
    tf.dispose([a, s]);
  });
});
