/*---
id: grpo.advantage-mean-baseline
title: The V3.2 group advantage subtracts the group mean and does not divide by the std
paper: §3.1, Eq. (5)–(6)
info: |
  The advantage of o_{i,t} is calculated by subtracting the average reward of the group from the reward
  of output o_i, i.e., Â_{i,t} = R_i − mean(R).
description: V3.2 advantages are R − mean(R) (no std); the DeepSeekMath form divides by the std plus eps
see: DeepSeekMath (arXiv 2402.03300) §4.1.2 for the std form; docs/spec-notes.md#grpo-hand-computed-example; fixtures/vectors/grpo-*.json
---*/
import { beforeAll, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { groupAdvantages } from '../../src/grpo.ts';

beforeAll(async () => { await initBackend(); });

it('R = [1, 0, 0.5, 0] gives [0.625, −0.375, 0.125, −0.375] with no std division', () => {
  const a = groupAdvantages(tf.tensor1d([1, 0, 0.5, 0]), 'mean');
  expect(Array.from(a.dataSync())).toEqual([0.625, -0.375, 0.125, -0.375]);
});

it('scaling every reward by 10 scales the V3.2 advantage by 10 (no std normalisation)', () => {
  const a = groupAdvantages(tf.tensor1d([10, 0, 5, 0]), 'mean');
  expect(Array.from(a.dataSync())).toEqual([6.25, -3.75, 1.25, -3.75]);
});

it('the DeepSeekMath form uses (R − mean)/(std + eps): sample std 0.478714 → the values of docs/spec-notes.md#grpo-hand-computed-example', () => {
  const a = Array.from(groupAdvantages(tf.tensor1d([1, 0, 0.5, 0]), 'mean_std_sample', 1e-4).dataSync());
  [1.30531, -0.783186, 0.261062, -0.783186].forEach((v, i) => expect(a[i]).toBeCloseTo(v, 5));
  const p = Array.from(groupAdvantages(tf.tensor1d([1, 0, 0.5, 0]), 'mean_std_population', 0).dataSync());
  [1.507557, -0.904534, 0.301511, -0.904534].forEach((v, i) => expect(p[i]).toBeCloseTo(v, 5));
});
