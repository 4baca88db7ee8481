/**
 * Checkpoint → weight records. Reads a released-format DeepSeek-V3.2 checkpoint (Hugging Face tensor
 * names) into plain records named as the official inference code names its modules
 * (`inference/convert.py` mapping, docs/spec-notes.md#checkpoint-names), dequantizing FP8 weights on the way
 * ({@link loadLayerWeights}) or keeping them as stored, dequantized per use ({@link loadResidentLayer}).
 *
 * | HF name (`model.layers.N.` prefix)              | record                    |
 * |-------------------------------------------------|---------------------------|
 * | input_layernorm / post_attention_layernorm      | attn_norm / ffn_norm      |
 * | self_attn.q_a_proj / q_a_layernorm / q_b_proj   | attn.wq_a / q_norm / wq_b |
 * | self_attn.kv_a_proj_with_mqa / kv_a_layernorm   | attn.wkv_a / kv_norm      |
 * | self_attn.kv_b_proj / o_proj                    | attn.wkv_b / wo           |
 * | self_attn.indexer.{wq_b, wk, k_norm, weights_proj} | attn.indexer.* (same names) |
 * | mlp.{gate_proj, down_proj, up_proj} (dense)     | ffn.dense.{w1, w2, w3}    |
 * | mlp.gate.weight / e_score_correction_bias       | ffn.moe.gate.weight / bias |
 * | mlp.experts.J.* / mlp.shared_experts.*          | ffn.moe.experts[J] / shared |
 * | model.embed_tokens / model.norm / lm_head       | embed / norm / head       |
 *
 * FP8: an `F8_E4M3` `.weight` comes with `.weight_scale_inv` [⌈out/b⌉, ⌈in/b⌉] (b = 128), and
 * W[i, j] = e4m3(W₈[i, j]) · scale[⌊i/b⌋, ⌊j/b⌋] — the scale is a MULTIPLIER despite its name (official
 * `weight_dequant`, `fp8_gemm`); edge blocks are partial (576 rows → 5 scale rows).
 *
 * @module
 */
import { tf } from './backend.ts';
import type { ModelConfig } from './config.ts';
import type { Checkpoint, Dtype } from './safetensors.ts';
import { checkInteger, checkObject, kindOf } from './internal/contract.ts';
import { onDemandMatrix, residentMatrix, type MemoryMeter } from './resident.ts';
import { isDeferred, type DeferredMatrix, type WeightMatrix } from './weight_matrix.ts';

// --- Records (official inference names) ---

/*
 * Every record takes the type W of its weight matrices: `tf.Tensor2D` (the default: dequantized to
 * float32 at load, {@link loadLayerWeights}) or {@link weight_matrix!WeightMatrix} (also matrices held
 * as stored and dequantized per use, {@link loadResidentLayer}). The model functions accept either.
 */

/** A Linear layer y = x · Wᵀ. */
export interface Linear<W extends WeightMatrix = tf.Tensor2D> {
  /** [out, in] float32: a tensor, or held as stored and dequantized per use (src/resident.ts) */
  weight: W;
  /** the checkpoint stored it as F8_E4M3: the official code block-quantizes activations before it */
  fp8: boolean;
}

/** Lightning indexer of one layer (official `Indexer`). */
export interface IndexerWeights<W extends WeightMatrix = tf.Tensor2D> {
  /** [HI·DI, Dq] */
  wq_b: Linear<W>;
  /** [DI, D] */
  wk: Linear<W>;
  /** LayerNorm over DI */
  k_norm: { weight: tf.Tensor1D; bias: tf.Tensor1D };
  /** [HI, D] */
  weights_proj: Linear<W>;
}

