import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CONFIG_671B,
  ConfigError,
  parseConfig,
  qkHeadDim,
  scaleFmt,
  softmaxScale,
  type ModelConfig,
} from '../src/config.ts';
import { loadConfig } from '../src/node.ts';

const FP8_DIR = 'fixtures/golden/public-fp8';
const FP32_DIR = 'fixtures/golden/public-fp32';

/** A deep, mutable copy of the 671B config as plain JSON. */
function base(): Record<string, any> {
  return JSON.parse(JSON.stringify(CONFIG_671B));
}

function expectConfigError(json: unknown, message: RegExp | string): ConfigError {
  let err: unknown;
  try {
    parseConfig(json);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as Error).message).toMatch(message);
  return err as ConfigError;
}

describe('loadConfig on the golden fixtures', () => {
  it('reads public-fp8 with its quantization_config', () => {
    const c = loadConfig(join(FP8_DIR, 'config.json'));
    expect(c.hidden_size).toBe(256);
    expect(c.kv_lora_rank).toBe(128);
    expect(c.index_topk).toBe(16);
    expect(c.rope_scaling?.factor).toBe(40);
    expect(c.quantization_config?.weight_block_size).toEqual([128, 128]);
    expect(scaleFmt(c)).toBe('ue8m0');
  });
  it('reads public-fp32 without quantization_config', () => {
    const c = loadConfig(join(FP32_DIR, 'config.json'));
    expect(c.quantization_config).toBeUndefined();
    expect(scaleFmt(c)).toBeNull();
  });
  it('ignores unknown keys (architectures, num_key_value_heads, ...)', () => {
    const c = loadConfig(join(FP8_DIR, 'config.json')) as unknown as Record<string, unknown>;
    expect(c.architectures).toBeUndefined();
    expect(c.num_key_value_heads).toBeUndefined();
  });
  it('names the file when it is missing or not JSON', () => {
    expect(() => loadConfig('/nonexistent/config.json')).toThrow(/loadConfig\(\).*\/nonexistent\/config.json/);
    const dir = mkdtempSync(join(tmpdir(), 'dsv32-config-'));
    const p = join(dir, 'config.json');
    writeFileSync(p, '{ not json');
    expect(() => loadConfig(p)).toThrow(/loadConfig\(\): config key "\(file\)": expected valid JSON/);
    writeFileSync(p, JSON.stringify({ ...base(), n_group: 3 }));
    expect(() => loadConfig(p)).toThrow(new RegExp(`"n_group".*\\(in ${p.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\)`));
  });
});

describe('CONFIG_671B', () => {
  it('holds the released DeepSeek-V3.2 values (docs/spec-notes.md#released-config)', () => {
    const c = CONFIG_671B;
    expect([c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.q_lora_rank, c.kv_lora_rank]).toEqual([
      7168, 61, 128, 1536, 512,
    ]);
    expect([c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim]).toEqual([128, 64, 128]);
    expect([c.n_routed_experts, c.num_experts_per_tok, c.n_group, c.topk_group]).toEqual([256, 8, 8, 4]);
    expect([c.index_n_heads, c.index_head_dim, c.index_topk]).toEqual([64, 128, 2048]);
    expect(c.vocab_size).toBe(129280);
    expect(c.routed_scaling_factor).toBe(2.5);
    expect(c.rope_scaling).toMatchObject({ factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1 });
  });
  it('is frozen and passes its own validation', () => {
    expect(Object.isFrozen(CONFIG_671B)).toBe(true);
    expect(parseConfig(base())).toEqual(base());
  });
});

