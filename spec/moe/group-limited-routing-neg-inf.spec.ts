/*---
id: moe.gate.group-limited-neg-inf
title: Group-limited routing keeps the topk_group groups with the largest top-2 sums and gives every other expert −∞ (not 0.0, as HF/mlx do)
official: inference/model.py Gate.forward (group score = sum of top-2 biased scores, masked_fill(-inf))
description: experts outside the topk_group best groups (by top-2 biased score sum) are masked with −∞; a 0.0 fill would pick them when kept scores are negative
see: docs/spec-notes.md#moe-gate (steps 3–4)
---*/
import { beforeAll, it, expect } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../../src/node.ts';
import { loadLayerWeights, disposeLayerWeights } from '../../src/checkpoint.ts';
import { moeGate } from '../../src/moe.ts';

beforeAll(async () => { await initBackend(); });

it('every official selection lies in the topk_group groups with the largest top-2 biased sums (public-fp32, all steps, layers 1–2)', () => {
  const dir = new URL('../../fixtures/golden/public-fp32/', import.meta.url).pathname;
  const config = loadConfig(`${dir}config.json`);
  const ckpt = openCheckpoint(dir);
  const trace = openSafetensors(`${dir}trace.safetensors`);
  const per = config.n_routed_experts / config.n_group;
  for (const L of [1, 2]) {
    const w = loadLayerWeights(ckpt, config, L);
    if (w.ffn.kind !== 'moe') throw new Error('MoE layer expected');
    const bias = w.ffn.moe.gate.bias!.arraySync() as number[];
    for (let step = 0; step < 5; step++) {
      const ids = Array.from(trace.read(`step${step}.expected.layer${L}.gate.indices`) as BigInt64Array, Number);
      const x = trace.readTensor(`step${step}.expected.layer${L}.ffn.in`);
      const T = x.size / config.hidden_size;
      const sb = (tf.sigmoid(tf.matMul(x.reshape([T, -1]), w.ffn.moe.gate.weight, false, true)).arraySync() as number[][]).map((r) => r.map((v, e) => v + bias[e]!));
      sb.forEach((row, t) => {
        const sums = Array.from({ length: config.n_group }, (_, g) => row.slice(g * per, g * per + per).sort((a, b) => b - a).slice(0, 2).reduce((a, b) => a + b, 0));
        const kept = sums.map((s, g) => [s, g] as const).sort((a, b) => b[0] - a[0]).slice(0, config.topk_group).map(([, g]) => g);
        for (const id of ids.slice(t * config.num_experts_per_tok, (t + 1) * config.num_experts_per_tok)) expect(kept).toContain(Math.floor(id / per));
      });
    }
    disposeLayerWeights(w);
  }
  trace.close();
});

it('with negative biased scores in the kept group, −∞ keeps the selection inside it (0.0 would choose the dropped group)', () => {
  // E = 8 in 2 groups of 4, keep 1 group, 2 experts; bias −2 makes every σ + b lie in (−2, −1)
  const cfg = { n_routed_experts: 8, num_experts_per_tok: 2, n_group: 2, topk_group: 1, routed_scaling_factor: 2.5, scoring_func: 'sigmoid' as const };
  const weight = tf.tensor2d([[3], [2], [1], [0], [-1], [-1], [-1], [-1]]) as tf.Tensor2D;
  const { indices } = moeGate(tf.tensor2d([[1]]), { weight, bias: tf.fill([8], -2) as tf.Tensor1D }, cfg);
  expect(indices.arraySync()).toEqual([[0, 1]]); // a 0.0 fill gives the dropped experts 0 > σ + b: they would win
});
