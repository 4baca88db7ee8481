/**
 * Released-checkpoint conformance (src/conformance/weights.ts): one layer at a time, memory bounded by
 * one layer, clear errors for bad checkpoints, comparison with an expect trace.
 *
 * The synthetic checkpoints are written here in the released format (sharded, index.json, F8_E4M3 +
 * weight_scale_inv, BF16 embed / head / gate), with experts large enough that one layer (≈ 27 MB
 * float32) is clearly smaller than the checkpoint (8 layers, ≈ 190 MB float32).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { tf, initBackend } from '../src/backend.ts';
import type { WritableTensor } from '../src/safetensors.ts';
import { writeSafetensors } from '../src/node.ts';
import { parseConfig, CONFIG_671B, type ModelConfig } from '../src/config.ts';
import { runWeightsConformance } from '../src/conformance/weights.ts';
import { discoverCases, runGoldenCase, type Case } from '../src/conformance/run.ts';
import { layerFloat32Bytes, layerResidentBytes } from '../src/weight_budget.ts';
import { describeEachBackend } from './helpers/backends.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

// --- a synthetic released-format checkpoint ---

function syntheticConfig(layers: number, experts: number, inter: number): Record<string, unknown> {
  return {
    vocab_size: 64, hidden_size: 256, intermediate_size: 256, moe_intermediate_size: inter, num_hidden_layers: layers,
    first_k_dense_replace: 1, num_attention_heads: 2, n_routed_experts: experts, n_shared_experts: 1, num_experts_per_tok: 2,
    n_group: 4, topk_group: 2, routed_scaling_factor: 2.5, scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true,
    q_lora_rank: 128, kv_lora_rank: 128, qk_nope_head_dim: 64, qk_rope_head_dim: 32, v_head_dim: 64, index_n_heads: 2,
    index_head_dim: 64, index_topk: 4, rms_norm_eps: 1e-6, rope_theta: 10000, max_position_embeddings: 8192,
    rope_scaling: { type: 'yarn', factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1, mscale: 1, mscale_all_dim: 1 },
    quantization_config: { quant_method: 'fp8', fmt: 'e4m3', activation_scheme: 'dynamic', scale_fmt: 'ue8m0', weight_block_size: [128, 128] },
  };
}

let seed = 1;
function rand(): number {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed / 0x7fffffff;
}
function fp8(out: number, inDim: number): Record<string, WritableTensor> {
  const codes = new Uint8Array(out * inDim);
  for (let i = 0; i < codes.length; i++) {
    const c = Math.floor(rand() * 0x7e); // 0x00..0x7d: finite, |w₈| ≤ 416
    codes[i] = rand() < 0.5 ? c : c | 0x80;
  }
  const scale = new Float32Array(Math.ceil(out / 128) * Math.ceil(inDim / 128)).fill(2 ** -14);
  return {
    weight: { dtype: 'F8_E4M3', shape: [out, inDim], data: codes },
    weight_scale_inv: { dtype: 'F32', shape: [Math.ceil(out / 128), Math.ceil(inDim / 128)], data: scale },
  };
}
const vec = (n: number, v = 1): WritableTensor => ({ dtype: 'F32', shape: [n], data: new Float32Array(n).fill(v) });
const bf16 = (r: number, c: number): WritableTensor => ({ dtype: 'BF16', shape: [r, c], data: Float32Array.from({ length: r * c }, () => (rand() - 0.5) * 0.1) });

function layerTensors(cfg: ModelConfig, l: number): Record<string, WritableTensor> {
  const t: Record<string, WritableTensor> = {};
  const add = (prefix: string, parts: Record<string, WritableTensor>) => {
    for (const [k, v] of Object.entries(parts)) t[`${prefix}.${k}`] = v;
  };
  const p = `model.layers.${l}`;
  const D = cfg.hidden_size;
  const H = cfg.num_attention_heads;
  t[`${p}.input_layernorm.weight`] = vec(D);
  t[`${p}.post_attention_layernorm.weight`] = vec(D);
  add(`${p}.self_attn.q_a_proj`, fp8(cfg.q_lora_rank, D));
  t[`${p}.self_attn.q_a_layernorm.weight`] = vec(cfg.q_lora_rank);
  add(`${p}.self_attn.q_b_proj`, fp8(H * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim), cfg.q_lora_rank));
  add(`${p}.self_attn.kv_a_proj_with_mqa`, fp8(cfg.kv_lora_rank + cfg.qk_rope_head_dim, D));
  t[`${p}.self_attn.kv_a_layernorm.weight`] = vec(cfg.kv_lora_rank);
  add(`${p}.self_attn.kv_b_proj`, fp8(H * (cfg.qk_nope_head_dim + cfg.v_head_dim), cfg.kv_lora_rank));
  add(`${p}.self_attn.o_proj`, fp8(D, H * cfg.v_head_dim));
  add(`${p}.self_attn.indexer.wq_b`, fp8(cfg.index_n_heads * cfg.index_head_dim, cfg.q_lora_rank));
  add(`${p}.self_attn.indexer.wk`, fp8(cfg.index_head_dim, D));
  t[`${p}.self_attn.indexer.k_norm.weight`] = vec(cfg.index_head_dim);
  t[`${p}.self_attn.indexer.k_norm.bias`] = vec(cfg.index_head_dim, 0);
  t[`${p}.self_attn.indexer.weights_proj.weight`] = bf16(cfg.index_n_heads, D);
  const ffn = (prefix: string, I: number) => {
    add(`${prefix}.gate_proj`, fp8(I, D));
    add(`${prefix}.up_proj`, fp8(I, D));
    add(`${prefix}.down_proj`, fp8(D, I));
  };
  if (l < cfg.first_k_dense_replace) ffn(`${p}.mlp`, cfg.intermediate_size);
  else {
    t[`${p}.mlp.gate.weight`] = bf16(cfg.n_routed_experts, D);
    t[`${p}.mlp.gate.e_score_correction_bias`] = vec(cfg.n_routed_experts, 0);
    for (let j = 0; j < cfg.n_routed_experts; j++) ffn(`${p}.mlp.experts.${j}`, cfg.moe_intermediate_size);
    ffn(`${p}.mlp.shared_experts`, cfg.moe_intermediate_size);
  }
  return t;
}

/** Writes a sharded checkpoint (one shard per layer + one for the globals); `mutate` edits a shard's tensors. */
function writeCheckpoint(dir: string, json: Record<string, unknown>, mutate?: (shard: number, t: Record<string, WritableTensor>) => void): ModelConfig {
  mkdirSync(dir, { recursive: true });
  const cfg = parseConfig(json);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(json));
  const weightMap: Record<string, string> = {};
  const shards = cfg.num_hidden_layers + 1;
  const file = (i: number) => `model-${String(i + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
  for (let i = 0; i < shards; i++) {
    const t =
      i === 0
        ? { 'model.embed_tokens.weight': bf16(cfg.vocab_size, cfg.hidden_size), 'model.norm.weight': vec(cfg.hidden_size), 'lm_head.weight': bf16(cfg.vocab_size, cfg.hidden_size) }
        : layerTensors(cfg, i - 1);
    mutate?.(i, t);
    writeSafetensors(join(dir, file(i)), t);
    for (const name of Object.keys(t)) weightMap[name] = file(i);
  }
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  return cfg;
}

const live = () => {
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
};
/** Baseline after the garbage of writing the checkpoint is really gone (ArrayBuffers are swept lazily). */
async function settledBaseline(): Promise<number> {
  let base = Infinity;
  for (let i = 0; i < 5; i++) {
    await new Promise((r) => setTimeout(r, 20));
    base = Math.min(base, live());
  }
  return base;
}

describe('runWeightsConformance on a synthetic sharded FP8 checkpoint', () => {
  let root: string;
  beforeAll(async () => {
    await initBackend('cpu'); // tensors live in JS typed arrays: process.memoryUsage() sees them
    root = mkdtempSync(join(tmpdir(), 'dsv32-weights-'));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('holds one layer at a time, as stored bytes: peak growth ≈ the resident layer, far below one float32 layer', async () => {
    const dir = join(root, 'big');
    const json = syntheticConfig(8, 32, 256);
    const cfg = writeCheckpoint(dir, json);
    const layerBytes = layerFloat32Bytes(cfg, 1);
    let total = 0;
    for (let l = 0; l < cfg.num_hidden_layers; l++) total += layerFloat32Bytes(cfg, l);
    expect(layerBytes).toBeGreaterThan(25e6);
    expect(total).toBeGreaterThan(7 * layerBytes);
    const resident = layerResidentBytes(cfg, 7);

    const lines: string[] = [];
    const base = await settledBaseline();
    let peak = 0;
    const tensorsBefore = tf.memory().numTensors;
    const rows = await runWeightsConformance({
      weightsDir: dir,
      layers: [0, 7],
      tokens: [1, 2, 3, 5, 8, 13],
      maxSeqLen: 8192,
      log: (line) => {
        lines.push(line);
        peak = Math.max(peak, live() - base); // sampled while the layer's weights are loaded
      },
    });
    expect(rows.map((r) => `${r.check}:${r.layer}:${r.pass}`)).toEqual(['weights.finite:0:true', 'weights.finite:7:true']);
    expect(lines).toHaveLength(9); // 8 layers + logits (the run covers the last layer)
    expect(lines[0]).toMatch(/^layer 0 \[dense\] T=6: attn\.out mean \S+ std \S+ max\|x\| \S+ \| ffn\.out mean .* \| peak \d+\.\d MB$/);
    expect(lines[3]).toMatch(/^layer 3 \(on the way\) \[moe\]/);
    expect(lines[8]).toMatch(/^logits \(last position\): mean/);
    // the sampling does see the stored layer; the whole float32 layer is never there
    expect(peak).toBeGreaterThan(resident.stored);
    expect(peak).toBeLessThan(0.5 * layerBytes);
    // the meter's peak of layer 7: its stored bytes and float32 tensors at least, one band and activations at most
    const peak7 = rows[1]!.peak_bytes!;
    expect(rows[1]!.reason).toMatch(/^peak \d+\.\d MB held/);
    expect(peak7).toBeGreaterThan(resident.stored + resident.float32);
    expect(peak7).toBeLessThan(resident.stored + resident.float32 + resident.expert + 4 * 256 * 256 * 4 + 2e6);
    expect(tf.memory().numTensors).toBe(tensorsBefore);
  });

  it('documents the 671B bound: the largest layer is a MoE layer of ≈ 46 GB float32', () => {
    const per = Array.from({ length: CONFIG_671B.num_hidden_layers }, (_, l) => layerFloat32Bytes(CONFIG_671B, l));
    expect(Math.max(...per)).toBe(per[3]);
    // hand count: 257 experts × 3 × 2048 × 7168 dominate, ≈ 11.3 G parameters
    expect(per[3]! / 4).toBeGreaterThan(257 * 3 * 2048 * 7168);
    expect(per[3]! / 4).toBeLessThan(257 * 3 * 2048 * 7168 + 0.25e9);
  });

  describe('bad checkpoints: a failed row naming the tensor, expected and actual; nothing half-loaded', () => {
    const small = () => syntheticConfig(3, 8, 128);
    const run = async (dir: string) => {
      const before = tf.memory().numTensors;
      const rows = await runWeightsConformance({ weightsDir: dir, layers: [2], tokens: [1, 2], maxSeqLen: 8192 });
      expect(tf.memory().numTensors).toBe(before);
      expect(rows).toHaveLength(1);
      expect(rows[0]!.pass).toBe(false);
      expect(rows[0]!.check).toBe('weights.load');
      return rows[0]!.reason!;
    };

    it('missing tensor', async () => {
      const dir = join(root, 'missing');
      writeCheckpoint(dir, small(), (i, t) => {
        if (i === 3) delete t['model.layers.2.mlp.experts.5.up_proj.weight'];
      });
      expect(await run(dir)).toMatch(/model\.layers\.2\.mlp\.experts\.5\.up_proj\.weight.*expected/);
    });

    it('wrong shape', async () => {
      const dir = join(root, 'shape');
      writeCheckpoint(dir, small(), (i, t) => {
        if (i === 3) t['model.layers.2.mlp.gate.weight'] = bf16(8, 128);
      });
      expect(await run(dir)).toMatch(/model\.layers\.2\.mlp\.gate\.weight.*expected.*8, 256.*got.*8, 128/);
    });

    it('wrong dtype', async () => {
      const dir = join(root, 'dtype');
      writeCheckpoint(dir, small(), (i, t) => {
        if (i === 2) t['model.layers.1.post_attention_layernorm.weight'] = { dtype: 'I32', shape: [256], data: new Int32Array(256) };
      });
      expect(await run(dir)).toMatch(/model\.layers\.1\.post_attention_layernorm\.weight.*expected.*got.*I32/);
    });
  });

  it('rejects bad layers and tokens without reading weights', async () => {
    const dir = join(root, 'args');
    writeCheckpoint(dir, syntheticConfig(2, 8, 128));
    const r1 = await runWeightsConformance({ weightsDir: dir, layers: [2] });
    expect(r1).toEqual([expect.objectContaining({ check: 'weights.args', pass: false, reason: 'layers must be integers in [0, 2) but got [2]' })]);
    const r2 = await runWeightsConformance({ weightsDir: dir, tokens: [1, 64] });
    expect(r2).toEqual([expect.objectContaining({ check: 'weights.args', pass: false, reason: 'tokens must be ≥ 1 integers in [0, 64) but tokens[1] = 64' })]);
    const r4 = await runWeightsConformance({ weightsDir: dir, steps: 1.5 });
    expect(r4).toEqual([expect.objectContaining({ check: 'weights.args', pass: false, reason: 'steps must be an integer ≥ 0 but got 1.5' })]);
    const r5 = await runWeightsConformance({ weightsDir: dir, prefillChunk: 0 });
    expect(r5).toEqual([expect.objectContaining({ check: 'weights.args', pass: false, reason: 'prefillChunk must be an integer ≥ 1, without an expect trace, but got 0' })]);
    const r6 = await runWeightsConformance({ weightsDir: dir, tokens: [1, 2], steps: 8191 });
    expect(r6).toEqual([expect.objectContaining({ check: 'weights.args', pass: false, reason: '2 tokens + 8191 steps exceed max_seq_len 8192' })]);
    const r3 = await runWeightsConformance({ weightsDir: join(root, 'nowhere') });
    expect(r3[0]!.check).toBe('weights.config');
  });
});

describe('runWeightsConformance with an expect trace (the golden fixtures as released-format checkpoints)', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });
  for (const name of ['public-fp32', 'public-fp8']) {
    it(`${name}: streamed and teacher-forced rows all pass for layers 0..2 and the logits, at every step`, async () => {
      const dir = `fixtures/golden/${name}`;
      const lines: string[] = [];
      const rows = await runWeightsConformance({
        weightsDir: dir, layers: [0, 1, 2], expectFile: `${dir}/trace.safetensors`, maxSeqLen: 8192, log: (l) => lines.push(l),
      });
      expect(rows.filter((r) => !r.pass).map((r) => `${r.check}:${r.layer}: ${r.reason}`)).toEqual([]);
      const checks = new Set(rows.map((r) => r.check));
      for (const c of ['stream.attn.in', 'stream.attn.out', 'stream.ffn.out', 'stream.logits', 'attn.qr', 'attn.out', 'indexer.topk', 'ffn.out', 'gate.indices', 'gate.weights', 'weights.finite']) {
        expect(checks.has(c)).toBe(true);
      }
      expect(lines).toHaveLength(5 * 4); // 5 steps (prefill + 4 decode steps) × (3 layers + logits)
    });
  }

  const perturbed = async (key: string, layers: number[]) => {
    const dir = 'fixtures/golden/public-fp32';
    const tmp = mkdtempSync(join(tmpdir(), 'dsv32-expect-'));
    try {
      const { openSafetensors } = await import('../src/node.ts');
      const tr = openSafetensors(`${dir}/trace.safetensors`);
      const out: Record<string, WritableTensor> = {};
      for (const n of tr.names()) {
        const raw = tr.readRaw(n);
        const data = raw.dtype === 'F32' ? (tr.read(n) as Float32Array) : raw.bytes;
        if (n === key) (data as Float32Array)[5] = (data as Float32Array)[5]! + 0.05;
        out[n] = { dtype: raw.dtype, shape: raw.shape, data };
      }
      tr.close();
      writeSafetensors(join(tmp, 'trace.safetensors'), out);
      writeFileSync(join(tmp, 'manifest.json'), readFileSync(`${dir}/manifest.json`));
      const rows = await runWeightsConformance({ weightsDir: dir, layers, expectFile: join(tmp, 'trace.safetensors'), maxSeqLen: 8192 });
      return rows.filter((r) => !r.pass).map((r) => `${r.check}:${r.step}:${r.layer}`);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  };

  it('a perturbed expect trace fails the rows it touches (prefill)', async () => {
    expect(await perturbed('step0.expected.layer1.ffn.out', [1])).toEqual(['stream.ffn.out:0:1', 'ffn.out:0:1']);
  });

  it('a perturbed decode step fails that step\'s rows only', async () => {
    expect(await perturbed('step3.expected.layer2.attn.out', [2])).toEqual(['stream.attn.out:3:2', 'attn.out:3:2']);
    expect(await perturbed('step4.expected.logits', [2])).toEqual(['stream.logits:4:null']);
  });
});

describeEachBackend('runWeightsConformance on public2-fp8 (activations within float32 noise of FP8 midpoints)', (backend) => {
  const dir = 'fixtures/golden/public2-fp8';
  const breathe = () => new Promise((r) => setTimeout(r, 0)); // lets the test worker answer its runner between long runs
  const streamed = async () => {
    await breathe();
    return runWeightsConformance({ weightsDir: dir, layers: [0, 1, 2, 3], expectFile: `${dir}/trace.safetensors`, maxSeqLen: 8192 });
  };

  // A deferred product must be the same product as on the whole matrix: summed in another order (W·xᵀ
  // instead of x·Wᵀ), quantizer inputs land on the other side of a midpoint and no steer can undo it.
  it('every row passes, at every step and every layer (and the logits)', async () => {
    const rows = await streamed();
    expect(rows.filter((r) => !r.pass).map((r) => `${r.check}:${r.step}:${r.layer}: ${r.max_rel_err} ${r.reason ?? ''}`)).toEqual([]);
    for (let step = 0; step < 4; step++) {
      for (let layer = 0; layer < 4; layer++) {
        for (const c of ['stream.attn.in', 'stream.attn.out', 'stream.ffn.out', 'attn.out', 'ffn.out']) {
          expect(rows.some((r) => r.check === c && r.step === step && r.layer === layer)).toBe(true);
        }
      }
      expect(rows.some((r) => r.check === 'stream.logits' && r.step === step)).toBe(true);
    }
  });

  // on the default backend only (the cpu golden run takes long on a shared machine)
  if (backend === 'wasm') it('the golden checks run first in the same process do not change its rows', async () => {
    const before = await streamed();
    const { cases } = discoverCases([dir]);
    const golden = cases.find((c): c is Extract<Case, { type: 'golden' }> => c.type === 'golden');
    expect(golden).toBeDefined();
    const goldenRows = await runGoldenCase(golden!);
    await breathe();
    expect(goldenRows.filter((r) => !r.pass)).toEqual([]);
    const tensors = tf.memory().numTensors;
    const after = await streamed();
    expect(after).toEqual(before);
    expect(tf.memory().numTensors).toBe(tensors);
  });
});
