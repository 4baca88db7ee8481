import { it, expect } from 'vitest';
import fc from 'fast-check';
import { tf } from '../src/backend.ts';
import { CONFIG_671B, type ModelConfig } from '../src/config.ts';
import type { IndexerWeights } from '../src/checkpoint.ts';
import {
  createIndexerCache,
  disposeIndexerCache,
  fp8Index,
  indexerCacheLength,
  indexerScores,
  indexerScoresExact,
  type IndexerCache,
} from '../src/indexer.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';
import { mulberry32 } from './helpers/random.ts';

// ---------------------------------------------------------------------------------------------
// Plain-JS float64 reference of the indexer (docs/spec-notes.md#lightning-indexer), independent of src/: its own linear,
// LayerNorm, RoPE (both layouts), Sylvester Hadamard, e4m3 rounding and act_quant.
// ---------------------------------------------------------------------------------------------

interface Dims { D: number; Dq: number; HI: number; DI: number; R: number }
interface RawWeights { wq_b: Float32Array; wk: Float32Array; wp: Float32Array; gamma: Float32Array; beta: Float32Array }


function randArray(rand: () => number, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => (rand() * 2 - 1) * scale);
}

function makeConfig(d: Dims, fmt: 'ue8m0' | null = null, k = 4): ModelConfig {
  return {
    ...CONFIG_671B,
    hidden_size: d.D, q_lora_rank: d.Dq, index_n_heads: d.HI, index_head_dim: d.DI, qk_rope_head_dim: d.R, index_topk: k,
    rope_scaling: null, rope_theta: 10000,
    quantization_config: fmt ? { quant_method: 'fp8', fmt: 'e4m3', activation_scheme: 'dynamic', scale_fmt: fmt, weight_block_size: [128, 128] } : undefined,
  };
}

function makeRaw(d: Dims, rand: () => number): RawWeights {
  return {
    wq_b: randArray(rand, d.HI * d.DI * d.Dq, 0.5),
    wk: randArray(rand, d.DI * d.D, 0.5),
    wp: randArray(rand, d.HI * d.D, 0.5),
    gamma: Float32Array.from({ length: d.DI }, () => 0.5 + rand()),
    beta: randArray(rand, d.DI, 0.2),
  };
}

function toWeights(d: Dims, r: RawWeights): IndexerWeights {
  return {
    wq_b: { weight: tf.tensor2d(r.wq_b, [d.HI * d.DI, d.Dq]), fp8: false },
    wk: { weight: tf.tensor2d(r.wk, [d.DI, d.D]), fp8: false },
    weights_proj: { weight: tf.tensor2d(r.wp, [d.HI, d.D]), fp8: false },
    k_norm: { weight: tf.tensor1d(r.gamma), bias: tf.tensor1d(r.beta) },
  };
}

function disposeWeights(w: IndexerWeights): void {
  tf.dispose([w.wq_b.weight, w.wk.weight, w.weights_proj.weight, w.k_norm.weight, w.k_norm.bias]);
}

const matVec = (W: ArrayLike<number>, x: ArrayLike<number>, out: number, inDim: number): number[] =>
  Array.from({ length: out }, (_, o) => {
    let s = 0;
    for (let i = 0; i < inDim; i++) s += W[o * inDim + i]! * x[i]!;
    return s;
  });

/** RoPE on the first R dims: pairs (i, i + R/2) (shipped) or (2i, 2i+1) (pre-fix bug). */
function ropeFirst(v: number[], t: number, R: number, interleaved: boolean): number[] {
  const out = v.slice();
  for (let i = 0; i < R / 2; i++) {
    const phi = t * 10000 ** (-(2 * i) / R);
    const [a, b] = interleaved ? [2 * i, 2 * i + 1] : [i, i + R / 2];
    out[a] = v[a]! * Math.cos(phi) - v[b]! * Math.sin(phi);
    out[b] = v[a]! * Math.sin(phi) + v[b]! * Math.cos(phi);
  }
  return out;
}