/** MLA of one layer (official `MLA`). */
export interface AttentionWeights<W extends WeightMatrix = tf.Tensor2D> {
  /** [Dq, D] */
  wq_a: Linear<W>;
  /** [Dq] */
  q_norm: tf.Tensor1D;
  /** [H·Dqk, Dq] */
  wq_b: Linear<W>;
  /** [C+R, D] (rows 0..C-1 latent, C..C+R-1 shared rope key) */
  wkv_a: Linear<W>;
  /** [C] */
  kv_norm: tf.Tensor1D;
  /** [H·(Dn+Dv), C] (per head: Dn rows of W_UK, then Dv rows of W_UV) */
  wkv_b: Linear<W>;
  /** [D, H·Dv] */
  wo: Linear<W>;
  indexer: IndexerWeights<W>;
}

/** SwiGLU FFN: w2(silu(w1 x) · w3 x). */
export interface FfnWeights<W extends WeightMatrix = tf.Tensor2D> {
  /** gate_proj [F, D] (F = `intermediate_size`, or `moe_intermediate_size` for experts) */
  w1: Linear<W>;
  /** down_proj [D, F] */
  w2: Linear<W>;
  /** up_proj [F, D] */
  w3: Linear<W>;
}

/** MoE of one layer (official `MoE`, `Gate`). */
export interface MoeWeights<W extends WeightMatrix = tf.Tensor2D> {
  /** weight [E, D]; bias [E] = e_score_correction_bias (null when the checkpoint has none and topk_method ≠ noaux_tc) */
  gate: { weight: tf.Tensor2D; bias: tf.Tensor1D | null };
  /** E routed experts, I = moe_intermediate_size */
  experts: FfnWeights<W>[];
  /** shared experts as one MLP of width n_shared_experts · moe_intermediate_size; null when n_shared_experts = 0 */
  shared: FfnWeights<W> | null;
}

/** All weights of one transformer block. */
export interface LayerWeights<W extends WeightMatrix = tf.Tensor2D> {
  /** [D] */
  attn_norm: tf.Tensor1D;
  /** [D] */
  ffn_norm: tf.Tensor1D;
  attn: AttentionWeights<W>;
  ffn: { kind: 'dense'; dense: FfnWeights<W> } | { kind: 'moe'; moe: MoeWeights<W> };
}

/** Embedding, final norm and output head. */
export interface GlobalWeights<W extends WeightMatrix = tf.Tensor2D> {
  /** [V, D] */
  embed: W;
  /** [D] */
  norm: tf.Tensor1D;
  /** [V, D] */
  head: W;
}

/** Weight records whose matrices may be held as stored ({@link loadResidentLayer}). */
export type ResidentLayerWeights = LayerWeights<WeightMatrix>;
/** Global weights whose embedding and head are read when used ({@link loadResidentGlobals}). */
export type ResidentGlobalWeights = GlobalWeights<WeightMatrix>;

/** A tensor that is missing, of the wrong shape or of the wrong dtype. */
export class CheckpointError extends Error {
  constructor(
    readonly tensor: string,
    readonly expected: string,
    readonly actual: string,
    where: string,
  ) {
    super(`${where}: tensor "${tensor}": expected ${expected} but got ${actual}`);
    this.name = 'CheckpointError';
  }
}

// --- Loading helpers ---

const PLAIN_FLOAT: ReadonlySet<Dtype> = new Set(['F32', 'BF16', 'F16', 'F64']);

/** Collects every tensor made so that a failure disposes the partial result. */
class Loader {
  readonly made: (tf.Tensor | DeferredMatrix)[] = [];
  constructor(
    readonly ckpt: Checkpoint,
    readonly where: string,
    readonly block: [number, number],
    /** null: dequantize everything to float32 tensors now; else keep Linear weights as stored (src/resident.ts) */
    readonly resident: { meter: MemoryMeter | null } | null = null,
  ) {}

