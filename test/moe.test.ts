/**
 * MoE gate, experts and Keep Routing, against a plain-JS float64 reference of the official
 * `Gate.forward` / `MoE.forward` written here (not against src/moe.ts itself).
 */
import { it, expect } from 'vitest';
import fc from 'fast-check';
import { tf } from '../src/backend.ts';
import { CONFIG_671B, type ModelConfig } from '../src/config.ts';
import { moeGate, moe, swigluFfn, concatRoutingRecords, type GateConfig, type LayerRouting } from '../src/moe.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';
import { mulberry32 } from './helpers/random.ts';

// --- float64 reference of the official Gate.forward / MLP / MoE.forward ---

type Mat = number[][];

function randMat(rows: number, cols: number, rnd: () => number, scale = 1): Mat {
  return Array.from({ length: rows }, () => Array.from({ length: cols }, () => Math.fround((rnd() * 2 - 1) * scale)));
}
const sigmoid = (z: number): number => 1 / (1 + Math.exp(-z));
const dot = (a: number[], b: number[]): number => a.reduce((s, v, i) => s + v * b[i]!, 0);
/** indices of the k largest values, descending, ties → lower index; also the gap between the k-th and (k+1)-th. */
function topkRef(v: number[], k: number): { idx: number[]; gap: number } {
  const order = v.map((_, i) => i).sort((i, j) => (v[j]! - v[i]! !== 0 ? v[j]! - v[i]! : i - j));
  const kth = v[order[k - 1]!]!;
  const next = k < v.length ? v[order[k]!]! : -Infinity;
  return { idx: order.slice(0, k), gap: kth === -Infinity && next === -Infinity ? 0 : kth - next };
}

interface RefGate {
  ids: number[][];
  weights: number[][];
  /** smallest selection margin over all tokens (group cut and expert cut) */
  margin: number;
}
function refGate(x: Mat, W: Mat, bias: number[] | null, cfg: GateConfig, fill = -Infinity): RefGate {
  const { n_routed_experts: E, num_experts_per_tok: Ek, n_group: G, topk_group } = cfg;
  const ids: number[][] = [];
  const weights: number[][] = [];
  let margin = Infinity;
  for (const row of x) {
    const logits = W.map((w) => dot(row, w));
    let s: number[];
    if (cfg.scoring_func === 'softmax') {
      const m = Math.max(...logits);
      const e = logits.map((l) => Math.exp(l - m));
      const z = e.reduce((a, b) => a + b, 0);
      s = e.map((v) => v / z);
    } else s = logits.map(sigmoid);
    let sb = bias ? s.map((v, i) => v + bias[i]!) : [...s];
    if (G > 1) {
      const per = E / G;
      const groupScores = Array.from({ length: G }, (_, g) => {
        const grp = sb.slice(g * per, (g + 1) * per);
        return bias ? topkRef(grp, 2).idx.reduce((a, i) => a + grp[i]!, 0) : Math.max(...grp);
      });
      const kept = topkRef(groupScores, topk_group);
      margin = Math.min(margin, kept.gap);
      sb = sb.map((v, i) => (kept.idx.includes(Math.floor(i / per)) ? v : fill));
    }
    const sel = topkRef(sb, Ek);
    margin = Math.min(margin, sel.gap);
    let w = sel.idx.map((i) => s[i]!);
    if (cfg.scoring_func === 'sigmoid') {
      const z = w.reduce((a, b) => a + b, 0);
      w = w.map((v) => v / z);
    }
    ids.push(sel.idx);
    weights.push(w.map((v) => v * cfg.routed_scaling_factor));
  }
  return { ids, weights, margin };
}

interface RefFfn { w1: Mat; w2: Mat; w3: Mat }
function refFfn(x: number[], w: RefFfn): number[] {
  const h = w.w1.map((r, j) => {
    const a = dot(x, r);
    return a * sigmoid(a) * dot(x, w.w3[j]!);
  });
  return w.w2.map((r) => dot(h, r));
}

// --- fixtures built from the reference's plain arrays ---

const TINY: GateConfig = { n_routed_experts: 16, num_experts_per_tok: 4, n_group: 4, topk_group: 2, routed_scaling_factor: 2.5, scoring_func: 'sigmoid' };

