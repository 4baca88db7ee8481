/*---
id: grpo.opsm-drops-negative-off-policy
title: A sequence's clipped term is dropped iff Â < 0 and its mean log(π_sampler/π_θ) exceeds δ; the KL term is kept
paper: §3.1, Eq. (8)–(9), "Off-Policy Sequence Masking"
info: |
  To stabilize training and improve tolerance for off-policy updates, we mask negative sequences that
  introduce significant policy divergence, as measured by the KL divergence between the data-sampling
  policy π_old and the current policy π_θ. […] Note that π_old here denotes the sampling probability
  directly returned by the inference framework […] It is also worth noting that we only mask sequences
  with negative advantages.
description: M_i = 0 iff Â_i < 0 and (1/|o_i|) Σ_t (log π_sampler − log π_θ) > δ; M multiplies the clipped term only
see: TRL tests/test_grpo_trainer.py test_get_off_policy_mask, test_get_off_policy_mask_padding; fixtures/vectors/grpo-v32.json
---*/
import { beforeAll, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { initBackend, tf } from '../../src/backend.ts';
import { grpoLoss, opsmKeepMask, opsmSequenceKl } from '../../src/grpo.ts';

beforeAll(async () => { await initBackend(); });

it('TRL case: seqKl [2, 0.5, 2], A [1, −1, −1], δ 1 → keep [1, 1, 0]', () => {
  const lsmp = tf.zeros([3, 4]) as tf.Tensor2D;
  const lp = tf.tensor2d([[-2, -2, -2, -2], [-0.5, -0.5, -0.5, -0.5], [-2, -2, -2, -2]]);
  const s = opsmSequenceKl(lsmp, lp, tf.ones([3, 4]) as tf.Tensor2D);
  expect(Array.from(s.dataSync())).toEqual([2, 0.5, 2]);
  expect(Array.from(opsmKeepMask(tf.tensor1d([1, -1, -1]), s, 1).dataSync())).toEqual([1, 1, 0]);
});

it('TRL padding case: pads holding ±10000 are ignored', () => {
  const mask = tf.tensor2d([[1, 1, 0, 0]]);
  const s1 = opsmSequenceKl(tf.zeros([1, 4]) as tf.Tensor2D, tf.tensor2d([[-2, -2, 10000, -10000]]), mask);
  expect(Array.from(opsmKeepMask(tf.tensor1d([-1]), s1, 1).dataSync())).toEqual([0]);
  const s2 = opsmSequenceKl(tf.zeros([1, 4]) as tf.Tensor2D, tf.tensor2d([[-0.5, -0.5, 10000, -10000]]), mask);
  expect(Array.from(opsmKeepMask(tf.tensor1d([-1]), s2, 1).dataSync())).toEqual([1]);
});

it('in the V3.2 reference vector the dropped sequence keeps exactly β·KL per token', () => {
  const v = JSON.parse(readFileSync(new URL('../../fixtures/vectors/grpo-v32.json', import.meta.url), 'utf8'));
  const I = v.inputs;
  const p = grpoLoss({ rewards: tf.tensor1d(I.rewards), mask: tf.tensor2d(I.mask), logp: tf.tensor2d(I.logp), logpOld: tf.tensor2d(I.logp_old),
    logpRef: tf.tensor2d(I.logp_ref), logpSampler: tf.tensor2d(I.logp_sampler) },
  { advantage: 'mean', stdEps: 0, clipLow: 0.2, clipHigh: 0.2, beta: 0.04, kl: 'unbiased_k3', opsmDelta: 0.5, aggregation: 'seq-mean-token-mean' });
  expect(Array.from(p.opsmKeep.dataSync()).map(Boolean)).toEqual(v.expected.opsm_keep);
  const ptl = p.perTokenLoss.arraySync()[5]!, kl = p.kl.arraySync()[5]!;
  ptl.forEach((x, t) => expect(x).toBeCloseTo(0.04 * kl[t]!, 7));
  expect(kl.slice(0, 6).every((x) => x > 0)).toBe(true);
});
