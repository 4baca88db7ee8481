/**
 * GRPO loss (src/grpo.ts) against a float64 plain-JS reference written here from the formulas of
 * DeepSeek-V3.2 §3.1 Eqs. 5–9 (not from src/grpo.ts), gradients against central finite differences of
 * that reference, the hand-computed table of docs/spec-notes.md#grpo-hand-computed-example, and properties.
 */
import { it, expect } from 'vitest';
import fc from 'fast-check';
import { tf } from '../src/backend.ts';
import {
  grpoLoss, grpoLossAndGrad, groupAdvantages, opsmSequenceKl, klK3, klUnbiasedK3, aggregateLoss,
  type GrpoOptions, type AdvantageMode, type KlEstimator, type Aggregation,
} from '../src/grpo.ts';
import { stopGradient } from '../src/internal/stop_gradient.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';

// --- float64 reference ---

type Mat = number[][];
interface RefIn { rewards: number[]; mask: Mat; logp: Mat; logpOld: Mat; logpRef: Mat; logpSampler: Mat }

function refAdvantages(r: number[], mode: AdvantageMode, eps: number): number[] {
  const G = r.length;
  const mean = r.reduce((a, b) => a + b, 0) / G;
  if (mode === 'mean') return r.map((x) => x - mean);
  const ss = r.reduce((a, b) => a + (b - mean) ** 2, 0);
  const std = Math.sqrt(ss / (mode === 'mean_std_sample' ? G - 1 : G));
  return r.map((x) => (x - mean) / (std + eps));
}

/** Keep mask of Eq. 9 from the (unperturbed) inputs: it is a constant of the differentiated loss. */
function refKeep(x: RefIn, adv: number[], delta: number | null): { keep: boolean[]; seqKl: number[] } {
  const seqKl = x.mask.map((m, i) => {
    let s = 0, n = 0;
    m.forEach((v, t) => { if (v) { s += x.logpSampler[i]![t]! - x.logp[i]![t]!; n++; } });
    return s / Math.max(n, 1);
  });
  return { seqKl, keep: adv.map((a, i) => delta === null || !(a < 0 && seqKl[i]! > delta)) };
}

function refLoss(x: RefIn, logp: Mat, o: GrpoOptions, keep: boolean[]): { loss: number; ptl: Mat; ratio: Mat; kl: Mat } {
  const adv = refAdvantages(x.rewards, o.advantage, o.stdEps);
  const T = x.mask[0]!.length;
  const ratio: Mat = [], kl: Mat = [], ptl: Mat = [];
  x.mask.forEach((m, i) => {
    ratio.push([]); kl.push([]); ptl.push([]);
    for (let t = 0; t < T; t++) {
      if (!m[t]) { ratio[i]!.push(0); kl[i]!.push(0); ptl[i]!.push(0); continue; }
      const rho = Math.exp(logp[i]![t]! - x.logpOld[i]![t]!);
      const d = x.logpRef[i]![t]! - logp[i]![t]!;
      const k3 = Math.exp(d) - d - 1;
      const D = o.kl === 'k3' ? k3 : o.kl === 'unbiased_k3' ? rho * k3 : 0;
      const A = adv[i]!;
      const clipped = Math.min(Math.max(rho, 1 - o.clipLow), 1 + o.clipHigh);
      const surr = -Math.min(rho * A, clipped * A) * (keep[i] ? 1 : 0);
      ratio[i]!.push(rho); kl[i]!.push(D); ptl[i]!.push(surr + o.beta * D);
    }
  });
  const lens = x.mask.map((m) => m.reduce((a, b) => a + b, 0));
  const sums = ptl.map((r) => r.reduce((a, b) => a + b, 0));
  const nonEmpty = lens.filter((l) => l > 0).length;
  const total = sums.reduce((a, b) => a + b, 0);
  let loss: number;
  if (o.aggregation === 'token-mean') loss = total / lens.reduce((a, b) => a + b, 0);
  else if (o.aggregation === 'seq-mean-token-mean') loss = sums.reduce((a, s, i) => a + (lens[i]! ? s / lens[i]! : 0), 0) / nonEmpty;
  else if (o.aggregation === 'seq-mean-token-sum') loss = total / nonEmpty;
  else loss = total / T;
  return { loss, ptl, ratio, kl };
}

