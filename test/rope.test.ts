/**
 * YaRN frequencies, angles and both rotation layouts against float64 oracles written here, plus the
 * rotation identities (norm preservation, relative position).
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { tf } from '../src/backend.ts';
import { applyRope, ropeAngles, ropeParams, yarnFrequencies, yarnMscale, type RopeParams } from '../src/rope.ts';
import { softmaxScale } from '../src/config.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';

const P671: RopeParams = { dim: 64, theta: 10000, factor: 40, originalMaxPos: 4096, betaFast: 32, betaSlow: 1, maxSeqLen: 16384 };

/** float64 YaRN frequencies straight from the formula in docs/spec-notes.md#rope-and-yarn. */
function oracleFreqs(p: RopeParams): number[] {
  const base = Array.from({ length: p.dim / 2 }, (_, i) => p.theta ** (-(2 * i) / p.dim));
  if (p.maxSeqLen <= p.originalMaxPos) return base;
  const corr = (n: number): number => (p.dim * Math.log(p.originalMaxPos / (2 * Math.PI * n))) / (2 * Math.log(p.theta));
  const low = Math.max(Math.floor(corr(p.betaFast)), 0);
  let high = Math.min(Math.ceil(corr(p.betaSlow)), p.dim - 1);
  if (low === high) high += 0.001;
  return base.map((f, i) => {
    const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
    return (f / p.factor) * ramp + f * (1 - ramp);
  });
}

/** float64 rotation of one vector at angles phi[R/2]. */
function oracleRope(x: number[], phi: number[], interleaved: boolean): number[] {
  const h = x.length / 2;
  const y = new Array<number>(x.length);
  for (let i = 0; i < h; i++) {
    const [a, b] = interleaved ? [2 * i, 2 * i + 1] : [i, i + h];
    y[a] = x[a]! * Math.cos(phi[i]!) - x[b]! * Math.sin(phi[i]!);
    y[b] = x[a]! * Math.sin(phi[i]!) + x[b]! * Math.cos(phi[i]!);
  }
  return y;
}

describe('yarnFrequencies', () => {
  it('671B: dims ≤ 10 keep θ^(−2i/R), dims ≥ 23 are divided by 40, dims 11..22 blend (low 10, high 23)', () => {
    const f = yarnFrequencies(P671);
    const base = Array.from({ length: 32 }, (_, i) => 10000 ** (-i / 32));
    for (let i = 0; i <= 10; i++) expect(Math.abs(f[i]! - base[i]!)).toBeLessThanOrEqual(2 ** -22 * base[i]!);
    for (let i = 23; i < 32; i++) expect(Math.abs(f[i]! - base[i]! / 40)).toBeLessThanOrEqual(2 ** -21 * base[i]! / 40);
    for (let i = 11; i <= 22; i++) {
      expect(f[i]!).toBeLessThan(base[i]! * (1 - 1e-3));
      expect(f[i]!).toBeGreaterThan((base[i]! / 40) * (1 + 1e-3));
    }
  });

  it('equals the float64 formula within 3 float32 ulp for several configs', () => {
    const configs: RopeParams[] = [
      P671,
      { ...P671, dim: 32, maxSeqLen: 8192 },
      { dim: 64, theta: 50000, factor: 16, originalMaxPos: 2048, betaFast: 32, betaSlow: 1, maxSeqLen: 4096 },
      { dim: 16, theta: 10000, factor: 4, originalMaxPos: 64, betaFast: 4, betaSlow: 4, maxSeqLen: 128 }, // low == high
    ];
    for (const p of configs) {
      const f = yarnFrequencies(p);
      oracleFreqs(p).forEach((w, i) => expect(Math.abs(f[i]! - w)).toBeLessThanOrEqual(3 * 2 ** -24 * w * 2));
    }
  });

  it('no correction unless maxSeqLen > originalMaxPos (4096 → plain frequencies)', () => {
    const f = yarnFrequencies({ ...P671, maxSeqLen: 4096 });
    expect(f[31]!).toBeCloseTo(10000 ** (-31 / 32), 10);
    expect(Array.from(yarnFrequencies({ ...P671, maxSeqLen: 163840 }))).toEqual(Array.from(yarnFrequencies(P671)));
  });

  it('rejects an odd dim and non-positive parameters', () => {
    expect(() => yarnFrequencies({ ...P671, dim: 63 })).toThrow(/yarnFrequencies\(\): dim must be an even integer ≥ 2 but got 63/);
    expect(() => yarnFrequencies({ ...P671, theta: 0 })).toThrow(/yarnFrequencies\(\): theta must be a finite number > 0 but got 0/);
  });
});