  private check(name: string, shape: number[], allowed: ReadonlySet<Dtype>): Dtype {
    if (!this.ckpt.has(name)) throw new CheckpointError(name, `shape [${shape.join(', ')}]`, 'no such tensor in the checkpoint', this.where);
    const info = this.ckpt.info(name);
    if (!allowed.has(info.dtype)) {
      throw new CheckpointError(name, `dtype ${[...allowed].join(' or ')}`, info.dtype, this.where);
    }
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new CheckpointError(name, `shape [${shape.join(', ')}]`, `[${info.shape.join(', ')}]`, this.where);
    }
    return info.dtype;
  }

  /** Weights must be finite: a NaN or ±Infinity is reported by tensor name here, not as a NaN score later. */
  private finite(name: string, data: Float32Array): Float32Array {
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i]!)) {
        let count = 0;
        for (let j = i; j < data.length; j++) if (!Number.isFinite(data[j]!)) count++;
        throw new CheckpointError(name, 'finite values', `${data[i]} at flat index ${i} (${count} non-finite of ${data.length})`, this.where);
      }
    }
    return data;
  }

  private keep<T extends tf.Tensor | DeferredMatrix>(t: T): T {
    this.made.push(t);
    return t;
  }

  /** A float (non-FP8) tensor as float32. */
  plain(name: string, shape: number[]): tf.Tensor {
    this.check(name, shape, PLAIN_FLOAT);
    return this.keep(tf.tensor(this.finite(name, this.ckpt.read(name) as Float32Array), shape, 'float32'));
  }

  vector(name: string, n: number): tf.Tensor1D {
    return this.plain(name, [n]) as tf.Tensor1D;
  }

  matrix(name: string, rows: number, cols: number): tf.Tensor2D {
    return this.plain(name, [rows, cols]) as tf.Tensor2D;
  }

  /** A [rows, cols] plain float matrix held as stored (resident) or read when used (on demand). */
  stored(name: string, rows: number, cols: number, when: 'resident' | 'on demand'): DeferredMatrix {
    this.check(name, [rows, cols], PLAIN_FLOAT);
    const make = when === 'resident' ? residentMatrix : onDemandMatrix;
    return this.keep(make({ ckpt: this.ckpt, name }, this.resident?.meter ?? null));
  }

  /**
   * `<prefix>.weight` [out, in] (+ `.weight_scale_inv` when F8_E4M3) → Linear. In resident mode the
   * weight stays as stored: held in JS (`'resident'`) or read when used (`'on demand'`, routed experts).
   */
  linear(prefix: string, out: number, inDim: number, when: 'resident' | 'on demand' = 'resident'): Linear<WeightMatrix> {
    const wName = `${prefix}.weight`;
    const sName = `${prefix}.weight_scale_inv`;
    const dtype = this.check(wName, [out, inDim], new Set([...PLAIN_FLOAT, 'F8_E4M3']));
    const resident = this.resident !== null;
    if (dtype !== 'F8_E4M3') {
      if (this.ckpt.has(sName)) {
        throw new CheckpointError(sName, `no scale for a ${dtype} weight`, 'a weight_scale_inv tensor', this.where);
      }
      return { weight: resident ? this.stored(wName, out, inDim, when) : this.matrix(wName, out, inDim), fp8: false };
    }
    const [b0, b1] = this.block;
    const sRows = Math.ceil(out / b0);
    const sCols = Math.ceil(inDim / b1);
    this.check(sName, [sRows, sCols], PLAIN_FLOAT);
    if (resident) {
      const make = when === 'resident' ? residentMatrix : onDemandMatrix;
      const t = { ckpt: this.ckpt, name: wName, scale: { name: sName, block: this.block } };
      return { weight: this.keep(make(t, this.resident?.meter ?? null)), fp8: true };
    }
    const w8 = this.finite(wName, this.ckpt.read(wName) as Float32Array); // e4m3 values, decoded
    const scale = this.finite(sName, this.ckpt.read(sName) as Float32Array);
    // W[i, j] = W₈[i, j] · scale[⌊i/b0⌋, ⌊j/b1⌋], each product rounded to float32
    const w = new Float32Array(out * inDim);
    for (let i = 0; i < out; i++) {
      const sRow = Math.floor(i / b0) * sCols;
      const base = i * inDim;
      for (let j = 0; j < inDim; j++) w[base + j] = w8[base + j]! * scale[sRow + Math.floor(j / b1)]!;
    }
    return { weight: this.keep(tf.tensor2d(this.finite(wName, w), [out, inDim])), fp8: true };
  }

  ffn(prefix: string, inner: number, dim: number, when: 'resident' | 'on demand' = 'resident'): FfnWeights<WeightMatrix> {
    return {
      w1: this.linear(`${prefix}.gate_proj`, inner, dim, when),
      w2: this.linear(`${prefix}.down_proj`, dim, inner, when),
      w3: this.linear(`${prefix}.up_proj`, inner, dim, when),
    };
  }

  disposeAll(): void {
    for (const t of this.made) t.dispose();
  }
}