function modelConfig(g: GateConfig, D: number, F: number): ModelConfig {
  return { ...CONFIG_671B, ...g, hidden_size: D, moe_intermediate_size: F, n_shared_experts: 1, quantization_config: undefined } as ModelConfig;
}
const lin = (m: Mat) => ({ weight: tf.tensor2d(m), fp8: false });
function ffnTensors(w: RefFfn) {
  return { w1: lin(w.w1), w2: lin(w.w2), w3: lin(w.w3) };
}
function randFfn(D: number, F: number, rnd: () => number): RefFfn {
  return { w1: randMat(F, D, rnd, 0.5), w3: randMat(F, D, rnd, 0.5), w2: randMat(D, F, rnd, 0.5) };
}
function disposeMoe(w: ReturnType<typeof moeTensors>): void {
  tf.dispose([w.gate.weight, ...(w.gate.bias ? [w.gate.bias] : [])]);
  for (const f of [...w.experts, ...(w.shared ? [w.shared] : [])]) tf.dispose([f.w1.weight, f.w2.weight, f.w3.weight]);
}
function moeTensors(W: Mat, bias: number[] | null, experts: RefFfn[], shared: RefFfn | null) {
  return {
    gate: { weight: tf.tensor2d(W) as tf.Tensor2D, bias: bias ? (tf.tensor1d(bias) as tf.Tensor1D) : null },
    experts: experts.map(ffnTensors),
    shared: shared ? ffnTensors(shared) : null,
  };
}

const gateCase = fc.record({
  seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
  T: fc.integer({ min: 1, max: 6 }),
  withBias: fc.boolean(),
  shape: fc.constantFrom<GateConfig>(
    TINY,
    { ...TINY, n_group: 1, topk_group: 1 },
    { ...TINY, n_routed_experts: 12, n_group: 3, topk_group: 1, num_experts_per_tok: 3 },
    { ...TINY, scoring_func: 'softmax' },
  ),
});

