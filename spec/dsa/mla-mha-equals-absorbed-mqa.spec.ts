/*---
id: dsa.mla.mha-mqa-equivalence
title: MHA mode (per-head k/v from wkv_b) and absorbed MQA mode (W_UK into the query, W_UV after attention) give the same output
paper: §2.1
official: inference/model.py MLA.forward (mask is not None → MHA branch; else → absorbed branch with weight_dequant(wkv_b))
info: |
  Therefore, we implement DSA based on the MQA […] mode of MLA […], where each latent vector (the key-value
  entry of MLA) will be shared across all query heads of the query token.
description: MHA mode (keys/values expanded per head by wkv_b) and absorbed MQA mode (W_UK folded into the query, W_UV after attention) give the same MLA output; the official prefill uses the first, decode the second
see: docs/spec-notes.md#mla; DeepSeek-V2 paper §2.1.2 (weight absorption)
---*/
import { beforeAll, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { initBackend, tf } from '../../src/backend.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../../src/node.ts';
import { loadLayerWeights, disposeLayerWeights } from '../../src/checkpoint.ts';
import { createMlaCache, disposeMlaCache, mlaForward } from '../../src/mla.ts';
import { assertClose } from '../harness/index.ts';

beforeAll(async () => { await initBackend(); });

it('public-fp32 layer 1 prefill: mode mha ≡ mode mqa ≡ the official (MHA) output', () => {
  const dir = new URL('../../fixtures/golden/public-fp32/', import.meta.url).pathname;
  const config = loadConfig(`${dir}config.json`);
  const { max_seq_len: maxSeqLen } = JSON.parse(readFileSync(`${dir}manifest.json`, 'utf8'));
  const trace = openSafetensors(`${dir}trace.safetensors`);
  const w = loadLayerWeights(openCheckpoint(dir), config, 1);
  const x = trace.readTensor('step0.expected.layer1.attn.in').reshape([40, config.hidden_size]) as tf.Tensor2D;
  const expected = trace.read('step0.expected.layer1.attn.out') as Float32Array;
  const outs = (['mha', 'mqa'] as const).map((mode) => {
    const cache = createMlaCache();
    const r = mlaForward(x, w.attn, cache, 0, { config, maxSeqLen, mode });
    const out = r.out.dataSync();
    tf.dispose([r.out, r.qr, r.indexScores, r.selected]);
    disposeMlaCache(cache);
    return out;
  });
  assertClose(outs[1]!, outs[0]!, { atol: 1e-5 });
  assertClose(outs[0]!, expected, { atol: 1e-4 });
  assertClose(outs[1]!, expected, { atol: 1e-4 });
  x.dispose();
  disposeLayerWeights(w);
});
