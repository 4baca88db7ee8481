import { it, expect } from 'vitest';
import fc from 'fast-check';
import { tf } from '../src/backend.ts';
import { CONFIG_671B, type ModelConfig } from '../src/config.ts';
import type { AttentionWeights } from '../src/checkpoint.ts';
import { e4m3Decode, e4m3Encode } from '../src/fp8.ts';
import { createMlaCache, disposeMlaCache, mlaCacheLength, mlaForward, mlaLatent, mlaQuery, type MlaCache } from '../src/mla.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';
import { mulberry32 } from './helpers/random.ts';

// --- A toy layer: D = 16, H = 2, Dq = 8, C = 8 (one FP8 block), Dn = 4, R = 4, Dv = 3, HI = 2, DI = 8 ---

function toyConfig(k: number): ModelConfig {
  return {
    ...CONFIG_671B,
    hidden_size: 16, num_attention_heads: 2, q_lora_rank: 8, kv_lora_rank: 8, qk_nope_head_dim: 4, qk_rope_head_dim: 4,
    v_head_dim: 3, index_n_heads: 2, index_head_dim: 8, index_topk: k, quantization_config: undefined,
  } as ModelConfig;
}

/** Deterministic uniform [−1, 1) numbers, times `amp`. */
function rand(seed: number, n: number, amp = 1): Float32Array {
  const next = mulberry32(seed);
  return Float32Array.from({ length: n }, () => amp * (2 * next() - 1));
}

function toyWeights(c: ModelConfig, seed: number): AttentionWeights {
  const D = c.hidden_size, H = c.num_attention_heads, Dq = c.q_lora_rank, C = c.kv_lora_rank;
  const Dqk = c.qk_nope_head_dim + c.qk_rope_head_dim, HI = c.index_n_heads, DI = c.index_head_dim;
  let s = seed;
  const lin = (o: number, i: number) => ({ weight: tf.tensor2d(rand(s++, o * i, 1.5 / Math.sqrt(i)), [o, i]), fp8: false });
  const vec = (n: number) => tf.tensor1d(rand(s++, n, 0.3).map((v) => 1 + v));
  return {
    wq_a: lin(Dq, D), q_norm: vec(Dq), wq_b: lin(H * Dqk, Dq), wkv_a: lin(C + c.qk_rope_head_dim, D), kv_norm: vec(C),
    wkv_b: lin(H * (c.qk_nope_head_dim + c.v_head_dim), C), wo: lin(D, H * c.v_head_dim),
    indexer: { wq_b: lin(HI * DI, Dq), wk: lin(DI, D), weights_proj: lin(HI, D), k_norm: { weight: vec(DI), bias: tf.tensor1d(rand(s++, DI, 0.1)) } },
  };
}

function disposeWeights(w: AttentionWeights): void {
  const i = w.indexer;
  tf.dispose([w.wq_a.weight, w.q_norm, w.wq_b.weight, w.wkv_a.weight, w.kv_norm, w.wkv_b.weight, w.wo.weight,
    i.wq_b.weight, i.wk.weight, i.weights_proj.weight, i.k_norm.weight, i.k_norm.bias]);
}

interface Run { out: number[][]; topk: number[][]; scores: number[][] }

/** Runs the chunks in order on one cache, returning the concatenated rows. */
function runChunks(x: Float32Array, D: number, chunks: number[], w: AttentionWeights, config: ModelConfig, maxSeqLen: number,
  extra: { mode?: 'mha' | 'mqa'; attention?: 'sparse' | 'dense' | 'fast' } = {}): Run {
  const cache = createMlaCache();
  const res: Run = { out: [], topk: [], scores: [] };
  let pos = 0;
  for (const n of chunks) {
    const xi = tf.tensor2d(x.subarray(pos * D, (pos + n) * D), [n, D]);
    const r = mlaForward(xi, w, cache, pos, { config, maxSeqLen, ...extra });
    res.out.push(...(r.out.arraySync() as number[][]));
    res.topk.push(...(r.topk.arraySync() as number[][]));
    res.scores.push(...(r.indexScores.arraySync() as number[][]));
    tf.dispose([r.out, r.qr, r.indexScores, r.topk, xi]);
    pos += n;
  }
  disposeMlaCache(cache);
  return res;
}

