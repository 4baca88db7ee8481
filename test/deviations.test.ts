/**
 * The forward's `precision: 'bf16'` mode and the catalogue switches (src/precision.ts, src/deviations.ts),
 * each against what it must do to the official math, on the public-fp32 checkpoint.
 */
import { beforeAll, afterAll, expect, it } from 'vitest';
import { tf } from '../src/backend.ts';
import { disposeLayerWeights, type LayerWeights } from '../src/checkpoint.ts';
import { softmaxScale, qkHeadDim, type ModelConfig } from '../src/config.ts';
import { isDeviationId } from '../src/deviations.ts';
import { createIndexerCache, disposeIndexerCache, indexerScores } from '../src/indexer.ts';
import { createMlaCache, disposeMlaCache, mlaForward, mlaLatent } from '../src/mla.ts';
import { moeGate } from '../src/moe.ts';
import { loadConfig, openCheckpoint } from '../src/node.ts';
import { loadLayerWeights } from '../src/checkpoint.ts';
import { describeEachBackend } from './helpers/backends.ts';

const DIR = 'fixtures/golden/public-fp32';
let config: ModelConfig;
let layer: LayerWeights;


/** bfloat16 values have their low 16 float32 bits clear. */
const isBf16 = (v: Float32Array) => new Uint32Array(Float32Array.from(v).buffer).every((b) => (b & 0xffff) === 0);