function blockOf(config: ModelConfig): [number, number] {
  return config.quantization_config?.weight_block_size ?? [128, 128];
}

function guarded<T>(loader: Loader, build: () => T): T {
  try {
    return build();
  } catch (e) {
    loader.disposeAll();
    throw e;
  }
}

// --- Public loaders ---

/**
 * Loads the weights of transformer block `layer` (0 ≤ layer < num_hidden_layers; the MTP layer is not
 * loaded, as in convert.py). Layers below `first_k_dense_replace` get a dense FFN, the rest a MoE.
 * Shapes are checked against the config; FP8 weights are dequantized (see the module comment).
 * On any error every tensor loaded so far is disposed: nothing is half-loaded.
 *
 * @deviation FP8 weights are dequantized once at load to float32 (the official code keeps e4m3 codes and
 * applies the block scales inside `fp8_gemm`); see docs/deviations.md "Config and checkpoints".
 * @deviation the MoE gate bias (`e_score_correction_bias`) is loaded whenever `topk_method` is `noaux_tc`
 * (the official `Gate` creates it only when dim = 7168, i.e. for the 671B model).
 * @param ckpt an open checkpoint ({@link node!openCheckpoint})
 * @param config its validated config
 * @param layer block index
 * @returns the records; free them with {@link disposeLayerWeights}
 * @throws CheckpointError naming the tensor, the expected and the actual shape/dtype, or that it is missing
 * @example
 * ```ts
 * import { loadConfig, openCheckpoint } from 'dsv32/node';
 * const ckpt = openCheckpoint('fixtures/golden/public-fp8');
 * const w = loadLayerWeights(ckpt, loadConfig('fixtures/golden/public-fp8/config.json'), 1);
 * w.attn.wkv_a.weight.shape; // => [160, 256]
 * w.attn.wkv_a.fp8; // => true
 * w.ffn.kind; // => 'moe'
 * disposeLayerWeights(w);
 * ckpt.close();
 * ```
 */
export function loadLayerWeights(ckpt: Checkpoint, config: ModelConfig, layer: number): LayerWeights {
  checkObject('loadLayerWeights', 'ckpt', ckpt);
  checkObject('loadLayerWeights', 'config', config);
  checkInteger('loadLayerWeights', 'layer', layer, 0);
  // a float32 loader makes only tensors
  return buildLayer(new Loader(ckpt, `loadLayerWeights(layer ${layer})`, blockOf(config)), 'loadLayerWeights', config, layer) as LayerWeights;
}

/**
 * {@link loadLayerWeights} with every Linear weight held as the checkpoint stores it
 * (src/resident.ts): FP8 e4m3 bytes + `weight_scale_inv` blocks, or BF16 bytes, in JS memory, outside
 * the backend, dequantized band by band only while a product uses them (src/weight_matrix.ts). The
 * routed experts are not read at all here: only their headers are checked, and each expert's bytes are
 * read from the shard when the gate picks it. Norms, biases and the gate weight [E, D] are float32
 * tensors. Shapes and dtypes are checked as in {@link loadLayerWeights}, with the same errors.
 *
 * Memory held: the stored bytes of the attention and of the shared expert or the dense FFN, plus one
 * dequantized band at a time while a product runs (docs/weights-streaming.md).
 *
 * @param meter counts the bytes held (optional)
 * @returns the records (their matrices are {@link weight_matrix!WeightMatrix}); free with {@link disposeLayerWeights}
 * @example
 * ```ts
 * import { loadConfig, openCheckpoint } from 'dsv32/node';
 * import { isDeferred } from 'dsv32/weight_matrix';
 * const ckpt = openCheckpoint('fixtures/golden/public-fp8');
 * const w = loadResidentLayer(ckpt, loadConfig('fixtures/golden/public-fp8/config.json'), 1);
 * isDeferred(w.attn.wkv_a.weight); // => true
 * w.attn.wkv_a.weight.shape; // => [160, 256]
 * disposeLayerWeights(w);
 * ckpt.close();
 * ```
 */
