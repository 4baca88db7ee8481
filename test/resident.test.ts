/**
 * Resident weights (src/resident.ts, src/weight_matrix.ts): a layer held as stored bytes and
 * dequantized band by band gives the same rows and the same block outputs as the layer dequantized
 * whole to float32 (src/checkpoint.ts); routed experts are read only when the gate picks them; the
 * model streamed one layer at a time over them (src/layer_stream.ts) equals `modelForward`, and a
 * prefill in chunks equals the prefill whole.
 */
import { it, expect, beforeAll, afterAll } from 'vitest';
import { tf } from '../src/backend.ts';
import type { ModelConfig } from '../src/config.ts';
import type { Checkpoint } from '../src/safetensors.ts';
import { loadConfig, openCheckpoint } from '../src/node.ts';
import {
  disposeGlobalWeights, disposeLayerWeights, loadGlobalWeights, loadLayerWeights, loadResidentGlobals, loadResidentLayer,
  type LayerWeights, type ResidentLayerWeights,
} from '../src/checkpoint.ts';
import { createMlaCache, disposeMlaCache } from '../src/mla.ts';
import { blockForward, createModelCache, disposeModelCache, disposeModelWeights, embedTokens, headLogits, loadModelWeights, modelForward } from '../src/model.ts';
import { createStreamState, disposeStreamState, streamCall } from '../src/layer_stream.ts';
import { bandRowsFor, BAND_BYTES, MemoryMeter } from '../src/resident.ts';
import { gatherRows, isDeferred, matMulWeightT, type DeferredMatrix } from '../src/weight_matrix.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';

const MAX_SEQ_LEN = 8192;
const STREAM_TOKENS = [17, 301, 5, 99, 260, 42, 7, 480, 3, 11];
const maxRel = (a: Float32Array, b: Float32Array) =>
  Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i]!))) / Math.max(1, ...Array.from(b, Math.abs));

/** A checkpoint that counts the bytes read per tensor name. */
function counting(ckpt: Checkpoint): { ckpt: Checkpoint; bytesRead: Map<string, number> } {
  const bytesRead = new Map<string, number>();
  const add = (name: string, n: number) => bytesRead.set(name, (bytesRead.get(name) ?? 0) + n);
  return {
    bytesRead,
    ckpt: {
      ...ckpt,
      read: (name) => {
        const v = ckpt.read(name);
        add(name, ckpt.info(name).byteLength);
        return v;
      },
      readRaw: (name) => {
        const r = ckpt.readRaw(name);
        add(name, r.bytes.byteLength);
        return r;
      },
      readRawRows: (name, first, count) => {
        const r = ckpt.readRawRows(name, first, count);
        add(name, r.bytes.byteLength);
        return r;
      },
    },
  };
}

function blockOut(w: LayerWeights | ResidentLayerWeights, config: ModelConfig, x: tf.Tensor2D) {
  const cache = createMlaCache();
  try {
    const pre = blockForward(x, null, w, cache, 0, { config, maxSeqLen: MAX_SEQ_LEN });
    const first = tf.slice(x, [0, 0], [1, -1]) as tf.Tensor2D;
    const dec = blockForward(first, null, w, cache, x.shape[0], { config, maxSeqLen: MAX_SEQ_LEN });
    const out = [pre.out, pre.residual, dec.out].map((t) => Float32Array.from(t.dataSync()));
    tf.dispose([first, pre.out, pre.residual, dec.out, dec.residual]);
    return { out, routing: pre.routing };
  } finally {
    disposeMlaCache(cache);
  }
}

it('bandRowsFor keeps a float32 band within BAND_BYTES, a multiple of 128 rows when one fits', () => {
  for (const cols of [7168, 16384, 1536, 512, 100, 3 * BAND_BYTES]) {
    const rows = bandRowsFor(cols);
    expect(rows).toBeGreaterThanOrEqual(1);
    if (rows > 1) expect(rows * cols * 4).toBeLessThanOrEqual(BAND_BYTES);
    if (rows >= 128) expect(rows % 128).toBe(0);
  }
  expect(bandRowsFor(3 * BAND_BYTES)).toBe(1);
});

