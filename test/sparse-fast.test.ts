/**
 * The fast kernels of src/sparse_fast.ts agree with the reference paths (src/sparse_attention.ts,
 * src/indexer.ts fp8Index, src/topk.ts selectTopK) and with float64 plain-JS oracles written here,
 * on every backend. Edge cases: k ≥ L, k = 1, L = 1, −1 padding and future positions never read.
 */
import { it, expect } from 'vitest';
import fc from 'fast-check';
import { tf } from '../src/backend.ts';
import { denseAttentionMqa, sparseAttentionMqa } from '../src/sparse_attention.ts';
import { fp8Index } from '../src/indexer.ts';
import { selectTopK } from '../src/topk.ts';
import { denseAttentionMqaFast, indexerScoresFast, selectTopKFast, sparseAttentionMqaFast } from '../src/sparse_fast.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';

// --- float64 oracles ---

/** ō[t,h] = Σ_{s ∈ S_t} softmax(scale·(q̃·c_s + q_pe·k_pe_s)) c_s with S_t = valid slots 0 ≤ s ≤ t. */
function oracleAttention(
  qL: number[][][], qR: number[][][], kv: number[][], pe: number[][], topk: number[][], startPos: number, scale: number,
): number[][][] {
  return qL.map((heads, i) => {
    const t = startPos + i;
    const sel = [...new Set(topk[i]!.filter((s) => s >= 0 && s <= t))];
    return heads.map((q, h) => {
      const z = sel.map((s) => scale * (dot(q, kv[s]!) + dot(qR[i]![h]!, pe[s]!)));
      const m = Math.max(...z);
      const e = z.map((v) => Math.exp(v - m));
      const sum = e.reduce((a, b) => a + b, 0);
      return kv[0]!.map((_, c) => sel.reduce((acc, s, j) => acc + (e[j]! / sum) * kv[s]![c]!, 0));
    });
  });
}

/** I[t,s] = s_k[s] · Σ_j w[t,j] · ReLU(q[t,j] · k_s). */
function oracleIndex(q: number[][][], w: number[][], keys: number[][], ks: number[]): number[][] {
  return q.map((heads, t) => keys.map((k, s) => ks[s]! * heads.reduce((acc, qj, j) => acc + w[t]![j]! * Math.max(0, dot(qj, k)), 0)));
}

function dot(a: number[], b: number[]): number {
  return a.reduce((acc, x, i) => acc + x * b[i]!, 0);
}

function expectClose(actual: tf.Tensor, expected: number[] | number[][] | number[][][], rtol = 1e-4): void {
  const a = actual.dataSync();
  const e = (expected as unknown[]).flat(3) as number[];
  expect(a.length).toBe(e.length);
  const scale = Math.max(1, ...e.map(Math.abs));
  for (let i = 0; i < e.length; i++) expect(Math.abs(a[i]! - e[i]!), `element ${i}: ${a[i]} vs ${e[i]}`).toBeLessThanOrEqual(rtol * scale);
}

// --- generators ---

const float = fc.float({ min: -2, max: 2, noNaN: true, noDefaultInfinity: true }).map((x) => Math.fround(x));
const matrix = (rows: number, cols: number) => fc.array(fc.array(float, { minLength: cols, maxLength: cols }), { minLength: rows, maxLength: rows });

