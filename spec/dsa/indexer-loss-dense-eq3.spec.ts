/*---
id: dsa.indexer-loss.dense-eq3
title: The dense indexer loss is Σ_t KL(p_t ‖ softmax(I_t)) with p the head-summed, L1-normalised main attention
paper: §2.1.1, Eq. (3) (dense warm-up stage)
info: |
  To align the indexer outputs with the main attention distribution, for the t-th query token, we first
  aggregate the main attention scores by summing across all attention heads. This sum is then
  L1-normalized along the sequence dimension to produce a target distribution p_{t,:} ∈ ℝ^t.
description: target p = head-summed attention L1-normalised over s ≤ t; Lᴵ = Σ_t KL(p_t ‖ softmax(I_t)); ∂Lᴵ/∂I = softmax(I) − p
see: fixtures/vectors/indexer-kl.json
---*/
import { beforeAll, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { initBackend, tf } from '../../src/backend.ts';
import { indexerKlDense, indexerTarget } from '../../src/indexer_loss.ts';

beforeAll(async () => { await initBackend(); });
const v = JSON.parse(readFileSync(new URL('../../fixtures/vectors/indexer-kl.json', import.meta.url), 'utf8'));

it('matches the reference vector target and dense loss', () => {
  const p = indexerTarget(tf.tensor3d(v.inputs.attention_probs)).arraySync();
  (v.expected.target as number[][]).forEach((r, t) => r.forEach((x, s) => expect(p[t]![s]).toBeCloseTo(x, 6)));
  expect(indexerKlDense(tf.tensor3d(v.inputs.attention_probs), tf.tensor2d(v.inputs.index_scores)).dataSync()[0]).toBeCloseTo(v.expected.loss_dense, 5);
});

it('the gradient w.r.t. the index scores is softmax(I_t) − p_t on s ≤ t and 0 above the diagonal', () => {
  const I = [[0.3, 5], [1, -1]];
  const g = tf.grad((x: tf.Tensor) => indexerKlDense(tf.tensor3d([[[1, 0], [0.2, 0.8]]]), x as tf.Tensor2D))(tf.tensor2d(I)).arraySync() as number[][];
  const q1 = Math.exp(1) / (Math.exp(1) + Math.exp(-1));
  expect(g[0]![0]).toBeCloseTo(0, 6); // row 0: a single candidate
  expect(g[0]![1]).toBe(0);
  expect(g[1]![0]).toBeCloseTo(q1 - 0.2, 5);
  expect(g[1]![1]).toBeCloseTo(1 - q1 - 0.8, 5);
});