describe('ropeParams, yarnMscale, softmaxScale', () => {
  const config = {
    qk_rope_head_dim: 64, rope_theta: 10000,
    rope_scaling: { factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1, mscale: 1 },
  };

  it('reads the config keys', () => {
    expect(ropeParams(config, 16384)).toEqual(P671);
    const plain = ropeParams({ ...config, rope_scaling: null }, 16384);
    expect(plain.factor).toBe(1);
    expect(Array.from(yarnFrequencies(plain))).toEqual(Array.from(yarnFrequencies({ ...P671, maxSeqLen: 16 })));
  });

  it('m = 0.1·ln(40) + 1, final 671B scale 192^-0.5 · m² ≈ 0.135234 (docs/spec-notes.md#mla); 1 when factor ≤ 1', () => {
    expect(yarnMscale(40, 1)).toBeCloseTo(1.36889, 5);
    expect(yarnMscale(1, 1)).toBe(1);
    const mla = { ...config, qk_nope_head_dim: 128 }; // Dqk = 128 + 64 = 192
    expect(softmaxScale(mla, 16384)).toBeCloseTo(0.135234, 6);
    expect(softmaxScale(mla, 4096)).toBe(192 ** -0.5);
  });
});

describeEachBackend('ropeAngles', () => {
  it('cos/sin of the float32 angle float32(t · f), accurate at t = 163839', async () => {
    const freqs = yarnFrequencies(P671);
    const { cos, sin } = ropeAngles(freqs, 163837, 3);
    expect(cos.shape).toEqual([3, 32]);
    const c = cos.dataSync();
    const s = sin.dataSync();
    for (let r = 0; r < 3; r++) {
      for (let i = 0; i < 32; i++) {
        const phi = Math.fround((163837 + r) * freqs[i]!);
        expect(Math.abs(c[r * 32 + i]! - Math.cos(phi))).toBeLessThanOrEqual(6e-8);
        expect(Math.abs(s[r * 32 + i]! - Math.sin(phi))).toBeLessThanOrEqual(6e-8);
      }
    }
    tf.dispose([cos, sin]);
  });

  it('rejects negative or fractional positions', () => {
    expect(() => ropeAngles(new Float32Array(2), -1, 1)).toThrow(/ropeAngles\(\): start must be a non-negative integer but got -1/);
    expect(() => ropeAngles(new Float32Array(2), 0, 1.5)).toThrow(/ropeAngles\(\): length must be a non-negative integer but got 1.5/);
  });
});

