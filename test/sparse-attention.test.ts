import { it, expect } from 'vitest';
import fc from 'fast-check';
import { tf } from '../src/backend.ts';
import {
  causalSelectionMask,
  denseAttentionMha,
  denseAttentionMqa,
  sparseAttentionMha,
  sparseAttentionMqa,
} from '../src/sparse_attention.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';
import { mulberry32 } from './helpers/random.ts';

// --- Test data and a float64 oracle ---

/** Deterministic uniform [−1, 1) numbers; `ints` gives small integers, which create exact score ties. */
function rand(seed: number, n: number, ints = false): Float32Array {
  const next = mulberry32(seed);
  return Float32Array.from({ length: n }, () => {
    const u = next();
    return ints ? Math.floor(u * 3) - 1 : 2 * u - 1;
  });
}

/**
 * Float64 softmax attention of query row i over an explicit key set `sel` (positions):
 * o[h] = Σ_{s∈sel} softmax_s(scale · score(h, s)) · value(h, s).
 */
function oracle(
  T: number,
  H: number,
  Dout: number,
  sel: number[][],
  score: (i: number, h: number, s: number) => number,
  value: (h: number, s: number, d: number) => number,
  scale: number,
): Float64Array {
  const out = new Float64Array(T * H * Dout);
  for (let i = 0; i < T; i++) {
    for (let h = 0; h < H; h++) {
      const z = sel[i]!.map((s) => scale * score(i, h, s));
      const m = Math.max(...z);
      const e = z.map((v) => Math.exp(v - m));
      const sum = e.reduce((a, b) => a + b, 0);
      for (let d = 0; d < Dout; d++) {
        let acc = 0;
        sel[i]!.forEach((s, j) => (acc += (e[j]! / sum) * value(h, s, d)));
        out[(i * H + h) * Dout + d] = acc;
      }
    }
  }
  return out;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** One random case: shapes, selection rows (shuffled, −1 padded, sometimes with a future position). */
const caseArb = fc
  .record({
    T: fc.integer({ min: 1, max: 5 }),
    startPos: fc.integer({ min: 0, max: 6 }),
    extraRows: fc.integer({ min: 0, max: 2 }),
    K: fc.integer({ min: 1, max: 12 }),
    H: fc.integer({ min: 1, max: 3 }),
    C: fc.integer({ min: 1, max: 5 }),
    R: fc.integer({ min: 1, max: 3 }).map((r) => 2 * r),
    Dv: fc.integer({ min: 1, max: 4 }),
    block: fc.integer({ min: 1, max: 4 }),
    seed: fc.integer({ min: 1, max: 2 ** 30 }),
    ints: fc.boolean(),
    withFuture: fc.boolean(),
  })
  .map((c) => {
    const S = c.startPos + c.T + c.extraRows;
    const rng = rand(c.seed ^ 0x5bd1e995, 4 * c.T * S + 8);
    let r = 0;
    const sel: number[][] = [];
    const topk: number[] = [];
    for (let i = 0; i < c.T; i++) {
      const t = c.startPos + i;
      const cand = Array.from({ length: t + 1 }, (_, s) => s);
      for (let j = cand.length - 1; j > 0; j--) {
        const u = Math.floor(((rng[r++]! + 1) / 2) * (j + 1)) % (j + 1);
        [cand[j], cand[u]] = [cand[u]!, cand[j]!];
      }
      const chosen = cand.slice(0, Math.min(c.K, t + 1)); // S_t: a random subset, in random order
      const row = [...chosen];
      // a future position in a padding slot must be ignored exactly like −1 (official: re-masked causally)
      if (c.withFuture && row.length < c.K && t + 1 < S) row.push(t + 1);
      while (row.length < c.K) row.push(-1);
      sel.push(chosen);
      topk.push(...row);
    }
    return { ...c, S, sel, topk };
  });

// --- Tests ---

describeEachBackend('sparse attention (DSA Eq. 2)', () => {
  it('MQA gather ≡ float64 softmax over exactly the selected set ≡ dense masked path (property)', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        const { T, H, C, R, S, startPos } = c;
        const qL = rand(c.seed, T * H * C, c.ints);
        const qP = rand(c.seed + 1, T * H * R, c.ints);
        const kv = rand(c.seed + 2, S * C, c.ints);
        const pe = rand(c.seed + 3, S * R, c.ints);
        const scale = 0.7;
        const want = oracle(
          T, H, C, c.sel,
          (i, h, s) => {
            let z = 0;
            for (let d = 0; d < C; d++) z += qL[(i * H + h) * C + d]! * kv[s * C + d]!;
            for (let d = 0; d < R; d++) z += qP[(i * H + h) * R + d]! * pe[s * R + d]!;
            return z;
          },
          (_h, s, d) => kv[s * C + d]!,
          scale,
        );
        const [gather, dense] = tf.tidy(() => {
          const args = [
            tf.tensor3d(qL, [T, H, C]), tf.tensor3d(qP, [T, H, R]), tf.tensor2d(kv, [S, C]), tf.tensor2d(pe, [S, R]),
            tf.tensor2d(c.topk, [T, c.K], 'int32'),
          ] as const;
          return [
            sparseAttentionMqa(...args, startPos, scale, { queryBlock: c.block }).dataSync(),
            denseAttentionMqa(...args, startPos, scale).dataSync(),
          ];
        });
        expect(maxAbsDiff(gather, want)).toBeLessThan(1e-5);
        expect(maxAbsDiff(dense, want)).toBeLessThan(1e-5);
        expect(maxAbsDiff(gather, dense)).toBeLessThan(1e-5);
      }),
      { numRuns: 200 },
    );
  });

  it('MHA gather ≡ float64 softmax over the selected set ≡ dense masked path (property)', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        const { T, H, S, startPos, Dv } = c;
        const Dqk = c.C + c.R;
        const q = rand(c.seed, T * H * Dqk, c.ints);
        const k = rand(c.seed + 1, S * H * Dqk, c.ints);
        const v = rand(c.seed + 2, S * H * Dv, c.ints);
        const scale = 0.4;
        const want = oracle(
          T, H, Dv, c.sel,
          (i, h, s) => {
            let z = 0;
            for (let d = 0; d < Dqk; d++) z += q[(i * H + h) * Dqk + d]! * k[(s * H + h) * Dqk + d]!;
            return z;
          },
          (h, s, d) => v[(s * H + h) * Dv + d]!,
          scale,
        );
        const [gather, dense] = tf.tidy(() => {
          const args = [
            tf.tensor3d(q, [T, H, Dqk]), tf.tensor3d(k, [S, H, Dqk]), tf.tensor3d(v, [S, H, Dv]),
            tf.tensor2d(c.topk, [T, c.K], 'int32'),
          ] as const;
          return [
            sparseAttentionMha(...args, startPos, scale, { queryBlock: c.block }).dataSync(),
            denseAttentionMha(...args, startPos, scale).dataSync(),
          ];
        });
        expect(maxAbsDiff(gather, want)).toBeLessThan(1e-5);
        expect(maxAbsDiff(dense, want)).toBeLessThan(1e-5);
      }),
      { numRuns: 200 },
    );
  });

  it('k ≥ t + 1 (every earlier position selected) ≡ full causal softmax attention (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({ T: fc.integer({ min: 1, max: 6 }), startPos: fc.integer({ min: 0, max: 5 }), extraK: fc.integer({ min: 0, max: 4 }), seed: fc.integer({ min: 1, max: 2 ** 30 }) }),
        async ({ T, startPos, extraK, seed }) => {
          const H = 2, C = 3, R = 2, S = startPos + T, K = S + extraK;
          const qL = rand(seed, T * H * C), qP = rand(seed + 1, T * H * R), kv = rand(seed + 2, S * C), pe = rand(seed + 3, S * R);
          // the selectTopK layout: 0..t ascending, then −1
          const topk = Array.from({ length: T }, (_, i) => Array.from({ length: K }, (_, j) => (j <= startPos + i ? j : -1))).flat();
          const causal = Array.from({ length: T }, (_, i) => Array.from({ length: startPos + i + 1 }, (_, s) => s));
          const want = oracle(
            T, H, C, causal,
            (i, h, s) => {
              let z = 0;
              for (let d = 0; d < C; d++) z += qL[(i * H + h) * C + d]! * kv[s * C + d]!;
              for (let d = 0; d < R; d++) z += qP[(i * H + h) * R + d]! * pe[s * R + d]!;
              return z;
            },
            (_h, s, d) => kv[s * C + d]!,
            1.3,
          );
          const got = tf.tidy(() =>
            sparseAttentionMqa(tf.tensor3d(qL, [T, H, C]), tf.tensor3d(qP, [T, H, R]), tf.tensor2d(kv, [S, C]), tf.tensor2d(pe, [S, R]),
              tf.tensor2d(topk, [T, K], 'int32'), startPos, 1.3).dataSync(),
          );
          expect(maxAbsDiff(got, want)).toBeLessThan(1e-5);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('padding and future slots never read future keys: poisoned rows s > t leave row t unchanged (property)', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, fc.constantFrom(NaN, 1e30, -Infinity), async (c, poison) => {
        const { T, H, C, R, S, startPos } = c;
        const qL = rand(c.seed, T * H * C), qP = rand(c.seed + 1, T * H * R), kv = rand(c.seed + 2, S * C), pe = rand(c.seed + 3, S * R);
        const run = (kvData: Float32Array, peData: Float32Array) =>
          tf.tidy(() =>
            sparseAttentionMqa(tf.tensor3d(qL, [T, H, C]), tf.tensor3d(qP, [T, H, R]), tf.tensor2d(kvData, [S, C]),
              tf.tensor2d(peData, [S, R]), tf.tensor2d(c.topk, [T, c.K], 'int32'), startPos, 0.5, { queryBlock: c.block }).dataSync(),
          );
        const clean = run(kv, pe);
        expect(clean.every(Number.isFinite)).toBe(true);
        for (let i = 0; i < T; i++) {
          const t = startPos + i;
          const kvP = kv.slice(), peP = pe.slice();
          kvP.fill(poison, (t + 1) * C);
          peP.fill(poison, (t + 1) * R);
          const dirty = run(kvP, peP);
          const row = (a: ArrayLike<number>) => Array.from(a).slice(i * H * C, (i + 1) * H * C);
          expect(row(dirty)).toEqual(row(clean));
        }
      }),
      { numRuns: 200 },
    );
  });

  it('hand case: one query, positions {0, 2} of 3, second head prefers position 2', () => {
    // q̃ = [[0, 0], [0, 1]] per head, c_0 = [1, 0], c_1 = [5, 5] (not selected), c_2 = [0, 1]; scale 1, no rope part
    const o = tf.tidy(() =>
      sparseAttentionMqa(tf.tensor3d([[[0, 0], [0, 1]]]), tf.zeros([1, 2, 2]) as tf.Tensor3D, tf.tensor2d([[1, 0], [5, 5], [0, 1]]),
        tf.zeros([3, 2]) as tf.Tensor2D, tf.tensor2d([[0, 2, -1]], [1, 3], 'int32'), 2, 1).arraySync(),
    );
    const e = Math.E;
    expect(o[0]![0]![0]).toBeCloseTo(0.5, 6);
    expect(o[0]![0]![1]).toBeCloseTo(0.5, 6);
    expect(o[0]![1]![0]).toBeCloseTo(1 / (1 + e), 6);
    expect(o[0]![1]![1]).toBeCloseTo(e / (1 + e), 6);
  });

  it('causalSelectionMask: selected ∧ s ≤ t → 0, else −∞', () => {
    const m = tf.tidy(() => causalSelectionMask(tf.tensor2d([[0, 2], [2, -1]], [2, 2], 'int32'), 3, 1).arraySync());
    expect(m).toEqual([[0, -Infinity, -Infinity], [-Infinity, -Infinity, 0]]);
  });

  it('does not leak tensors (both paths, several blocks)', async () => {
    const args = () => [
      tf.tensor3d(rand(1, 5 * 2 * 3), [5, 2, 3]), tf.tensor3d(rand(2, 5 * 2 * 2), [5, 2, 2]), tf.tensor2d(rand(3, 5 * 3), [5, 3]),
      tf.tensor2d(rand(4, 5 * 2), [5, 2]), tf.tensor2d([0, -1, 0, 1, 1, 2, 3, 0, 4, 2], [5, 2], 'int32'),
    ] as const;
    await expectNoTensorLeak(() => {
      const a = args();
      tf.dispose([sparseAttentionMqa(...a, 0, 1, { queryBlock: 2 }), denseAttentionMqa(...a, 0, 1), ...a]);
    });
  });

  it('rejects bad arguments with messages naming function, argument, expected and received', () => {
    tf.tidy(() => {
      const qL = tf.zeros([2, 1, 3]) as tf.Tensor3D, qP = tf.zeros([2, 1, 2]) as tf.Tensor3D;
      const kv = tf.zeros([4, 3]) as tf.Tensor2D, pe = tf.zeros([4, 2]) as tf.Tensor2D;
      const topk = tf.tensor2d([[0, 1], [0, 1]], [2, 2], 'int32');
      expect(() => sparseAttentionMqa(tf.zeros([2, 3]) as unknown as tf.Tensor3D, qP, kv, pe, topk, 0, 1)).toThrow(
        'sparseAttentionMqa(): qLatent must be [T, H, C] (rank 3) but got [2, 3]',
      );
      expect(() => sparseAttentionMqa(qL, tf.zeros([2, 1, 4]) as tf.Tensor3D, kv, pe, topk, 0, 1)).toThrow(
        'sparseAttentionMqa(): qPe must be [T, H, R] = [2, 1, 2] but got [2, 1, 4] (T, H from qLatent; R from pe)',
      );
      expect(() => sparseAttentionMqa(qL, qP, tf.zeros([4, 5]) as tf.Tensor2D, pe, topk, 0, 1)).toThrow(
        'sparseAttentionMqa(): kv must be [S, C] = [S, 3] but got [4, 5] (C from qLatent)',
      );
      expect(() => sparseAttentionMqa(qL, qP, kv, pe, tf.tensor2d([[0, 1], [0, 1]]), 0, 1)).toThrow(
        'sparseAttentionMqa(): topk must be [T, K] of dtype int32 but got dtype float32 [2, 2]',
      );
      expect(() => sparseAttentionMqa(qL, qP, kv, pe, tf.tensor2d([[0, 1]], [1, 2], 'int32'), 0, 1)).toThrow(
        'sparseAttentionMqa(): topk must be [T, K] = [2, K] but got [1, 2] (T from qLatent)',
      );
      expect(() => sparseAttentionMqa(qL, qP, kv, pe, topk, 3, 1)).toThrow(
        'sparseAttentionMqa(): the keys must cover every query position: need S ≥ startPos + T = 5 but got S = 4',
      );
      expect(() => sparseAttentionMqa(qL, qP, kv, pe, topk, -1, 1)).toThrow('sparseAttentionMqa(): startPos must be an integer ≥ 0 but got -1');
      expect(() => sparseAttentionMqa(qL, qP, kv, pe, topk, 0, 1, { queryBlock: 0 })).toThrow(
        'sparseAttentionMqa(): opts.queryBlock must be an integer ≥ 1 but got 0',
      );
      const q = tf.zeros([2, 1, 5]) as tf.Tensor3D;
      expect(() => denseAttentionMha(q, tf.zeros([4, 2, 5]) as tf.Tensor3D, tf.zeros([4, 1, 2]) as tf.Tensor3D, topk, 0, 1)).toThrow(
        'denseAttentionMha(): k must be [S, H, Dqk] = [S, 1, 5] but got [4, 2, 5] (H, Dqk from q)',
      );
      expect(() => sparseAttentionMha(q, tf.zeros([4, 1, 5]) as tf.Tensor3D, tf.zeros([3, 1, 2]) as tf.Tensor3D, topk, 0, 1)).toThrow(
        'sparseAttentionMha(): v must be [S, H, Dv] = [4, 1, Dv] but got [3, 1, 2] (S from k; H from q)',
      );
    });
  });
});