function hadamard64(v: number[]): number[] {
  const n = v.length;
  const popcount = (x: number): number => (x ? (x & 1) + popcount(x >>> 1) : 0);
  return Array.from({ length: n }, (_, i) => v.reduce((s, x, j) => s + (popcount(i & j) % 2 ? -x : x), 0) / Math.sqrt(n));
}

/** Nearest e4m3fn value, ties to even, saturating at ±448. */
function e4m3(v: number): number {
  const a = Math.min(Math.abs(v), 448);
  const ulp = 2 ** (Math.floor(Math.log2(Math.max(a, 2 ** -6))) - 3);
  const q = a / ulp;
  let r = Math.floor(q);
  if (q - r > 0.5 || (q - r === 0.5 && r % 2 === 1)) r += 1;
  return Math.sign(v) * r * ulp;
}

/** act_quant of one block: s = fround(amax · fround(1/448)) (ue8m0: next power of two), q = e4m3(x/s). */
function actQuant64(v: number[], fmt: 'ue8m0' | null): { q: number[]; s: number; pre: number[] } {
  const amax = Math.max(...v.map(Math.abs), 1e-4);
  let s = Math.fround(Math.fround(amax) * Math.fround(1 / 448));
  if (fmt === 'ue8m0') s = 2 ** Math.ceil(Math.log2(s));
  const pre = v.map((x) => Math.fround(x / s));
  return { q: pre.map(e4m3), s, pre };
}

interface Ref {
  /** exact Eq. 1 scores [T][S] */
  exact: number[][];
  /** FP8 emulation scores [T][S] */
  fp8: number[][];
  /** per-element bound of |fp8 − exact| (half an e4m3 quantum of each q and k element, propagated) */
  bound: number[][];
  /** per-element scale Σ_j |w_j| Σ_i |q_i k_i| (for float32 rounding slack) */
  mag: number[][];
  /** true where a q/k element of the row/column lies within 1e-3 of an e4m3 rounding midpoint */
  nearMid: boolean[][];
}

