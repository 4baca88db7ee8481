/**
 * Writes a synthetic DeepSeek-V3.2 checkpoint in the released format: `config.json`, shards named
 * `model-0000N-of-0000M.safetensors` and `model.safetensors.index.json`; FP8 e4m3 Linear weights with
 * float32 `weight_scale_inv` [⌈out/128⌉, ⌈in/128⌉], BF16 embedding, head, gate and indexer
 * `weights_proj`, float32 norms and `e_score_correction_bias`. The embedding goes in the first shard,
 * each layer in its own, the final norm and head in the last (as the released shards order them).
 *
 * The values are seeded pseudo-random (deterministic for a seed), scaled so that activations stay
 * O(1) through the layers: e4m3 codes with |w₈| < 2 times a block scale ≈ 1/(0.5·√in). Each tensor is
 * generated and written in chunks, so a 1.85 GB embedding is never held at once.
 *
 * `npx tsx scripts/synthetic-checkpoint.ts OUT_DIR [--layers 2] [--experts 32] [--seed 1]` writes the
 * real-width checkpoint of {@link realWidthConfig} (about 6.3 GB for 2 layers and 32 experts).
 *
 * @module
 */
import { closeSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { CONFIG_671B, parseConfig, type ModelConfig } from '../src/config.ts';
import type { Dtype } from '../src/safetensors.ts';
import { mulberry32 } from '../test/helpers/random.ts';

/**
 * The 671B config with its real widths (hidden 7168, 128 heads, q_lora 1536, kv_lora 512, indexer
 * 64 × 128 with top-2048, moe_intermediate 2048, dense intermediate 18432, vocabulary 129280) but
 * `layers` layers (the first dense, the rest MoE) and `experts` routed experts in 8 groups, 4 kept,
 * 8 per token.
 *
 * @example
 * ```ts
 * realWidthConfig(2, 32).n_routed_experts; // => 32
 * realWidthConfig(2, 32).hidden_size; // => 7168
 * ```
 */
export function realWidthConfig(layers: number, experts: number): Record<string, unknown> {
  return { ...CONFIG_671B, num_hidden_layers: layers, first_k_dense_replace: 1, n_routed_experts: experts, num_experts_per_tok: 8, n_group: 8, topk_group: 4 };
}

/** One tensor to write: its header entry and a generator filling its bytes chunk by chunk. */
interface Planned {
  name: string;
  dtype: Dtype;
  shape: number[];
  bytes: number;
  /** fills `out` with the bytes at [offset, offset + out.length) of the tensor */
  fill: (out: Uint8Array, offset: number) => void;
}

/** seeded uniform 32-bit integers (mulberry32's outputs, exact: its [0, 1) values are multiples of 2⁻³²) */
function prng(seed: number): () => number {
  const next = mulberry32(seed);
  return () => next() * 4294967296;
}

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);
/** float32 → bfloat16 bits by truncation (the values are random anyway). */
const bf16 = (v: number) => {
  F32[0] = v;
  return U32[0]! >>> 16;
};

