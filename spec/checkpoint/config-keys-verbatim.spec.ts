/*---
id: checkpoint.config.keys-verbatim
title: Config fields keep the checkpoint's config.json keys and values verbatim
official: config.json (deepseek-ai/DeepSeek-V3.2)
description: ModelConfig fields are the config.json keys with the file's values; CONFIG_671B uses the released keys
see: docs/spec-notes.md#released-config
---*/
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { CONFIG_671B } from '../../src/config.ts';
import { loadConfig } from '../../src/node.ts';

/** Keys of the released config.json (docs/spec-notes.md#released-config) that a DeepSeek-V3.2 forward pass needs. */
const RELEASED_KEYS = [
  'vocab_size', 'hidden_size', 'intermediate_size', 'moe_intermediate_size', 'num_hidden_layers',
  'first_k_dense_replace', 'num_attention_heads', 'n_routed_experts', 'n_shared_experts', 'num_experts_per_tok',
  'n_group', 'topk_group', 'routed_scaling_factor', 'scoring_func', 'topk_method', 'norm_topk_prob', 'q_lora_rank',
  'kv_lora_rank', 'qk_nope_head_dim', 'qk_rope_head_dim', 'v_head_dim', 'index_n_heads', 'index_head_dim',
  'index_topk', 'rms_norm_eps', 'rope_theta', 'rope_scaling', 'max_position_embeddings', 'quantization_config',
];

for (const dir of ['fixtures/golden/public-fp8', 'fixtures/golden/public-fp32']) {
  it(`${dir}/config.json: every parsed field equals the file's value under the same key`, () => {
    const json = JSON.parse(readFileSync(`${dir}/config.json`, 'utf8'));
    const config = loadConfig(`${dir}/config.json`) as unknown as Record<string, unknown>;
    for (const key of Object.keys(config)) {
      expect(key in json, key).toBe(true);
      expect(config[key], key).toEqual(json[key]);
    }
    for (const key of RELEASED_KEYS) if (key in json) expect(config[key], key).toEqual(json[key]);
  });
}

it('CONFIG_671B has exactly the released keys and values (docs/spec-notes.md#released-config)', () => {
  expect(Object.keys(CONFIG_671B).sort()).toEqual([...RELEASED_KEYS].sort());
  expect(CONFIG_671B).toMatchObject({
    hidden_size: 7168, intermediate_size: 18432, moe_intermediate_size: 2048, num_hidden_layers: 61,
    first_k_dense_replace: 3, num_attention_heads: 128, q_lora_rank: 1536, kv_lora_rank: 512,
    qk_nope_head_dim: 128, qk_rope_head_dim: 64, v_head_dim: 128, n_routed_experts: 256, n_shared_experts: 1,
    num_experts_per_tok: 8, n_group: 8, topk_group: 4, topk_method: 'noaux_tc', scoring_func: 'sigmoid',
    norm_topk_prob: true, routed_scaling_factor: 2.5, index_n_heads: 64, index_head_dim: 128, index_topk: 2048,
    max_position_embeddings: 163840, rope_theta: 10000, rms_norm_eps: 1e-6, vocab_size: 129280,
    rope_scaling: { type: 'yarn', factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1, mscale: 1, mscale_all_dim: 1 },
    quantization_config: { quant_method: 'fp8', fmt: 'e4m3', activation_scheme: 'dynamic', scale_fmt: 'ue8m0', weight_block_size: [128, 128] },
  });
});