describe('derived quantities', () => {
  it('qkHeadDim = nope + rope', () => {
    expect(qkHeadDim(CONFIG_671B)).toBe(192);
  });
  // expected values printed by CPython 3 from the official formula (`192 ** -0.5`, `* mscale * mscale`)
  it('softmaxScale = 192^-0.5 without YaRN (maxSeqLen ≤ original_max_position_embeddings)', () => {
    expect(softmaxScale(CONFIG_671B, 4096)).toBe(0.07216878364870322);
  });
  it('softmaxScale multiplies by mscale² = (0.1·ln 40 + 1)² when YaRN is active', () => {
    expect(softmaxScale(CONFIG_671B, 16384)).toBe(0.1352337788608801);
    expect(softmaxScale(CONFIG_671B, 4097)).toBe(0.1352337788608801);
  });
  it('softmaxScale uses rope_scaling.mscale', () => {
    const c = parseConfig({ ...base(), rope_scaling: { ...base().rope_scaling, mscale: 0.5 } });
    const m = 0.05 * Math.log(40) + 1;
    expect(softmaxScale(c, 8192)).toBeCloseTo(m * m / Math.sqrt(192), 15);
  });
  it('softmaxScale without rope_scaling is plain', () => {
    const c = parseConfig({ ...base(), rope_scaling: null });
    expect(softmaxScale(c, 1 << 20)).toBe(0.07216878364870322);
  });
  it('softmaxScale rejects a bad maxSeqLen', () => {
    expect(() => softmaxScale(CONFIG_671B, 0)).toThrow('softmaxScale(): maxSeqLen must be an integer ≥ 1 but got 0');
    expect(() => softmaxScale(CONFIG_671B, 1.5)).toThrow(RangeError);
  });
  it('golden fixture: YaRN active at its max_seq_len 8192', () => {
    const c = loadConfig(join(FP8_DIR, 'config.json'));
    expect(softmaxScale(c, 8192)).toBe(0.19124944415602058); // CPython: 96 ** -0.5 * m * m
  });
});