for (const fixture of ['public-fp8', 'public-fp32']) {
  describeEachBackend(`resident layers (${fixture})`, () => {
    const dir = `fixtures/golden/${fixture}`;
    let config: ModelConfig;
    let ckpt: Checkpoint;
    beforeAll(() => {
      config = loadConfig(`${dir}/config.json`);
      ckpt = openCheckpoint(dir);
    });
    afterAll(() => ckpt.close());

    it('every Linear weight dequantizes to exactly the float32 loader\'s rows', () => {
      for (let l = 0; l < config.num_hidden_layers; l++) {
        const f = loadLayerWeights(ckpt, config, l);
        const r = loadResidentLayer(ckpt, config, l);
        try {
          const pairs: [tf.Tensor2D, DeferredMatrix][] = [];
          const lin = (a: { weight: tf.Tensor2D }, b: { weight: unknown }) => pairs.push([a.weight, b.weight as DeferredMatrix]);
          for (const k of ['wq_a', 'wq_b', 'wkv_a', 'wkv_b', 'wo'] as const) lin(f.attn[k], r.attn[k]);
          for (const k of ['wq_b', 'wk', 'weights_proj'] as const) lin(f.attn.indexer[k], r.attn.indexer[k]);
          if (f.ffn.kind === 'moe' && r.ffn.kind === 'moe') {
            for (const k of ['w1', 'w2', 'w3'] as const) lin(f.ffn.moe.experts[3]![k], r.ffn.moe.experts[3]![k]);
          }
          for (const [a, b] of pairs) {
            expect(isDeferred(b)).toBe(true);
            const [rows] = b.shape;
            const mid = Math.floor(rows / 3);
            const got = b.rows(mid, rows - mid);
            expect(Array.from(got.dataSync())).toEqual(Array.from(a.slice([mid, 0], [rows - mid, -1]).dataSync()));
            got.dispose();
          }
        } finally {
          disposeLayerWeights(f);
          disposeLayerWeights(r);
        }
      }
    });

    it('every block (prefill + a decode step) gives the float32 path\'s outputs', () => {
      const x = tf.randomNormal([6, config.hidden_size], 0, 1, 'float32', 11) as tf.Tensor2D;
      try {
        for (let l = 0; l < config.num_hidden_layers; l++) {
          const f = loadLayerWeights(ckpt, config, l);
          const r = loadResidentLayer(ckpt, config, l);
          try {
            const a = blockOut(f, config, x);
            const b = blockOut(r, config, x);
            expect(b.routing?.indices).toEqual(a.routing?.indices);
            // the same dot products in the same order (x · W[b]ᵀ band by band), bit for bit on every backend
            for (let i = 0; i < a.out.length; i++) expect(b.out[i]).toEqual(a.out[i]);
          } finally {
            disposeLayerWeights(f);
            disposeLayerWeights(r);
          }
        }
      } finally {
        x.dispose();
      }
    });

    it('embedding rows and head logits equal the float32 globals\' (only the tokens\' rows are read)', () => {
      const g = loadGlobalWeights(ckpt, config);
      const c = counting(ckpt);
      const r = loadResidentGlobals(c.ckpt, config);
      try {
        expect(c.bytesRead.get('model.embed_tokens.weight') ?? 0).toBe(0);
        const tokens = [5, 300, 5, 17];
        const e1 = embedTokens(tokens, g.embed);
        const e2 = embedTokens(tokens, r.embed);
        expect(Array.from(e2.dataSync())).toEqual(Array.from(e1.dataSync()));
        const rowBytes = ckpt.info('model.embed_tokens.weight').byteLength / config.vocab_size;
        expect(c.bytesRead.get('model.embed_tokens.weight')).toBe(3 * rowBytes); // 3 distinct tokens
        const h = tf.randomNormal([4, config.hidden_size], 0, 1, 'float32', 3) as tf.Tensor2D;
        const l1 = headLogits(h, e1, g, config.rms_norm_eps, 'all');
        const l2 = headLogits(h, e1, r, config.rms_norm_eps, 'all');
        const a = l1.dataSync();
        const b = l2.dataSync();
        const err = Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i]!)));
        expect(err).toBe(0); // the head in bands: the same products as on the whole matrix
        tf.dispose([e1, e2, h, l1, l2]);
      } finally {
        disposeGlobalWeights(g);
        disposeGlobalWeights(r);
      }
    });

    if (fixture === 'public-fp8') {
      it('reads only the routed experts the gate picks, each once per call; the meter sees the held bytes', () => {
        const c = counting(ckpt);
        const meter = new MemoryMeter();
        const l = config.first_k_dense_replace;
        const r = loadResidentLayer(c.ckpt, config, l, meter);
        const expertBytes = (e: number) =>
          [...c.bytesRead].filter(([n]) => n.startsWith(`model.layers.${l}.mlp.experts.${e}.`) && n.endsWith('.weight')).reduce((s, [, b]) => s + b, 0);
        const E = config.n_routed_experts;
        try {
          expect(Array.from({ length: E }, (_, e) => expertBytes(e))).toEqual(new Array(E).fill(0));
          expect(meter.held).toBeGreaterThan(0);
          const x = tf.randomNormal([3, config.hidden_size], 0, 1, 'float32', 5) as tf.Tensor2D;
          const { routing } = blockOut(r, config, x);
          x.dispose();
          // the prefill's experts, then the decode step's: each picked expert is read once per call
          const picked = new Set(routing!.indices);
          const one = (e: number) =>
            ['gate_proj', 'up_proj', 'down_proj'].reduce((s, k) => s + ckpt.info(`model.layers.${l}.mlp.experts.${e}.${k}.weight`).byteLength, 0);
          for (let e = 0; e < E; e++) {
            const read = expertBytes(e);
            if (!picked.has(e)) expect(read === 0 || read === one(e)).toBe(true); // at most the decode step's
            else expect(read === one(e) || read === 2 * one(e)).toBe(true);
          }
          expect(Array.from({ length: E }, (_, e) => expertBytes(e)).filter((b) => b > 0).length).toBeLessThan(E);
          expect(meter.peak).toBeGreaterThan(meter.held);
        } finally {
          disposeLayerWeights(r);
        }
        expect(meter.held).toBe(0);
      });
    }

    /** logits of a prefill of STREAM_TOKENS and one decode step, streamed */
    const streamed = (chunk?: number) => {
      const state = createStreamState(config.num_hidden_layers - 1);
      const opts = { config, maxSeqLen: 8192, last: config.num_hidden_layers - 1, logits: true, ...(chunk ? { chunk } : {}) };
      try {
        return [streamCall(ckpt, STREAM_TOKENS, state, opts).logits!, streamCall(ckpt, [9], state, opts).logits!];
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
        const want = [modelForward(STREAM_TOKENS, w, cache, 0, { config, maxSeqLen: 8192 }), modelForward([9], w, cache, STREAM_TOKENS.length, { config, maxSeqLen: 8192 })]
          .map((r) => {
            const v = Float32Array.from(r.logits.dataSync());
            r.logits.dispose();
            return v;
          });
        for (let s = 0; s < 2; s++) expect(Array.from(got[s]!)).toEqual(Array.from(want[s]!)); // bit for bit (x · W[b]ᵀ)
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

    it('does not leak tensors', async () => {
      const x = tf.randomNormal([4, config.hidden_size], 0, 1, 'float32', 2) as tf.Tensor2D;
      await expectNoTensorLeak(() => {
        const r = loadResidentLayer(ckpt, config, config.num_hidden_layers - 1);
        try {
          blockOut(r, config, x);
        } finally {
          disposeLayerWeights(r);
        }
      });
      x.dispose();
    });
  });
}