export function loadResidentLayer(ckpt: Checkpoint, config: ModelConfig, layer: number, meter: MemoryMeter | null = null): ResidentLayerWeights {
  checkObject('loadResidentLayer', 'ckpt', ckpt);
  checkObject('loadResidentLayer', 'config', config);
  checkInteger('loadResidentLayer', 'layer', layer, 0);
  return buildLayer(new Loader(ckpt, `loadResidentLayer(layer ${layer})`, blockOf(config), { meter }), 'loadResidentLayer', config, layer);
}

function buildLayer(L: Loader, fn: string, config: ModelConfig, layer: number): ResidentLayerWeights {
  const ckpt = L.ckpt;
  if (!Number.isSafeInteger(layer) || layer < 0 || layer >= config.num_hidden_layers) {
    throw new RangeError(`${fn}(): layer must be an integer in [0, ${config.num_hidden_layers}) but got ${layer}`);
  }
  const c = config;
  const p = `model.layers.${layer}.`;
  const D = c.hidden_size;
  const H = c.num_attention_heads;
  const qkHead = c.qk_nope_head_dim + c.qk_rope_head_dim;
  return guarded(L, () => {
    const attn: AttentionWeights<WeightMatrix> = {
      wq_a: L.linear(`${p}self_attn.q_a_proj`, c.q_lora_rank, D),
      q_norm: L.vector(`${p}self_attn.q_a_layernorm.weight`, c.q_lora_rank),
      wq_b: L.linear(`${p}self_attn.q_b_proj`, H * qkHead, c.q_lora_rank),
      wkv_a: L.linear(`${p}self_attn.kv_a_proj_with_mqa`, c.kv_lora_rank + c.qk_rope_head_dim, D),
      kv_norm: L.vector(`${p}self_attn.kv_a_layernorm.weight`, c.kv_lora_rank),
      wkv_b: L.linear(`${p}self_attn.kv_b_proj`, H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank),
      wo: L.linear(`${p}self_attn.o_proj`, D, H * c.v_head_dim),
      indexer: {
        wq_b: L.linear(`${p}self_attn.indexer.wq_b`, c.index_n_heads * c.index_head_dim, c.q_lora_rank),
        wk: L.linear(`${p}self_attn.indexer.wk`, c.index_head_dim, D),
        k_norm: {
          weight: L.vector(`${p}self_attn.indexer.k_norm.weight`, c.index_head_dim),
          bias: L.vector(`${p}self_attn.indexer.k_norm.bias`, c.index_head_dim),
        },
        weights_proj: L.linear(`${p}self_attn.indexer.weights_proj`, c.index_n_heads, D),
      },
    };
    let ffn: ResidentLayerWeights['ffn'];
    if (layer < c.first_k_dense_replace) {
      ffn = { kind: 'dense', dense: L.ffn(`${p}mlp`, c.intermediate_size, D) };
    } else {
      const biasName = `${p}mlp.gate.e_score_correction_bias`;
      const gate = {
        weight: L.matrix(`${p}mlp.gate.weight`, c.n_routed_experts, D),
        // noaux_tc needs the correction bias; other methods use it only if the checkpoint has one
        bias: c.topk_method === 'noaux_tc' || ckpt.has(biasName) ? L.vector(biasName, c.n_routed_experts) : null,
      };
      const experts: FfnWeights<WeightMatrix>[] = [];
      for (let j = 0; j < c.n_routed_experts; j++) {
        // routed experts: read from the shards only when the gate picks them (resident mode)
        experts.push(L.ffn(`${p}mlp.experts.${j}`, c.moe_intermediate_size, D, 'on demand'));
      }
      const shared =
        c.n_shared_experts > 0 ? L.ffn(`${p}mlp.shared_experts`, c.n_shared_experts * c.moe_intermediate_size, D) : null;
      ffn = { kind: 'moe', moe: { gate, experts, shared } };
    }
    return {
      attn_norm: L.vector(`${p}input_layernorm.weight`, D),
      ffn_norm: L.vector(`${p}post_attention_layernorm.weight`, D),
      attn,
      ffn,
    };
  });
}

