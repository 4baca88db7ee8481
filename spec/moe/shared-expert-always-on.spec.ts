/*---
id: moe.shared-expert-always-on
title: The shared expert processes every token, whatever the routing; the routed experts add Σ w_i·Expert_i(x) on top
official: inference/model.py MoE.forward (z = shared_experts(x); y + z)
description: with every routed combine weight forced to zero, the MoE output is exactly the shared expert's output on every token
see: docs/spec-notes.md#moe-gate (step 7)
---*/
import { beforeAll, it, expect } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { scaleFmt } from '../../src/config.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../../src/node.ts';
import { loadLayerWeights, disposeLayerWeights } from '../../src/checkpoint.ts';
import { moe, swigluFfn } from '../../src/moe.ts';
import { assertClose } from '../harness/index.ts';

beforeAll(async () => { await initBackend(); });

it('routed weights zero (replayed record) ⇒ out = Shared(x); free routing adds the routed experts on top (public-fp8, layer 2)', () => {
  const dir = new URL('../../fixtures/golden/public-fp8/', import.meta.url).pathname;
  const config = loadConfig(`${dir}config.json`);
  const w = loadLayerWeights(openCheckpoint(dir), config, 2);
  if (w.ffn.kind !== 'moe' || !w.ffn.moe.shared) throw new Error('layer 2 has a MoE with a shared expert');
  const trace = openSafetensors(`${dir}trace.safetensors`);
  const x = trace.readTensor('step1.expected.layer2.ffn.in').reshape([1, 256]) as tf.Tensor2D;
  const shared = swigluFfn(x, w.ffn.moe.shared, scaleFmt(config));
  const free = moe(x, w.ffn.moe, config);
  const zero = moe(x, w.ffn.moe, config, { routing: { ...free.routing, weights: new Float32Array(free.routing.weights.length) }, combine: 'replay' });
  assertClose(zero.out, shared, { atol: 0 });
  assertClose(free.out, trace.read('step1.expected.layer2.ffn.out') as Float32Array, { atol: 1e-4 });
  expect(tf.max(tf.abs(tf.sub(free.out, shared))).arraySync()).toBeGreaterThan(1e-3);
  disposeLayerWeights(w);
  trace.close();
});