/** A case: T queries at startPos..startPos+T−1 over S keys, each row a random subset of 0..t, −1 padded to K. */
const attentionCase = fc
  .record({ T: fc.integer({ min: 1, max: 4 }), H: fc.integer({ min: 1, max: 3 }), C: fc.integer({ min: 1, max: 6 }), R: fc.integer({ min: 1, max: 3 }), extra: fc.integer({ min: 0, max: 3 }), K: fc.integer({ min: 1, max: 7 }), startPos: fc.integer({ min: 0, max: 5 }) })
  .chain(({ T, H, C, R, extra, K, startPos }) => {
    const S = startPos + T + extra;
    return fc.record({
      T: fc.constant(T), H: fc.constant(H), C: fc.constant(C), R: fc.constant(R), S: fc.constant(S), startPos: fc.constant(startPos),
      qL: fc.array(matrix(H, C), { minLength: T, maxLength: T }),
      qR: fc.array(matrix(H, R), { minLength: T, maxLength: T }),
      kv: matrix(S, C),
      pe: matrix(S, R),
      // per row: K slots from −1..S−1 (future positions included: they must be ignored), at least one s ≤ t
      topk: fc.array(fc.array(fc.integer({ min: -1, max: S - 1 }), { minLength: K, maxLength: K }), { minLength: T, maxLength: T }).map((rows) =>
        rows.map((row, i) => uniqueValid(row.some((s) => s >= 0 && s <= startPos + i) ? row : [Math.min(startPos + i, S - 1), ...row.slice(1)], startPos + i)),
      ),
      scale: fc.float({ min: Math.fround(0.05), max: 1, noNaN: true }),
    });
  });

/**
 * A selection never repeats a valid position (selectTopK returns a set): later repeats of a valid s ≤ t
 * become −1 padding. (With repeats the gather paths would count a key twice, the mask paths once.)
 */
function uniqueValid(row: number[], t: number): number[] {
  const seen = new Set<number>();
  return row.map((s) => (s < 0 || s > t ? s : seen.has(s) ? -1 : (seen.add(s), s)));
}

type AttentionCase = typeof attentionCase extends fc.Arbitrary<infer X> ? X : never;

function tensors(c: AttentionCase) {
  return {
    qL: tf.tensor3d(c.qL, [c.T, c.H, c.C]),
    qR: tf.tensor3d(c.qR, [c.T, c.H, c.R]),
    kv: tf.tensor2d(c.kv, [c.S, c.C]),
    pe: tf.tensor2d(c.pe, [c.S, c.R]),
    topk: tf.tensor2d(c.topk, [c.T, c.topk[0]!.length], 'int32'),
  };
}

