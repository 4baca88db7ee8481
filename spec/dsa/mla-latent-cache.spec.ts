/*---
id: dsa.mla.latent-cache
title: One normalized latent [C] and one rotated rope key [R] cached per position, shared by all heads; decode attends over the cache
paper: §2.1
official: inference/model.py MLA.forward (kv_cache[:, start_pos:end_pos] = kv, pe_cache[...] = k_pe; decode einsums over kv_cache[:, :end_pos])
info: |
  Therefore, we implement DSA based on the MQA […] mode of MLA […], where each latent vector (the key-value
  entry of MLA) will be shared across all query heads of the query token.
description: MLA caches one normalized latent c_s [C] and one rotated rope key k_pe_s [R] per position, shared by all heads; decode steps attend over that cache and reproduce the official decode outputs; a chunked prefill equals one prefill
see: docs/spec-notes.md#mla; fixtures/golden/public-fp32
---*/
import { beforeAll, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { initBackend, tf } from '../../src/backend.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../../src/node.ts';
import { loadLayerWeights, disposeLayerWeights } from '../../src/checkpoint.ts';
import { createMlaCache, disposeMlaCache, mlaForward } from '../../src/mla.ts';
import { assertClose, assertShape } from '../harness/index.ts';

beforeAll(async () => { await initBackend(); });

const dir = new URL('../../fixtures/golden/public-fp8/', import.meta.url).pathname;
const config = loadConfig(`${dir}config.json`);
const { max_seq_len: maxSeqLen, steps } = JSON.parse(readFileSync(`${dir}manifest.json`, 'utf8')) as { max_seq_len: number; steps: Array<{ step: number; start_pos: number; length: number }> };

it('public-fp8 layer 2: prefill 40 then 4 decode steps on one cache match every recorded attn.out', () => {
  const trace = openSafetensors(`${dir}trace.safetensors`);
  const w = loadLayerWeights(openCheckpoint(dir), config, 2);
  const cache = createMlaCache();
  for (const st of steps) {
    const x = trace.readTensor(`step${st.step}.expected.layer2.attn.in`).reshape([st.length, config.hidden_size]) as tf.Tensor2D;
    const r = mlaForward(x, w.attn, cache, st.start_pos, { config, maxSeqLen });
    const end = st.start_pos + st.length;
    assertShape(cache.latents!, [end, config.kv_lora_rank]);
    assertShape(cache.ropeKeys!, [end, config.qk_rope_head_dim]);
    assertClose(r.out, trace.read(`step${st.step}.expected.layer2.attn.out`) as Float32Array, { atol: 1e-4 });
    tf.dispose([x, r.out, r.qr, r.indexScores, r.selected]);
  }
  disposeMlaCache(cache);
  disposeLayerWeights(w);
});

it('prefill 40 ≡ prefill 25 + prefill 15 (the later chunk attends to the cached keys)', () => {
  const trace = openSafetensors(`${dir}trace.safetensors`);
  const w = loadLayerWeights(openCheckpoint(dir), config, 2);
  const x = trace.readTensor('step0.expected.layer2.attn.in').reshape([40, config.hidden_size]) as tf.Tensor2D;
  const run = (chunks: number[]) => {
    const cache = createMlaCache();
    const rows: number[][] = [];
    let pos = 0;
    for (const n of chunks) {
      const xi = x.slice([pos, 0], [n, -1]);
      const r = mlaForward(xi, w.attn, cache, pos, { config, maxSeqLen });
      rows.push(...(r.out.arraySync() as number[][]));
      tf.dispose([xi, r.out, r.qr, r.indexScores, r.selected]);
      pos += n;
    }
    expect(cache.latents!.shape[0]).toBe(40);
    disposeMlaCache(cache);
    return rows;
  };
  assertClose(run([25, 15]), run([40]), { atol: 1e-5 });
  x.dispose();
  disposeLayerWeights(w);
});