/** Scores of all tokens 0..L−1 (rows startPos..L−1), float64. */
function reference(d: Dims, r: RawWeights, x: Float32Array, qr: Float32Array, L: number, startPos: number, fmt: 'ue8m0' | null, interleaved = false): Ref {
  const { D, Dq, HI, DI, R } = d;
  const keys: { k: number[]; kh: number[]; k8: number[]; sk: number; mid: boolean }[] = [];
  for (let t = 0; t < L; t++) {
    const k0 = matVec(r.wk, x.subarray(t * D, (t + 1) * D), DI, D);
    const mean = k0.reduce((a, b) => a + b, 0) / DI;
    const vr = k0.reduce((a, b) => a + (b - mean) ** 2, 0) / DI;
    const kn = k0.map((v, i) => ((v - mean) / Math.sqrt(vr + 1e-6)) * r.gamma[i]! + r.beta[i]!);
    const k = ropeFirst(kn, t, R, interleaved);
    const kh = hadamard64(k);
    const { q: k8, s: sk, pre } = actQuant64(kh, fmt);
    keys.push({ k, kh, k8, sk, mid: pre.some(nearMidpoint) });
  }
  const out: Ref = { exact: [], fp8: [], bound: [], mag: [], nearMid: [] };
  const eps = 2 ** -4;
  for (let t = startPos; t < L; t++) {
    const q0 = matVec(r.wq_b, qr.subarray(t * Dq, (t + 1) * Dq), HI * DI, Dq);
    const wp = matVec(r.wp, x.subarray(t * D, (t + 1) * D), HI, D).map((v) => v * HI ** -0.5 * DI ** -0.5);
    const heads = Array.from({ length: HI }, (_, j) => {
      const q = ropeFirst(q0.slice(j * DI, (j + 1) * DI), t, R, interleaved);
      const qh = hadamard64(q);
      const { q: q8, s: sq, pre } = actQuant64(qh, fmt);
      return { q, qh, q8, sq, pre };
    });
    const rowMid = heads.some((h) => h.pre.some(nearMidpoint));
    const ex: number[] = [], f8: number[] = [], bd: number[] = [], mg: number[] = [], nm: boolean[] = [];
    for (let s = 0; s < L; s++) {
      const key = keys[s]!;
      let e = 0, f = 0, b = 0, m = 0;
      heads.forEach((h, j) => {
        let dot = 0, dot8 = 0, err = 0, abs = 0;
        const aq = 2 ** -10 * 2 * Math.max(...h.qh.map(Math.abs), 1e-4) / 448;
        const ak = 2 ** -10 * 2 * Math.max(...key.kh.map(Math.abs), 1e-4) / 448;
        for (let i = 0; i < DI; i++) {
          dot += h.q[i]! * key.k[i]!;
          dot8 += h.q8[i]! * key.k8[i]!;
          const dq = eps * Math.abs(h.qh[i]!) + aq;
          const dk = eps * Math.abs(key.kh[i]!) + ak;
          err += dq * Math.abs(key.kh[i]!) + Math.abs(h.qh[i]!) * dk + dq * dk;
          abs += Math.abs(h.qh[i]! * key.kh[i]!);
        }
        e += wp[j]! * Math.max(0, dot);
        f += wp[j]! * h.sq * Math.max(0, dot8);
        b += Math.abs(wp[j]!) * err;
        m += Math.abs(wp[j]!) * abs;
      });
      ex.push(e);
      f8.push(f * key.sk);
      bd.push(b);
      mg.push(m);
      nm.push(rowMid || key.mid);
    }
    out.exact.push(ex); out.fp8.push(f8); out.bound.push(bd); out.mag.push(mg); out.nearMid.push(nm);
  }
  return out;
}

function nearMidpoint(v: number): boolean {
  const a = Math.abs(v);
  if (a >= 448) return false;
  const ulp = 2 ** (Math.floor(Math.log2(Math.max(a, 2 ** -6))) - 3);
  const f = a / ulp - Math.floor(a / ulp);
  return Math.abs(f - 0.5) * ulp < 1e-3;
}

/** Runs the TS indexer on tokens [0, L) in chunks (prefill of `first` tokens, then the rest in one call). */
function runIndexer(
  d: Dims, w: IndexerWeights, x: Float32Array, qr: Float32Array, L: number, first: number,
  opts: { config: ModelConfig; maxSeqLen: number; exact?: boolean; ropeInterleaved?: boolean },
): number[][] {
  const cache = createIndexerCache();
  try {
    const rows: number[][] = [];
    for (const [a, b] of [[0, first], [first, L]] as const) {
      if (b <= a) continue;
      const I = tf.tidy(() => indexerScores(
        tf.tensor2d(x.subarray(a * d.D, b * d.D), [b - a, d.D]), tf.tensor2d(qr.subarray(a * d.Dq, b * d.Dq), [b - a, d.Dq]),
        w, cache, a, opts,
      ));
      rows.push(...(I.arraySync() as number[][]));
      I.dispose();
    }
    return rows;
  } finally {
    disposeIndexerCache(cache);
  }
}

const DIMS: Dims = { D: 16, Dq: 8, HI: 4, DI: 16, R: 8 };

function inputs(d: Dims, L: number, seed: number): { x: Float32Array; qr: Float32Array } {
  const rand = mulberry32(seed ^ 0x5bd1e995);
  return { x: randArray(rand, L * d.D, 2), qr: randArray(rand, L * d.Dq, 2) };
}

