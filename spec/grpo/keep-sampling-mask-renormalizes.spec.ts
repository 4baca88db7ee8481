/*---
id: grpo.keep-sampling-mask-renormalizes
title: π_θ and π_old log-probs are renormalised over the sampler's kept top-p / top-k set
paper: §3.1, "Keep Sampling Mask"
info: |
  To address this, we preserve the truncation masks during sampling from π_old and apply them to π_θ
  during training, ensuring both policies share identical action subspaces.
description: log π̃(o_t) = z_o − logsumexp over the sampler's kept set, for π_θ and π_old alike; an all-kept set changes nothing
see: docs/deviations.md (the renormalization is our reading); fixtures/vectors/keep-sampling-mask.json
---*/
import { beforeAll, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { initBackend, tf } from '../../src/backend.ts';
import { keepSamplingRatio, keptSetFromLogits, tokenLogProbs, keepSamplingLogProbs } from '../../src/sampling_mask.ts';

beforeAll(async () => { await initBackend(); });
const v = JSON.parse(readFileSync(new URL('../../fixtures/vectors/keep-sampling-mask.json', import.meta.url), 'utf8'));

it('matches the reference vector (logp, logp_old, ratio over the top-p 0.9 kept set)', () => {
  const I = v.inputs;
  const r = keepSamplingRatio(tf.tensor2d(I.logits), tf.tensor2d(I.logits_old), tf.tensor2d(I.kept), tf.tensor1d(I.tokens, 'int32'));
  for (const [got, exp] of [[r.logp, v.expected.logp], [r.logpOld, v.expected.logp_old], [r.ratio, v.expected.ratio]] as const) {
    Array.from(got.dataSync()).forEach((x, t) => expect(x).toBeCloseTo(exp[t], 5));
  }
});

it('the kept set of the vector is the top-p 0.9 set of the old policy, the crossing token included', () => {
  expect(keptSetFromLogits(tf.tensor2d(v.inputs.logits_old), { topP: 0.9 }).arraySync()).toEqual(v.inputs.kept);
});

it('with every token kept the renormalised log-prob is the full-vocabulary one', () => {
  const z = tf.tensor2d(v.inputs.logits), tok = tf.tensor1d(v.inputs.tokens, 'int32');
  const a = keepSamplingLogProbs(z, tf.onesLike(z) as tf.Tensor2D, tok).dataSync();
  Array.from(tokenLogProbs(z, tok).dataSync()).forEach((x, t) => expect(a[t]).toBeCloseTo(x, 6));
  Array.from(a).forEach((x, t) => expect(x).toBeCloseTo(v.expected.logp_unmasked[t], 5));
});