/** ∂loss/∂logp by central differences of the float64 reference (keep mask held fixed: the statistic is detached). */
function refGrad(x: RefIn, o: GrpoOptions, keep: boolean[], h = 1e-6): Mat {
  return x.logp.map((row, i) => row.map((_, t) => {
    if (!x.mask[i]![t]) return 0;
    const plus = x.logp.map((r) => [...r]); plus[i]![t]! += h;
    const minus = x.logp.map((r) => [...r]); minus[i]![t]! -= h;
    return (refLoss(x, plus, o, keep).loss - refLoss(x, minus, o, keep).loss) / (2 * h);
  }));
}

function toTensors(x: RefIn) {
  return {
    rewards: tf.tensor1d(x.rewards), mask: tf.tensor2d(x.mask), logp: tf.tensor2d(x.logp),
    logpOld: tf.tensor2d(x.logpOld), logpRef: tf.tensor2d(x.logpRef), logpSampler: tf.tensor2d(x.logpSampler),
  };
}
function disposeAll(o: Record<string, unknown>): void {
  tf.dispose(Object.values(o).filter((v): v is tf.Tensor => v instanceof tf.Tensor));
}
function maxErr(a: number[], b: number[]): number {
  let m = 0, ref = 0;
  a.forEach((v, i) => { m = Math.max(m, Math.abs(v - b[i]!)); ref = Math.max(ref, Math.abs(b[i]!)); });
  return m / Math.max(1, ref);
}

// --- random inputs (float32-representable, ratios kept ≥ 1e-3 away from the clip kinks) ---

const f32 = (lo: number, hi: number) => fc.double({ min: lo, max: hi, noNaN: true }).map(Math.fround);
const arbCase = fc.record({ G: fc.integer({ min: 2, max: 4 }), T: fc.integer({ min: 1, max: 5 }) }).chain(({ G, T }) => fc.record({
  rewards: fc.array(fc.constantFrom(0, 0.5, 1, 2), { minLength: G, maxLength: G }),
  lens: fc.array(fc.integer({ min: 1, max: T }), { minLength: G, maxLength: G }),
  logp: fc.array(fc.array(f32(-4, -0.01), { minLength: T, maxLength: T }), { minLength: G, maxLength: G }),
  dOld: fc.array(fc.array(f32(-0.6, 0.6), { minLength: T, maxLength: T }), { minLength: G, maxLength: G }),
  logpRef: fc.array(fc.array(f32(-4, -0.01), { minLength: T, maxLength: T }), { minLength: G, maxLength: G }),
  logpSampler: fc.array(fc.array(f32(-4, -0.01), { minLength: T, maxLength: T }), { minLength: G, maxLength: G }),
  options: fc.record({
    advantage: fc.constantFrom<AdvantageMode>('mean', 'mean_std_sample', 'mean_std_population'),
    stdEps: fc.constantFrom(1e-4, 1e-6),
    clipLow: fc.constantFrom(0.2, 0.1),
    clipHigh: fc.constantFrom(0.2, 0.28),
    beta: fc.constantFrom(0, 0.04, 0.5),
    kl: fc.constantFrom<KlEstimator>('k3', 'unbiased_k3', 'none'),
    opsmDelta: fc.constantFrom(null, 0, 0.3),
    aggregation: fc.constantFrom<Aggregation>('token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum', 'seq-mean-token-sum-norm'),
  }),
})).map((c): { x: RefIn; o: GrpoOptions } => ({
  x: {
    rewards: c.rewards,
    mask: c.lens.map((l) => c.logp[0]!.map((_, t) => (t < l ? 1 : 0))),
    logp: c.logp,
    logpOld: c.logp.map((r, i) => r.map((v, t) => Math.fround(v - c.dOld[i]![t]!))),
    logpRef: c.logpRef, logpSampler: c.logpSampler,
  },
  o: c.options,
}));
const awayFromKinks = ({ x, o }: { x: RefIn; o: GrpoOptions }) => x.logp.every((r, i) => r.every((v, t) => {
  const rho = Math.exp(v - x.logpOld[i]![t]!);
  return Math.abs(rho - (1 - o.clipLow)) > 1e-3 && Math.abs(rho - (1 + o.clipHigh)) > 1e-3;
}));
const nonConstantRewards = ({ x }: { x: RefIn }) => new Set(x.rewards).size > 1;