describe('parseConfig validation', () => {
  it('rejects a non-object', () => {
    expectConfigError([1], 'json (the config root) must be a JSON object but got [1]');
    expectConfigError(null, /json \(the config root\) must be a JSON object but got null/);
  });
  it('names a missing key', () => {
    const j = base();
    delete j.kv_lora_rank;
    const e = expectConfigError(j, 'parseConfig(): config key "kv_lora_rank": expected an integer ≥ 1 but got nothing (key missing)');
    expect(e.key).toBe('kv_lora_rank');
  });
  it('names a wrong type', () => {
    expectConfigError({ ...base(), hidden_size: '7168' }, 'config key "hidden_size": expected an integer ≥ 1 but got "7168"');
    expectConfigError({ ...base(), norm_topk_prob: 1 }, 'config key "norm_topk_prob": expected a boolean but got 1');
    expectConfigError({ ...base(), rms_norm_eps: 'x' }, 'config key "rms_norm_eps": expected a finite number > 0 but got "x"');
  });
  it('rejects non-positive and fractional dims', () => {
    expectConfigError({ ...base(), num_attention_heads: 0 }, '"num_attention_heads": expected an integer ≥ 1 but got 0');
    expectConfigError({ ...base(), v_head_dim: -4 }, '"v_head_dim": expected an integer ≥ 1 but got -4');
    expectConfigError({ ...base(), index_topk: 2.5 }, '"index_topk": expected an integer ≥ 1 but got 2.5');
    expectConfigError({ ...base(), first_k_dense_replace: -1 }, '"first_k_dense_replace": expected an integer ≥ 0 but got -1');
    expectConfigError({ ...base(), rope_theta: 0 }, '"rope_theta": expected a finite number > 0 but got 0');
  });
  it('accepts n_shared_experts = 0 and first_k_dense_replace = 0', () => {
    const c: ModelConfig = parseConfig({ ...base(), n_shared_experts: 0, first_k_dense_replace: 0 });
    expect(c.n_shared_experts).toBe(0);
  });
  it('first_k_dense_replace ≤ num_hidden_layers', () => {
    expectConfigError({ ...base(), first_k_dense_replace: 62 }, '"first_k_dense_replace": expected ≤ num_hidden_layers (61) but got 62');
  });
  it('n_routed_experts divisible by n_group', () => {
    expectConfigError({ ...base(), n_group: 3 }, '"n_group": expected a divisor of n_routed_experts (256) but got 3');
  });
  it('topk_group ≤ n_group', () => {
    expectConfigError({ ...base(), topk_group: 9 }, '"topk_group": expected ≤ n_group (8) but got 9');
  });
  it('num_experts_per_tok ≤ experts in the topk_group kept groups', () => {
    expectConfigError(
      { ...base(), n_routed_experts: 16, n_group: 8, topk_group: 2, num_experts_per_tok: 5 },
      '"num_experts_per_tok": expected ≤ topk_group · n_routed_experts / n_group = 2 · 2 = 4 but got 5',
    );
  });
  it('noaux_tc needs ≥ 2 experts per group (top-2 group score)', () => {
    expectConfigError(
      { ...base(), n_routed_experts: 8, n_group: 8, topk_group: 8, num_experts_per_tok: 2 },
      '"n_group": expected at most n_routed_experts / 2 = 4 (noaux_tc scores a group by its top-2 experts) but got 8',
    );
  });
  it('index_head_dim ≥ qk_rope_head_dim and a power of two', () => {
    expectConfigError({ ...base(), index_head_dim: 32 }, '"index_head_dim": expected ≥ qk_rope_head_dim (64) but got 32');
    expectConfigError({ ...base(), index_head_dim: 96 }, '"index_head_dim": expected a power of two (Hadamard rotation) but got 96');
  });
  it('qk_rope_head_dim even', () => {
    expectConfigError({ ...base(), qk_rope_head_dim: 63 }, '"qk_rope_head_dim": expected an even number (RoPE rotates pairs) but got 63');
  });
  it('unknown scoring_func / topk_method', () => {
    expectConfigError({ ...base(), scoring_func: 'relu' }, 'config key "scoring_func": expected one of "sigmoid", "softmax" but got "relu"');
    expectConfigError({ ...base(), topk_method: 'best' }, /"topk_method": expected one of "noaux_tc", "greedy", "group_limited_greedy" but got "best"/);
  });
  it('FP8 needs every FP8 Linear input width to be a multiple of 128', () => {
    expectConfigError({ ...base(), hidden_size: 7000 }, '"hidden_size": expected a multiple of 128 with FP8 quantization_config (act_quant blocks) but got 7000');
    expectConfigError({ ...base(), moe_intermediate_size: 2000 }, '"moe_intermediate_size": expected a multiple of 128');
    expectConfigError({ ...base(), num_attention_heads: 3, v_head_dim: 100 }, '"num_attention_heads·v_head_dim": expected a multiple of 128');
    // without FP8 any width is fine
    const j = base();
    delete j.quantization_config;
    expect(parseConfig({ ...j, hidden_size: 7000 }).hidden_size).toBe(7000);
  });
  it('validates rope_scaling', () => {
    expectConfigError({ ...base(), rope_scaling: 'yarn' }, '"rope_scaling": expected an object or null but got "yarn"');
    const j = base();
    delete j.rope_scaling;
    expectConfigError(j, '"rope_scaling": expected an object or null but got nothing (key missing)');
    expectConfigError({ ...base(), rope_scaling: { ...base().rope_scaling, type: 'linear' } }, '"rope_scaling.type": expected "yarn" but got "linear"');
    expectConfigError({ ...base(), rope_scaling: { ...base().rope_scaling, factor: 0.5 } }, '"rope_scaling.factor": expected a number ≥ 1 but got 0.5');
    const rs = base().rope_scaling;
    delete rs.beta_fast;
    expectConfigError({ ...base(), rope_scaling: rs }, '"rope_scaling.beta_fast": expected a finite number > 0 but got nothing (key missing)');
  });
  it('accepts rope_type as the spelling of rope_scaling.type', () => {
    const rs = base().rope_scaling;
    delete rs.type;
    rs.rope_type = 'yarn';
    expect(parseConfig({ ...base(), rope_scaling: rs }).rope_scaling?.type).toBe('yarn');
  });
  it('validates quantization_config', () => {
    const q = base().quantization_config;
    expectConfigError({ ...base(), quantization_config: { ...q, fmt: 'e5m2' } }, '"quantization_config.fmt": expected one of "e4m3" but got "e5m2"');
    expectConfigError({ ...base(), quantization_config: { ...q, scale_fmt: 'ue4m3' } }, '"quantization_config.scale_fmt": expected "ue8m0", null or no key but got "ue4m3"');
    expectConfigError({ ...base(), quantization_config: { ...q, weight_block_size: [128] } }, '"quantization_config.weight_block_size": expected two integers ≥ 1, e.g. [128, 128] but got [128]');
    expectConfigError({ ...base(), quantization_config: 5 }, '"quantization_config": expected an object but got 5');
    const noFmt = { ...q };
    delete noFmt.scale_fmt;
    expect(scaleFmt(parseConfig({ ...base(), quantization_config: noFmt }))).toBeNull();
  });
});