/*
 * The FP8 error bound (one e4m3 quantum per element, propagated through Eq. 1).
 * Let q̃ = Hd(q), k̃ = Hd(k) (Hd orthonormal, so q̃·k̃ = q·k) and q̂ = s_q·e4m3(q̃/s_q), k̂ likewise.
 * e4m3 has 3 mantissa bits: rounding a normal value moves it by ≤ 2⁻⁴ of itself; a subnormal by ≤ half
 * the spacing 2⁻⁹, i.e. 2⁻¹⁰ in units of s. The scale s ≤ 2·amax/448 (ue8m0 rounds amax/448 up to a
 * power of two), so |q̂_i − q̃_i| ≤ δq_i = 2⁻⁴|q̃_i| + 2⁻¹⁰·2·amax_q/448 (saturation at 448 costs only
 * float32 rounding). Then |q̂·k̂ − q̃·k̃| ≤ Σ_i δq_i|k̃_i| + |q̃_i|δk_i + δq_i·δk_i, ReLU is 1-Lipschitz,
 * and the scales are folded exactly, so |I_fp8 − I_exact| ≤ Σ_j |w_j|·HI^-½·DI^-½·(that sum), plus
 * float32 rounding (slack 1e-5 · Σ_j |w_j| Σ_i |q̃_i k̃_i|).
 */