describeEachBackend('matMulWeightT / gatherRows on a deferred matrix of several bands', () => {
  /** a deferred view of a tensor with 3-row bands that counts the rows it hands out */
  const deferredOf = (w: tf.Tensor2D) => {
    const handed: number[] = [];
    const d: DeferredMatrix = {
      deferred: true,
      shape: [w.shape[0], w.shape[1]],
      bandRows: 3,
      rows: (first, count) => {
        handed.push(count);
        return tf.slice(w, [first, 0], [count, -1]) as tf.Tensor2D;
      },
      dispose: () => {},
    };
    return { d, handed };
  };

  it('x · Wᵀ band by band equals one product; gatherRows equals gather', () => {
    const w = tf.randomNormal([10, 7], 0, 1, 'float32', 8) as tf.Tensor2D;
    const x = tf.randomNormal([4, 7], 0, 1, 'float32', 9) as tf.Tensor2D;
    const { d, handed } = deferredOf(w);
    const want = tf.matMul(x, w, false, true);
    const got = matMulWeightT(x, d);
    expect(handed).toEqual([3, 3, 3, 1]);
    const a = want.dataSync();
    const b = got.dataSync();
    expect(Array.from(b)).toEqual(Array.from(a)); // the same product, summed in the same order
    const g1 = gatherRows(d, [9, 0, 9]);
    const g2 = tf.gather(w, [9, 0, 9]);
    expect(Array.from(g1.dataSync())).toEqual(Array.from(g2.dataSync()));
    expect(() => matMulWeightT(tf.zeros([1, 6]) as tf.Tensor2D, d)).toThrow(/matMulWeightT\(\): x must be \[M, In\] = \[M, 7\] but got \[1, 6\] \(In from w\)/);
    tf.dispose([w, x, want, got, g1, g2]);
  });
});
