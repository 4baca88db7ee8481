/*---
id: dsa.mla.softmax-scale-mscale
title: Softmax scale Dqk^-1/2 · (0.1·mscale·ln(factor) + 1)² under YaRN, Dqk^-1/2 otherwise
official: inference/model.py MLA.__init__ (softmax_scale, mscale), precompute_freqs_cis
description: The attention softmax scale is Dqk^-1/2 times mscale² (mscale = 0.1·mscale·ln(factor) + 1) when max_seq_len exceeds original_max_position_embeddings; cos/sin are not scaled
see: docs/spec-notes.md#mla
---*/
import { beforeAll, it, expect } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { CONFIG_671B, softmaxScale } from '../../src/config.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../../src/node.ts';
import { loadLayerWeights, disposeLayerWeights } from '../../src/checkpoint.ts';
import { createMlaCache, disposeMlaCache, mlaAttend, mlaForward, mlaQuery } from '../../src/mla.ts';
import { assertClose } from '../harness/index.ts';

beforeAll(async () => { await initBackend(); });

it('671B: 192^-1/2 · (0.1·ln 40 + 1)² = 0.135234 with YaRN active, 192^-1/2 without', () => {
  expect(softmaxScale(CONFIG_671B, 16384)).toBeCloseTo(192 ** -0.5 * (0.1 * Math.log(40) + 1) ** 2, 15);
  expect(softmaxScale(CONFIG_671B, 16384)).toBeCloseTo(0.135234, 6);
  expect(softmaxScale(CONFIG_671B, 4096)).toBeCloseTo(192 ** -0.5, 15);
});

it('public-fp32 decode (MQA) matches the official output with the mscale² scale only', () => {
  const dir = new URL('../../fixtures/golden/public-fp32/', import.meta.url).pathname;
  const config = loadConfig(`${dir}config.json`);
  const trace = openSafetensors(`${dir}trace.safetensors`);
  const w = loadLayerWeights(openCheckpoint(dir), config, 1);
  const cache = createMlaCache();
  const x0 = trace.readTensor('step0.expected.layer1.attn.in').reshape([40, -1]) as tf.Tensor2D;
  const x1 = trace.readTensor('step1.expected.layer1.attn.in').reshape([1, -1]) as tf.Tensor2D;
  const pre = mlaForward(x0, w.attn, cache, 0, { config, maxSeqLen: 8192 });
  const dec = mlaForward(x1, w.attn, cache, 40, { config, maxSeqLen: 8192 });
  const expected = trace.read('step1.expected.layer1.attn.out') as Float32Array;
  assertClose(dec.out, expected, { atol: 1e-4 });
  // the same step with the scale of a run without YaRN (everything else equal) is far off
  const q = mlaQuery(x1, w.attn, 40, { config, maxSeqLen: 8192 });
  const noYarn = { ...config, rope_scaling: { ...config.rope_scaling!, factor: 1 } }; // mscale = 1, same 8192 run
  expect(softmaxScale(noYarn, 8192)).toBeCloseTo((config.qk_nope_head_dim + config.qk_rope_head_dim) ** -0.5, 12);
  const out = mlaAttend(q.qNope, q.qPe, cache.latents!, cache.ropeKeys!, dec.selected, w.attn, 40, { config: noYarn, maxSeqLen: 8192, mode: 'mqa' });
  const d = Array.from(out.dataSync()).reduce((m, v, i) => Math.max(m, Math.abs(v - expected[i]!)), 0);
  expect(d).toBeGreaterThan(1e-2);
  tf.dispose([x0, x1, pre.out, pre.qr, pre.indexScores, pre.selected, dec.out, dec.qr, dec.indexScores, dec.selected, q.qr, q.qNope, q.qPe, out]);
  disposeMlaCache(cache);
  disposeLayerWeights(w);
});
