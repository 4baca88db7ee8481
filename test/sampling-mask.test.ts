/**
 * Keep Sampling Mask (src/sampling_mask.ts) against a float64 plain-JS reference written here:
 * log π̃(o) = z_o − log Σ_{v∈K} e^{z_v}, its finite-difference gradient, the vector's kept set, and the
 * sampler's top-k / top-p boundary and tie rules.
 */
import { it, expect } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { tf } from '../src/backend.ts';
import { maskedLogSoftmax, tokenLogProbs, keepSamplingLogProbs, keepSamplingRatio, keptSetFromLogits } from '../src/sampling_mask.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';

type Mat = number[][];

/** float64: log-softmax of row z over the kept entries, at token o. */
function refLogp(z: number[], kept: number[], o: number): number {
  let m = -Infinity;
  z.forEach((v, i) => { if (kept[i]) m = Math.max(m, v); });
  let s = 0;
  z.forEach((v, i) => { if (kept[i]) s += Math.exp(v - m); });
  return z[o]! - m - Math.log(s);
}

const f32 = (lo: number, hi: number) => fc.double({ min: lo, max: hi, noNaN: true }).map(Math.fround);
const arbCase = fc.record({ T: fc.integer({ min: 1, max: 4 }), V: fc.integer({ min: 2, max: 7 }) }).chain(({ T, V }) => fc.record({
  logits: fc.array(fc.array(f32(-6, 6), { minLength: V, maxLength: V }), { minLength: T, maxLength: T }),
  kept: fc.array(fc.array(fc.boolean(), { minLength: V, maxLength: V }), { minLength: T, maxLength: T }),
  tokens: fc.array(fc.integer({ min: 0, max: V - 1 }), { minLength: T, maxLength: T }),
})).map(({ logits, kept, tokens }) => ({
  logits, tokens,
  kept: kept.map((r, t) => r.map((k, v) => (k || v === tokens[t] ? 1 : 0))), // the sampled token is always kept
}));

const VECTOR = JSON.parse(readFileSync(new URL('../fixtures/vectors/keep-sampling-mask.json', import.meta.url), 'utf8'));