describeEachBackend('bf16 mode and deviation switches', () => {
  beforeAll(() => {
    config = loadConfig(`${DIR}/config.json`);
    const ckpt = openCheckpoint(DIR);
    layer = loadLayerWeights(ckpt, config, 1);
    ckpt.close();
  });
  afterAll(() => disposeLayerWeights(layer));

  it('bf16 mode: MLA outputs are bf16 values, within bf16 noise of float32', () => {
    const x = tf.randomNormal([6, config.hidden_size], 0, 1, 'float32', 3) as tf.Tensor2D;
    const run = (precision: 'fp32' | 'bf16') => {
      const cache = createMlaCache();
      const o = mlaForward(x, layer.attn, cache, 0, { config, maxSeqLen: 8192, precision });
      const values = { out: o.out.dataSync() as Float32Array, qr: o.qr.dataSync() as Float32Array };
      tf.dispose([o.out, o.qr, o.indexScores, o.selected]);
      disposeMlaCache(cache);
      return values;
    };
    const f = run('fp32');
    const b = run('bf16');
    expect(isBf16(b.out.slice(0, 64))).toBe(true);
    expect(isBf16(b.qr.slice(0, 64))).toBe(true);
    expect(isBf16(f.out.slice(0, 64))).toBe(false);
    const maxAbs = (v: Float32Array) => v.reduce((m, y) => Math.max(m, Math.abs(y)), 0);
    const err = f.out.reduce((m, y, i) => Math.max(m, Math.abs(y - b.out[i]!)), 0) / maxAbs(f.out);
    expect(err).toBeGreaterThan(0);
    expect(err).toBeLessThan(0.1);
    x.dispose();
  });

  it('kv-latent-no-fp8-roundtrip: the cached latent is the normalized one', () => {
    const x = tf.randomNormal([3, config.hidden_size], 0, 1, 'float32', 4) as tf.Tensor2D;
    const spec = mlaLatent(x, layer.attn, 0, { config, maxSeqLen: 8192 });
    const dev = mlaLatent(x, layer.attn, 0, { config, maxSeqLen: 8192, deviations: new Set(['kv-latent-no-fp8-roundtrip']) });
    expect(Array.from(dev.latent.dataSync())).toEqual(Array.from(spec.normalized.dataSync()));
    expect(Array.from(spec.latent.dataSync())).not.toEqual(Array.from(spec.normalized.dataSync()));
    tf.dispose([x, spec.latent, spec.normalized, spec.kPe, dev.latent, dev.normalized, dev.kPe]);
  });

  it('indexer-weights-no-scale: scores × (HI · DI)^½ exactly as the head weights are', () => {
    const x = tf.randomNormal([5, config.hidden_size], 0, 1, 'float32', 5) as tf.Tensor2D;
    const qr = tf.randomNormal([5, config.q_lora_rank], 0, 1, 'float32', 6) as tf.Tensor2D;
    const score = (deviations?: Set<'indexer-weights-no-scale'>) => {
      const cache = createIndexerCache();
      const s = indexerScores(x, qr, layer.attn.indexer, cache, 0, { config, maxSeqLen: 8192, deviations });
      const v = s.dataSync() as Float32Array;
      s.dispose();
      disposeIndexerCache(cache);
      return v;
    };
    const spec = score();
    const dev = score(new Set(['indexer-weights-no-scale']));
    const factor = Math.sqrt(config.index_n_heads * config.index_head_dim);
    spec.forEach((s, i) => expect(dev[i]!).toBeCloseTo(s * factor, 3));
    tf.dispose([x, qr]);
  });

  it('softmax-no-mscale: equals the spec run with YaRN off in the softmax scale only', () => {
    expect(qkHeadDim(config) ** -0.5).not.toBe(softmaxScale(config, 8192));
    const x = tf.randomNormal([4, config.hidden_size], 0, 1, 'float32', 7) as tf.Tensor2D;
    const out = (deviations?: Set<'softmax-no-mscale'>) => {
      const cache = createMlaCache();
      const o = mlaForward(x, layer.attn, cache, 0, { config, maxSeqLen: 8192, deviations });
      const v = o.out.dataSync() as Float32Array;
      tf.dispose([o.out, o.qr, o.indexScores, o.selected]);
      disposeMlaCache(cache);
      return v;
    };
    expect(Array.from(out(new Set(['softmax-no-mscale'])))).not.toEqual(Array.from(out()));
    x.dispose();
  });

  it('moe-bias-in-weights and moe-group-fill-zero change the gate as the deviating code does', () => {
    const x = tf.randomNormal([4, config.hidden_size], 0, 1, 'float32', 8) as tf.Tensor2D;
    const gate = { weight: layer.ffn.kind === 'moe' ? layer.ffn.moe.gate.weight : tf.zeros([8, 256]) as tf.Tensor2D, bias: tf.fill([config.n_routed_experts], -2) as tf.Tensor1D };
    const spec = moeGate(x, gate, config);
    const zero = moeGate(x, gate, config, { deviations: new Set(['moe-group-fill-zero']) });
    const E = config.n_routed_experts;
    const groupOf = (e: number) => Math.floor(e / (E / config.n_group));
    // 0.0 beats every allowed σ − 2 < 0: the deviating gate picks experts of dropped groups
    const specGroups = new Set(Array.from(spec.indices.dataSync()).slice(0, 2).map(groupOf));
    expect(Array.from(zero.indices.dataSync()).slice(0, 2).some((e) => !specGroups.has(groupOf(e)))).toBe(true);
    const biased = moeGate(x, gate, config, { deviations: new Set(['moe-bias-in-weights']), routing: { tokens: 4, experts: 2, indices: spec.indices.dataSync() as Int32Array, weights: new Float32Array(8) } });
    const sigma = tf.sigmoid(tf.matMul(x, gate.weight, false, true)).arraySync() as number[][];
    const ids = spec.indices.arraySync() as number[][];
    const w = biased.weights.arraySync() as number[][];
    ids.forEach((row, t) => {
      const s = row.map((e) => sigma[t]![e]! - 2);
      const sum = s[0]! + s[1]!;
      row.forEach((_, j) => expect(w[t]![j]!).toBeCloseTo((s[j]! / sum) * config.routed_scaling_factor, 4));
    });
    tf.dispose([x, gate.bias, spec.weights, spec.indices, zero.weights, zero.indices, biased.weights, biased.indices]);
  });

  it('catalogue ids are stable', () => {
    expect(isDeviationId('moe-group-fill-zero')).toBe(true);
    expect(isDeviationId('moe-group-fill')).toBe(false);
  });
});