function planner(seed: number) {
  let counter = 0;
  const nextSeed = () => (seed * 1_000_003 + ++counter * 7919) >>> 0;
  return {
    /** e4m3 codes with bit 6 clear (exponent ≤ 7: finite, |w₈| < 2, never NaN) and their block scales */
    fp8(prefix: string, out: number, inDim: number): Planned[] {
      const rnd = prng(nextSeed());
      const sRows = Math.ceil(out / 128);
      const sCols = Math.ceil(inDim / 128);
      const scale = new Float32Array(sRows * sCols);
      const srnd = prng(nextSeed());
      for (let i = 0; i < scale.length; i++) scale[i] = (0.75 + (srnd() / 2 ** 32) * 0.5) / (0.5 * Math.sqrt(inDim));
      return [
        {
          name: `${prefix}.weight`, dtype: 'F8_E4M3', shape: [out, inDim], bytes: out * inDim,
          fill: (buf) => {
            const n4 = buf.length & ~3;
            const view = new Uint32Array(buf.buffer, buf.byteOffset, n4 / 4);
            for (let i = 0; i < view.length; i++) view[i] = rnd() & 0xbfbfbfbf;
            for (let i = n4; i < buf.length; i++) buf[i] = rnd() & 0xbf;
          },
        },
        {
          name: `${prefix}.weight_scale_inv`, dtype: 'F32', shape: [sRows, sCols], bytes: scale.byteLength,
          fill: (buf, offset) => buf.set(new Uint8Array(scale.buffer, offset, buf.length)),
        },
      ];
    },
    /** BF16 values ±σ·(0.5 + u), u uniform in [0, 1) */
    bf16(name: string, shape: number[], sigma: number): Planned {
      const rnd = prng(nextSeed());
      const n = shape.reduce((p, d) => p * d, 1);
      return {
        name, dtype: 'BF16', shape, bytes: 2 * n,
        fill: (buf) => {
          const view = new Uint16Array(buf.buffer, buf.byteOffset, buf.length / 2);
          for (let i = 0; i < view.length; i++) {
            const r = rnd();
            view[i] = bf16((r & 1 ? -sigma : sigma) * (0.5 + (r >>> 1) / 2 ** 31));
          }
        },
      };
    },
    /** float32 vector: `value` + spread · (u − ½) */
    f32(name: string, n: number, value: number, spread = 0): Planned {
      const rnd = prng(nextSeed());
      const v = Float32Array.from({ length: n }, () => value + spread * (rnd() / 2 ** 32 - 0.5));
      return { name, dtype: 'F32', shape: [n], bytes: v.byteLength, fill: (buf, offset) => buf.set(new Uint8Array(v.buffer, offset, buf.length)) };
    },
  };
}

function layerPlan(c: ModelConfig, l: number, p: ReturnType<typeof planner>): Planned[] {
  const D = c.hidden_size;
  const H = c.num_attention_heads;
  const pre = `model.layers.${l}`;
  const ffn = (prefix: string, F: number) => [...p.fp8(`${prefix}.gate_proj`, F, D), ...p.fp8(`${prefix}.up_proj`, F, D), ...p.fp8(`${prefix}.down_proj`, D, F)];
  const t: Planned[] = [
    p.f32(`${pre}.input_layernorm.weight`, D, 1, 0.2),
    p.f32(`${pre}.post_attention_layernorm.weight`, D, 1, 0.2),
    ...p.fp8(`${pre}.self_attn.q_a_proj`, c.q_lora_rank, D),
    p.f32(`${pre}.self_attn.q_a_layernorm.weight`, c.q_lora_rank, 1, 0.2),
    ...p.fp8(`${pre}.self_attn.q_b_proj`, H * (c.qk_nope_head_dim + c.qk_rope_head_dim), c.q_lora_rank),
    ...p.fp8(`${pre}.self_attn.kv_a_proj_with_mqa`, c.kv_lora_rank + c.qk_rope_head_dim, D),
    p.f32(`${pre}.self_attn.kv_a_layernorm.weight`, c.kv_lora_rank, 1, 0.2),
    ...p.fp8(`${pre}.self_attn.kv_b_proj`, H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank),
    ...p.fp8(`${pre}.self_attn.o_proj`, D, H * c.v_head_dim),
    ...p.fp8(`${pre}.self_attn.indexer.wq_b`, c.index_n_heads * c.index_head_dim, c.q_lora_rank),
    ...p.fp8(`${pre}.self_attn.indexer.wk`, c.index_head_dim, D),
    p.f32(`${pre}.self_attn.indexer.k_norm.weight`, c.index_head_dim, 1, 0.2),
    p.f32(`${pre}.self_attn.indexer.k_norm.bias`, c.index_head_dim, 0, 0.1),
    p.bf16(`${pre}.self_attn.indexer.weights_proj.weight`, [c.index_n_heads, D], 1 / Math.sqrt(D)),
  ];
  if (l < c.first_k_dense_replace) return [...t, ...ffn(`${pre}.mlp`, c.intermediate_size)];
  t.push(p.bf16(`${pre}.mlp.gate.weight`, [c.n_routed_experts, D], 1 / Math.sqrt(D)));
  t.push(p.f32(`${pre}.mlp.gate.e_score_correction_bias`, c.n_routed_experts, 0, 0.02));
  for (let e = 0; e < c.n_routed_experts; e++) t.push(...ffn(`${pre}.mlp.experts.${e}`, c.moe_intermediate_size));
  if (c.n_shared_experts > 0) t.push(...ffn(`${pre}.mlp.shared_experts`, c.n_shared_experts * c.moe_intermediate_size));
  return t;
}

