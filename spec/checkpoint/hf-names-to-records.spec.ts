/*---
id: checkpoint.names.hf-to-inference-records
title: Released Hugging Face tensor names load into the official inference names, every tensor used once
official: inference/convert.py (name mapping)
description: each released HF tensor name lands in its official inference record field, and every checkpoint tensor is used once
see: docs/spec-notes.md#checkpoint-names
---*/
import { beforeAll, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import {
  disposeGlobalWeights,
  disposeLayerWeights,
  layerTensors,
  loadGlobalWeights,
  loadLayerWeights,
  type LayerWeights,
} from '../../src/checkpoint.ts';
import { loadConfig, openCheckpoint } from '../../src/node.ts';

const DIR = 'fixtures/golden/public-fp32';

beforeAll(async () => {
  await initBackend();
});

/** HF suffix (after `model.layers.N.`) → record field (convert.py names). */
const ATTN: [string, (w: LayerWeights) => tf.Tensor][] = [
  ['input_layernorm.weight', (w) => w.attn_norm],
  ['post_attention_layernorm.weight', (w) => w.ffn_norm],
  ['self_attn.q_a_proj.weight', (w) => w.attn.wq_a.weight],
  ['self_attn.q_a_layernorm.weight', (w) => w.attn.q_norm],
  ['self_attn.q_b_proj.weight', (w) => w.attn.wq_b.weight],
  ['self_attn.kv_a_proj_with_mqa.weight', (w) => w.attn.wkv_a.weight],
  ['self_attn.kv_a_layernorm.weight', (w) => w.attn.kv_norm],
  ['self_attn.kv_b_proj.weight', (w) => w.attn.wkv_b.weight],
  ['self_attn.o_proj.weight', (w) => w.attn.wo.weight],
  ['self_attn.indexer.wq_b.weight', (w) => w.attn.indexer.wq_b.weight],
  ['self_attn.indexer.wk.weight', (w) => w.attn.indexer.wk.weight],
  ['self_attn.indexer.k_norm.weight', (w) => w.attn.indexer.k_norm.weight],
  ['self_attn.indexer.k_norm.bias', (w) => w.attn.indexer.k_norm.bias],
  ['self_attn.indexer.weights_proj.weight', (w) => w.attn.indexer.weights_proj.weight],
];
const moe = (w: LayerWeights) => {
  if (w.ffn.kind !== 'moe') throw new Error('expected a MoE layer');
  return w.ffn.moe;
};
const MOE: [string, (w: LayerWeights) => tf.Tensor][] = [
  ['mlp.gate.weight', (w) => moe(w).gate.weight],
  ['mlp.gate.e_score_correction_bias', (w) => moe(w).gate.bias!],
  ['mlp.experts.3.gate_proj.weight', (w) => moe(w).experts[3]!.w1.weight],
  ['mlp.experts.3.down_proj.weight', (w) => moe(w).experts[3]!.w2.weight],
  ['mlp.experts.3.up_proj.weight', (w) => moe(w).experts[3]!.w3.weight],
  ['mlp.shared_experts.gate_proj.weight', (w) => moe(w).shared!.w1.weight],
  ['mlp.shared_experts.down_proj.weight', (w) => moe(w).shared!.w2.weight],
  ['mlp.shared_experts.up_proj.weight', (w) => moe(w).shared!.w3.weight],
];

it('layer fields hold the tensors of their HF names (dense layer 0, MoE layer 2)', () => {
  const config = loadConfig(`${DIR}/config.json`);
  const ckpt = openCheckpoint(DIR);
  const dense = loadLayerWeights(ckpt, config, 0);
  if (dense.ffn.kind !== 'dense') throw new Error('layer 0 must be dense');
  const d = dense.ffn.dense;
  const denseMap: [string, tf.Tensor][] = [
    ...ATTN.map(([n, f]) => [n, f(dense)] as [string, tf.Tensor]),
    ['mlp.gate_proj.weight', d.w1.weight],
    ['mlp.down_proj.weight', d.w2.weight],
    ['mlp.up_proj.weight', d.w3.weight],
  ];
  for (const [suffix, t] of denseMap) {
    expect(Array.from(t.dataSync()), suffix).toEqual(Array.from(ckpt.read(`model.layers.0.${suffix}`) as Float32Array));
  }
  const m = loadLayerWeights(ckpt, config, 2);
  for (const [suffix, f] of [...ATTN, ...MOE]) {
    expect(Array.from(f(m).dataSync()), suffix).toEqual(Array.from(ckpt.read(`model.layers.2.${suffix}`) as Float32Array));
  }
  disposeLayerWeights(dense);
  disposeLayerWeights(m);
  ckpt.close();
});

it('globals: embed_tokens → embed, norm → norm, lm_head → head; every checkpoint tensor is loaded exactly once', () => {
  const config = loadConfig(`${DIR}/config.json`);
  const ckpt = openCheckpoint(DIR);
  const g = loadGlobalWeights(ckpt, config);
  expect(Array.from(g.embed.dataSync())).toEqual(Array.from(ckpt.read('model.embed_tokens.weight') as Float32Array));
  expect(Array.from(g.norm.dataSync())).toEqual(Array.from(ckpt.read('model.norm.weight') as Float32Array));
  expect(Array.from(g.head.dataSync())).toEqual(Array.from(ckpt.read('lm_head.weight') as Float32Array));
  let loaded = 3;
  let loadedElems = g.embed.size + g.norm.size + g.head.size;
  for (let layer = 0; layer < config.num_hidden_layers; layer++) {
    const w = loadLayerWeights(ckpt, config, layer);
    const ts = layerTensors(w);
    loaded += ts.length;
    loadedElems += ts.reduce((s, t) => s + t.size, 0);
    disposeLayerWeights(w);
  }
  const names = ckpt.names();
  const elems = names.reduce((s, n) => s + ckpt.info(n).shape.reduce((p, d) => p * d, 1), 0);
  expect(loaded).toBe(names.length);
  expect(loadedElems).toBe(elems);
  disposeGlobalWeights(g);
  ckpt.close();
});