// docs/spec-notes.md#grpo-hand-computed-example: G = 4, T = 5
const MD: RefIn = {
  rewards: [1, 0, 0.5, 0],
  mask: [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0]],
  logp: [[-0.5, -1.0, -0.2, 0, 0], [-2.0, -0.1, 0, 0, 0], [-0.3, -0.7, -1.5, -0.05, 0], [-4.0, 0, 0, 0, 0]],
  logpOld: [[-0.6, -0.9, -0.2, 0, 0], [-1.5, -1.5, 0, 0, 0], [-0.3, -0.9, -1.2, -0.1, 0], [-1.0, 0, 0, 0, 0]],
  logpRef: [[-0.4, -1.2, -0.3, 0, 0], [-1.0, -0.2, 0, 0, 0], [-0.5, -0.6, -1.0, -0.2, 0], [-0.5, 0, 0, 0, 0]],
  logpSampler: [[-0.62, -0.88, -0.21, 0, 0], [-1.4, -1.45, 0, 0, 0], [-0.31, -0.92, -1.18, -0.1, 0], [-0.9, 0, 0, 0, 0]],
};
const BASE: GrpoOptions = { advantage: 'mean', stdEps: 0, clipLow: 0.2, clipHigh: 0.2, beta: 0.04, kl: 'unbiased_k3', opsmDelta: 0.5, aggregation: 'seq-mean-token-mean' };

