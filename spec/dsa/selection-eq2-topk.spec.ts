/*---
id: dsa.selection.eq2-topk
title: S_t = the min(k, t+1) best positions s ≤ t (ties → lower position), never a future one
paper: §2.1, Eq. (2)
official: inference/model.py Indexer.forward (topk of I + causal mask, k = min(index_topk, end_pos))
info: |
  Given the index scores {I_{t,s}} for each query token h_t, our fine-grained token selection mechanism
  retrieves only the key-value entries {c_s} corresponding to the top-k index scores.
description: S_t holds the min(k, t+1) positions s ≤ t with the largest index scores (ties → lower position), never a future position; rows with t+1 ≤ k select every s ≤ t
see: docs/spec-notes.md#selection
---*/
import { beforeAll, it, expect } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { openSafetensors } from '../../src/node.ts';
import { selectTopK } from '../../src/topk.ts';
import { assertSetEqual } from '../harness/index.ts';

beforeAll(async () => { await initBackend(); });
const dir = new URL('../../fixtures/golden/public-fp32/', import.meta.url).pathname;

it('selects the official sets from the official scores (public-fp32 step 0, every layer)', () => {
  const trace = openSafetensors(`${dir}trace.safetensors`);
  for (let L = 0; L < 3; L++) {
    const scores = trace.readTensor(`step0.expected.layer${L}.indexer.score`).reshape([40, 40]) as tf.Tensor2D;
    const got = selectTopK(scores, 0, 16).arraySync();
    const expected = Array.from(trace.read(`step0.expected.layer${L}.indexer.topk`) as BigInt64Array, Number);
    got.forEach((row, t) => assertSetEqual(row, expected.slice(t * 16, (t + 1) * 16)));
    scores.dispose();
  }
});

it('k_t = min(k, t + 1): early rows are dense causal, later rows hold exactly k positions ≤ t', () => {
  const scores = tf.tensor2d([[9, 9, 9, 9], [1, 2, 9, 9], [3, 1, 2, 9], [0, 5, 5, 4]]);
  expect(selectTopK(scores, 0, 2).arraySync()).toEqual([[0, -1], [0, 1], [0, 2], [1, 2]]);
  scores.dispose();
});

it('a decode row (start_pos > 0) never selects beyond its own position', () => {
  const scores = tf.tensor2d([[0, 1, 2, 100]]);
  expect(selectTopK(scores, 2, 2).arraySync()).toEqual([[1, 2]]);
  scores.dispose();
});
