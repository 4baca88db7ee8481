/*---
id: moe.gate.bias-selection-only
title: e_score_correction_bias is added to the sigmoid scores for selection only; combine weights come from the unbiased scores
official: inference/model.py Gate.forward (original_scores; scores + bias used only for topk)
description: the correction bias changes which experts are chosen, never their combine weights (official trace and a bias shift)
see: docs/spec-notes.md#moe-gate (steps 2, 6)
---*/
import { beforeAll, it, expect } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../../src/node.ts';
import { loadLayerWeights, disposeLayerWeights } from '../../src/checkpoint.ts';
import { moeGate } from '../../src/moe.ts';
import { assertClose, assertSetEqual } from '../harness/index.ts';

beforeAll(async () => { await initBackend(); });
const dir = new URL('../../fixtures/golden/public-fp32/', import.meta.url).pathname;

it('the official weights are the normalized UNBIASED scores of the ids the BIASED scores chose (public-fp32, layer 1, step 0)', () => {
  const config = loadConfig(`${dir}config.json`);
  const w = loadLayerWeights(openCheckpoint(dir), config, 1);
  if (w.ffn.kind !== 'moe') throw new Error('layer 1 is a MoE layer');
  const trace = openSafetensors(`${dir}trace.safetensors`);
  const x = trace.readTensor('step0.expected.layer1.ffn.in').reshape([40, 256]) as tf.Tensor2D;
  const ids = Array.from(trace.read('step0.expected.layer1.gate.indices') as BigInt64Array, Number);
  const weights = trace.read('step0.expected.layer1.gate.weights') as Float32Array;
  const sigma = tf.sigmoid(tf.matMul(x, w.ffn.moe.gate.weight, false, true)).arraySync() as number[][];
  const k = config.num_experts_per_tok;
  const fromUnbiased = ids.map((id, i) => {
    const row = sigma[Math.floor(i / k)]!;
    const sum = ids.slice(Math.floor(i / k) * k, Math.floor(i / k) * k + k).reduce((a, j) => a + row[j]!, 0);
    return (row[id]! / sum) * config.routed_scaling_factor;
  });
  assertClose(weights, fromUnbiased, { atol: 1e-6 });
  // our gate makes the same choice; without the bias it would choose differently for some tokens
  const ours = moeGate(x, w.ffn.moe.gate, config);
  const noBias = moeGate(x, { weight: w.ffn.moe.gate.weight, bias: null }, config);
  const rows = (a: number[]) => Array.from({ length: 40 }, (_, t) => a.slice(t * k, t * k + k));
  const recorded = rows(ids);
  const mine = rows(Array.from(ours.indices.dataSync()));
  recorded.forEach((r, t) => assertSetEqual(mine[t]!, r));
  const unbiased = rows(Array.from(noBias.indices.dataSync()));
  expect(unbiased.some((r, t) => [...r].sort().join() !== [...recorded[t]!].sort().join())).toBe(true);
  disposeLayerWeights(w);
  trace.close();
});

it('shifting every bias by a constant leaves selection and weights bit-identical', () => {
  const x = tf.randomNormal([6, 16], 0, 1, 'float32', 3) as tf.Tensor2D;
  const weight = tf.randomNormal([8, 16], 0, 1, 'float32', 4) as tf.Tensor2D;
  const cfg = { n_routed_experts: 8, num_experts_per_tok: 2, n_group: 4, topk_group: 2, routed_scaling_factor: 2.5, scoring_func: 'sigmoid' as const };
  const a = moeGate(x, { weight, bias: tf.fill([8], 0.125) as tf.Tensor1D }, cfg);
  const b = moeGate(x, { weight, bias: tf.fill([8], 0.5) as tf.Tensor1D }, cfg);
  expect(Array.from(b.indices.dataSync())).toEqual(Array.from(a.indices.dataSync()));
  expect(Array.from(b.weights.dataSync())).toEqual(Array.from(a.weights.dataSync()));
});