describeEachBackend('sampling mask', () => {
  it('renormalised log-probs match the float64 reference, and so does the gradient (central differences)', async () => {
    await fc.assert(fc.asyncProperty(arbCase, async ({ logits, kept, tokens }) => {
      const z = tf.tensor2d(logits), k = tf.tensor2d(kept), tok = tf.tensor1d(tokens, 'int32');
      const lp = keepSamplingLogProbs(z, k, tok);
      const ref = logits.map((r, t) => refLogp(r, kept[t]!, tokens[t]!));
      Array.from(lp.dataSync()).forEach((v, t) => expect(v).toBeCloseTo(ref[t]!, 5));
      const g = tf.grad((x: tf.Tensor) => tf.sum(keepSamplingLogProbs(x as tf.Tensor2D, k, tok)))(z);
      const gv = g.arraySync() as Mat;
      const h = 1e-6;
      logits.forEach((row, t) => row.forEach((_, v) => {
        const p = [...row]; p[v]! += h;
        const m = [...row]; m[v]! -= h;
        const fd = (refLogp(p, kept[t]!, tokens[t]!) - refLogp(m, kept[t]!, tokens[t]!)) / (2 * h);
        expect(Math.abs(gv[t]![v]! - fd)).toBeLessThan(2e-5);
      }));
      tf.dispose([z, k, tok, lp, g]);
    }), { numRuns: 30 });
  });

  it('masking with an all-kept set changes nothing (equals the full-vocabulary log-softmax)', async () => {
    await fc.assert(fc.asyncProperty(arbCase, async ({ logits, tokens }) => {
      const z = tf.tensor2d(logits), tok = tf.tensor1d(tokens, 'int32');
      const all = tf.onesLike(z) as tf.Tensor2D;
      const a = keepSamplingLogProbs(z, all, tok), b = tokenLogProbs(z, tok);
      // two float32 evaluations of the same log-softmax: equal to a few float32 ulps of the value
      // (an absolute 5e-7 is below one ulp once |log p| > 8 and made this property flaky)
      const bv = b.dataSync();
      Array.from(a.dataSync()).forEach((v, t) => expect(Math.abs(v - bv[t]!)).toBeLessThanOrEqual(4 * 2 ** -23 * Math.max(1, Math.abs(bv[t]!))));
      tf.dispose([z, tok, all, a, b]);
    }), { numRuns: 20 });
  });

  it('values outside the kept set (NaN, ±Infinity) leak neither into values nor gradients', () => {
    const z = tf.tensor2d([[1, NaN, 2, Infinity, -Infinity]]);
    const k = tf.tensor2d([[1, 0, 1, 0, 0]]);
    const tok = tf.tensor1d([2], 'int32');
    const lp = keepSamplingLogProbs(z, k, tok);
    expect(lp.dataSync()[0]).toBeCloseTo(refLogp([1, 0, 2, 0, 0], [1, 0, 1, 0, 0], 2), 6);
    const g = tf.grad((x: tf.Tensor) => tf.sum(keepSamplingLogProbs(x as tf.Tensor2D, k, tok)))(z);
    const gv = Array.from(g.dataSync());
    expect(gv[1]).toBe(0); expect(gv[3]).toBe(0); expect(gv[4]).toBe(0);
    expect(gv[0]! + gv[2]!).toBeCloseTo(0, 6); // d/dz of z_o − lse sums to 0 over the kept set
    const full = maskedLogSoftmax(z, k).arraySync() as Mat;
    expect(full[0]![1]).toBe(-Infinity);
    tf.dispose([z, k, tok, lp, g]);
  });

  it('the ratio uses the same kept set for π_θ and π_old (reference vector inputs, float64 oracle)', () => {
    const { logits, logits_old, kept, tokens } = VECTOR.inputs as { logits: Mat; logits_old: Mat; kept: Mat; tokens: number[] };
    const r = keepSamplingRatio(tf.tensor2d(logits), tf.tensor2d(logits_old), tf.tensor2d(kept), tf.tensor1d(tokens, 'int32'));
    tokens.forEach((o, t) => {
      const ref = Math.exp(refLogp(logits[t]!, kept[t]!, o) - refLogp(logits_old[t]!, kept[t]!, o));
      expect(r.ratio.dataSync()[t]).toBeCloseTo(ref, 5);
    });
    tf.dispose([r.logp, r.logpOld, r.ratio]);
  });

  it('keptSetFromLogits reproduces the sampler mask of the reference vector (top-p 0.9 of the old logits)', () => {
    const kept = keptSetFromLogits(tf.tensor2d(VECTOR.inputs.logits_old), { topP: 0.9 });
    expect(kept.arraySync()).toEqual(VECTOR.inputs.kept);
    kept.dispose();
  });

  it('top-p keeps the token that crosses p; top-k keeps ties at the k-th value; top-p ties go to the lower id', () => {
    const L = (ps: number[]) => tf.tensor2d([ps.map(Math.log)]);
    const kept = (z: tf.Tensor2D, o: { topP?: number; topK?: number }) => keptSetFromLogits(z, o).arraySync()[0];
    expect(kept(L([0.6, 0.3, 0.1]), { topP: 0.7 })).toEqual([1, 1, 0]); // 0.6 < 0.7 ≤ 0.9: the crossing token is kept
    expect(kept(L([0.6, 0.3, 0.1]), { topP: 0.5 })).toEqual([1, 0, 0]);
    expect(kept(L([0.1, 0.3, 0.6]), { topP: 0.95 })).toEqual([1, 1, 1]);
    expect(kept(L([0.1, 0.3, 0.6]), { topP: 1 })).toEqual([1, 1, 1]);
    expect(kept(tf.tensor2d([[1, 2, 2, 0]]), { topK: 1 })).toEqual([0, 1, 1, 0]); // tie at the k-th value: both kept
    expect(kept(tf.tensor2d([[2, 2, 0]]), { topP: 0.3 })).toEqual([1, 0, 0]); // equal probabilities: lower id first
    // top-k first, then top-p on the renormalised top-k distribution: [0.5, 0.3 | 0.2] → [0.625, 0.375]
    expect(kept(L([0.5, 0.3, 0.2]), { topK: 2, topP: 0.6 })).toEqual([1, 0, 0]);
    expect(kept(L([0.5, 0.3, 0.2]), { topP: 0.6 })).toEqual([1, 1, 0]);
  });

  it('rejects bad inputs with clear messages', () => {
    const z = tf.tensor2d([[0, 1, 2]]);
    expect(() => keepSamplingLogProbs(z, tf.tensor2d([[1, 0, 1]]), tf.tensor1d([1], 'int32')))
      .toThrow(/keepSamplingLogProbs\(\): tokens\[0\] = 1 is not in the kept set of step 0/);
    expect(() => keepSamplingLogProbs(z, tf.tensor2d([[1, 1]]), tf.tensor1d([1], 'int32'))).toThrow(/keepSamplingLogProbs\(\): kept must be \[T, V\] = \[1, 3\] but got \[1, 2\] \(T, V from logits\)/);
    expect(() => tokenLogProbs(z, tf.tensor1d([3], 'int32'))).toThrow(/tokenLogProbs\(\): tokens\[0\] must be an id in \[0, 3\) but got 3/);
    expect(() => tokenLogProbs(z, tf.tensor1d([0, 1], 'int32'))).toThrow(/tokenLogProbs\(\): tokens must be \[T\] = \[1\] but got \[2\] \(T from logits\)/);
    expect(() => keptSetFromLogits(z, { topP: 0 })).toThrow(/keptSetFromLogits\(\): topP must be in \(0, 1\] but got 0/);
    expect(() => keptSetFromLogits(z, { topK: 0 })).toThrow(/topK must be an integer ≥ 1 but got 0/);
    expect(() => keptSetFromLogits(tf.tensor2d([[NaN, 1]]), { topP: 0.5 })).toThrow(/logits row 0 holds NaN/);
    expect(() => maskedLogSoftmax(z, tf.tensor2d([[1]]))).toThrow(/maskedLogSoftmax\(\): kept must be \[\.\.\., V\] = \[\.\.\., 3\] but got \[1, 1\] \(V from logits\)/);
  });

  it('leaks no tensors', async () => {
    const z = tf.tensor2d([[0, 1, 2], [3, 1, 0]]), k = tf.tensor2d([[1, 0, 1], [1, 1, 0]]), tok = tf.tensor1d([2, 1], 'int32');
    await expectNoTensorLeak(() => {
      tf.dispose(Object.values(keepSamplingRatio(z, z, k, tok)));
      tf.dispose([tokenLogProbs(z, tok), keptSetFromLogits(z, { topP: 0.5 }), tf.grad((x: tf.Tensor) => tf.sum(keepSamplingLogProbs(x as tf.Tensor2D, k, tok)))(z)]);
    });
    tf.dispose([z, k, tok]);
  });
});
