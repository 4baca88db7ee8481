/*---
id: dsa.mla.fp8-latent-round-trip
title: The normalized latent goes through an FP8 e4m3 quantize→dequantize (128-blocks) before caching; k_pe does not
official: inference/model.py MLA.forward ("we use fp8 kv cache in actual deployment, so here we simulate the precision"); inference/kernel.py act_quant
description: V3.2 passes the normalized KV latent through FP8 e4m3 quantize→dequantize (act_quant, 128-blocks, ue8m0 scales when scale_fmt is set) before caching it and before prefill attention; k_pe is not quantized
see: docs/spec-notes.md#mla (absent in V3.2-Exp, docs/spec-notes.md#v32-exp-and-v32)
---*/
import { beforeAll, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { initBackend, tf } from '../../src/backend.ts';
import { e4m3Decode, e4m3Encode } from '../../src/fp8.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../../src/node.ts';
import { loadLayerWeights, disposeLayerWeights } from '../../src/checkpoint.ts';
import { createMlaCache, disposeMlaCache, mlaForward, mlaLatent } from '../../src/mla.ts';

beforeAll(async () => { await initBackend(); });

it('public-fp8: every cached latent block is (power-of-two scale) × e4m3 values, the nearest to the normalized latent', () => {
  const dir = new URL('../../fixtures/golden/public-fp8/', import.meta.url).pathname;
  const config = loadConfig(`${dir}config.json`);
  const { max_seq_len: maxSeqLen } = JSON.parse(readFileSync(`${dir}manifest.json`, 'utf8'));
  const trace = openSafetensors(`${dir}trace.safetensors`);
  const w = loadLayerWeights(openCheckpoint(dir), config, 0);
  const x = trace.readTensor('step0.expected.layer0.attn.in').reshape([40, -1]) as tf.Tensor2D;
  const cache = createMlaCache();
  const r = mlaForward(x, w.attn, cache, 0, { config, maxSeqLen });
  const l = mlaLatent(x, w.attn, 0, { config, maxSeqLen });
  const kv = cache.latents!.dataSync();
  const c = l.normalized.dataSync();
  const C = config.kv_lora_rank;
  let changed = 0;
  for (let b = 0; b < kv.length / 128; b++) {
    const block = c.subarray(b * 128, (b + 1) * 128);
    const amax = Math.max(1e-4, ...Array.from(block, Math.abs));
    const scale = 2 ** Math.ceil(Math.log2(Math.fround(amax * Math.fround(1 / 448)))); // ue8m0
    for (let i = 0; i < 128; i++) {
      const y = Math.fround(block[i]! / scale);
      const q = Math.sign(y) * e4m3Decode(e4m3Encode(Math.abs(y)));
      expect(kv[b * 128 + i]).toBe(Math.fround(q * scale));
      if (kv[b * 128 + i] !== block[i]) changed++;
    }
  }
  expect(changed).toBeGreaterThan(kv.length / 2); // the round trip is not the identity
  expect(C % 128).toBe(0);
  expect(Array.from(cache.ropeKeys!.dataSync())).toEqual(Array.from(l.kPe.dataSync())); // k_pe cached unquantized
  tf.dispose([x, r.out, r.qr, r.indexScores, r.selected, l.normalized, l.latent, l.kPe]);
  disposeMlaCache(cache);
  disposeLayerWeights(w);
});
