/*---
id: grpo.unbiased-kl-importance-weight
title: The KL term is ρ·k3 with the ratio kept in the gradient, whose weight stays bounded where π_θ ≪ π_ref
paper: §3.1, Eq. (7), "Unbiased KL Estimate"
info: |
  Given o_{i,t} is sampled from the old policy π_old(·|q, o_{i,<t}), we correct the K3 estimator […] to
  obtain an unbiased KL estimate using the importance-sampling ratio between the current policy π_θ and
  the old policy π_old. […] As a direct result of this adjustment, the gradient of this KL estimator
  becomes unbiased, which eliminates systematic estimation errors, thereby facilitating stable
  convergence.
description: D = (π_θ/π_old)·k3 with the ratio in the gradient; ∂D/∂log π_θ = ρ(log π_θ − log π_ref), bounded, while ∂k3/∂log π_θ = 1 − π_ref/π_θ explodes
see: docs/spec-notes.md#grpo-hand-computed-example (k3 28.615452, ρ·k3 1.424679, weights −32.115 / −0.174)
---*/
import { beforeAll, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { klK3, klUnbiasedK3 } from '../../src/grpo.ts';

beforeAll(async () => { await initBackend(); });
const one = () => tf.tensor2d([[1]]);

it('values: k3 = 28.615452 and ρ·k3 = 1.424679 at log π_θ = −4, log π_old = −1, log π_ref = −0.5', () => {
  expect(klK3(tf.tensor2d([[-4]]), tf.tensor2d([[-0.5]]), one()).dataSync()[0]).toBeCloseTo(28.615452, 4);
  expect(klUnbiasedK3(tf.tensor2d([[-4]]), tf.tensor2d([[-1]]), tf.tensor2d([[-0.5]]), one()).dataSync()[0]).toBeCloseTo(1.424679, 5);
});

it('gradient weights: −32.115 for k3, −0.174 for ρ·k3 (the ratio is not detached)', () => {
  const gk = tf.grad((l: tf.Tensor) => tf.sum(klK3(l as tf.Tensor2D, tf.tensor2d([[-0.5]]), one())))(tf.tensor2d([[-4]]));
  const gu = tf.grad((l: tf.Tensor) => tf.sum(klUnbiasedK3(l as tf.Tensor2D, tf.tensor2d([[-1]]), tf.tensor2d([[-0.5]]), one())))(tf.tensor2d([[-4]]));
  expect(gk.dataSync()[0]).toBeCloseTo(-32.115, 3);
  expect(gu.dataSync()[0]).toBeCloseTo(-0.174, 3);
});

it('as π_θ → 0 the k3 weight grows without bound and the unbiased weight goes to 0', () => {
  const at = (lp: number): [number, number] => [
    tf.grad((l: tf.Tensor) => tf.sum(klK3(l as tf.Tensor2D, tf.tensor2d([[-0.5]]), one())))(tf.tensor2d([[lp]])).dataSync()[0]!,
    tf.grad((l: tf.Tensor) => tf.sum(klUnbiasedK3(l as tf.Tensor2D, tf.tensor2d([[-1]]), tf.tensor2d([[-0.5]]), one())))(tf.tensor2d([[lp]])).dataSync()[0]!,
  ];
  const [k20, u20] = at(-20);
  const [k40, u40] = at(-40);
  expect(Math.abs(k40)).toBeGreaterThan(Math.abs(k20) * 1e8);
  expect(Math.abs(u20)).toBeLessThan(1e-6);
  expect(Math.abs(u40)).toBeLessThan(Math.abs(u20));
});