describeEachBackend('moeGate', () => {
  it('equals the float64 reference of the official Gate.forward (ids in gate order, weights)', async () => {
    await fc.assert(
      fc.asyncProperty(gateCase, async ({ seed, T, withBias, shape }) => {
        const rnd = mulberry32(seed);
        const D = 8;
        const x = randMat(T, D, rnd);
        const W = randMat(shape.n_routed_experts, D, rnd);
        const bias = withBias ? randMat(1, shape.n_routed_experts, rnd, 0.3)[0]! : null;
        const ref = refGate(x, W, bias, shape);
        fc.pre(ref.margin > 1e-4); // float32 vs float64 near-ties are not a discrepancy
        const out = moeGate(tf.tensor2d(x), { weight: tf.tensor2d(W), bias: bias ? tf.tensor1d(bias) : null }, shape);
        expect(out.indices.dtype).toBe('int32');
        expect(out.indices.arraySync()).toEqual(ref.ids);
        const w = out.weights.arraySync();
        for (let t = 0; t < T; t++) for (let j = 0; j < shape.num_experts_per_tok; j++) expect(Math.abs(w[t]![j]! - ref.weights[t]![j]!)).toBeLessThan(1e-5);
      }),
      { numRuns: 40 },
    );
  });

  it('masks dropped groups with −inf: a case where a 0.0 fill (HF/mlx) would pick a different expert', () => {
    // E=8 in G=2 groups of 4, keep 1 group, Ek=2; all biases −2 so every kept σ_b is in (−2, −1) < 0.
    const cfg: GateConfig = { n_routed_experts: 8, num_experts_per_tok: 2, n_group: 2, topk_group: 1, routed_scaling_factor: 2.5, scoring_func: 'sigmoid' };
    const x = [[1]];
    const W = [[3], [2], [1], [0], [-1], [-1], [-1], [-1]];
    const bias = new Array(8).fill(-2);
    const neg = refGate(x, W, bias, cfg);
    const zero = refGate(x, W, bias, cfg, 0.0);
    expect(neg.ids).toEqual([[0, 1]]);
    expect(zero.ids[0]!.every((i) => i >= 4)).toBe(true); // the 0.0 fill lets group 1 win: the case discriminates
    const out = moeGate(tf.tensor2d(x), { weight: tf.tensor2d(W), bias: tf.tensor1d(bias) }, cfg);
    expect(out.indices.arraySync()).toEqual([[0, 1]]);
  });

  it('uses the bias for selection only: combine weights come from the unbiased scores', () => {
    const rnd = mulberry32(7);
    const x = randMat(5, 8, rnd);
    const W = randMat(16, 8, rnd);
    const t = (b: number[] | null) => moeGate(tf.tensor2d(x), { weight: tf.tensor2d(W), bias: b ? tf.tensor1d(b) : null }, TINY);
    // a bias that forces expert 13 into every selection: its weight is still σ_13 / Σσ · 2.5
    const bias = new Array(16).fill(0);
    bias[13] = 10;
    bias[12] = 10;
    const forced = t(bias);
    const ids = forced.indices.arraySync();
    const w = forced.weights.arraySync();
    for (let r = 0; r < 5; r++) {
      expect(ids[r]!.slice(0, 2).sort((a, b) => a - b)).toEqual([12, 13]);
      const s = ids[r]!.map((i) => sigmoid(dot(x[r]!, W[i]!)));
      const z = s.reduce((a, b) => a + b, 0);
      for (let j = 0; j < 4; j++) expect(Math.abs(w[r]![j]! - (s[j]! / z) * 2.5)).toBeLessThan(1e-5);
    }
    // shifting every bias by a constant changes neither the selection nor a single bit of the weights
    const base = t(new Array(16).fill(0.1));
    const shifted = t(new Array(16).fill(0.35));
    expect(shifted.indices.arraySync()).toEqual(base.indices.arraySync());
    expect(shifted.weights.dataSync()).toEqual(base.weights.dataSync());
  });

  it('combine weights sum to routed_scaling_factor (sigmoid)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 2 ** 31 - 1 }), fc.double({ min: 0.5, max: 4, noNaN: true }), async (seed, scale) => {
        const rnd = mulberry32(seed);
        const cfg = { ...TINY, routed_scaling_factor: scale };
        const out = moeGate(tf.tensor2d(randMat(3, 8, rnd)), { weight: tf.tensor2d(randMat(16, 8, rnd, 2)), bias: tf.tensor1d(randMat(1, 16, rnd)[0]!) }, cfg);
        for (const row of out.weights.arraySync()) expect(Math.abs(row.reduce((a, b) => a + b, 0) - scale)).toBeLessThan(1e-5 * scale);
      }),
      { numRuns: 20 },
    );
  });

  it('does not leak tensors', async () => {
    const rnd = mulberry32(3);
    const x = tf.tensor2d(randMat(4, 8, rnd));
    const g = { weight: tf.tensor2d(randMat(16, 8, rnd)) as tf.Tensor2D, bias: tf.tensor1d(randMat(1, 16, rnd)[0]!) as tf.Tensor1D };
    await expectNoTensorLeak(() => tf.dispose(Object.values(moeGate(x, g, TINY))));
    const routing: LayerRouting = { tokens: 4, experts: 4, indices: new Int32Array(16).fill(3), weights: new Float32Array(16) };
    await expectNoTensorLeak(() => tf.dispose(Object.values(moeGate(x, g, TINY, { routing }))));
    await expectNoTensorLeak(() => tf.dispose(Object.values(moeGate(x, g, TINY, { routing, combine: 'replay' }))));
    tf.dispose([x, g.weight, g.bias]);
  });

  it('rejects bad shapes, configs and records with messages that say what and why', () => {
    const x = tf.tensor2d([[1, 2]]);
    const g = { weight: tf.zeros([16, 2]) as tf.Tensor2D, bias: null };
    expect(() => moeGate(tf.zeros([2]) as unknown as tf.Tensor2D, g, TINY)).toThrow('moeGate(): x must be [T, D] (rank 2) but got [2]');
    expect(() => moeGate(x, { weight: tf.zeros([16, 3]) as tf.Tensor2D, bias: null }, TINY)).toThrow('moeGate(): gate.weight must be [E, D] = [16, 2] but got [16, 3] (E = config.n_routed_experts; D from x)');
    expect(() => moeGate(x, { ...g, bias: tf.zeros([15]) as tf.Tensor1D }, TINY)).toThrow('moeGate(): gate.bias must be [E] = [16] but got [15] (E = config.n_routed_experts)');
    expect(() => moeGate(x, g, { ...TINY, scoring_func: 'tanh' as 'sigmoid' })).toThrow("moeGate(): scoring_func must be 'sigmoid' or 'softmax' but got 'tanh'");
    expect(() => moeGate(x, g, { ...TINY, n_group: 3 })).toThrow('moeGate(): n_group must divide n_routed_experts (16) but got 3');
    expect(() => moeGate(x, g, { ...TINY, topk_group: 5 })).toThrow('moeGate(): topk_group must be in [1, n_group=4] but got 5');
    expect(() => moeGate(x, { ...g, bias: tf.zeros([16]) as tf.Tensor1D }, { ...TINY, n_group: 16, topk_group: 8 })).toThrow(
      'moeGate(): the top-2 group score needs ≥ 2 experts per group but n_routed_experts/n_group = 1',
    );
    expect(() => moeGate(x, g, { ...TINY, num_experts_per_tok: 9 })).toThrow('moeGate(): num_experts_per_tok must be in [1, 8] (experts in the kept groups) but got 9');
    const rec = (p: Partial<LayerRouting>): LayerRouting => ({ tokens: 1, experts: 4, indices: Int32Array.of(0, 1, 2, 3), weights: new Float32Array(4), ...p });
    expect(() => moeGate(x, g, TINY, { routing: rec({ tokens: 2 }) })).toThrow('moeGate(): routing record must cover [T=1, Ek=4] but covers [2, 4] (indices 4, weights 4)');
    expect(() => moeGate(x, g, TINY, { routing: rec({ indices: Int32Array.of(0, 1, 16, 3) }) })).toThrow(
      'moeGate(): routing record expert id must be in [0, 16) but got 16 at [0, 2]',
    );
  });
});

