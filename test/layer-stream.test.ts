/**
 * src/layer_stream.ts on the golden checkpoints: a streamed prefill + decode step equals `modelForward`
 * on the whole model, and a prefill run in chunks equals the prefill run whole.
 */
import { it, expect, beforeAll, afterAll } from 'vitest';
import { tf } from '../src/backend.ts';
import type { ModelConfig } from '../src/config.ts';
import type { Checkpoint } from '../src/safetensors.ts';
import { loadConfig, openCheckpoint } from '../src/node.ts';
import { createModelCache, disposeModelCache, disposeModelWeights, loadModelWeights, modelForward } from '../src/model.ts';
import { createStreamState, disposeStreamState, streamCall } from '../src/layer_stream.ts';
import { describeEachBackend } from './helpers/backends.ts';

const TOKENS = [17, 301, 5, 99, 260, 42, 7, 480, 3, 11];
const maxRel = (a: Float32Array, b: Float32Array) =>
  Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i]!))) / Math.max(1, ...Array.from(b, Math.abs));

for (const fixture of ['public-fp32', 'public-fp8']) {
  describeEachBackend(`streamCall (${fixture})`, () => {
    const dir = `fixtures/golden/${fixture}`;
    let config: ModelConfig;
    let ckpt: Checkpoint;
    beforeAll(() => {
      config = loadConfig(`${dir}/config.json`);
      ckpt = openCheckpoint(dir);
    });
    afterAll(() => ckpt.close());

    /** logits of a prefill of TOKENS and one decode step, streamed */
    const streamed = (chunk?: number) => {
      const state = createStreamState(config.num_hidden_layers - 1);
      const opts = { config, maxSeqLen: 8192, last: config.num_hidden_layers - 1, logits: true, ...(chunk ? { chunk } : {}) };
      try {
        return [streamCall(ckpt, TOKENS, state, opts).logits!, streamCall(ckpt, [9], state, opts).logits!];
      } finally {
        disposeStreamState(state);
      }
    };

    it('prefill + decode step: the logits of modelForward with every layer loaded', () => {
      const before = tf.memory().numTensors;
      const got = streamed();
      expect(tf.memory().numTensors).toBe(before);
      const w = loadModelWeights(ckpt, config);
      const cache = createModelCache(config);
      try {
        const want = [modelForward(TOKENS, w, cache, 0, { config, maxSeqLen: 8192 }), modelForward([9], w, cache, TOKENS.length, { config, maxSeqLen: 8192 })]
          .map((r) => {
            const v = Float32Array.from(r.logits.dataSync());
            r.logits.dispose();
            return v;
          });
        for (let s = 0; s < 2; s++) expect(maxRel(got[s]!, want[s]!)).toBeLessThan(1e-5);
      } finally {
        disposeModelCache(cache);
        disposeModelWeights(w);
      }
    });

    it('a prefill in chunks of 3 (consecutive prefills over the same caches) gives the whole prefill\'s logits', () => {
      const whole = streamed();
      const chunked = streamed(3);
      for (let s = 0; s < 2; s++) expect(maxRel(chunked[s]!, whole[s]!)).toBeLessThan(1e-4);
    });
  });
}
