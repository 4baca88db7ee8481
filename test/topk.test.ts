import { it, expect } from 'vitest';
import fc from 'fast-check';
import { tf } from '../src/backend.ts';
import { selectTopK, selectionMask } from '../src/topk.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';

/**
 * Plain-JS oracle for S_t (Eq. 2 with the tie rule), written as a rank count rather than a sort:
 * s ≤ t is selected iff fewer than k_t = min(k, t+1) candidates beat it, where s' beats s when
 * I[s'] > I[s], or I[s'] = I[s] and s' < s.
 */
function oracleSelect(scores: number[][], startPos: number, k: number): number[][] {
  const width = Math.min(k, scores[0]!.length);
  return scores.map((row, i) => {
    const t = startPos + i;
    const kt = Math.min(k, t + 1);
    const chosen: number[] = [];
    for (let s = 0; s <= t; s++) {
      let beaten = 0;
      for (let s2 = 0; s2 <= t; s2++) {
        if (row[s2]! > row[s]! || (row[s2] === row[s] && s2 < s)) beaten++;
      }
      if (beaten < kt) chosen.push(s);
    }
    while (chosen.length < width) chosen.push(-1);
    return chosen;
  });
}

/** Random [T, S] score rows with many ties (values from a small set, including −inf). */
const caseArb = fc
  .record({ T: fc.integer({ min: 1, max: 6 }), startPos: fc.integer({ min: 0, max: 8 }), extra: fc.integer({ min: 0, max: 3 }), k: fc.integer({ min: 1, max: 10 }) })
  .chain(({ T, startPos, extra, k }) => {
    const S = startPos + T + extra;
    const value = fc.oneof(fc.integer({ min: -3, max: 3 }).map((v) => v / 2), fc.constant(-Infinity), fc.float({ noNaN: true, noDefaultInfinity: true }));
    return fc.record({
      T: fc.constant(T),
      S: fc.constant(S),
      startPos: fc.constant(startPos),
      k: fc.constant(k),
      scores: fc.array(fc.array(value, { minLength: S, maxLength: S }), { minLength: T, maxLength: T }),
    });
  });

describeEachBackend('selectTopK (Eq. 2 selection)', () => {
  it('matches the rank-count oracle, with ties resolved towards the lower position', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async ({ scores, startPos, k }) => {
        const got = tf.tidy(() => selectTopK(tf.tensor2d(scores), startPos, k).arraySync());
        expect(got).toEqual(oracleSelect(scores, startPos, k));
      }),
      { numRuns: 300 },
    );
  });

  it('never selects a future position, selects all s ≤ t when k ≥ t + 1, rows ascending', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async ({ scores, startPos, k, S }) => {
        const got = tf.tidy(() => selectTopK(tf.tensor2d(scores), startPos, k).arraySync());
        got.forEach((row, i) => {
          const t = startPos + i;
          expect(row.length).toBe(Math.min(k, S));
          const valid = row.filter((s) => s !== -1);
          expect(valid.length).toBe(Math.min(k, t + 1));
          for (const s of valid) expect(s).toBeLessThanOrEqual(t);
          for (let j = 1; j < valid.length; j++) expect(valid[j]!).toBeGreaterThan(valid[j - 1]!);
          expect(row.slice(valid.length).every((s) => s === -1)).toBe(true);
          if (k >= t + 1) expect(valid).toEqual(Array.from({ length: t + 1 }, (_, s) => s));
        });
      }),
      { numRuns: 300 },
    );
  });

  it('ignores the (future) columns s > t, whatever they hold', () => {
    const got = tf.tidy(() => selectTopK(tf.tensor2d([[0, 100, 100], [1, 0, 100]]), 0, 1).arraySync());
    expect(got).toEqual([[0], [0]]);
  });

  it('k = 1 picks the arg-max (lowest position among ties); L = 1 selects position 0', () => {
    const got = tf.tidy(() => selectTopK(tf.tensor2d([[2, 5, 5, 1]]), 3, 1).arraySync());
    expect(got).toEqual([[1]]);
    expect(tf.tidy(() => selectTopK(tf.tensor2d([[-Infinity]]), 0, 1).arraySync())).toEqual([[0]]);
    expect(tf.tidy(() => selectTopK(tf.tensor2d([[3]]), 0, 2048).arraySync())).toEqual([[0]]);
  });

  it('decode row (T = 1) at a late position keeps exactly k entries', () => {
    const row = [0.1, 0.9, 0.3, 0.9, -1, 0.2];
    const got = tf.tidy(() => selectTopK(tf.tensor2d([row]), 5, 3).arraySync());
    expect(got).toEqual([[1, 2, 3]]);
  });

  it('returns int32 and leaks no tensor', async () => {
    const scores = tf.tensor2d([[1, 2], [3, 4]]);
    const idx = selectTopK(scores, 0, 1);
    expect(idx.dtype).toBe('int32');
    idx.dispose();
    await expectNoTensorLeak(() => selectTopK(scores, 0, 1).dispose());
    await expectNoTensorLeak(() => tf.tidy(() => selectionMask(selectTopK(scores, 0, 2), 2)).dispose());
    scores.dispose();
  });

  it('rejects bad arguments with messages naming the function, argument and value', () => {
    const scores = tf.tensor2d([[1, 2], [3, 4]]);
    expect(() => selectTopK(scores, 0, 0)).toThrow(/selectTopK\(\): k must be an integer ≥ 1 but got 0/);
    expect(() => selectTopK(scores, 0, 1.5)).toThrow(/selectTopK\(\): k must be an integer ≥ 1 but got 1.5/);
    expect(() => selectTopK(scores, -1, 1)).toThrow(/selectTopK\(\): startPos must be an integer ≥ 0 but got -1/);
    expect(() => selectTopK(scores, 1, 1)).toThrow(/selectTopK\(\): the keys must cover every query position: need S ≥ startPos \+ T = 3 but got S = 2/);
    const nan = tf.tensor2d([[1, NaN], [NaN, 4]]);
    expect(() => selectTopK(nan, 0, 1)).toThrow(/selectTopK\(\): scores must not be NaN but row 1 column 0 is NaN/);
    const r1 = tf.tensor1d([1, 2]);
    expect(() => selectTopK(r1 as unknown as tf.Tensor2D, 0, 1)).toThrow(/selectTopK\(\): scores must be \[T, S\] \(rank 2\) but got \[2\]/);
    tf.dispose([scores, nan, r1]);
  });
});

describeEachBackend('selectionMask (dense form of S_t)', () => {
  it('is 0 exactly on the selected positions and −inf elsewhere (incl. the future)', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async ({ scores, startPos, k, S }) => {
        const sel = oracleSelect(scores, startPos, k);
        const mask = tf.tidy(() => selectionMask(tf.tensor2d(sel, undefined, 'int32'), S).arraySync());
        mask.forEach((row, i) => {
          row.forEach((m, s) => expect(m).toBe(sel[i]!.includes(s) ? 0 : -Infinity));
        });
      }),
      { numRuns: 200 },
    );
  });

  it('rejects indices out of range', () => {
    const idx = tf.tensor2d([[0, 3]], [1, 2], 'int32');
    expect(() => selectionMask(idx, 3)).toThrow(/selectionMask\(\): indices must lie in \[-1, S\) = \[-1, 3\) but row 0 holds 3/);
    expect(() => selectionMask(idx, 0)).toThrow(/selectionMask\(\): S must be an integer ≥ 1 but got 0/);
    idx.dispose();
  });
});
