/**
 * What one layer of a released checkpoint costs in memory, computed from the config: dequantized whole
 * to float32 ({@link layerFloat32Bytes}), and held as stored while it runs ({@link layerResidentBytes},
 * src/resident.ts). docs/weights-streaming.md tabulates both for the 671B config and the measurements.
 *
 * @module
 */
import type { ModelConfig } from './config.ts';
import { BAND_BYTES } from './resident.ts';
import { checkInteger, checkObject } from './internal/contract.ts';

/** Element counts of one layer's Linear weights, by role. */
function linearShapes(c: ModelConfig, layer: number): { attn: [number, number][]; weightsProj: [number, number]; ffn: [number, number][]; routed: [number, number][] } {
  const D = c.hidden_size;
  const H = c.num_attention_heads;
  const attn: [number, number][] = [
    [c.q_lora_rank, D],
    [H * (c.qk_nope_head_dim + c.qk_rope_head_dim), c.q_lora_rank],
    [c.kv_lora_rank + c.qk_rope_head_dim, D],
    [H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank],
    [D, H * c.v_head_dim],
    [c.index_n_heads * c.index_head_dim, c.q_lora_rank],
    [c.index_head_dim, D],
  ];
  const swiglu = (F: number): [number, number][] => [[F, D], [D, F], [F, D]];
  const dense = layer < c.first_k_dense_replace;
  return {
    attn,
    weightsProj: [c.index_n_heads, D],
    ffn: dense ? swiglu(c.intermediate_size) : c.n_shared_experts > 0 ? swiglu(c.n_shared_experts * c.moe_intermediate_size) : [],
    routed: dense ? [] : swiglu(c.moe_intermediate_size),
  };
}

/** float32 elements of a layer's vectors: norms, q/kv norms, indexer k_norm, gate [E, D] and bias [E]. */
function smallFloat32(c: ModelConfig, layer: number): number {
  const gate = layer < c.first_k_dense_replace ? 0 : c.n_routed_experts * c.hidden_size + c.n_routed_experts;
  return 2 * c.hidden_size + c.q_lora_rank + c.kv_lora_rank + 2 * c.index_head_dim + gate;
}

const count = (shapes: [number, number][]) => shapes.reduce((s, [r, k]) => s + r * k, 0);

/**
 * Bytes of one layer's weights once dequantized to float32 (what the whole-layer loader
 * `loadLayerWeights` holds): MLA + indexer + norms + dense FFN, or + gate, E experts and the shared expert.
 *
 * @example
 * ```ts
 * import { CONFIG_671B } from 'dsv32/config';
 * layerFloat32Bytes(CONFIG_671B, 3); // => 46084982784
 * layerFloat32Bytes(CONFIG_671B, 0); // => 2389771264
 * ```
 */
export function layerFloat32Bytes(config: ModelConfig, layer: number): number {
  checkObject('layerFloat32Bytes', 'config', config);
  checkInteger('layerFloat32Bytes', 'layer', layer, 0);
  const s = linearShapes(config, layer);
  const routed = config.n_routed_experts * count(s.routed);
  return 4 * (count(s.attn) + count([s.weightsProj]) + count(s.ffn) + routed + smallFloat32(config, layer));
}

/** The parts of {@link layerResidentBytes}. */
export interface ResidentLayerBytes {
  /** stored bytes held in JS while the layer runs: FP8 attention, indexer and dense/shared FFN (1 byte
   *  per element + one float32 scale per 128×128 block), BF16 `weights_proj` (2 bytes per element) */
  stored: number;
  /** float32 tensors held for the whole layer: norms, the gate weight [E, D] and its bias */
  float32: number;
  /** one routed expert's stored bytes (read when picked, released after its product; 0 for a dense layer) */
  expert: number;
  /** the transient of one product: a float32 band (≤ BAND_BYTES), its decoded copy, and its stored bytes */
  band: number;
  /** stored + float32 + expert + band: the weights' share of the peak */
  total: number;
}

/**
 * Weight bytes a streamed layer holds at its peak with resident weights (src/resident.ts,
 * src/layer_stream.ts), for a checkpoint in the released format (FP8 Linears with 128×128 scales,
 * BF16 `weights_proj`). Activations and caches come on top (for T tokens of the 671B config a few MB
 * per layer at T ≤ 64; docs/weights-streaming.md).
 *
 * @example
 * ```ts
 * import { CONFIG_671B } from 'dsv32/config';
 * layerResidentBytes(CONFIG_671B, 3).total < 0.5e9; // => true
 * layerResidentBytes(CONFIG_671B, 0).total < 1e9; // => true
 * ```
 */
export function layerResidentBytes(config: ModelConfig, layer: number): ResidentLayerBytes {
  checkObject('layerResidentBytes', 'config', config);
  checkInteger('layerResidentBytes', 'layer', layer, 0);
  const [b0, b1] = config.quantization_config?.weight_block_size ?? [128, 128];
  const fp8 = (shapes: [number, number][]) => shapes.reduce((s, [r, k]) => s + r * k + 4 * Math.ceil(r / b0) * Math.ceil(k / b1), 0);
  const s = linearShapes(config, layer);
  const stored = fp8(s.attn) + fp8(s.ffn) + 2 * count([s.weightsProj]);
  const float32 = 4 * smallFloat32(config, layer);
  const expert = fp8(s.routed);
  // the largest band: BAND_BYTES of float32 (tensor) + the same decoded in JS + ≤ half of it stored (BF16)
  const band = BAND_BYTES * 2.5;
  return { stored, float32, expert, band, total: stored + float32 + expert + band };
}