describeEachBackend('indexerScores (Eq. 1, official FP8 form)', () => {
  it('FP8 scores lie within the e4m3 rounding bound of the exact Eq. 1 scores (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({ seed: fc.integer(), L: fc.integer({ min: 1, max: 4 }), HI: fc.constantFrom(1, 2, 4), DI: fc.constantFrom(8, 16), fmt: fc.constantFrom<'ue8m0' | null>(null, 'ue8m0') }),
        async ({ seed, L, HI, DI, fmt }) => {
          const d: Dims = { D: 8, Dq: 8, HI, DI, R: DI / 2 };
          const raw = makeRaw(d, mulberry32(seed));
          const { x, qr } = inputs(d, L, seed);
          const ref = reference(d, raw, x, qr, L, 0, fmt);
          const w = toWeights(d, raw);
          try {
            const got = runIndexer(d, w, x, qr, L, L, { config: makeConfig(d, fmt), maxSeqLen: 64 });
            got.forEach((row, t) => row.forEach((v, s) => {
              // the bound: Σ_j |w_j| Σ_i (δq_i|k_i| + |q_i|δk_i + δq_i δk_i), δ = 2⁻⁴|v| + 2⁻¹⁰·(2·amax/448)
              const slack = 1e-5 * ref.mag[t]![s]! + 1e-6;
              expect(Math.abs(v - ref.exact[t]![s]!)).toBeLessThanOrEqual(ref.bound[t]![s]! + slack);
            }));
          } finally {
            disposeWeights(w);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('equals a float64 emulation of the official FP8 pipeline (Hadamard, act_quant, e4m3 dots)', () => {
    for (const [seed, fmt] of [[1, null], [2, 'ue8m0'], [3, null], [4, 'ue8m0']] as const) {
      const L = 6;
      const raw = makeRaw(DIMS, mulberry32(seed));
      const { x, qr } = inputs(DIMS, L, seed);
      const ref = reference(DIMS, raw, x, qr, L, 0, fmt);
      const w = toWeights(DIMS, raw);
      const got = runIndexer(DIMS, w, x, qr, L, 4, { config: makeConfig(DIMS, fmt), maxSeqLen: 64 });
      disposeWeights(w);
      let compared = 0;
      got.forEach((row, t) => row.forEach((v, s) => {
        if (ref.nearMid[t]![s]) return; // float32 vs float64 q/k may round to different e4m3 neighbours there
        compared++;
        expect(Math.abs(v - ref.fp8[t]![s]!)).toBeLessThanOrEqual(2e-6 * ref.mag[t]![s]! + 1e-6);
      }));
      expect(compared).toBeGreaterThan(L * L / 2);
    }
  });

  it('the exact variant equals Eq. 1 in float64 (no Hadamard, no FP8)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.record({ seed: fc.integer(), L: fc.integer({ min: 1, max: 5 }), first: fc.integer({ min: 1, max: 5 }) }), async ({ seed, L, first }) => {
        const raw = makeRaw(DIMS, mulberry32(seed));
        const { x, qr } = inputs(DIMS, L, seed);
        const ref = reference(DIMS, raw, x, qr, L, 0, null);
        const w = toWeights(DIMS, raw);
        const got = runIndexer(DIMS, w, x, qr, L, Math.min(first, L), { config: makeConfig(DIMS), maxSeqLen: 64, exact: true });
        disposeWeights(w);
        got.forEach((row, t) => row.forEach((v, s) => expect(Math.abs(v - ref.exact[t]![s]!)).toBeLessThanOrEqual(1e-5 * ref.mag[t]![s]! + 1e-6)));
      }),
      { numRuns: 200 },
    );
  });

  it('RoPE: rope slice first, non-interleaved pairs; ropeInterleaved reproduces the pre-fix layout', () => {
    const L = 5;
    const raw = makeRaw(DIMS, mulberry32(11));
    const { x, qr } = inputs(DIMS, L, 11);
    const w = toWeights(DIMS, raw);
    const config = makeConfig(DIMS);
    const shipped = runIndexer(DIMS, w, x, qr, L, L, { config, maxSeqLen: 64, exact: true });
    const buggy = runIndexer(DIMS, w, x, qr, L, L, { config, maxSeqLen: 64, exact: true, ropeInterleaved: true });
    disposeWeights(w);
    const refShipped = reference(DIMS, raw, x, qr, L, 0, null, false).exact;
    const refBuggy = reference(DIMS, raw, x, qr, L, 0, null, true).exact;
    const maxDiff = (a: number[][], b: number[][]): number => Math.max(...a.flatMap((r, i) => r.map((v, j) => Math.abs(v - b[i]![j]!))));
    expect(maxDiff(shipped, refShipped)).toBeLessThan(1e-4);
    expect(maxDiff(buggy, refBuggy)).toBeLessThan(1e-4);
    expect(maxDiff(refShipped, refBuggy)).toBeGreaterThan(1e-2); // the layouts really differ on this data
  });

  it('prefill then decode equals one prefill (the cache holds k₈ and s_k of earlier positions)', () => {
    const L = 6;
    const raw = makeRaw(DIMS, mulberry32(5));
    const { x, qr } = inputs(DIMS, L, 5);
    const w = toWeights(DIMS, raw);
    const config = makeConfig(DIMS, 'ue8m0');
    const whole = runIndexer(DIMS, w, x, qr, L, L, { config, maxSeqLen: 64 });
    const split = runIndexer(DIMS, w, x, qr, L, L - 1, { config, maxSeqLen: 64 });
    disposeWeights(w);
    split.forEach((row, t) => row.forEach((v, s) => expect(v).toBeCloseTo(whole[t]![s]!, 5)));
  });

  it('grows the cache, keeps no intermediate tensor, and frees everything on disposeIndexerCache', async () => {
    const raw = makeRaw(DIMS, mulberry32(9));
    const { x, qr } = inputs(DIMS, 3, 9);
    const w = toWeights(DIMS, raw);
    const config = makeConfig(DIMS, 'ue8m0');
    const xt = tf.tensor2d(x, [3, DIMS.D]);
    const qt = tf.tensor2d(qr, [3, DIMS.Dq]);
    const x1 = tf.tensor2d(x.subarray(0, DIMS.D), [1, DIMS.D]);
    const q1 = tf.tensor2d(qr.subarray(0, DIMS.Dq), [1, DIMS.Dq]);
    await expectNoTensorLeak(() => {
      const cache = createIndexerCache();
      const before = tf.memory().numTensors;
      const I = indexerScores(xt, qt, w, cache, 0, { config, maxSeqLen: 64 });
      expect(I.shape).toEqual([3, 3]);
      expect(indexerCacheLength(cache)).toBe(3);
      expect(tf.memory().numTensors).toBe(before + 3); // scores + cache keys + cache scales
      const J = indexerScores(x1, q1, w, cache, 3, { config, maxSeqLen: 64 });
      expect(J.shape).toEqual([1, 4]);
      expect(cache.keys!.shape).toEqual([4, DIMS.DI]);
      expect(cache.scales!.shape).toEqual([4]);
      disposeIndexerCache(cache);
      tf.dispose([I, J]);
    });
    tf.dispose([xt, qt, x1, q1]);
    disposeWeights(w);
  });

  it('rejects mismatched shapes, positions and variants with clear messages', () => {
    const raw = makeRaw(DIMS, mulberry32(3));
    const w = toWeights(DIMS, raw);
    const config = makeConfig(DIMS);
    const opts = { config, maxSeqLen: 8 };
    const x = tf.zeros([2, DIMS.D]) as tf.Tensor2D;
    const qr = tf.zeros([2, DIMS.Dq]) as tf.Tensor2D;
    const cache: IndexerCache = createIndexerCache();
    const bad = (f: () => unknown, re: RegExp): void => {
      expect(f).toThrow(re);
    };
    bad(() => indexerScores(tf.zeros([2, 5]) as tf.Tensor2D, qr, w, cache, 0, opts), /indexerScores\(\): x must be \[T, D\] = \[T, 16\] but got \[2, 5\] \(D = config.hidden_size\)/);
    bad(() => indexerScores(x, tf.zeros([2, 7]) as tf.Tensor2D, w, cache, 0, opts), /indexerScores\(\): qr must be \[T, Dq\] = \[2, 8\] but got \[2, 7\] \(T from x; Dq = config.q_lora_rank\)/);
    bad(() => indexerScores(x, tf.zeros([3, 8]) as tf.Tensor2D, w, cache, 0, opts), /indexerScores\(\): qr must be \[T, Dq\] = \[2, 8\] but got \[3, 8\] \(T from x/);
    bad(() => indexerScores(x, qr, w, cache, 1, opts), /indexerScores\(\): startPos must equal the cache length 0 but got 1/);
    bad(() => indexerScores(x, qr, w, cache, 0, { config, maxSeqLen: 1 }), /indexerScores\(\): startPos \+ T must be ≤ opts.maxSeqLen 1 but got 2/);
    bad(() => indexerScores(x, qr, w, cache, 0, { config, maxSeqLen: 0.5 }), /indexerScores\(\): opts.maxSeqLen must be an integer ≥ 1 but got 0.5/);
    bad(() => indexerScores(x, qr, { ...w, wk: { weight: tf.zeros([8, 16]) as tf.Tensor2D, fp8: false } }, cache, 0, opts), /indexerScores\(\): w.wk.weight must be \[DI, D\] = \[16, 16\] but got \[8, 16\] \(DI = config.index_head_dim; D = config.hidden_size\)/);
    bad(() => indexerScores(x, qr, w, cache, 0, { ...opts, config: { ...config, qk_rope_head_dim: 32 } }), /indexerScores\(\): config.qk_rope_head_dim must be even and ≤ index_head_dim 16 but got 32/);
    bad(() => indexerScores(tf.zeros([0, 16]) as tf.Tensor2D, tf.zeros([0, 8]) as tf.Tensor2D, w, cache, 0, opts), /indexerScores\(\): x must hold at least one token but got \[0, 16\]/);
    tf.tidy(() => indexerScores(x, qr, w, cache, 0, opts));
    bad(() => indexerScoresExact(x, qr, w, cache, 2, opts), /indexerScoresExact\(\): cache holds 'fp8' keys but this call computes 'exact' keys/);
    disposeIndexerCache(cache);
    disposeWeights(w);
    tf.dispose([x, qr]);
  });
});

