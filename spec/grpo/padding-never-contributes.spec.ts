/*---
id: grpo.padding-never-contributes
title: Padded positions contribute neither to the loss nor to its gradient, whatever they hold
paper: §3.1, Eq. (8) (the sums run over t = 1 … |o_i| only)
description: NaN / Infinity / any value in padded positions changes neither the loss nor its gradient, and the gradient there is 0
see: fixtures/vectors/grpo-asym-token-mean.json
---*/
import { beforeAll, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { initBackend, tf } from '../../src/backend.ts';
import { grpoLossAndGrad, type GrpoOptions } from '../../src/grpo.ts';

beforeAll(async () => { await initBackend(); });

it('the asym-token-mean vector with NaN, +Infinity and −Infinity written into its padding gives the expected loss and grad_logp', () => {
  const v = JSON.parse(readFileSync(new URL('../../fixtures/vectors/grpo-asym-token-mean.json', import.meta.url), 'utf8'));
  const I = v.inputs;
  const junk = [NaN, Infinity, -Infinity];
  const dirty = (m: number[][]) => m.map((r, i) => r.map((x, t) => (I.mask[i][t] ? x : junk[(i + t) % 3]!)));
  const o: GrpoOptions = { advantage: 'mean_std_population', stdEps: 1e-6, clipLow: 0.2, clipHigh: 0.28, beta: 0.04, kl: 'unbiased_k3', opsmDelta: 0.3, aggregation: 'token-mean' };
  const { value, grad } = grpoLossAndGrad({ rewards: tf.tensor1d(I.rewards), mask: tf.tensor2d(I.mask), logp: tf.tensor2d(dirty(I.logp)),
    logpOld: tf.tensor2d(dirty(I.logp_old)), logpRef: tf.tensor2d(dirty(I.logp_ref)), logpSampler: tf.tensor2d(dirty(I.logp_sampler)) }, o);
  expect(value.dataSync()[0]).toBeCloseTo(v.expected.loss, 6);
  const g = grad.arraySync();
  (v.expected.grad_logp as number[][]).forEach((r, i) => r.forEach((x, t) => {
    if (I.mask[i][t]) expect(g[i]![t]).toBeCloseTo(x, 5);
    else expect(g[i]![t]).toBe(0);
  }));
});
