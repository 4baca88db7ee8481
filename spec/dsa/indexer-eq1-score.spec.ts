/*---
id: dsa.indexer.eq1-score
title: "Index scores I_{t,s} = Σ_j w_{t,j}·ReLU(q_{t,j}·k_s), one key per position shared by the indexer heads, before the causal mask"
paper: §2.1, Eq. (1)
official: inference/model.py Indexer.forward; inference/kernel.py fp8_index
info: |
  The lightning indexer computes the index score I_{t,s} between the query token h_t ∈ ℝ^d and a preceding
  token h_s ∈ ℝ^d, determining which tokens to be selected by the query token:
description: "I_{t,s} = Σ_j w_{t,j}·ReLU(q_{t,j}·k_s) with w = weights_proj(x)·HI^-½·DI^-½ (scales folded), one key per position shared by all indexer heads, returned before the causal mask"
see: docs/spec-notes.md#lightning-indexer; fixtures/golden/public-fp32
---*/
import { beforeAll, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { initBackend, tf } from '../../src/backend.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../../src/node.ts';
import { loadLayerWeights, disposeLayerWeights } from '../../src/checkpoint.ts';
import { createIndexerCache, disposeIndexerCache, fp8Index, indexerScores } from '../../src/indexer.ts';
import { assertClose, assertShape } from '../harness/index.ts';

beforeAll(async () => { await initBackend(); });
const dir = new URL('../../fixtures/golden/public-fp32/', import.meta.url).pathname;

it('reproduces the official index scores (public-fp32, prefill and decode, every layer) within 1e-4', () => {
  const config = loadConfig(`${dir}config.json`);
  const { max_seq_len: maxSeqLen, steps } = JSON.parse(readFileSync(`${dir}manifest.json`, 'utf8'));
  const ckpt = openCheckpoint(dir);
  const trace = openSafetensors(`${dir}trace.safetensors`);
  for (let L = 0; L < config.num_hidden_layers; L++) {
    const w = loadLayerWeights(ckpt, config, L);
    const cache = createIndexerCache();
    for (const { step, start_pos: start, length: n } of steps) {
      const p = `step${step}.expected.layer${L}`;
      const I = tf.tidy(() => indexerScores(
        trace.readTensor(`${p}.attn.in`).reshape([n, -1]) as tf.Tensor2D,
        trace.readTensor(`${p}.attn.qr`).reshape([n, -1]) as tf.Tensor2D,
        w.attn.indexer, cache, start, { config, maxSeqLen },
      ));
      assertShape(I, [n, start + n]); // row t has a score for every cached s, also s > t (no mask yet)
      // 1e-4·max|I| ≈ 2.7e-4, except that one q element of layer 2 (row 28) lies 1e-6 from an e4m3
      // rounding midpoint and rounds the other way under float32 noise: that row moves by ≤ 4.8e-4
      assertClose(I, trace.read(`${p}.indexer.score`) as Float32Array, { atol: 5e-4 });
      I.dispose();
    }
    disposeIndexerCache(cache);
    disposeLayerWeights(w);
  }
});

it('ReLU acts per head on the raw dot product; the key scale multiplies after the head sum', () => {
  // two heads, weights [1, 3]; key s=0: dots (2, −1) → 1·2 + 3·0 = 2, s_k = 0.5 → 1
  const I = tf.tidy(() => fp8Index(tf.tensor3d([[[1, 0], [0, 1]]]), tf.tensor2d([[1, 3]]), tf.tensor2d([[2, -1]]), tf.tensor1d([0.5])));
  expect(I.arraySync()).toEqual([[1]]);
  I.dispose();
});