describeEachBackend('fp8Index (official fp8_index kernel)', () => {
  it('sums e4m3 products in float32 within DI·2⁻²⁴ of the exact float64 value (property)', async () => {
    const e4m3Value = fc.integer({ min: -448 * 8, max: 448 * 8 }).map((v) => e4m3(v / 8));
    await fc.assert(
      fc.asyncProperty(
        fc.record({ T: fc.integer({ min: 1, max: 3 }), S: fc.integer({ min: 1, max: 4 }), HI: fc.integer({ min: 1, max: 3 }) }).chain(({ T, S, HI }) =>
          fc.record({
            T: fc.constant(T), S: fc.constant(S), HI: fc.constant(HI),
            q: fc.array(e4m3Value, { minLength: T * HI * 128, maxLength: T * HI * 128 }),
            k: fc.array(e4m3Value, { minLength: S * 128, maxLength: S * 128 }),
            w: fc.array(fc.double({ min: -2, max: 2, noNaN: true }).map(Math.fround), { minLength: T * HI, maxLength: T * HI }),
            ks: fc.array(fc.integer({ min: -12, max: 2 }).map((e) => 2 ** e), { minLength: S, maxLength: S }),
          })),
        async ({ T, S, HI, q, k, w, ks }) => {
          const got = tf.tidy(() => fp8Index(tf.tensor3d(q, [T, HI, 128]), tf.tensor2d(w, [T, HI]), tf.tensor2d(k, [S, 128]), tf.tensor1d(ks)).arraySync());
          for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) {
            let ref = 0, mag = 0;
            for (let j = 0; j < HI; j++) {
              let dot = 0, abs = 0;
              for (let i = 0; i < 128; i++) {
                dot += q[(t * HI + j) * 128 + i]! * k[s * 128 + i]!; // exact in float64: multiples of 2⁻¹⁸ below 2³⁵
                abs += Math.abs(q[(t * HI + j) * 128 + i]! * k[s * 128 + i]!);
              }
              ref += w[t * HI + j]! * Math.max(0, dot);
              mag += Math.abs(w[t * HI + j]!) * abs;
            }
            expect(Math.abs(got[t]![s]! - ref * ks[s]!)).toBeLessThanOrEqual(130 * 2 ** -24 * mag * ks[s]! + 1e-30);
          }
        },
      ),
      { numRuns: 50 },
    );
  });
});

