/*---
id: grpo.clipped-surrogate-min-form
title: The policy term is min(ρÂ, clip(ρ, 1−ε, 1+ε)Â), negated as a loss
paper: §3.1, Eq. (5)
info: |
  GRPO optimizes the policy model π_θ by maximizing the following objective on a group of responses
  {o_1, ⋯, o_G} sampled from the old policy π_old given each question q […] ε and β are
  hyper-parameters controlling the clipping range and KL penalty strength, respectively.
description: the per-token policy loss is −min(ρÂ, clip(ρ, 1−ε_low, 1+ε_high)Â); no dual clip
see: DeepSeekMath (arXiv 2402.03300) Eq. (3); docs/spec-notes.md#grpo-hand-computed-example
---*/
import { beforeAll, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { clippedSurrogate } from '../../src/grpo.ts';

beforeAll(async () => { await initBackend(); });

it('clips the ratio only where that lowers the objective (pessimistic bound)', () => {
  const mk = (a: number) => Array.from(clippedSurrogate(tf.tensor2d([[1.5, 0.5]]), tf.tensor1d([a]), tf.tensor2d([[1, 1]]), 0.2, 0.2).dataSync());
  const pos = mk(1), neg = mk(-1);
  [-1.2, -0.5].forEach((v, i) => expect(pos[i]).toBeCloseTo(v, 6)); // A > 0: gain capped at 1+ε; a small ρ is not raised
  [1.5, 0.8].forEach((v, i) => expect(neg[i]).toBeCloseTo(v, 6)); // A < 0: a large ρ is not capped (min form), a small one is
});

it('a large ratio with a negative advantage stays unclipped (3.175975 in docs/spec-notes.md#grpo-hand-computed-example, where verl dual-clips to 2.35)', () => {
  const rho = Math.exp(-0.1 + 1.5); // token (1, 1) of the docs/spec-notes.md example
  const v = clippedSurrogate(tf.tensor2d([[rho]]), tf.tensor1d([-0.783186]), tf.tensor2d([[1]]), 0.2, 0.2).dataSync()[0];
  expect(v).toBeCloseTo(3.175975, 5);
});
