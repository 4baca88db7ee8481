/**
 * The whole model on the tiny public checkpoints: prefill ≡ prefill + decode, Keep Routing across a
 * model pass, traces, errors, leaks. (Agreement with the official code: test/golden-model.test.ts.)
 */
import { it, expect, beforeAll, afterAll } from 'vitest';
import { tf } from '../src/backend.ts';
import type { ModelConfig } from '../src/config.ts';
import { loadConfig, openCheckpoint } from '../src/node.ts';
import {
  createModelCache, disposeModelCache, disposeModelWeights, embedTokens, loadModelWeights, modelForward, type ModelWeights,
} from '../src/model.ts';
import { concatRoutingRecords, type RoutingRecord } from '../src/moe.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';

const TOKENS = [17, 301, 5, 99, 260, 42, 7, 480];
const MAX_SEQ_LEN = 8192;

function maxRel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  let m = 1;
  for (let i = 0; i < b.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return d / m;
}

for (const fixture of ['public-fp32', 'public-fp8']) {
  describeEachBackend(`model (${fixture})`, (backend) => {
    const dir = `fixtures/golden/${fixture}`;
    let config: ModelConfig;
    let w: ModelWeights;
    const opts = () => ({ config, maxSeqLen: MAX_SEQ_LEN });
    /** prefill tokens[0:m], then decode one token at a time; logits of every call. */
    const run = (tokens: number[], m: number, extra: { routing?: RoutingRecord } = {}) => {
      const cache = createModelCache(config);
      const out: Float32Array[] = [];
      const records: RoutingRecord[] = [];
      try {
        for (let s = 0; s < tokens.length; s = s === 0 ? m : s + 1) {
          const n = s === 0 ? m : 1;
          const r = modelForward(tokens.slice(s, s + n), w, cache, s, { ...opts(), ...extra });
          out.push(r.logits.dataSync() as Float32Array);
          records.push(r.routing);
          r.logits.dispose();
        }
      } finally {
        disposeModelCache(cache);
      }
      return { logits: out, routing: concatRoutingRecords(records) };
    };

    beforeAll(() => {
      config = loadConfig(`${dir}/config.json`);
      w = loadModelWeights(openCheckpoint(dir), config);
    });
    afterAll(() => disposeModelWeights(w));

    it('prefill of n tokens ≡ prefill of m + (n − m) decode steps (last-position logits)', () => {
      const full = run(TOKENS, TOKENS.length).logits[0]!;
      // the plain-JS cpu backend is slow: one split there, three on wasm
      for (const m of backend === 'cpu' ? [5] : [1, 3, 7]) {
        const stepped = run(TOKENS, m).logits;
        expect(maxRel(stepped[stepped.length - 1]!, full)).toBeLessThan(1e-5);
      }
    });

    // backend-independent bookkeeping: registered on the fast backend only (not skipped on cpu: the
    // numerics above and the golden tests run on every backend)
    const itOnFastBackend = (name: string, fn: () => void): void => {
      if (backend !== 'cpu') it(name, fn);
    };
    itOnFastBackend('Keep Routing: the records of prefill + decode steps, replayed on a full prefill, reproduce it', () => {
      const sampled = run(TOKENS, 5);
      expect(sampled.routing.tokens).toBe(TOKENS.length);
      const free = run(TOKENS, TOKENS.length);
      const kept = run(TOKENS, TOKENS.length, { routing: sampled.routing });
      for (const l of Object.keys(sampled.routing.layers)) {
        expect(kept.routing.layers[Number(l)]!.indices).toEqual(sampled.routing.layers[Number(l)]!.indices);
      }
      // the free prefill routes as the sampler did (prefill ≡ decode), so the logits agree too
      expect(maxRel(kept.logits[0]!, free.logits[0]!)).toBeLessThan(1e-5);
      // replaying a record of the same pass is bit-exact
      const again = run(TOKENS, TOKENS.length, { routing: free.routing });
      expect(again.logits[0]).toEqual(free.logits[0]);
    });

    itOnFastBackend('all-position logits end with the last-position logits; the probe sees every layer', () => {
      const cache = createModelCache(config);
      const seen: string[] = [];
      const all = modelForward(TOKENS.slice(0, 6), w, cache, 0, {
        ...opts(),
        logits: 'all',
        probe: { layer: (l, t) => void seen.push(`${l}:${t.attnIn.shape}:${t.ffnOut.shape}:${t.selected.shape}:${t.routing ? t.routing.experts : '-'}`) },
      });
      disposeModelCache(cache);
      const cache2 = createModelCache(config);
      const last = modelForward(TOKENS.slice(0, 6), w, cache2, 0, opts());
      disposeModelCache(cache2);
      expect(all.logits.shape).toEqual([6, config.vocab_size]);
      expect(Array.from(all.logits.dataSync().slice(5 * config.vocab_size))).toEqual(Array.from(last.logits.dataSync()));
      const D = config.hidden_size;
      const k = Math.min(config.index_topk, 6);
      expect(seen).toEqual([0, 1, 2].map((l) => `${l}:6,${D}:6,${D}:6,${k}:${l < config.first_k_dense_replace ? '-' : config.num_experts_per_tok}`));
      tf.dispose([all.logits, last.logits]);
    });

    it('does not leak tensors', async () => {
      await expectNoTensorLeak(() => {
        const cache = createModelCache(config);
        modelForward(TOKENS.slice(0, 2), w, cache, 0, opts()).logits.dispose();
        modelForward(TOKENS.slice(2, 3), w, cache, 2, opts()).logits.dispose();
        disposeModelCache(cache);
      });
    });

    it('rejects bad tokens, a wrong startPos and a record without a MoE layer', () => {
      const cache = createModelCache(config);
      try {
        expect(() => modelForward([1, 512], w, cache, 0, opts())).toThrow('embedTokens(): token ids must be integers in [0, 512) but tokens[1] = 512');
        expect(() => modelForward([], w, cache, 0, opts())).toThrow('modelForward(): tokens must hold at least 1 id but got 0');
        expect(() => modelForward([1], w, cache, 3, opts())).toThrow('modelForward(): startPos must equal the cached length 0 but got 3');
        expect(() => modelForward([1], w, cache, 0, { ...opts(), routing: { tokens: 1, layers: {} } })).toThrow(
          'modelForward(): routing record has no entry for MoE layer 1',
        );
        expect(() => modelForward([1], { ...w, layers: w.layers.slice(0, 2) }, cache, 0, opts())).toThrow(
          'modelForward(): weights and cache must have num_hidden_layers=3 layers but have 2 and 3',
        );
      } finally {
        disposeModelCache(cache);
      }
      expect(() => embedTokens([0.5], w.global.embed)).toThrow('embedTokens(): token ids must be integers in [0, 512) but tokens[0] = 0.5');
    });
  });
}
