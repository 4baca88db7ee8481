/**
 * FP8 e4m3fn codec, tensor rounding, act_quant, weight_dequant and linear() against independent float64
 * oracles written here (a brute-force nearest-grid-value encoder, per-element loops), on every backend.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { tf } from '../src/backend.ts';
import {
  FP8_E4M3_MAX, FP8_E4M3_MAX_INV, actQuant, actQuantDequant, decodeE4m3Bytes, e4m3Decode, e4m3Encode, e4m3Round,
  linear, weightDequant,
} from '../src/fp8.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';

// --- Independent oracle: the e4m3fn grid built from the format definition, nearest value by brute force ---

/** Non-negative finite e4m3fn values; index = code (0x00..0x7E). */
const GRID: number[] = (() => {
  const g: number[] = [];
  for (let k = 0; k < 8; k++) g.push(k * 2 ** -9); // subnormals, exponent field 0
  for (let e = -6; e <= 8; e++) for (let m = 0; m < 8; m++) g.push((1 + m / 8) * 2 ** e);
  g.pop(); // 1.875 · 2⁸ = 480 is the NaN code 0x7F in e4m3fn
  return g;
})();

/** Nearest grid code to x (ties to the even code = even mantissa), saturating, NaN → 0x7F. */
function oracleEncode(x: number): number {
  if (Number.isNaN(x)) return 0x7f;
  const a = Math.abs(x);
  let best = 0;
  for (let c = 1; c < GRID.length; c++) {
    const d = Math.abs(GRID[c]! - a);
    const db = Math.abs(GRID[best]! - a);
    if (d < db || (d === db && c % 2 === 0)) best = c;
  }
  return best === 0 ? 0 : (x < 0 ? 0x80 : 0) | best;
}

const oracleValue = (x: number): number => (Number.isNaN(x) ? NaN : (x < 0 ? -1 : 1) * GRID[oracleEncode(x) & 0x7f]!);

/** float32 neighbours of a float32 value. */
function nextFloat32(v: number, dir: 1 | -1): number {
  const b = new DataView(new ArrayBuffer(4));
  b.setFloat32(0, v);
  const bits = b.getInt32(0);
  if (v === 0) return dir * 2 ** -149;
  b.setInt32(0, bits + (v > 0 ? dir : -dir));
  return b.getFloat32(0);
}

/** Every grid value, every midpoint and the float32 values on either side of each midpoint, both signs. */
const EDGE_VALUES: number[] = (() => {
  const v: number[] = [];
  for (let c = 0; c < GRID.length; c++) {
    v.push(GRID[c]!);
    if (c + 1 < GRID.length) {
      const mid = (GRID[c]! + GRID[c + 1]!) / 2;
      v.push(mid, nextFloat32(mid, 1), nextFloat32(mid, -1));
    }
  }
  v.push(448, 449, 463.99997, 464, 480, 1e6, 3.4e38, 2 ** -10, 2 ** -10 + 2 ** -20, 1e-30);
  return [...v, ...v.map((x) => -x)].map(Math.fround);
})();

// --- Scalar codec ---

