/*---
id: dsa.sparse.gather-equals-dense-masked
title: The O(T·k) gather path equals the official −∞-masked dense score matrix
paper: §2.1, Eq. (2); §2.3
official: inference/model.py MLA.forward (index_mask)
info: |
  Note that for short-sequence prefilling, we specially implement a masked MHA mode to simulate DSA,
  which can achieve higher efficiency under short-context conditions.
description: The O(T·k) gather of the selected latents equals the official dense computation with a −∞ selection + causal mask over the full [T, S] score matrix (same set, same softmax normalization)
see: docs/spec-notes.md#selection; FlashMLA sparse MQA kernels (gather semantics)
---*/
import { beforeAll, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { initBackend, tf } from '../../src/backend.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../../src/node.ts';
import { loadLayerWeights, disposeLayerWeights } from '../../src/checkpoint.ts';
import { createMlaCache, disposeMlaCache, mlaForward } from '../../src/mla.ts';
import { denseAttentionMqa, sparseAttentionMqa, denseAttentionMha, sparseAttentionMha } from '../../src/sparse_attention.ts';
import { assertClose } from '../harness/index.ts';

beforeAll(async () => { await initBackend(); });

it('public-fp32 layer 2 prefill (40 queries, k = 16): gather ≡ dense masked (MHA mode), and the MQA mode on the same cache', () => {
  const dir = new URL('../../fixtures/golden/public-fp32/', import.meta.url).pathname;
  const config = loadConfig(`${dir}config.json`);
  const { max_seq_len: maxSeqLen } = JSON.parse(readFileSync(`${dir}manifest.json`, 'utf8'));
  const trace = openSafetensors(`${dir}trace.safetensors`);
  const w = loadLayerWeights(openCheckpoint(dir), config, 2);
  const x = trace.readTensor('step0.expected.layer2.attn.in').reshape([40, -1]) as tf.Tensor2D;
  const outs = (['sparse', 'dense'] as const).flatMap((attention) => (['mha', 'mqa'] as const).map((mode) => {
    const cache = createMlaCache();
    const r = mlaForward(x, w.attn, cache, 0, { config, maxSeqLen, attention, mode });
    const out = r.out.dataSync();
    tf.dispose([r.out, r.qr, r.indexScores, r.selected]);
    disposeMlaCache(cache);
    return out;
  }));
  assertClose(outs[0]!, outs[2]!, { atol: 1e-5 }); // MHA: gather ≡ dense
  assertClose(outs[1]!, outs[3]!, { atol: 1e-5 }); // MQA: gather ≡ dense
  x.dispose();
  disposeLayerWeights(w);
});

it('random cache, shuffled selections with padding, several query blocks', () => {
  const T = 6, H = 3, C = 5, R = 4, S = 9, startPos = 3;
  const rnd = (n: number, s: number) => Array.from({ length: n }, (_, i) => Math.sin(7.1 * i + s));
  const selected = [[3, 0, -1, 1], [4, 2, 0, 1], [5, -1, -1, 0], [6, 1, 3, 2], [7, 5, 6, 0], [8, 2, 4, 7]];
  tf.tidy(() => {
    const args = [tf.tensor3d(rnd(T * H * C, 1), [T, H, C]), tf.tensor3d(rnd(T * H * R, 2), [T, H, R]), tf.tensor2d(rnd(S * C, 3), [S, C]),
      tf.tensor2d(rnd(S * R, 4), [S, R]), tf.tensor2d(selected, [T, 4], 'int32')] as const;
    assertClose(sparseAttentionMqa(...args, startPos, 0.8, { queryBlock: 4 }), denseAttentionMqa(...args, startPos, 0.8), { atol: 1e-6 });
    const mha = [tf.tensor3d(rnd(T * H * 6, 5), [T, H, 6]), tf.tensor3d(rnd(S * H * 6, 6), [S, H, 6]), tf.tensor3d(rnd(S * H * 2, 7), [S, H, 2]),
      tf.tensor2d(selected, [T, 4], 'int32')] as const;
    assertClose(sparseAttentionMha(...mha, startPos, 0.8, { queryBlock: 4 }), denseAttentionMha(...mha, startPos, 0.8), { atol: 1e-6 });
  });
});