function maxDiff(a: number[][], b: number[][]): number {
  let m = 0;
  a.forEach((row, i) => row.forEach((v, j) => (m = Math.max(m, Math.abs(v - b[i]![j]!)))));
  return m;
}

const caseArb = fc.record({
  n: fc.integer({ min: 1, max: 7 }),
  cut: fc.integer({ min: 1, max: 7 }),
  k: fc.integer({ min: 1, max: 8 }),
  seed: fc.integer({ min: 1, max: 2 ** 30 }),
  yarn: fc.boolean(),
});

describeEachBackend('mlaForward (MLA + DSA)', () => {
  it('prefill of n ≡ prefill m + decode n−m ≡ prefill m + prefill n−m (property)', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async ({ n, cut, k, seed, yarn }) => {
        const config = toyConfig(k);
        const m = Math.min(cut, n);
        const maxSeqLen = yarn ? 8192 : 64;
        const w = toyWeights(config, seed);
        const x = rand(seed + 99, n * 16, 2);
        const whole = runChunks(x, 16, [n], w, config, maxSeqLen);
        const decode = runChunks(x, 16, [m, ...new Array<number>(n - m).fill(1)], w, config, maxSeqLen);
        const twoPrefills = runChunks(x, 16, m < n ? [m, n - m] : [n], w, config, maxSeqLen);
        disposeWeights(w);
        for (const other of [decode, twoPrefills]) {
          const sets = (r: Run) => r.topk.map((row) => row.filter((s) => s >= 0)); // widths differ: min(k, end_pos)
          expect(sets(other)).toEqual(sets(whole)); // same selections
          expect(maxDiff(other.out, whole.out)).toBeLessThan(2e-5);
          // index scores agree on every column the chunk could see (s ≤ its end_pos − 1)
          other.scores.forEach((row, i) => expect(maxDiff([row], [whole.scores[i]!.slice(0, row.length)])).toBeLessThan(1e-5));
        }
      }),
      { numRuns: 200 },
    );
  });

  it("mode 'mha' ≡ mode 'mqa' (absorbed), attention 'sparse' ≡ 'dense' (property)", async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async ({ n, cut, k, seed, yarn }) => {
        const config = toyConfig(k);
        const m = Math.min(cut, n);
        const maxSeqLen = yarn ? 8192 : 64;
        const w = toyWeights(config, seed);
        const x = rand(seed + 7, n * 16, 2);
        const chunks = m < n ? [m, n - m] : [n];
        const ref = runChunks(x, 16, chunks, w, config, maxSeqLen, { mode: 'mha', attention: 'dense' });
        for (const mode of ['mha', 'mqa'] as const) {
          for (const attention of ['sparse', 'dense'] as const) {
            const r = runChunks(x, 16, chunks, w, config, maxSeqLen, { mode, attention });
            expect(r.topk).toEqual(ref.topk);
            expect(maxDiff(r.out, ref.out)).toBeLessThan(2e-5);
          }
        }
        disposeWeights(w);
      }),
      { numRuns: 200 },
    );
  });

  it("attention 'fast' ≡ 'sparse' ≡ 'dense' in prefill (MHA) and decode (MQA), same selections, no leak (property)", async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async ({ n, cut, k, seed, yarn }) => {
        const config = toyConfig(k);
        const m = Math.min(cut, n);
        const maxSeqLen = yarn ? 8192 : 64;
        const w = toyWeights(config, seed);
        const x = rand(seed + 13, n * 16, 2);
        const before = tf.memory().numTensors;
        // default mode: a prefill of m tokens (MHA) then n − m decode steps (MQA)
        for (const chunks of [[n], [m, ...new Array<number>(n - m).fill(1)]]) {
          const fast = runChunks(x, 16, chunks, w, config, maxSeqLen, { attention: 'fast' });
          for (const attention of ['sparse', 'dense'] as const) {
            const ref = runChunks(x, 16, chunks, w, config, maxSeqLen, { attention });
            expect(fast.topk).toEqual(ref.topk); // selectTopKFast ≡ selectTopK
            expect(maxDiff(fast.out, ref.out)).toBeLessThan(2e-5);
          }
        }
        expect(tf.memory().numTensors).toBe(before);
        disposeWeights(w);
      }),
      { numRuns: 200 },
    );
  });

  it("k ≥ t + 1: equals a float64 oracle of dense causal MLA (MHA expansion of wkv_b, softmax scale Dqk^−½·mscale², wo), also with attention 'fast' (property)", async () => {
    await fc.assert(
      fc.asyncProperty(fc.record({ n: fc.integer({ min: 1, max: 6 }), seed: fc.integer({ min: 1, max: 2 ** 30 }), yarn: fc.boolean(), mqa: fc.boolean(), fast: fc.boolean() }),
        async ({ n, seed, yarn, mqa, fast }) => {
          const config = toyConfig(n + 2); // k ≥ n: every earlier position is selected
          const maxSeqLen = yarn ? 8192 : 64;
          const H = 2, Dn = 4, R = 4, Dv = 3, C = 8, D = 16;
          const w = toyWeights(config, seed);
          const xT = tf.tensor2d(rand(seed + 3, n * D, 2), [n, D]);
          // inputs of the attention step, from the query and KV paths
          const q = mlaQuery(xT, w, 0, { config, maxSeqLen });
          const l = mlaLatent(xT, w, 0, { config, maxSeqLen });
          const qNope = q.qNope.dataSync(), qPe = q.qPe.dataSync(), c = l.latent.dataSync(), kPe = l.kPe.dataSync();
          const wkvb = w.wkv_b.weight.dataSync(), wo = w.wo.weight.dataSync();
          tf.dispose([q.qr, q.qNope, q.qPe, l.normalized, l.latent, l.kPe]);
          // float64 oracle: k_nope/v from wkv_b rows [h·(Dn+Dv) + d], causal softmax, then wo
          const mscale = 0.1 * 1 * Math.log(40) + 1;
          const scale = (Dn + R) ** -0.5 * (yarn ? mscale * mscale : 1);
          const proj = (h: number, row: number, s: number) => {
            let acc = 0;
            for (let j = 0; j < C; j++) acc += wkvb[(h * (Dn + Dv) + row) * C + j]! * c[s * C + j]!;
            return acc;
          };
          const want: number[][] = [];
          for (let t = 0; t < n; t++) {
            const o = new Float64Array(H * Dv);
            for (let h = 0; h < H; h++) {
              const z: number[] = [];
              for (let s = 0; s <= t; s++) {
                let dot = 0;
                for (let d = 0; d < Dn; d++) dot += qNope[(t * H + h) * Dn + d]! * proj(h, d, s);
                for (let d = 0; d < R; d++) dot += qPe[(t * H + h) * R + d]! * kPe[s * R + d]!;
                z.push(scale * dot);
              }
              const mx = Math.max(...z);
              const e = z.map((v) => Math.exp(v - mx));
              const sum = e.reduce((a, b) => a + b, 0);
              for (let d = 0; d < Dv; d++) for (let s = 0; s <= t; s++) o[h * Dv + d] = o[h * Dv + d]! + (e[s]! / sum) * proj(h, Dn + d, s);
            }
            want.push(Array.from({ length: D }, (_, i) => o.reduce((acc, v, j) => acc + wo[i * H * Dv + j]! * v, 0)));
          }
          const cache = createMlaCache();
          const r = mlaForward(xT, w, cache, 0, { config, maxSeqLen, mode: mqa ? 'mqa' : 'mha', ...(fast ? { attention: 'fast' as const } : {}) });
          const got = r.out.arraySync() as number[][];
          expect(r.topk.arraySync()).toEqual(Array.from({ length: n }, (_, t) => Array.from({ length: n }, (_, j) => (j <= t ? j : -1))));
          tf.dispose([r.out, r.qr, r.indexScores, r.topk, xT]);
          disposeMlaCache(cache);
          disposeWeights(w);
          expect(maxDiff(got, want)).toBeLessThan(1e-5);
        }),
      { numRuns: 200 },
    );
  });

  it('caches the FP8 round trip of the normalized latent (nearest e4m3 value per 128-block scale) and the rotated k_pe', () => {
    const config = toyConfig(4);
    const w = toyWeights(config, 11);
    const x = tf.tensor2d(rand(5, 5 * 16, 2), [5, 16]);
    const cache = createMlaCache();
    const r = mlaForward(x, w, cache, 0, { config, maxSeqLen: 8192 });
    const l = mlaLatent(x, w, 0, { config, maxSeqLen: 8192 });
    const c = l.normalized.arraySync() as number[][];
    const kv = cache.kv!.arraySync() as number[][];
    expect(cache.pe!.arraySync()).toEqual(l.kPe.arraySync());
    const inv448 = Math.fround(1 / 448);
    c.forEach((row, s) => {
      const scale = Math.fround(Math.max(Math.max(...row.map(Math.abs)), 1e-4) * inv448); // one block (C = 8)
      row.forEach((v, j) => {
        const y = Math.fround(v / scale);
        const q = Math.sign(y) * e4m3Decode(e4m3Encode(Math.abs(y)));
        expect(kv[s]![j]).toBeCloseTo(q * scale, 6);
      });
      expect(row.some((v, j) => v !== kv[s]![j])).toBe(true); // the round trip changed something
    });
    tf.dispose([r.out, r.qr, r.indexScores, r.topk, x, l.normalized, l.latent, l.kPe]);
    disposeMlaCache(cache);
    disposeWeights(w);
  });

  it('sparse decode reads only the selected latents: poisoning unselected cache rows leaves the output unchanged', () => {
    const config = toyConfig(2);
    const w = toyWeights(config, 21);
    const x = rand(9, 7 * 16, 2);
    const cache = createMlaCache();
    const pre = mlaForward(tf.tensor2d(x.subarray(0, 6 * 16), [6, 16]), w, cache, 0, { config, maxSeqLen: 8192 });
    tf.dispose([pre.out, pre.qr, pre.indexScores, pre.topk]);
    // decode the 7th token on a copy of the cache, once clean and once with every unselected row poisoned
    const step = () => {
      const x1 = tf.tensor2d(x.subarray(6 * 16), [1, 16]);
      const r = mlaForward(x1, w, cache, 6, { config, maxSeqLen: 8192 });
      const sel = new Set((r.topk.arraySync() as number[][])[0]);
      const out = r.out.arraySync();
      tf.dispose([r.out, r.qr, r.indexScores, r.topk, x1]);
      return { out, sel };
    };
    const snapshot = { kv: cache.kv!.clone(), pe: cache.pe!.clone(), ik: cache.indexer.keys!.clone(), is: cache.indexer.scales!.clone() };
    const restore = () => {
      tf.dispose([cache.kv!, cache.pe!, cache.indexer.keys!, cache.indexer.scales!]);
      cache.kv = snapshot.kv.clone(); cache.pe = snapshot.pe.clone();
      cache.indexer.keys = snapshot.ik.clone(); cache.indexer.scales = snapshot.is.clone();
    };
    const clean = step();
    expect(clean.sel.size).toBe(2);
    restore();
    // poison rows outside the selection (the indexer keys stay intact, so the selection is the same)
    const kv = snapshot.kv.arraySync() as number[][];
    const pe = snapshot.pe.arraySync() as number[][];
    for (let s = 0; s < 6; s++) if (!clean.sel.has(s)) { kv[s] = kv[s]!.map(() => NaN); pe[s] = pe[s]!.map(() => 1e30); }
    tf.dispose([cache.kv!, cache.pe!]);
    cache.kv = tf.tensor2d(kv); cache.pe = tf.tensor2d(pe);
    const dirty = step();
    expect(dirty.sel).toEqual(clean.sel);
    expect(dirty.out).toEqual(clean.out);
    tf.dispose([snapshot.kv, snapshot.pe, snapshot.ik, snapshot.is]);
    disposeMlaCache(cache);
    disposeWeights(w);
  });

  it('does not leak: outputs disposed by the caller, caches freed by disposeMlaCache', async () => {
    const config = toyConfig(3);
    const w = toyWeights(config, 5);
    const x = tf.tensor2d(rand(1, 4 * 16), [4, 16]);
    const x1 = tf.tensor2d(rand(2, 16), [1, 16]);
    await expectNoTensorLeak(() => {
      const cache = createMlaCache();
      for (const [xi, pos] of [[x, 0], [x1, 4], [x, 5]] as const) {
        const r = mlaForward(xi, w, cache, pos, { config, maxSeqLen: 8192 });
        tf.dispose([r.out, r.qr, r.indexScores, r.topk]);
      }
      expect(mlaCacheLength(cache)).toBe(9);
      disposeMlaCache(cache);
      expect(cache.kv).toBeNull();
      expect(cache.indexer.keys).toBeNull();
    });
    tf.dispose([x, x1]);
    disposeWeights(w);
  });

  it('rejects bad calls with messages naming function, argument, expected and received', () => {
    const config = toyConfig(3);
    const w = toyWeights(config, 5);
    const cache: MlaCache = createMlaCache();
    const opts = { config, maxSeqLen: 16 };
    const x = tf.tensor2d(rand(1, 2 * 16), [2, 16]);
    expect(() => mlaForward(tf.zeros([2, 15]) as tf.Tensor2D, w, cache, 0, opts)).toThrow(
      'mlaForward(): x must be [T, D] = [T, 16] but got [2, 15] (D = config.hidden_size)',
    );
    expect(() => mlaForward(x, w, cache, 3, opts)).toThrow('mlaForward(): startPos must equal the number of cached positions (0) but got 3');
    expect(() => mlaForward(x, w, cache, 0, { config, maxSeqLen: 1 })).toThrow(
      'mlaForward(): startPos + T must be ≤ maxSeqLen = 1 but got 0 + 2 = 2',
    );
    expect(() => mlaForward(x, w, cache, 0, { ...opts, mode: 'gqa' as 'mha' })).toThrow("mlaForward(): opts.mode must be 'mha' or 'mqa' but got 'gqa'");
    expect(() => mlaForward(x, w, cache, 0, { ...opts, attention: 'flash' as 'dense' })).toThrow(
      "mlaForward(): opts.attention must be 'sparse', 'dense' or 'fast' but got 'flash'",
    );
    expect(() => mlaForward(x, w, cache, 0, { ...opts, config: { ...config, kv_lora_rank: 200 } })).toThrow(
      'mlaForward(): config.kv_lora_rank must be < 128 or divisible by 128 (FP8 latent block) but got 200',
    );
    const bad = { ...w, wkv_b: { weight: tf.zeros([13, 8]) as tf.Tensor2D, fp8: false } };
    expect(() => mlaForward(x, bad, cache, 0, opts)).toThrow(/^mlaForward\(\): w.wkv_b.weight must be \[H·\(Dn \+ Dv\), C\] = \[14, 8\] but got \[13, 8\] \(H = config.num_attention_heads; /);
    expect(mlaCacheLength(cache)).toBe(0); // nothing was appended by a rejected call
    tf.dispose([x, bad.wkv_b.weight]);
    disposeWeights(w);
  });
});