describe('e4m3fn scalar codec', () => {
  it('the oracle grid has 127 values with max 448 and min subnormal 2^-9', () => {
    expect(GRID.length).toBe(127);
    expect(GRID[126]).toBe(448);
    expect(GRID[1]).toBe(2 ** -9);
    expect(GRID[8]).toBe(2 ** -6);
  });

  it('decodes all 256 codes: the grid, its negation, NaN only at 0x7F and 0xFF, 0x80 = −0', () => {
    for (let c = 0; c < 256; c++) {
      const v = e4m3Decode(c);
      if ((c & 0x7f) === 0x7f) expect(Number.isNaN(v)).toBe(true);
      else expect(v).toBe((c & 0x80 ? -1 : 1) * GRID[c & 0x7f]!);
    }
    expect(Object.is(e4m3Decode(0x80), -0)).toBe(true);
  });

  it('decodeE4m3Bytes equals the scalar decoder on every byte', () => {
    const all = decodeE4m3Bytes(Uint8Array.from({ length: 256 }, (_, i) => i));
    for (let c = 0; c < 256; c++) expect(Object.is(all[c], Math.fround(e4m3Decode(c)))).toBe(true);
  });

  it('encode ∘ decode is the identity on all 254 finite codes (0x80 → 0)', () => {
    for (let c = 0; c < 256; c++) {
      if ((c & 0x7f) === 0x7f) continue;
      expect(e4m3Encode(e4m3Decode(c))).toBe(c === 0x80 ? 0 : c);
    }
  });

  it('encodes grid values, midpoints and their float32 neighbours like the brute-force oracle', () => {
    const bad = EDGE_VALUES.filter((x) => e4m3Encode(x) !== oracleEncode(x));
    expect(bad).toEqual([]);
  });

  it('ties go to the even mantissa, saturation at ±448, NaN → 0x7F, −0 → 0', () => {
    expect(e4m3Encode(1.0625)).toBe(0x38); // between 1 (0x38) and 1.125 (0x39)
    expect(e4m3Encode(1.1875)).toBe(0x3a); // between 1.125 (0x39) and 1.25 (0x3a)
    expect(e4m3Encode(2 ** -10)).toBe(0); // half the smallest subnormal → 0
    expect(e4m3Encode(3 * 2 ** -10)).toBe(2); // 1.5 subnormal quanta → 2
    expect(e4m3Encode(464)).toBe(0x7e);
    expect(e4m3Encode(Infinity)).toBe(0x7e);
    expect(e4m3Encode(-Infinity)).toBe(0xfe);
    expect(e4m3Encode(NaN)).toBe(0x7f);
    expect(e4m3Encode(-0)).toBe(0);
  });

  it('property: random float32 values encode like the oracle', () => {
    fc.assert(
      fc.property(fc.float({ noNaN: true, min: -1000, max: 1000 }), (x) => e4m3Encode(x) === oracleEncode(x)),
      { numRuns: 500 },
    );
  });

  it('rejects codes outside 0..255', () => {
    expect(() => e4m3Decode(256)).toThrow(/e4m3Decode\(\): code must be an integer in 0\.\.255 but got 256/);
    expect(() => e4m3Decode(1.5)).toThrow(RangeError);
  });
});

// --- Tensor functions, every backend ---

describeEachBackend('e4m3Round', () => {
  it('equals the oracle on every grid value, midpoint and midpoint neighbour', () => {
    const got = e4m3Round(tf.tensor1d(EDGE_VALUES));
    const v = got.dataSync();
    got.dispose();
    const bad = EDGE_VALUES.filter((x, i) => v[i] !== oracleValue(x));
    expect(bad).toEqual([]);
  });

  it('keeps NaN and saturates ±Infinity', () => {
    const got = e4m3Round(tf.tensor1d([NaN, Infinity, -Infinity, 0]));
    expect(Array.from(got.dataSync())).toEqual([NaN, 448, -448, 0]);
    got.dispose();
  });

  it('property: matches the scalar encoder, is idempotent and monotone', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.float({ noNaN: true, noDefaultInfinity: true }), { minLength: 1, maxLength: 64 }), async (xs) => {
        const sorted = Float32Array.from(xs).sort();
        const r1 = e4m3Round(tf.tensor1d(sorted));
        const r2 = e4m3Round(r1);
        const a = r1.dataSync();
        const b = r2.dataSync();
        tf.dispose([r1, r2]);
        for (let i = 0; i < sorted.length; i++) {
          expect(a[i]! || 0).toBe(oracleValue(sorted[i]!) || 0); // −0 and 0 compare equal here
          expect(b[i]! || 0).toBe(a[i]! || 0);
          if (i > 0) expect(a[i]!).toBeGreaterThanOrEqual(a[i - 1]!);
        }
      }),
      { numRuns: 60 },
    );
  });

  it('does not leak tensors', async () => {
    const x = tf.tensor1d([0.3, -17, 500]);
    await expectNoTensorLeak(() => e4m3Round(x).dispose());
    x.dispose();
  });
});