const CHUNK = 16 * 1024 * 1024;

/** Writes one shard: the header, then each tensor's bytes generated in chunks of ≤ 16 MiB. */
function writeShard(path: string, tensors: Planned[]): void {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes] };
    offset += t.bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, len);
    writeSync(fd, Buffer.from(json, 'utf8'));
    const buf = new Uint8Array(CHUNK);
    for (const t of tensors) {
      for (let at = 0; at < t.bytes; at += CHUNK) {
        const part = buf.subarray(0, Math.min(CHUNK, t.bytes - at));
        t.fill(part, at);
        let done = 0;
        while (done < part.length) done += writeSync(fd, part, done, part.length - done);
      }
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes the checkpoint of `configJson` into `dir` (see the module comment).
 *
 * @returns the parsed config and the bytes written
 * @example
 * ```ts
 * import { mkdtempSync, rmSync } from 'node:fs';
 * import { tmpdir } from 'node:os';
 * const dir = mkdtempSync(`${tmpdir()}/dsv32-synthetic-`);
 * const small = { ...realWidthConfig(2, 8), hidden_size: 256, vocab_size: 300, num_attention_heads: 2, q_lora_rank: 128,
 *   index_n_heads: 4, intermediate_size: 512, moe_intermediate_size: 128 };
 * writeSyntheticCheckpoint(dir, small).config.n_routed_experts; // => 8
 * rmSync(dir, { recursive: true });
 * ```
 */
export function writeSyntheticCheckpoint(dir: string, configJson: Record<string, unknown>, seed = 1): { config: ModelConfig; bytes: number } {
  const config = parseConfig(configJson);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(configJson, null, 2));
  const p = planner(seed);
  const D = config.hidden_size;
  const V = config.vocab_size;
  const shards: Planned[][] = [
    [p.bf16('model.embed_tokens.weight', [V, D], 1)],
    ...Array.from({ length: config.num_hidden_layers }, (_, l) => layerPlan(config, l, p)),
    [p.f32('model.norm.weight', D, 1, 0.2), p.bf16('lm_head.weight', [V, D], 1 / Math.sqrt(D))],
  ];
  const M = shards.length;
  const file = (i: number) => `model-${String(i + 1).padStart(5, '0')}-of-${String(M).padStart(5, '0')}.safetensors`;
  const weightMap: Record<string, string> = {};
  let bytes = 0;
  shards.forEach((tensors, i) => {
    writeShard(join(dir, file(i)), tensors);
    for (const t of tensors) {
      weightMap[t.name] = file(i);
      bytes += t.bytes;
    }
  });
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: bytes }, weight_map: weightMap }, null, 1));
  return { config, bytes };
}

function main(argv: string[]): void {
  const dir = argv[0];
  if (!dir || dir.startsWith('--')) {
    process.stderr.write('usage: tsx scripts/synthetic-checkpoint.ts OUT_DIR [--layers 2] [--experts 32] [--seed 1]\n');
    process.exit(2);
  }
  const opt = (flag: string, dflt: number) => {
    const i = argv.indexOf(flag);
    const v = i >= 0 ? Number(argv[i + 1]) : dflt;
    if (!Number.isInteger(v) || v < 1) {
      process.stderr.write(`synthetic-checkpoint: ${flag} expects an integer ≥ 1 but got '${argv[i + 1]}'\n`);
      process.exit(2);
    }
    return v;
  };
  const { bytes } = writeSyntheticCheckpoint(dir, realWidthConfig(opt('--layers', 2), opt('--experts', 32)), opt('--seed', 1));
  process.stdout.write(`wrote ${dir}: ${(bytes / 1e9).toFixed(2)} GB\n`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) main(process.argv.slice(2));
