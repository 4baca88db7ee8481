/*---
id: dsa.sparse.eq2-selected-only
title: Core attention of query t is a softmax over the selected latents S_t only; unselected, future and padded slots never contribute
paper: §2.1, Eq. (2)
official: inference/model.py MLA.forward (index_mask = −inf except topk_indices, plus the causal mask)
info: |
  Then, the attention output u_t is computed by applying the attention mechanism between the query token
  h_t and the sparsely selected key-value entries {c_s}:
description: Core attention of query t runs over the selected latents { c_s | s ∈ S_t } only (softmax normalized over S_t); unselected and future positions never contribute, −1 padding slots contribute exp(−∞) = 0
see: docs/spec-notes.md#selection
---*/
import { beforeAll, it, expect } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { sparseAttentionMqa } from '../../src/sparse_attention.ts';
import { assertClose } from '../harness/index.ts';

beforeAll(async () => { await initBackend(); });

it('softmax over the selected set: two of four latents selected, by hand', () => {
  // q̃ = [1, 0]; c_0 = [2, 0], c_1 = [0, 5] (unselected), c_2 = [0, 1], c_3 = [9, 9] (future of t = 2); scale 1
  const kv = tf.tensor2d([[2, 0], [0, 5], [0, 1], [9, 9]]);
  const o = sparseAttentionMqa(tf.tensor3d([[[1, 0]]]), tf.zeros([1, 1, 2]) as tf.Tensor3D, kv, tf.zeros([4, 2]) as tf.Tensor2D,
    tf.tensor2d([[2, -1, 0]], [1, 3], 'int32'), 2, 1);
  const p0 = Math.exp(2) / (Math.exp(2) + Math.exp(0)); // z_0 = 2, z_2 = 0
  assertClose(o, [2 * p0, 1 - p0], { atol: 1e-6 });
});

it('unselected, future and padded positions can hold anything (NaN, 1e30) without changing the output', () => {
  const good = [[1, 2], [3, -1], [0.5, 0.25], [-2, 1]];
  const run = (kvRows: number[][]) =>
    sparseAttentionMqa(tf.tensor3d([[[0.3, -0.7]]]), tf.tensor3d([[[0.1, 0.2]]]), tf.tensor2d(kvRows), tf.tensor2d([[1, 0], [0, 1], [1, 1], [2, 2]]),
      tf.tensor2d([[0, 2, -1]], [1, 3], 'int32'), 2, 0.5).arraySync();
  const clean = run(good);
  expect(run([good[0]!, [NaN, NaN], good[2]!, [1e30, -1e30]])).toEqual(clean);
});