describeEachBackend('grpo', () => {
  it('matches the float64 reference (values) and its finite-difference gradient on random groups', async () => {
    await fc.assert(fc.asyncProperty(arbCase.filter(awayFromKinks), async ({ x, o }) => {
      const t = toTensors(x);
      const parts = grpoLoss(t, o);
      const { grad } = grpoLossAndGrad(t, o);
      const adv = refAdvantages(x.rewards, o.advantage, o.stdEps);
      const { keep } = refKeep(x, adv, o.opsmDelta);
      const ref = refLoss(x, x.logp, o, keep);
      expect(Array.from(parts.opsmKeep.dataSync()).map(Boolean)).toEqual(keep);
      expect(maxErr(Array.from(parts.perTokenLoss.dataSync()), ref.ptl.flat())).toBeLessThan(1e-5);
      expect(maxErr([parts.loss.dataSync()[0]!], [ref.loss])).toBeLessThan(1e-5);
      expect(maxErr(Array.from(grad.dataSync()), refGrad(x, o, keep).flat())).toBeLessThan(2e-5);
      disposeAll(parts as unknown as Record<string, unknown>); disposeAll(t); grad.dispose();
    }), { numRuns: 30 });
  });

  it('reproduces the hand-computed scalar losses of docs/spec-notes.md (TRL advantages, ε 0.2, β 0; and the V3.2 Eq. 8 row)', () => {
    const rows: [Partial<GrpoOptions>, number[]][] = [
      [{ advantage: 'mean_std_sample', stdEps: 1e-4, beta: 0, kl: 'none', opsmDelta: null }, [0.2394, -0.05421, -0.135526, -0.108421]],
      [{ advantage: 'mean_std_sample', stdEps: 1e-4, clipHigh: 0.28, kl: 'k3', opsmDelta: null }, [0.529375, 0.063433, 0.158584, 0.126867]],
      [{ advantage: 'mean_std_sample', stdEps: 1e-4, clipHigh: 0.28, opsmDelta: 0.5 }, [0.099395, -0.109208, -0.27302, -0.218416]],
      [{}, [0.056609, -0.047741, -0.119352, -0.095482]],
    ];
    const aggs: Aggregation[] = ['seq-mean-token-mean', 'token-mean', 'seq-mean-token-sum', 'seq-mean-token-sum-norm'];
    const t = toTensors(MD);
    for (const [opts, expected] of rows) {
      aggs.forEach((aggregation, j) => {
        const p = grpoLoss(t, { ...BASE, ...opts, aggregation });
        expect(p.loss.dataSync()[0]).toBeCloseTo(expected[j]!, 5);
        disposeAll(p as unknown as Record<string, unknown>);
      });
    }
    const p = grpoLoss(t, BASE);
    expect(Array.from(p.opsmSeqKl!.dataSync())).toEqual([-0.003333, -0.375, 0.01, 3.1].map((v) => expect.closeTo(v, 5)));
    expect(Array.from(p.opsmKeep.dataSync())).toEqual([1, 1, 1, 0]);
    disposeAll(p as unknown as Record<string, unknown>); disposeAll(t);
  });

  it('advantages sum to zero within a group (every mode)', async () => {
    await fc.assert(fc.asyncProperty(fc.array(f32(-5, 5), { minLength: 2, maxLength: 9 }),
      fc.constantFrom<AdvantageMode>('mean', 'mean_std_sample', 'mean_std_population'), async (r, mode) => {
        const a = groupAdvantages(tf.tensor1d(r), mode, 1e-4);
        const s = Array.from(a.dataSync()).reduce((x, y) => x + y, 0);
        const scale = Math.max(1, ...Array.from(a.dataSync(), Math.abs));
        expect(Math.abs(s)).toBeLessThan(1e-5 * scale * r.length);
        a.dispose();
      }), { numRuns: 40 });
  });

  it('ratio = 1 and KL = 0 (both estimators) when π_θ = π_old = π_ref; the loss is then −mean(A·M) = 0', () => {
    const lp = [[-1.3, -0.2, -2], [-0.7, -0.5, 0]];
    const x: RefIn = { rewards: [1, 0], mask: [[1, 1, 1], [1, 1, 0]], logp: lp, logpOld: lp, logpRef: lp, logpSampler: lp };
    for (const kl of ['k3', 'unbiased_k3'] as const) {
      const t = toTensors(x);
      const p = grpoLoss(t, { ...BASE, kl, aggregation: 'seq-mean-token-mean' });
      expect(Array.from(p.ratio.dataSync())).toEqual([1, 1, 1, 1, 1, 0]);
      expect(Array.from(p.kl.dataSync()).every((v) => v === 0)).toBe(true);
      expect(p.loss.dataSync()[0]).toBeCloseTo(0, 7); // advantages ±0.5 with ρ = 1 cancel in the sequence mean
      disposeAll(p as unknown as Record<string, unknown>); disposeAll(t);
    }
  });

  it('OPSM never drops a sequence with A ≥ 0, however off-policy; it drops A < 0 with seqKl > δ; the KL term is not masked', () => {
    const x: RefIn = { rewards: [1, 0], mask: [[1, 1], [1, 1]], logp: [[-3, -3], [-3, -3]], logpOld: [[-3, -3], [-3, -3]],
      logpRef: [[-1, -1], [-1, -1]], logpSampler: [[-0.1, -0.1], [-0.1, -0.1]] };
    const t = toTensors(x);
    const p = grpoLoss(t, { ...BASE, opsmDelta: 0 });
    expect(Array.from(p.opsmKeep.dataSync())).toEqual([1, 0]);
    const ptl = p.perTokenLoss.arraySync();
    const kl = p.kl.arraySync();
    expect(ptl[1]![0]).toBeCloseTo(0.04 * kl[1]![0]!, 6); // surrogate dropped, KL kept
    expect(kl[1]![0]).toBeGreaterThan(0);
    expect(ptl[0]![0]).toBeCloseTo(-0.5 + 0.04 * kl[0]![0]!, 6);
    disposeAll(p as unknown as Record<string, unknown>); disposeAll(t);
  });

  it('OPSM property: rows with A ≥ 0 are always kept (random inputs)', async () => {
    await fc.assert(fc.asyncProperty(arbCase.filter(nonConstantRewards), async ({ x, o }) => {
      const t = toTensors(x);
      const p = grpoLoss(t, { ...o, opsmDelta: -1e9 }); // every row is "off-policy"
      const adv = p.advantages.dataSync();
      p.opsmKeep.dataSync().forEach((k, i) => expect(Boolean(k)).toBe(adv[i]! >= 0));
      disposeAll(p as unknown as Record<string, unknown>); disposeAll(t);
    }), { numRuns: 25 });
  });

  it('the OPSM statistic is detached: no gradient reaches logp through it', () => {
    const g = tf.grad((lp: tf.Tensor) => tf.sum(opsmSequenceKl(tf.tensor2d([[-1, -2]]), lp as tf.Tensor2D, tf.tensor2d([[1, 1]]))));
    const dx = g(tf.tensor2d([[-3, -4]]));
    expect(Array.from(dx.dataSync())).toEqual([0, 0]);
    const d2 = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(x, stopGradient(x))))(tf.tensor1d([3, -2]));
    expect(Array.from(d2.dataSync())).toEqual([3, -2]);
    tf.dispose([dx, d2]);
  });

  it('padding never contributes: NaN / ±Infinity / garbage in padded positions change neither loss nor gradient', async () => {
    await fc.assert(fc.asyncProperty(arbCase.filter(awayFromKinks), fc.constantFrom(NaN, Infinity, -Infinity, 1e30, -7), async ({ x, o }, junk) => {
      const dirty = (m: Mat): Mat => m.map((r, i) => r.map((v, t) => (x.mask[i]![t] ? v : junk)));
      const xd: RefIn = { ...x, logp: dirty(x.logp), logpOld: dirty(x.logpOld), logpRef: dirty(x.logpRef), logpSampler: dirty(x.logpSampler) };
      const a = toTensors(x), b = toTensors(xd);
      const ra = grpoLossAndGrad(a, o), rb = grpoLossAndGrad(b, o);
      expect(rb.value.dataSync()[0]).toBe(ra.value.dataSync()[0]);
      const gb = Array.from(rb.grad.dataSync());
      expect(gb).toEqual(Array.from(ra.grad.dataSync()));
      gb.forEach((v, k) => { if (!x.mask.flat()[k]) expect(v).toBe(0); });
      tf.dispose([ra.value, ra.grad, rb.value, rb.grad]); disposeAll(a); disposeAll(b);
    }), { numRuns: 20 });
  });

  it('k3 gradient weight explodes where π_θ ≪ π_ref; the unbiased ρ·k3 weight stays bounded (V3.2 Eq. 7)', () => {
    const lref = -0.5, lold = -1;
    const rows: { lp: number; k3: number; unb: number }[] = [];
    for (const lp of [-1, -4, -10, -20, -40]) {
      const mask = tf.tensor2d([[1]]);
      const gk3 = tf.grad((l: tf.Tensor) => tf.sum(klK3(l as tf.Tensor2D, tf.tensor2d([[lref]]), mask)))(tf.tensor2d([[lp]]));
      const gub = tf.grad((l: tf.Tensor) => tf.sum(klUnbiasedK3(l as tf.Tensor2D, tf.tensor2d([[lold]]), tf.tensor2d([[lref]]), mask)))(tf.tensor2d([[lp]]));
      rows.push({ lp, k3: gk3.dataSync()[0]!, unb: gub.dataSync()[0]! });
      // closed forms: ∂k3/∂lθ = 1 − e^{lref − lθ}; ∂(ρk3)/∂lθ = ρ (lθ − lref)
      expect(gk3.dataSync()[0]).toBeCloseTo(1 - Math.exp(lref - lp), -Math.log10(Math.max(1, Math.exp(lref - lp))) + 4);
      expect(gub.dataSync()[0]).toBeCloseTo(Math.exp(lp - lold) * (lp - lref), 5);
      tf.dispose([gk3, gub, mask]);
    }
    expect(Math.abs(rows[2]!.k3)).toBeGreaterThan(1e4);
    expect(Math.abs(rows[4]!.k3)).toBeGreaterThan(1e16);
    for (const r of rows) expect(Math.abs(r.unb)).toBeLessThan(1); // max of |x log x|-type weight here
    expect(Math.abs(rows[4]!.unb)).toBeLessThan(1e-14);
  });

  it('an all-padding row (empty completion) is left out of the sequence means but keeps its reward in the baseline', () => {
    const x: RefIn = { rewards: [1, 0, 0.5], mask: [[1, 1], [0, 0], [1, 0]], logp: [[-1, -2], [NaN, NaN], [-0.5, 0]],
      logpOld: [[-1.1, -2], [0, 0], [-0.4, 0]], logpRef: [[-1, -1], [0, 0], [-1, 0]], logpSampler: [[-1, -2], [0, 0], [-0.5, 0]] };
    for (const aggregation of ['seq-mean-token-mean', 'seq-mean-token-sum', 'token-mean'] as const) {
      const t = toTensors(x);
      const o = { ...BASE, aggregation };
      const p = grpoLoss(t, o);
      const { keep } = refKeep(x, refAdvantages(x.rewards, 'mean', 0), o.opsmDelta);
      expect(p.loss.dataSync()[0]).toBeCloseTo(refLoss(x, x.logp, o, keep).loss, 6);
      expect(p.advantages.dataSync()[1]).toBeCloseTo(-0.5, 6);
      disposeAll(p as unknown as Record<string, unknown>); disposeAll(t);
    }
  });

  it('rejects bad inputs with messages naming the function, the argument and the value', () => {
    const ok = toTensors(MD);
    const bad = (patch: Record<string, unknown>, o: Partial<GrpoOptions>, re: RegExp) =>
      expect(() => grpoLoss({ ...ok, ...patch } as never, { ...BASE, ...o })).toThrow(re);
    bad({ logp: tf.zeros([4, 4]) }, {}, /grpoLoss\(\): inputs.logp must be \[G, T\] = \[4, 5\] but got \[4, 4\] \(G, T from inputs.mask\)/);
    bad({ rewards: tf.tensor1d([1, 0]) }, {}, /grpoLoss\(\): inputs.rewards must be \[G\] = \[4\] but got \[2\] \(G from inputs.mask\)/);
    bad({ rewards: tf.tensor1d([1]), mask: tf.tensor2d([[1]]), logp: tf.tensor2d([[-1]]), logpOld: tf.tensor2d([[-1]]), logpRef: tf.tensor2d([[-1]]), logpSampler: tf.tensor2d([[-1]]) }, {}, /G ≥ 2 completions but got G = 1/);
    bad({ logp: tf.tensor2d(MD.logp.map((r, i) => r.map((v, t) => (i === 2 && t === 1 ? NaN : v)))) }, {}, /logp must be finite at tokens \(mask = 1\) but got NaN at \[2, 1\]/);
    bad({ mask: tf.tensor2d(MD.mask.map((r) => r.map((v) => v * 0.5))) }, {}, /mask must hold only 0 and 1 but got 0.5/);
    bad({ mask: tf.zeros([4, 5]) }, {}, /aggregateLoss\(\): mask holds no token/);
    bad({ logpRef: undefined }, {}, /logpRef is required/);
    bad({ logpSampler: undefined }, {}, /logpSampler is required/);
    bad({}, { clipLow: 1 }, /clipLow must be in \[0, 1\) but got 1/);
    bad({}, { beta: -1 }, /beta must be a finite number ≥ 0 but got -1/);
    bad({}, { kl: 'k2' as never }, /options.kl must be one of k3, unbiased_k3, none but got 'k2'/);
    bad({}, { aggregation: 'sum' as never }, /grpoLoss\(\): options.aggregation must be 'token-mean' or/);
    expect(() => groupAdvantages(tf.tensor1d([1]))).toThrow(/groupAdvantages\(\): a group needs G ≥ 2 completions but got G = 1/);
    expect(() => groupAdvantages(tf.tensor1d([1, 2]), 'std' as never)).toThrow(/groupAdvantages\(\): mode must be one of/);
    expect(() => groupAdvantages(tf.tensor1d([1, 2]), 'mean', -1)).toThrow(/stdEps must be a finite number ≥ 0 but got -1/);
    expect(() => aggregateLoss(tf.zeros([1, 1]), tf.zeros([1, 1]), 'token-mean')).toThrow(/aggregateLoss\(\): mask holds no token/);
    disposeAll(ok);
  });

  it('leaks no tensors (loss, gradient)', async () => {
    const t = toTensors(MD);
    const empty = tf.zeros([4, 5]) as tf.Tensor2D;
    await expectNoTensorLeak(() => {
      const p = grpoLoss(t, BASE);
      disposeAll(p as unknown as Record<string, unknown>);
      const g = grpoLossAndGrad(t, BASE);
      tf.dispose([g.value, g.grad]);
      try { grpoLoss({ ...t, mask: empty }, BASE); } catch { /* expected */ }
    });
    disposeAll(t); empty.dispose();
  });
});
