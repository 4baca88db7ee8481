/*---
id: moe.keep-routing.replay
title: A routing record from sampling, replayed in a later forward, enforces the same experts per token and layer even after the gate changed
paper: §3.1, "Keep Routing"
info: |
  To mitigate this, we preserve the expert routing paths used during sampling in the inference framework
  and enforce the same routing paths during training, ensuring that identical expert parameters are
  optimized.
description: a routing record emitted by a forward pass, replayed in a later pass, reproduces it exactly and keeps the expert sets after the gate changes
see: docs/spec-notes.md#keep-routing
---*/
import { beforeAll, it, expect } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { loadConfig, openCheckpoint } from '../../src/node.ts';
import { loadModelWeights, disposeModelWeights, createModelCache, disposeModelCache, modelForward } from '../../src/model.ts';
import { concatRoutingRecords } from '../../src/moe.ts';
import { assertSetEqual } from '../harness/index.ts';

beforeAll(async () => { await initBackend(); });

it('sampling (prefill + decode) emits a record; training replays it on the whole sequence with a changed gate', () => {
  const dir = new URL('../../fixtures/golden/public-fp32/', import.meta.url).pathname;
  const config = loadConfig(`${dir}config.json`);
  const w = loadModelWeights(openCheckpoint(dir), config);
  const tokens = [11, 22, 33, 44, 55, 66];
  const opts = { config, maxSeqLen: 8192 };
  // sampling: prefill 4, decode 2
  let cache = createModelCache(config);
  const parts = [modelForward(tokens.slice(0, 4), w, cache, 0, opts), modelForward([55], w, cache, 4, opts), modelForward([66], w, cache, 5, opts)];
  disposeModelCache(cache);
  const record = concatRoutingRecords(parts.map((p) => p.routing));
  expect(record.tokens).toBe(6);
  // training: the gate of layer 1 has moved (here: reversed), Keep Routing enforces the sampled experts
  const moeLayer = w.layers[1]!.ffn;
  if (moeLayer.kind !== 'moe') throw new Error('layer 1 is a MoE layer');
  const original = moeLayer.moe.gate.weight;
  moeLayer.moe.gate.weight = tf.neg(original) as tf.Tensor2D;
  cache = createModelCache(config);
  const free = modelForward(tokens, w, cache, 0, opts).routing;
  disposeModelCache(cache);
  cache = createModelCache(config);
  const kept = modelForward(tokens, w, cache, 0, { ...opts, routing: record }).routing;
  disposeModelCache(cache);
  const sets = (ids: Int32Array, t: number) => Array.from(ids.slice(2 * t, 2 * t + 2));
  for (let t = 0; t < 6; t++) assertSetEqual(sets(kept.layers[1]!.indices, t), sets(record.layers[1]!.indices, t));
  expect(Array.from(free.layers[1]!.indices)).not.toEqual(Array.from(record.layers[1]!.indices));
  moeLayer.moe.gate.weight.dispose();
  moeLayer.moe.gate.weight = original;
  disposeModelWeights(w);
});