describeEachBackend('applyRope', () => {
  const freqs = yarnFrequencies({ ...P671, dim: 16 });

  it('both layouts match the float64 oracle on [T, H, R] with per-position angles; they differ from each other', () => {
    const T = 3;
    const H = 2;
    const x = Array.from({ length: T * H * 16 }, (_, i) => Math.sin(i * 1.3) * 2);
    const { cos, sin } = ropeAngles(freqs, 5, T);
    const xt = tf.tensor3d(x, [T, H, 16]);
    const outs: Float32Array[] = [];
    for (const interleaved of [true, false]) {
      const y = applyRope(xt, cos, sin, interleaved);
      expect(y.shape).toEqual([T, H, 16]);
      const got = y.dataSync() as Float32Array;
      outs.push(got);
      y.dispose();
      for (let t = 0; t < T; t++) {
        const phi = Array.from(freqs, (f) => Math.fround((5 + t) * f));
        for (let h = 0; h < H; h++) {
          const off = (t * H + h) * 16;
          oracleRope(x.slice(off, off + 16), phi, interleaved).forEach((w, i) => expect(Math.abs(got[off + i]! - w)).toBeLessThan(1e-5));
        }
      }
    }
    expect(Math.max(...outs[0]!.map((v, i) => Math.abs(v - outs[1]![i]!)))).toBeGreaterThan(0.1);
    tf.dispose([cos, sin, xt]);
  });

  it('position 0 is the identity', () => {
    const { cos, sin } = ropeAngles(freqs, 0, 1);
    const x = tf.tensor2d([Array.from({ length: 16 }, (_, i) => i - 7)]);
    for (const il of [true, false]) {
      const y = applyRope(x, cos, sin, il);
      expect(Array.from(y.dataSync())).toEqual(Array.from(x.dataSync()));
      y.dispose();
    }
    tf.dispose([cos, sin, x]);
  });

  it('property: preserves norms and is relative (⟨rope(q, t), rope(k, s)⟩ depends only on t − s)', async () => {
    const vec = fc.array(fc.float({ noNaN: true, min: -4, max: 4 }), { minLength: 16, maxLength: 16 });
    await fc.assert(
      fc.asyncProperty(vec, vec, fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: 200 }), fc.integer({ min: 1, max: 300 }), fc.boolean(),
        async (q, k, t, s, shift, il) => {
          const rot = (v: number[], pos: number): number[] => {
            const { cos, sin } = ropeAngles(freqs, pos, 1);
            const x = tf.tensor2d([v]);
            const y = applyRope(x, cos, sin, il);
            const out = Array.from(y.dataSync());
            tf.dispose([cos, sin, x, y]);
            return out;
          };
          const dot = (a: number[], b: number[]): number => a.reduce((acc, v, i) => acc + v * b[i]!, 0);
          const nq = dot(q, q);
          expect(Math.abs(dot(rot(q, t), rot(q, t)) - nq)).toBeLessThan(1e-5 * Math.max(1, nq));
          const d1 = dot(rot(q, t), rot(k, s));
          const d2 = dot(rot(q, t + shift), rot(k, s + shift));
          expect(Math.abs(d1 - d2)).toBeLessThan(1e-4 * Math.max(1, Math.sqrt(nq * dot(k, k))));
        }),
      { numRuns: 200 },
    );
  });

  it('rejects an odd R, cos/sin of the wrong shape and a rank-1 x', () => {
    const { cos, sin } = ropeAngles(freqs, 0, 2);
    expect(() => applyRope(tf.zeros([2, 15]), cos, sin, true)).toThrow(/applyRope\(\): last dim R of x must be even but got 15/);
    expect(() => applyRope(tf.zeros([3, 16]), cos, sin, false)).toThrow(/applyRope\(\): cos must be \[T, Rh\] = \[3, Rh\] but got \[2, 8\] \(T from x\)/);
    expect(() => applyRope(tf.zeros([16]), cos, sin, false)).toThrow(/applyRope\(\): x must be \[T, \.\.\., R\] \(rank ≥ 2\)/);
    tf.dispose([cos, sin]);
  });

  it('does not leak tensors', async () => {
    const { cos, sin } = ropeAngles(freqs, 3, 2);
    const x = tf.ones([2, 4, 16]);
    await expectNoTensorLeak(() => applyRope(x, cos, sin, true).dispose());
    await expectNoTensorLeak(() => applyRope(x, cos, sin, false).dispose());
    await expectNoTensorLeak(() => {
      const a = ropeAngles(freqs, 0, 4);
      tf.dispose([a.cos, a.sin]);
    });
    tf.dispose([cos, sin, x]);
  });
});