/** float64 act_quant oracle, one block: the README formula step by step in float32. */
function oracleActQuant(block: number[], fmt: 'ue8m0' | null): { q: number[]; s: number } {
  const amax = Math.max(Math.max(...block.map(Math.abs)), Math.fround(1e-4));
  let s = Math.fround(amax * Math.fround(1 / 448));
  if (fmt === 'ue8m0') {
    let p = 2 ** Math.floor(Math.log2(s));
    while (p < s) p *= 2;
    while (p / 2 >= s) p /= 2;
    s = p;
  }
  const q = block.map((x) => oracleValue(Math.max(-448, Math.min(448, Math.fround(x / s)))));
  return { q, s };
}

describeEachBackend('actQuant / actQuantDequant', () => {
  const rand = (n: number, seed: number, amp: number): number[] =>
    Array.from({ length: n }, (_, i) => Math.fround(Math.sin(seed * 97.3 + i * 12.9898) * amp * (1 + (i % 7))));

  for (const fmt of ['ue8m0', null] as const) {
    it(`matches the float64 oracle block by block (${fmt ?? 'none'})`, () => {
      const rows = [rand(256, 1, 0.01), rand(256, 2, 30), new Array<number>(256).fill(0), rand(256, 3, 1e-7)];
      const { q, scale } = actQuant(tf.tensor2d(rows), fmt);
      expect(q.shape).toEqual([4, 256]);
      expect(scale.shape).toEqual([4, 2]);
      const qv = q.arraySync() as number[][];
      const sv = scale.arraySync() as number[][];
      tf.dispose([q, scale]);
      for (let r = 0; r < rows.length; r++) {
        for (let b = 0; b < 2; b++) {
          const o = oracleActQuant(rows[r]!.slice(b * 128, b * 128 + 128), fmt);
          expect(sv[r]![b]).toBe(o.s);
          expect(qv[r]!.slice(b * 128, b * 128 + 128).map((v) => v || 0)).toEqual(o.q.map((v) => v || 0));
        }
      }
    });
  }

  it('the plain scale is amax × float32(1/448), not amax / 448 (they differ for some amax)', () => {
    // find an amax where the two float32 results differ (independent of the implementation)
    let amax = 1;
    while (Math.fround(amax * FP8_E4M3_MAX_INV) === Math.fround(amax / 448)) amax = Math.fround(amax + 0.0078125);
    const x = tf.tensor2d([[amax, ...new Array<number>(127).fill(0)]]);
    const { q, scale } = actQuant(x, null);
    expect(scale.dataSync()[0]).toBe(Math.fround(amax * Math.fround(1 / 448)));
    expect(scale.dataSync()[0]).not.toBe(Math.fround(amax / 448));
    tf.dispose([x, q, scale]);
  });

  it('ue8m0 scales are powers of two in [amax/448, 2·amax/448); an all-zero block gets 2^-22 (amax floor 1e-4)', () => {
    const x = tf.tensor2d([[...rand(128, 5, 3), ...new Array<number>(128).fill(0)]]);
    const { q, scale } = actQuant(x, 'ue8m0');
    const [s0, s1] = scale.dataSync();
    const amax = Math.max(...rand(128, 5, 3).map(Math.abs));
    expect(Number.isInteger(Math.log2(s0!))).toBe(true);
    expect(s0! * 448).toBeGreaterThanOrEqual(amax * (1 - 2 ** -23));
    expect(s0! * 448).toBeLessThan(2 * amax);
    expect(s1).toBe(2 ** -22);
    tf.dispose([x, q, scale]);
  });

  it('property: the round trip errs by at most half an e4m3 quantum per element', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.float({ noNaN: true, noDefaultInfinity: true, min: -1e4, max: 1e4 }), { minLength: 128, maxLength: 128 }),
        fc.constantFrom('ue8m0' as const, null),
        async (xs, fmt) => {
          const x = tf.tensor1d(xs);
          const { q, scale } = actQuant(x, fmt);
          const deq = actQuantDequant(x, fmt);
          const s = scale.dataSync()[0]!;
          const d = deq.dataSync();
          const qv = q.dataSync();
          tf.dispose([x, q, scale, deq]);
          for (let i = 0; i < 128; i++) {
            const y = Math.abs(xs[i]! / s);
            const spacing = 2 ** (Math.max(Math.floor(Math.log2(Math.max(y, 2 ** -6))), -6) - 3);
            expect(Math.abs(qv[i]!)).toBeLessThanOrEqual(FP8_E4M3_MAX);
            expect(Math.abs(d[i]! - xs[i]!)).toBeLessThanOrEqual(0.5 * spacing * s * (1 + 1e-6) + 1e-30);
          }
        },
      ),
      { numRuns: 40 },
    );
  });

  it('keeps leading dims: [2, 3, 256] → q [2, 3, 256], scale [2, 3, 2]', () => {
    const x = tf.randomNormal([2, 3, 256], 0, 1, 'float32', 7);
    const { q, scale } = actQuant(x, 'ue8m0');
    expect(q.shape).toEqual([2, 3, 256]);
    expect(scale.shape).toEqual([2, 3, 2]);
    tf.dispose([x, q, scale]);
  });

  it('rejects a last dim not divisible by the block size, a bad scaleFmt, a bad block size and a scalar', () => {
    const x = tf.zeros([2, 100]);
    expect(() => actQuant(x, 'ue8m0')).toThrow(/actQuant\(\): x must be \[\.\.\., N\] with N a multiple of blockSize 128 but got \[2, 100\]/);
    expect(() => actQuant(x, 'e8m0' as never)).toThrow(/actQuant\(\): scaleFmt must be 'ue8m0' or null but got "e8m0"/);
    expect(() => actQuant(x, null, 0)).toThrow(/actQuant\(\): blockSize must be a positive integer but got 0/);
    expect(() => actQuant(tf.scalar(1), null)).toThrow(/actQuant\(\): x must be \[\.\.\., N\] \(rank ≥ 1\) but got \[\]/);
    expect(() => actQuantDequant(x, null)).toThrow(/actQuantDequant\(\): x must be \[\.\.\., N\] with N a multiple/);
    x.dispose();
  });

  it('does not leak tensors', async () => {
    const x = tf.randomNormal([2, 256], 0, 1, 'float32', 3);
    await expectNoTensorLeak(() => {
      const { q, scale } = actQuant(x, 'ue8m0');
      tf.dispose([q, scale]);
    });
    await expectNoTensorLeak(() => actQuantDequant(x, null).dispose());
    x.dispose();
  });
});

