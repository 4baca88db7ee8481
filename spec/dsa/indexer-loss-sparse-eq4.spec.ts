/*---
id: dsa.indexer-loss.sparse-eq4
title: The sparse indexer loss restricts both distributions to the top-k set S_t; the indexer input is detached
paper: §2.1.1, Eq. (4) (sparse training stage)
info: |
  In this stage, we also keep aligning the indexer outputs to the main attention distribution, but
  considering only the selected token set S_t = {s | I_{t,s} ∈ Top-k(I_{t,:})}: […] It is worth noting
  that we detach the indexer input from the computational graph for separate optimization.
description: S_t = top-k of I_t over s ≤ t (ties → higher score, then lower position); KL over S_t with the target renormalised on S_t; the main attention gets no gradient
see: fixtures/vectors/indexer-kl.json; docs/spec-notes.md#selection (tie rule)
---*/
import { beforeAll, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { initBackend, tf } from '../../src/backend.ts';
import { indexerKlSparse, indexerSelection } from '../../src/indexer_loss.ts';

beforeAll(async () => { await initBackend(); });
const v = JSON.parse(readFileSync(new URL('../../fixtures/vectors/indexer-kl.json', import.meta.url), 'utf8'));

it('matches the reference vector selection and sparse loss', () => {
  expect(indexerSelection(tf.tensor2d(v.inputs.index_scores), v.inputs.topk).arraySync()).toEqual(v.expected.selected);
  expect(indexerKlSparse(tf.tensor3d(v.inputs.attention_probs), tf.tensor2d(v.inputs.index_scores), v.inputs.topk).dataSync()[0])
    .toBeCloseTo(v.expected.loss_sparse, 5);
});

it('ties go to the lower position; rows with t + 1 ≤ k select every s ≤ t', () => {
  expect(indexerSelection(tf.tensor2d([[0, 0, 0], [1, 1, 0], [2, 2, 2]]), 2).arraySync()).toEqual([[0, -1], [0, 1], [0, 1]]);
});

it('the target renormalised on S_t: p = [0.5, 0.2, 0.3], S = {0, 2} → KL([0.625, 0.375] ‖ softmax(I_0, I_2)); no gradient to the attention', () => {
  const A = tf.tensor3d([[[1, 0, 0], [0.5, 0.5, 0], [0.5, 0.2, 0.3]]]);
  const I = tf.tensor2d([[0, 0, 0], [0, 0, 0], [1, -1, 0.5]]);
  const q0 = Math.exp(1) / (Math.exp(1) + Math.exp(0.5));
  const row2 = 0.625 * Math.log(0.625 / q0) + 0.375 * Math.log(0.375 / (1 - q0));
  const row1 = 0; // S_1 = {0, 1}: p = [0.5, 0.5] = softmax([0, 0])
  expect(indexerKlSparse(A, I, 2).dataSync()[0]).toBeCloseTo(row1 + row2, 6);
  const [ga] = tf.grads((a: tf.Tensor, i: tf.Tensor) => indexerKlSparse(a as tf.Tensor3D, i as tf.Tensor2D, 2))([A, I]);
  expect(Array.from(ga!.dataSync()).every((x) => x === 0)).toBe(true);
});