// --- MoE layer ---

function moeCase(seed: number, T: number, withShared = true) {
  const rnd = mulberry32(seed);
  const D = 8;
  const F = 4;
  const x = randMat(T, D, rnd);
  const W = randMat(16, D, rnd);
  const bias = randMat(1, 16, rnd, 0.3)[0]!;
  const experts = Array.from({ length: 16 }, () => randFfn(D, F, rnd));
  const shared = withShared ? randFfn(D, F, rnd) : null;
  return { x, W, bias, experts, shared, config: modelConfig(TINY, D, F) };
}

describeEachBackend('moe', () => {
  it('equals Σ w_i · Expert_i(x) + Shared(x) of the float64 reference', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 2 ** 31 - 1 }), fc.integer({ min: 1, max: 5 }), fc.boolean(), async (seed, T, withShared) => {
        const c = moeCase(seed, T, withShared);
        const ref = refGate(c.x, c.W, c.bias, TINY);
        fc.pre(ref.margin > 1e-4);
        const w = moeTensors(c.W, c.bias, c.experts, c.shared);
        const { out, routing } = moe(tf.tensor2d(c.x), w, c.config);
        const y = out.arraySync();
        for (let t = 0; t < T; t++) {
          const expected = c.shared ? refFfn(c.x[t]!, c.shared) : new Array(8).fill(0);
          ref.ids[t]!.forEach((e, j) => refFfn(c.x[t]!, c.experts[e]!).forEach((v, d) => (expected[d] += ref.weights[t]![j]! * v)));
          for (let d = 0; d < 8; d++) expect(Math.abs(y[t]![d]! - expected[d]!)).toBeLessThan(1e-5);
        }
        expect(Array.from(routing.indices)).toEqual(ref.ids.flat());
        disposeMoe(w);
      }),
      { numRuns: 15 },
    );
  });

  it('Keep Routing: replaying a record reproduces the forward exactly (both combine modes)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 2 ** 31 - 1 }), fc.integer({ min: 1, max: 5 }), async (seed, T) => {
        const c = moeCase(seed, T);
        const w = moeTensors(c.W, c.bias, c.experts, c.shared);
        const x = tf.tensor2d(c.x);
        const free = moe(x, w, c.config);
        for (const combine of ['recompute', 'replay'] as const) {
          const again = moe(x, w, c.config, { routing: free.routing, combine });
          expect(again.out.dataSync()).toEqual(free.out.dataSync());
          expect(again.routing.indices).toEqual(free.routing.indices);
          expect(again.routing.weights).toEqual(free.routing.weights);
        }
        disposeMoe(w);
      }),
      { numRuns: 10 },
    );
  });

  it('Keep Routing: after perturbing the gate, replay keeps the expert sets while free routing changes them', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 2 ** 31 - 1 }), fc.double({ min: 0.5, max: 2, noNaN: true }), async (seed, amount) => {
        const c = moeCase(seed, 4);
        const w = moeTensors(c.W, c.bias, c.experts, c.shared);
        const x = tf.tensor2d(c.x);
        const sampled = moe(x, w, c.config).routing;
        // the "trained" gate: reversed preferences (−W) plus noise; bias unchanged
        const rnd = mulberry32(seed ^ 0x5bd1e995);
        const W2 = c.W.map((r) => r.map((v) => -v * amount + (rnd() - 0.5) * 0.1));
        const w2 = { ...w, gate: { weight: tf.tensor2d(W2) as tf.Tensor2D, bias: w.gate.bias } };
        const free = moe(x, w2, c.config).routing;
        const kept = moe(x, w2, c.config, { routing: sampled }).routing;
        const replayed = moe(x, w2, c.config, { routing: sampled, combine: 'replay' }).routing;
        const sets = (r: LayerRouting) => Array.from({ length: r.tokens }, (_, t) => [...r.indices.slice(t * 4, t * 4 + 4)].sort((a, b) => a - b).join(','));
        expect(sets(kept)).toEqual(sets(sampled));
        expect(sets(free)).not.toEqual(sets(sampled));
        // recompute: weights follow the current gate, σ_θ'[recorded ids] normalized; replay: the recorded weights
        for (let t = 0; t < 4; t++) {
          const ids = [...sampled.indices.slice(t * 4, t * 4 + 4)];
          const s = ids.map((i) => sigmoid(dot(c.x[t]!, W2[i]!)));
          const z = s.reduce((a, b) => a + b, 0);
          ids.forEach((_, j) => expect(Math.abs(kept.weights[t * 4 + j]! - (s[j]! / z) * 2.5)).toBeLessThan(1e-5));
        }
        expect(replayed.weights).toEqual(sampled.weights);
        tf.dispose(w2.gate.weight);
        disposeMoe(w);
      }),
      { numRuns: 10 },
    );
  });

  it('Keep Routing: recompute keeps gradients to the gate weight, replay has none', () => {
    const c = moeCase(11, 3);
    const w = moeTensors(c.W, c.bias, c.experts, c.shared);
    const x = tf.tensor2d(c.x);
    const { routing } = moe(x, w, c.config);
    const grad = (combine: 'recompute' | 'replay') =>
      tf.grad((gw: tf.Tensor) => tf.sum(moe(x, { ...w, gate: { weight: gw as tf.Tensor2D, bias: w.gate.bias } }, c.config, { routing, combine }).out))(w.gate.weight);
    const g1 = grad('recompute');
    expect(tf.max(tf.abs(g1)).arraySync()).toBeGreaterThan(1e-6);
    // replay: the output does not depend on the gate weight at all
    expect(() => grad('replay')).toThrow('Cannot compute gradient of y=f(x) with respect to x');
    // only the rows of recorded experts get gradient
    const used = new Set(routing.indices);
    const rows = tf.sum(tf.abs(g1), 1).arraySync() as number[];
    rows.forEach((v, e) => expect(v > 0).toBe(used.has(e)));
    disposeMoe(w);
  });

  it('free routing is differentiable too: gradients reach the gate through the combine weights', () => {
    const c = moeCase(13, 3);
    const w = moeTensors(c.W, c.bias, c.experts, c.shared);
    const x = tf.tensor2d(c.x);
    const g = tf.grad((gw: tf.Tensor) => tf.sum(moe(x, { ...w, gate: { weight: gw as tf.Tensor2D, bias: w.gate.bias } }, c.config).out))(w.gate.weight);
    expect(tf.max(tf.abs(g)).arraySync()).toBeGreaterThan(1e-6);
    disposeMoe(w);
  });

  it('gradients w.r.t. x and the expert weights equal those of the dense form Σ_e C[t,e]·Expert_e(x_t) + Shared(x_t)', () => {
    const c = moeCase(17, 4);
    const w = moeTensors(c.W, c.bias, c.experts, c.shared);
    const x = tf.tensor2d(c.x);
    const { routing } = moe(x, w, c.config);
    // C[t, e] = the combine weight of expert e for token t (0 when not routed)
    const C = new Float32Array(4 * 16);
    routing.indices.forEach((e, i) => (C[Math.floor(i / 4) * 16 + e] = routing.weights[i]!));
    const Ct = tf.tensor2d(C, [4, 16]);
    const ex = routing.indices[0]!; // an expert that some token uses
    const dense = (xx: tf.Tensor2D, w1: tf.Tensor2D) =>
      tf.addN([
        ...w.experts.map((f, e) => tf.mul(tf.slice(Ct, [0, e], [4, 1]), swigluFfn(xx, e === ex ? { ...f, w1: { weight: w1, fp8: false } } : f, null))),
        swigluFfn(xx, w.shared!, null),
      ]);
    const sparse = (xx: tf.Tensor2D, w1: tf.Tensor2D) =>
      moe(xx, { ...w, experts: w.experts.map((f, e) => (e === ex ? { ...f, w1: { weight: w1, fp8: false } } : f)) }, c.config, { routing, combine: 'replay' }).out;
    const R = tf.randomNormal([4, 8], 0, 1, 'float32', 5);
    const grads = (f: typeof dense) => tf.grads((xx: tf.Tensor, w1: tf.Tensor) => tf.sum(tf.mul(f(xx as tf.Tensor2D, w1 as tf.Tensor2D), R)))([x, w.experts[ex]!.w1.weight]);
    const [gx, gw] = grads(sparse);
    const [rx, rw] = grads(dense);
    expect(tf.max(tf.abs(tf.sub(gx!, rx!))).arraySync()).toBeLessThan(1e-5);
    expect(tf.max(tf.abs(tf.sub(gw!, rw!))).arraySync()).toBeLessThan(1e-5);
    expect(tf.max(tf.abs(rx!)).arraySync()).toBeGreaterThan(1e-3);
    disposeMoe(w);
  });

  it('shared expert is always on: with all routed experts zero the output is Shared(x)', () => {
    const c = moeCase(5, 3);
    const zeros = c.experts.map((e) => ({ w1: e.w1, w3: e.w3, w2: e.w2.map((r) => r.map(() => 0)) }));
    const w = moeTensors(c.W, c.bias, zeros, c.shared);
    const y = moe(tf.tensor2d(c.x), w, c.config).out.arraySync();
    c.x.forEach((row, t) => refFfn(row, c.shared!).forEach((v, d) => expect(Math.abs(y[t]![d]! - v)).toBeLessThan(1e-5)));
    disposeMoe(w);
  });

  it('swigluFfn equals W2(silu(W1 x) ⊙ W3 x)', () => {
    const rnd = mulberry32(21);
    const f = randFfn(8, 4, rnd);
    const x = randMat(3, 8, rnd);
    const y = swigluFfn(tf.tensor2d(x), ffnTensors(f), null).arraySync();
    x.forEach((row, t) => refFfn(row, f).forEach((v, d) => expect(Math.abs(y[t]![d]! - v)).toBeLessThan(1e-5)));
  });

  it('does not leak tensors (free routing, Keep Routing)', async () => {
    const c = moeCase(9, 4);
    const w = moeTensors(c.W, c.bias, c.experts, c.shared);
    const x = tf.tensor2d(c.x);
    const { routing, out } = moe(x, w, c.config);
    out.dispose();
    await expectNoTensorLeak(() => moe(x, w, c.config).out.dispose());
    await expectNoTensorLeak(() => moe(x, w, c.config, { routing }).out.dispose());
    await expectNoTensorLeak(() => swigluFfn(x, w.experts[0]!, null).dispose());
    disposeMoe(w);
    x.dispose();
  });

  it('rejects a weight set with the wrong number of experts', () => {
    const c = moeCase(1, 1);
    const w = moeTensors(c.W, c.bias, c.experts.slice(0, 15), c.shared);
    expect(() => moe(tf.tensor2d(c.x), w, c.config)).toThrow('moe(): weights must hold n_routed_experts=16 experts but hold 15');
    disposeMoe(w);
  });
});

// --- Routing records ---

it('concatRoutingRecords joins passes along tokens and rejects mismatched records', () => {
  const r = (ids: number[], layer = 1, k = 2) => ({ tokens: ids.length / k, layers: { [layer]: { tokens: ids.length / k, experts: k, indices: Int32Array.from(ids), weights: Float32Array.from(ids.map((i) => i / 10)) } } });
  const joined = concatRoutingRecords([r([1, 2, 3, 4]), r([5, 6])]);
  expect(joined.tokens).toBe(3);
  expect(Array.from(joined.layers[1]!.indices)).toEqual([1, 2, 3, 4, 5, 6]);
  expect(joined.layers[1]!.weights[5]).toBeCloseTo(0.6, 6);
  expect(concatRoutingRecords([])).toEqual({ tokens: 0, layers: {} });
  expect(() => concatRoutingRecords([r([1, 2]), r([1, 2], 2)])).toThrow('concatRoutingRecords(): record 1 must cover layers [1] but covers [2]');
  expect(() => concatRoutingRecords([r([1, 2]), r([1], 1, 1)])).toThrow('concatRoutingRecords(): layer 1 of record 1 has Ek=1, expected 2');
});