describeEachBackend('weightDequant', () => {
  it('scales each 128×128 block, including partial edge blocks ([200, 300] with [2, 3] scales)', () => {
    const codes = Array.from({ length: 200 * 300 }, (_, i) => (i * 37 + 11) % 256).map((c) => ((c & 0x7f) === 0x7f ? 0 : c));
    const values = codes.map(e4m3Decode);
    const scales = [[0.5, 2 ** -7, 3], [0.001, 7, 0.25]];
    const w8 = tf.tensor2d(values, [200, 300]);
    const s = tf.tensor2d(scales);
    const got = weightDequant(w8, s);
    const v = got.dataSync();
    const bad: string[] = [];
    for (let i = 0; i < 200; i++) {
      for (let j = 0; j < 300; j++) {
        const want = Math.fround(values[i * 300 + j]! * Math.fround(scales[Math.floor(i / 128)]![Math.floor(j / 128)]!));
        if (v[i * 300 + j] !== want) bad.push(`[${i}, ${j}]: ${v[i * 300 + j]} ≠ ${want}`);
      }
    }
    expect(bad.slice(0, 5)).toEqual([]);
    tf.dispose([w8, s, got]);
  });

  it('rejects a scale grid of the wrong shape and a non-matrix', () => {
    const w8 = tf.zeros([576, 64]);
    expect(() => weightDequant(w8, tf.zeros([4, 1]))).toThrow(
      /weightDequant\(\): scaleInv must be \[⌈O\/B⌉, ⌈I\/B⌉\] = \[5, 1\] but got \[4, 1\] \(O, I from w8; B = block\)/,
    );
    expect(() => weightDequant(tf.zeros([4]), tf.zeros([1, 1]))).toThrow(/weightDequant\(\): w8 must be \[O, I\] \(rank 2\) but got \[4\]/);
    expect(() => weightDequant(w8, tf.zeros([5, 1]), -1)).toThrow(/weightDequant\(\): block must be a positive integer but got -1/);
    w8.dispose();
  });

  it('does not leak tensors', async () => {
    const w8 = tf.ones([130, 3]);
    const s = tf.ones([2, 1]);
    await expectNoTensorLeak(() => weightDequant(w8, s).dispose());
    tf.dispose([w8, s]);
  });
});