describeEachBackend('fp8Index on a long prefill (blocks of query rows)', () => {
  it('equals the scores of each query row computed alone, bit for bit', () => {
    // HI = 64, S = 1100: 2²⁴ / (64 · 1100) = 238 rows per block, so T = 500 runs as 3 blocks
    const [T, HI, DI, S] = [500, 64, 8, 1100];
    const q8 = tf.randomNormal([T, HI, DI], 0, 1, 'float32', 1) as tf.Tensor3D;
    const w = tf.randomNormal([T, HI], 0, 1, 'float32', 2) as tf.Tensor2D;
    const keys = tf.randomNormal([S, DI], 0, 1, 'float32', 3) as tf.Tensor2D;
    const scales = tf.randomUniform([S], 0.5, 2, 'float32', 4) as tf.Tensor1D;
    const before = tf.memory().numTensors;
    const all = fp8Index(q8, w, keys, scales);
    expect(all.shape).toEqual([T, S]);
    const got = all.dataSync();
    for (const t of [0, 237, 238, 239, 476, 477, 499]) {
      const one = tf.tidy(() => fp8Index(tf.slice(q8, [t, 0, 0], [1, -1, -1]), tf.slice(w, [t, 0], [1, -1]), keys, scales).dataSync());
      expect(Array.from(got.subarray(t * S, (t + 1) * S))).toEqual(Array.from(one));
    }
    all.dispose();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([q8, w, keys, scales]);
  });
});
