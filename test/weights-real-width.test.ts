/**
 * The streamed, resident-weight run (src/layer_stream.ts) on a synthetic released-format checkpoint
 * written by scripts/synthetic-checkpoint.ts — the generator and code path of the 671B-width benchmark
 * (bench/weights-671b.ts, docs/weights-streaming.md), at widths CI can afford: 1 dense + 1 MoE layer,
 * 32 experts (8 per token, 8 groups, 4 kept), FP8 e4m3 weights with 128×128 scales, sharded with
 * model.safetensors.index.json, and a prefill longer than index_topk so that the indexer selects.
 *
 * Checked: logits of the prefill and of a decode step equal the whole-layer float32 path
 * (`loadModelWeights` + `modelForward`), and each layer's peak bytes stay within its resident budget,
 * far below its float32 size.
 */
import { it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tf } from '../src/backend.ts';
import type { ModelConfig } from '../src/config.ts';
import { openCheckpoint } from '../src/node.ts';
import type { Checkpoint } from '../src/safetensors.ts';
import { createModelCache, disposeModelCache, disposeModelWeights, loadModelWeights, modelForward } from '../src/model.ts';
import { createStreamState, disposeStreamState, streamCall } from '../src/layer_stream.ts';
import { MemoryMeter } from '../src/resident.ts';
import { layerFloat32Bytes, layerResidentBytes } from '../src/weight_budget.ts';
import { runWeightsConformance } from '../src/conformance/weights.ts';
import { realWidthConfig, writeSyntheticCheckpoint } from '../scripts/synthetic-checkpoint.ts';
import { describeEachBackend } from './helpers/backends.ts';

const MAX_SEQ_LEN = 8192;
/** the 671B layout (kv_lora 512, rope 64, nope 128, v 128, index head 128, FP8 blocks) at CI widths */
const CI_CONFIG = {
  ...realWidthConfig(2, 32),
  hidden_size: 1024, vocab_size: 2048, num_attention_heads: 4, q_lora_rank: 256, index_n_heads: 8, index_topk: 16,
  intermediate_size: 1024, moe_intermediate_size: 256,
};
const TOKENS = Array.from({ length: 40 }, (_, i) => (i * 977 + 13) % 2048); // > index_topk: top-k selects

let root: string;
let dir: string;
let config: ModelConfig;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'dsv32-realwidth-'));
  dir = join(root, 'ckpt');
  config = writeSyntheticCheckpoint(dir, CI_CONFIG, 7).config;
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

it('the synthetic checkpoint is sharded in the released layout', () => {
  const ckpt = openCheckpoint(dir);
  try {
    expect(ckpt.info('model.layers.1.mlp.experts.31.down_proj.weight')).toEqual({ dtype: 'F8_E4M3', shape: [1024, 256], byteLength: 1024 * 256 });
    expect(ckpt.info('model.layers.1.mlp.experts.31.down_proj.weight_scale_inv').shape).toEqual([8, 2]);
    expect(ckpt.info('model.embed_tokens.weight').dtype).toBe('BF16');
    expect(ckpt.info('model.layers.0.self_attn.indexer.weights_proj.weight').dtype).toBe('BF16');
  } finally {
    ckpt.close();
  }
});

describeEachBackend('streamed resident run ≡ whole-layer float32 run (synthetic released-format checkpoint)', () => {
  let ckpt: Checkpoint;
  beforeAll(() => {
    ckpt = openCheckpoint(dir);
  });
  afterAll(() => ckpt.close());

  it('prefill (T > index_topk) + a decode step: same logits; each layer within its resident budget', async () => {
    /** lets the test runner's worker answer between long synchronous phases */
    const breathe = () => new Promise((r) => setImmediate(r));
    const N = config.num_hidden_layers;
    // streamed, resident
    const state = createStreamState(N - 1);
    const meter = new MemoryMeter();
    const peaks: number[][] = [];
    let selected = 0;
    const streamed: Float32Array[] = [];
    try {
      for (const tokens of [TOKENS, [5]]) {
        const step: number[] = [];
        const opts = {
          config, maxSeqLen: MAX_SEQ_LEN, last: N - 1, logits: true, meter,
          onTrace: (_l: number, _w: unknown, t: { selected: tf.Tensor2D }) => {
            selected = Math.max(selected, t.selected.shape[1]);
          },
          onLayer: (_w: unknown, d: { peakBytes: number }) => step.push(d.peakBytes),
        };
        streamed.push(streamCall(ckpt, tokens, state, opts).logits!);
        peaks.push(step);
        await breathe();
      }
    } finally {
      disposeStreamState(state);
    }
    expect(selected).toBe(config.index_topk); // the indexer selected 16 of 40 positions

    // whole-layer float32
    const weights = loadModelWeights(ckpt, config);
    const cache = createModelCache(config);
    const whole: Float32Array[] = [];
    try {
      for (const [tokens, start] of [[TOKENS, 0], [[5], TOKENS.length]] as const) {
        const { logits } = modelForward(tokens, weights, cache, start, { config, maxSeqLen: MAX_SEQ_LEN });
        whole.push(Float32Array.from(logits.dataSync()));
        logits.dispose();
        await breathe();
      }
    } finally {
      disposeModelCache(cache);
      disposeModelWeights(weights);
    }
    for (let s = 0; s < 2; s++) {
      const a = streamed[s]!;
      const b = whole[s]!;
      expect(a.every(Number.isFinite)).toBe(true);
      // the same dot products in the same order (x · W[b]ᵀ band by band, x · Wᵀ whole), bit for bit on
      // every backend: a last-bit difference could move an FP8 activation quantizer input across a midpoint
      const err = Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i]!)));
      expect(err).toBe(0);
    }

    for (let l = 0; l < N; l++) {
      const budget = layerResidentBytes(config, l);
      for (const p of peaks.map((s) => s[l]!)) {
        expect(p).toBeGreaterThan(budget.stored + budget.float32); // the meter sees the held layer
        // weights (the whole of one matrix is one band at these widths) + activations and caches of T = 40
        expect(p).toBeLessThan(budget.stored + budget.float32 + budget.expert + 4 * 1024 * 1024 * 4 + 8e6);
      }
      if (l >= config.first_k_dense_replace) expect(Math.max(...peaks.map((s) => s[l]!))).toBeLessThan(0.25 * layerFloat32Bytes(config, l));
    }
  });
});

it('runWeightsConformance --steps 1 on it: rows per layer and step, with the peak bytes', async () => {
  const lines: string[] = [];
  const rows = await runWeightsConformance({ weightsDir: dir, layers: [0, 1], tokens: TOKENS, steps: 1, maxSeqLen: MAX_SEQ_LEN, log: (l) => lines.push(l) });
  expect(rows.map((r) => `${r.check}:${r.step}:${r.layer}:${r.pass}`)).toEqual([
    'weights.finite:0:0:true', 'weights.finite:0:1:true', 'weights.finite:1:0:true', 'weights.finite:1:1:true',
  ]);
  expect(rows.every((r) => r.peak_bytes! > 0)).toBe(true);
  expect(lines.filter((l) => /greedy next token \d+$/.test(l))).toHaveLength(1);
});