describeEachBackend('sparse_fast', () => {
  it('sparse fast (host and device rows) ≡ reference gather ≡ dense masked ≡ float64 oracle', async () => {
    await fc.assert(
      fc.asyncProperty(attentionCase, async (c) => {
        const x = tensors(c);
        const want = oracleAttention(c.qL, c.qR, c.kv, c.pe, c.topk, c.startPos, c.scale);
        const outs = [
          sparseAttentionMqaFast(x.qL, x.qR, x.kv, x.pe, x.topk, c.startPos, c.scale, { rows: 'host' }),
          sparseAttentionMqaFast(x.qL, x.qR, x.kv, x.pe, x.topk, c.startPos, c.scale, { rows: 'device' }),
          sparseAttentionMqa(x.qL, x.qR, x.kv, x.pe, x.topk, c.startPos, c.scale),
          denseAttentionMqa(x.qL, x.qR, x.kv, x.pe, x.topk, c.startPos, c.scale),
          denseAttentionMqaFast(x.qL, x.qR, x.kv, x.pe, x.topk, c.startPos, c.scale),
        ];
        for (const o of outs) {
          expect(o.shape).toEqual([c.T, c.H, c.C]);
          expectClose(o, want);
        }
        tf.dispose([...outs, ...Object.values(x)]);
      }),
      { numRuns: 40 },
    );
  });

  it('never reads a future key or a −1 slot: NaN rows beyond t leave the result finite (decode, T = 1)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 6 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 8 }), fc.integer({ min: 0, max: 1000 }),
        async (t, future, K, seed) => {
          const S = t + 1 + future;
          const C = 3, R = 2, H = 2;
          const kvRows = Array.from({ length: S }, (_, s) => Array.from({ length: C }, (_, c) => (s > t ? NaN : Math.sin(seed + s * 7 + c))));
          const peRows = Array.from({ length: S }, (_, s) => Array.from({ length: R }, (_, r) => (s > t ? NaN : Math.cos(seed + s * 3 + r))));
          const slots = Array.from({ length: K }, (_, j) => [-1, t, (seed + j) % S, t + 1 + ((seed + j) % future)][(seed + 3 * j) % 4]!);
          slots[0] = seed % (t + 1); // at least one valid slot
          const row = uniqueValid(slots, t);
          const qL = [[[1, -0.5, 0.25], [0.3, 0.2, -0.1]]];
          const qR = [[[0.5, -1], [1, 0]]];
          const want = oracleAttention(qL, qR, kvRows, peRows, [row], t, 0.7);
          for (const rows of ['host', 'device'] as const) {
            const o = sparseAttentionMqaFast(tf.tensor3d(qL), tf.tensor3d(qR), tf.tensor2d(kvRows), tf.tensor2d(peRows), tf.tensor2d([row], [1, K], 'int32'), t, 0.7, { rows });
            expect(o.dataSync().every(Number.isFinite)).toBe(true);
            expectClose(o, want);
            o.dispose();
          }
        },
      ),
      { numRuns: 30 },
    );
  });

  it('edge cases: L = 1, k = 1, k ≥ L (every s ≤ t), on selectTopK output', () => {
    const scale = 0.5;
    for (const [S, T, k] of [[1, 1, 1], [1, 1, 2048], [5, 5, 1], [5, 5, 8], [6, 3, 2]] as const) {
      const startPos = S - T;
      const rnd = (n: number, s: number) => Array.from({ length: n }, (_, i) => Math.sin(s + i * 1.7));
      const C = 4, R = 2, H = 2;
      const qL = tf.tensor3d(rnd(T * H * C, 1), [T, H, C]);
      const qR = tf.tensor3d(rnd(T * H * R, 2), [T, H, R]);
      const kv = tf.tensor2d(rnd(S * C, 3), [S, C]);
      const pe = tf.tensor2d(rnd(S * R, 4), [S, R]);
      const scores = tf.tensor2d(rnd(T * S, 5), [T, S]);
      const topk = selectTopK(scores, startPos, k);
      expect(selectTopKFast(scores, startPos, k).arraySync()).toEqual(topk.arraySync());
      const want = oracleAttention(qL.arraySync(), qR.arraySync(), kv.arraySync(), pe.arraySync(), topk.arraySync(), startPos, scale);
      expectClose(sparseAttentionMqaFast(qL, qR, kv, pe, topk, startPos, scale), want);
      expectClose(denseAttentionMqaFast(qL, qR, kv, pe, topk, startPos, scale), want);
      if (k >= S) {
        // k ≥ L: sparse attention is dense causal attention
        const causal = tf.tensor2d(Array.from({ length: T }, (_, i) => Array.from({ length: S }, (_, s) => (s <= startPos + i ? s : -1))), [T, S], 'int32');
        expectClose(sparseAttentionMqaFast(qL, qR, kv, pe, causal, startPos, scale), want);
      }
    }
  });

  it('dense and sparse fast at S = 9000 (long context, 40 of 9000 keys) ≡ float64 oracle', () => {
    const S = 9000, T = 2, H = 2, C = 3, R = 2, K = 40, startPos = S - T;
    const rnd = (n: number, s: number) => Array.from({ length: n }, (_, i) => Math.sin(s + i * 0.37));
    const pick = (i: number) => Array.from({ length: K }, (_, j) => (j * 229 + i * 7) % (startPos + i + 1)).sort((a, b) => a - b);
    const sel = [pick(0), pick(1)];
    const x = {
      qL: tf.tensor3d(rnd(T * H * C, 1), [T, H, C]), qR: tf.tensor3d(rnd(T * H * R, 2), [T, H, R]),
      kv: tf.tensor2d(rnd(S * C, 3), [S, C]), pe: tf.tensor2d(rnd(S * R, 4), [S, R]), topk: tf.tensor2d(sel, [T, K], 'int32'),
    };
    const want = oracleAttention(x.qL.arraySync(), x.qR.arraySync(), x.kv.arraySync(), x.pe.arraySync(), sel, startPos, 0.5);
    expectClose(denseAttentionMqaFast(x.qL, x.qR, x.kv, x.pe, x.topk, startPos, 0.5), want);
    expectClose(sparseAttentionMqaFast(x.qL, x.qR, x.kv, x.pe, x.topk, startPos, 0.5), want);
  });

  it('indexerScoresFast ≡ fp8Index ≡ float64 oracle', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({ T: fc.integer({ min: 1, max: 5 }), HI: fc.integer({ min: 1, max: 20 }), DI: fc.integer({ min: 1, max: 8 }), S: fc.integer({ min: 1, max: 9 }) }).chain((d) =>
          fc.record({
            q: fc.array(matrix(d.HI, d.DI), { minLength: d.T, maxLength: d.T }),
            w: matrix(d.T, d.HI),
            keys: matrix(d.S, d.DI),
            ks: fc.array(fc.float({ min: Math.fround(0.01), max: 4, noNaN: true }), { minLength: d.S, maxLength: d.S }),
          }),
        ),
        async ({ q, w, keys, ks }) => {
          const args = [tf.tensor3d(q), tf.tensor2d(w), tf.tensor2d(keys), tf.tensor1d(ks)] as const;
          const want = oracleIndex(q, w, keys, ks);
          const fast = indexerScoresFast(...args);
          const ref = fp8Index(...args);
          expectClose(fast, want);
          expectClose(ref, want);
          tf.dispose([fast, ref, ...args]);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('selectTopKFast ≡ selectTopK, ties and −Infinity included', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 6 }), fc.integer({ min: 0, max: 6 }), fc.integer({ min: 0, max: 4 }), fc.integer({ min: 1, max: 9 }),
        fc.array(fc.constantFrom(0, 1, 2, 2.5, -1, -Infinity, Infinity), { minLength: 200, maxLength: 200 }),
        async (T, startPos, extra, k, pool) => {
          const S = startPos + T + extra;
          const scores = tf.tensor2d(pool.slice(0, T * S), [T, S]);
          expect(selectTopKFast(scores, startPos, k).arraySync()).toEqual(selectTopK(scores, startPos, k).arraySync());
          scores.dispose();
        },
      ),
      { numRuns: 100 },
    );
  });

  it('leaks no tensor', async () => {
    const qL = tf.ones([2, 2, 3]) as tf.Tensor3D, qR = tf.ones([2, 2, 1]) as tf.Tensor3D;
    const kv = tf.ones([4, 3]) as tf.Tensor2D, pe = tf.ones([4, 1]) as tf.Tensor2D;
    const topk = tf.tensor2d([[0, 2], [1, -1]], [2, 2], 'int32');
    const q = tf.ones([2, 3, 4]) as tf.Tensor3D, w = tf.ones([2, 3]) as tf.Tensor2D, keys = tf.ones([4, 4]) as tf.Tensor2D, ks = tf.ones([4]) as tf.Tensor1D;
    const scores = tf.ones([2, 4]) as tf.Tensor2D;
    for (const rows of ['host', 'device'] as const) await expectNoTensorLeak(() => sparseAttentionMqaFast(qL, qR, kv, pe, topk, 2, 1, { rows }).dispose());
    await expectNoTensorLeak(() => denseAttentionMqaFast(qL, qR, kv, pe, topk, 2, 1).dispose());
    await expectNoTensorLeak(() => indexerScoresFast(q, w, keys, ks).dispose());
    await expectNoTensorLeak(() => selectTopKFast(scores, 2, 2).dispose());
  });

  it('rejects bad arguments with messages that name the function and the argument', () => {
    const qL = tf.ones([2, 2, 3]) as tf.Tensor3D, qR = tf.ones([2, 2, 1]) as tf.Tensor3D;
    const kv = tf.ones([4, 3]) as tf.Tensor2D, pe = tf.ones([4, 1]) as tf.Tensor2D;
    const topk = tf.tensor2d([[0, 2], [1, -1]], [2, 2], 'int32');
    const sp = (...a: Parameters<typeof sparseAttentionMqaFast>) => () => sparseAttentionMqaFast(...a);
    expect(sp(qL, qR, kv, pe, topk, 2, 1, { rows: 'gpu' as 'host' })).toThrow("sparseAttentionMqaFast(): opts.rows must be 'auto', 'host' or 'device' but got 'gpu'");
    expect(sp(tf.ones([2, 3]) as unknown as tf.Tensor3D, qR, kv, pe, topk, 2, 1)).toThrow('sparseAttentionMqaFast(): qLatent must be [T, H, C] (rank 3) but got [2, 3]');
    expect(sp(qL, qR, kv, tf.ones([4]) as unknown as tf.Tensor2D, topk, 2, 1)).toThrow('sparseAttentionMqaFast(): pe must be [S, R] (rank 2) but got [4]');
    expect(sp(qL, tf.ones([2, 2, 2]) as tf.Tensor3D, kv, pe, topk, 2, 1)).toThrow('sparseAttentionMqaFast(): qPe must be [T, H, R] = [2, 2, 1] but got [2, 2, 2] (T, H from qLatent; R from pe)');
    expect(sp(qL, qR, tf.ones([4, 2]) as tf.Tensor2D, pe, topk, 2, 1)).toThrow('sparseAttentionMqaFast(): kv must be [S, C] = [S, 3] but got [4, 2] (C from qLatent)');
    expect(sp(qL, qR, kv, pe, tf.ones([2, 2]) as tf.Tensor2D, 2, 1)).toThrow('sparseAttentionMqaFast(): topk must be [T, K] of dtype int32 but got dtype float32 [2, 2]');
    expect(sp(qL, qR, kv, pe, tf.tensor2d([[0]], [1, 1], 'int32'), 2, 1)).toThrow('sparseAttentionMqaFast(): topk must be [T, K] = [2, K] but got [1, 1] (T from qLatent)');
    expect(sp(qL, qR, kv, pe, topk, -1, 1)).toThrow('sparseAttentionMqaFast(): startPos must be an integer ≥ 0 but got -1');
    expect(sp(qL, qR, kv, pe, topk, 3, 1)).toThrow('sparseAttentionMqaFast(): the keys must cover every query position: need S ≥ startPos + T = 5 but got S = 4');
    expect(() => denseAttentionMqaFast(qL, qR, kv, pe, topk, 3, 1)).toThrow('denseAttentionMqaFast(): the keys must cover every query position: need S ≥ startPos + T = 5 but got S = 4');

    const q = tf.ones([2, 3, 4]) as tf.Tensor3D, w = tf.ones([2, 3]) as tf.Tensor2D, keys = tf.ones([5, 4]) as tf.Tensor2D, ks = tf.ones([5]) as tf.Tensor1D;
    expect(() => indexerScoresFast(tf.ones([2, 3]) as unknown as tf.Tensor3D, w, keys, ks)).toThrow('indexerScoresFast(): q must be [T, HI, DI] (rank 3) but got [2, 3]');
    expect(() => indexerScoresFast(q, tf.ones([2, 2]) as tf.Tensor2D, keys, ks)).toThrow('indexerScoresFast(): weights must be [T, HI] = [2, 3] but got [2, 2] (T, HI from q)');
    expect(() => indexerScoresFast(q, w, tf.ones([5, 3]) as tf.Tensor2D, ks)).toThrow('indexerScoresFast(): keys must be [S, DI] = [S, 4] but got [5, 3] (DI from q)');
    expect(() => indexerScoresFast(q, w, keys, tf.ones([4]) as tf.Tensor1D)).toThrow('indexerScoresFast(): keyScales must be [S] = [5] but got [4] (S from keys)');

    const scores = tf.tensor2d([[1, NaN, 0]]);
    expect(() => selectTopKFast(scores, 0, 0)).toThrow('selectTopKFast(): k must be an integer ≥ 1 but got 0');
    expect(() => selectTopKFast(scores, 0.5, 1)).toThrow('selectTopKFast(): startPos must be an integer ≥ 0 but got 0.5');
    expect(() => selectTopKFast(tf.ones([3]) as unknown as tf.Tensor2D, 0, 1)).toThrow('selectTopKFast(): scores must be [T, S] (rank 2) but got [3]');
    expect(() => selectTopKFast(scores, 3, 1)).toThrow('selectTopKFast(): the keys must cover every query position: need S ≥ startPos + T = 4 but got S = 3');
    expect(() => selectTopKFast(scores, 1, 1)).toThrow('selectTopKFast(): scores must not be NaN but row 0 column 1 is NaN');
  });
});