describeEachBackend('linear', () => {
  const W = Array.from({ length: 3 * 256 }, (_, i) => Math.sin(i * 0.37) * 0.1);
  const X = Array.from({ length: 2 * 256 }, (_, i) => Math.cos(i * 0.11) * 2);

  /** float64 y = x · Wᵀ */
  const matmulT = (x: ArrayLike<number>, w: number[], m: number, n: number, k: number): number[] =>
    Array.from({ length: m * n }, (_, idx) => {
      const r = Math.floor(idx / n);
      const c = idx % n;
      let acc = 0;
      for (let t = 0; t < k; t++) acc += x[r * k + t]! * w[c * k + t]!;
      return acc;
    });

  it('bf16/fp32 weights: y = x · Wᵀ; fp8 weights: y = actQuantDequant(x) · Wᵀ; keeps leading dims', () => {
    const weight = tf.tensor2d(W, [3, 256]);
    const x = tf.tensor3d(X, [1, 2, 256]);
    for (const fp8 of [false, true]) {
      const y = linear(x, { weight, fp8 }, 'ue8m0');
      expect(y.shape).toEqual([1, 2, 3]);
      const xin = fp8 ? actQuantDequant(x, 'ue8m0') : x.clone();
      const want = matmulT(xin.dataSync(), W, 2, 3, 256);
      const got = y.dataSync();
      for (let i = 0; i < want.length; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThan(1e-5);
      tf.dispose([y, xin]);
    }
    // the FP8 path really quantizes: it differs from the plain product
    const a = linear(x, { weight, fp8: true }, 'ue8m0');
    const b = linear(x, { weight, fp8: false }, null);
    expect(tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]).toBeGreaterThan(1e-4);
    tf.dispose([a, b, weight, x]);
  });

  it('rejects an input whose last dim is not in, and an fp8 input dim not divisible by 128', () => {
    const weight = tf.zeros<tf.Rank.R2>([3, 100]);
    expect(() => linear(tf.zeros([2, 99]), { weight, fp8: false }, null)).toThrow(
      /linear\(\): x must be \[\.\.\., In\] = \[\.\.\., 100\] but got \[2, 99\] \(In from w.weight\)/,
    );
    expect(() => linear(tf.zeros([2, 100]), { weight, fp8: true }, null)).toThrow(/linear\(\): x must be \[\.\.\., In\] with In a multiple of 128/);
    weight.dispose();
  });

  it('does not leak tensors', async () => {
    const weight = tf.tensor2d(W, [3, 256]);
    const x = tf.tensor2d(X, [2, 256]);
    await expectNoTensorLeak(() => linear(x, { weight, fp8: true }, 'ue8m0').dispose());
    tf.dispose([weight, x]);
  });
});
