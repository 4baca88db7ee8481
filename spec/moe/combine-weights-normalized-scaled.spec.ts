/*---
id: moe.gate.combine-weights
title: Combine weights are the selected unbiased sigmoid scores normalized to sum 1, times routed_scaling_factor (no epsilon)
official: inference/model.py Gate.forward (weights /= weights.sum(); weights *= route_scale)
description: per token the combine weights sum to routed_scaling_factor (official trace and random gates), each ∝ its unbiased score
see: docs/spec-notes.md#moe-gate (step 6)
---*/
import { beforeAll, it, expect } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { openSafetensors } from '../../src/node.ts';
import { moeGate } from '../../src/moe.ts';
import { assertClose } from '../harness/index.ts';

beforeAll(async () => { await initBackend(); });

it('the official combine weights sum to routed_scaling_factor = 2.5 for every token (public-fp8, all steps)', () => {
  const dir = new URL('../../fixtures/golden/public-fp8/', import.meta.url).pathname;
  const trace = openSafetensors(`${dir}trace.safetensors`);
  for (let step = 0; step < 5; step++) for (const L of [1, 2]) {
    const w = trace.read(`step${step}.expected.layer${L}.gate.weights`) as Float32Array;
    const sums = Array.from({ length: w.length / 2 }, (_, t) => w[2 * t]! + w[2 * t + 1]!);
    assertClose(sums, sums.map(() => 2.5), { atol: 1e-6 });
  }
  trace.close();
});

it('ours: Σ weights = routed_scaling_factor and w_i / w_j = σ_i / σ_j', () => {
  const x = tf.randomNormal([5, 16], 0, 1, 'float32', 8) as tf.Tensor2D;
  const weight = tf.randomNormal([16, 16], 0, 1, 'float32', 9) as tf.Tensor2D;
  const cfg = { n_routed_experts: 16, num_experts_per_tok: 4, n_group: 4, topk_group: 2, routed_scaling_factor: 1.75, scoring_func: 'sigmoid' as const };
  const { weights, indices } = moeGate(x, { weight, bias: tf.randomNormal([16], 0, 0.3, 'float32', 10) as tf.Tensor1D }, cfg);
  const w = weights.arraySync() as number[][];
  const ids = indices.arraySync() as number[][];
  const sigma = tf.sigmoid(tf.matMul(x, weight, false, true)).arraySync() as number[][];
  w.forEach((row, t) => {
    expect(Math.abs(row.reduce((a, b) => a + b, 0) - 1.75)).toBeLessThan(1e-6);
    const z = ids[t]!.reduce((a, e) => a + sigma[t]![e]!, 0);
    assertClose(row, ids[t]!.map((e) => (sigma[t]![e]! / z) * 1.75), { atol: 1e-6 });
  });
});