/**
 * Loads the embedding `model.embed_tokens.weight` [V, D], the final norm `model.norm.weight` [D] and the
 * output head `lm_head.weight` [V, D] (released as BF16; FP8 is not accepted for them, as in the
 * official code where embed and head are plain bf16 modules).
 *
 * @example
 * ```ts
 * import { loadConfig, openCheckpoint } from 'dsv32/node';
 * const ckpt = openCheckpoint('fixtures/golden/public-fp8');
 * const g = loadGlobalWeights(ckpt, loadConfig('fixtures/golden/public-fp8/config.json'));
 * g.head.shape; // => [512, 256]
 * disposeGlobalWeights(g);
 * ckpt.close();
 * ```
 */
export function loadGlobalWeights(ckpt: Checkpoint, config: ModelConfig): GlobalWeights {
  checkObject('loadGlobalWeights', 'ckpt', ckpt);
  checkObject('loadGlobalWeights', 'config', config);
  return buildGlobals(new Loader(ckpt, 'loadGlobalWeights()', blockOf(config)), config) as GlobalWeights;
}

/**
 * {@link loadGlobalWeights} without reading the embedding or the head: both stay in the shard and are
 * read when used — the embedding rows of the given tokens at their byte offsets, the head in bands of
 * vocabulary rows (src/resident.ts `onDemandMatrix`). Only the final norm [D] is loaded.
 *
 * @example
 * ```ts
 * import { loadConfig, openCheckpoint } from 'dsv32/node';
 * const ckpt = openCheckpoint('fixtures/golden/public-fp8');
 * const g = loadResidentGlobals(ckpt, loadConfig('fixtures/golden/public-fp8/config.json'));
 * g.head.shape; // => [512, 256]
 * disposeGlobalWeights(g);
 * ckpt.close();
 * ```
 */
export function loadResidentGlobals(ckpt: Checkpoint, config: ModelConfig, meter: MemoryMeter | null = null): ResidentGlobalWeights {
  checkObject('loadResidentGlobals', 'ckpt', ckpt);
  checkObject('loadResidentGlobals', 'config', config);
  return buildGlobals(new Loader(ckpt, 'loadResidentGlobals()', blockOf(config), { meter }), config);
}

function buildGlobals(L: Loader, config: ModelConfig): ResidentGlobalWeights {
  const V = config.vocab_size;
  const D = config.hidden_size;
  // resident: the embedding rows and the head bands are read from the shard when used, never held
  const matrix = (name: string) => (L.resident ? L.stored(name, V, D, 'on demand') : L.matrix(name, V, D));
  return guarded(L, () => ({
    embed: matrix('model.embed_tokens.weight'),
    norm: L.vector('model.norm.weight', D),
    head: matrix('lm_head.weight'),
  }));
}

/**
 * Every tensor of a {@link LayerWeights} record (norms, Linear weights, indexer, gate, experts), for
 * disposal or accounting.
 *
 * @example
 * ```ts
 * import { loadConfig, openCheckpoint } from 'dsv32/node';
 * const ckpt = openCheckpoint('fixtures/golden/public-fp32');
 * const w = loadLayerWeights(ckpt, loadConfig('fixtures/golden/public-fp32/config.json'), 0);
 * // 2 norms + 7 MLA tensors + 5 indexer tensors + 3 dense FFN weights
 * layerTensors(w).length; // => 17
 * disposeLayerWeights(w);
 * ckpt.close();
 * ```
 */
export function layerTensors(w: ResidentLayerWeights): tf.Tensor[] {
  checkLayerRecord('layerTensors', w);
  return layerParts(w).filter((t): t is tf.Tensor => !isDeferred(t as WeightMatrix));
}

/** Every tensor and deferred matrix of a layer record. */
function layerParts(w: ResidentLayerWeights): (tf.Tensor | DeferredMatrix)[] {
  const lin = (l: Linear<WeightMatrix>): (tf.Tensor | DeferredMatrix)[] => [l.weight];
  const ffn = (f: FfnWeights<WeightMatrix>): (tf.Tensor | DeferredMatrix)[] => [...lin(f.w1), ...lin(f.w2), ...lin(f.w3)];
  const a = w.attn;
  const out: (tf.Tensor | DeferredMatrix)[] = [
    w.attn_norm, w.ffn_norm, a.q_norm, a.kv_norm,
    ...[a.wq_a, a.wq_b, a.wkv_a, a.wkv_b, a.wo].flatMap(lin),
    ...[a.indexer.wq_b, a.indexer.wk, a.indexer.weights_proj].flatMap(lin),
    a.indexer.k_norm.weight, a.indexer.k_norm.bias,
  ];
  if (w.ffn.kind === 'dense') out.push(...ffn(w.ffn.dense));
  else {
    const m = w.ffn.moe;
    out.push(m.gate.weight, ...(m.gate.bias ? [m.gate.bias] : []), ...m.experts.flatMap(ffn));
    if (m.shared) out.push(...ffn(m.shared));
  }
  return out;
}

/** The nesting of a {@link LayerWeights} record (its tensors are the caller's business here). */
function checkLayerRecord(fn: string, w: ResidentLayerWeights): void {
  checkObject(fn, 'w', w);
  checkObject(fn, 'w.attn', w.attn);
  checkObject(fn, 'w.attn.indexer', w.attn.indexer);
  const ffn = checkObject(fn, 'w.ffn', w.ffn);
  if (ffn.kind !== 'dense' && ffn.kind !== 'moe') throw new TypeError(`${fn}(): w.ffn.kind must be 'dense' or 'moe' but got ${kindOf(ffn.kind)}`);
}

/**
 * Disposes every tensor of a layer record and releases its deferred matrices (idempotent).
 *
 * @example
 * ```ts
 * import { loadConfig, openCheckpoint } from 'dsv32/node';
 * const ckpt = openCheckpoint('fixtures/golden/public-fp32');
 * const config = loadConfig('fixtures/golden/public-fp32/config.json');
 * const before = tf.memory().numTensors;
 * disposeLayerWeights(loadLayerWeights(ckpt, config, 0));
 * tf.memory().numTensors - before; // => 0
 * ckpt.close();
 * ```
 */
export function disposeLayerWeights(w: ResidentLayerWeights): void {
  checkLayerRecord('disposeLayerWeights', w);
  for (const t of layerParts(w)) if (isDeferred(t as WeightMatrix) || !(t as tf.Tensor).isDisposed) t.dispose();
}

/**
 * Disposes the tensors of a {@link GlobalWeights} record and releases its deferred matrices (idempotent).
 *
 * @example
 * ```ts
 * import { loadConfig, openCheckpoint } from 'dsv32/node';
 * const ckpt = openCheckpoint('fixtures/golden/public-fp32');
 * const g = loadGlobalWeights(ckpt, loadConfig('fixtures/golden/public-fp32/config.json'));
 * disposeGlobalWeights(g);
 * g.embed.isDisposed; // => true
 * ckpt.close();
 * ```
 */
export function disposeGlobalWeights(g: ResidentGlobalWeights): void {
  checkObject('disposeGlobalWeights', 'g', g);
  for (const t of [g.embed, g.norm, g.head]) if (isDeferred(t as WeightMatrix) || !(t as tf.Tensor).isDisposed) t.dispose();
}
