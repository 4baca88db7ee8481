/**
 * Model configuration: the checkpoint's Hugging Face `config.json`, validated, and the quantities the
 * official inference code derives from it (`ModelArgs` in `inference/model.py`).
 *
 * Keys are kept verbatim from `config.json` (`kv_lora_rank`, `index_topk`, ...), so a reader can check
 * any value against the released file. Unknown keys (`architectures`, `num_key_value_heads`, ...) are ignored.
 * Every invalid or inconsistent value is a {@link ConfigError} that names the key, what was expected and
 * what was found.
 *
 * Browser-safe: {@link parseConfig} validates an object already parsed from JSON; reading the file
 * is `loadConfig` in the Node-only module `dsv32/node` (src/node.ts).
 *
 * @module
 */
import { yarnMscale } from './rope.ts';
import { checkObject, checkString } from './internal/contract.ts';

// --- Types ---

/** `rope_scaling` of config.json: YaRN context extension (docs/spec-notes.md#rope-and-yarn). */
export interface RopeScaling {
  /** always `"yarn"` (HF also spells the key `rope_type`; both are read). */
  type: 'yarn';
  /** context extension factor s (40 in the 671B model). */
  factor: number;
  /** pre-extension context length (4096); YaRN applies when max_seq_len exceeds it. */
  original_max_position_embeddings: number;
  /** YaRN β_fast (32): rotations above which a frequency is kept. */
  beta_fast: number;
  /** YaRN β_slow (1): rotations below which a frequency is interpolated. */
  beta_slow: number;
  /** attention temperature coefficient (1.0): mscale = 0.1·mscale·ln(factor) + 1. */
  mscale: number;
  /** HF's second mscale (1.0); not used by the official inference code. */
  mscale_all_dim: number;
}

/** `quantization_config` of config.json: FP8 e4m3 weights in blocks, dynamic activation scales. */
export interface QuantizationConfig {
  quant_method: 'fp8';
  fmt: 'e4m3';
  activation_scheme: 'dynamic';
  /** `"ue8m0"`: activation scales rounded up to powers of two; null: plain float32 scales. */
  scale_fmt: 'ue8m0' | null;
  /** weight block [rows, cols] of one `weight_scale_inv` entry ([128, 128]). */
  weight_block_size: [number, number];
}

/** The keys of `config.json` that dsv32 reads, verbatim (671B values in {@link CONFIG_671B}). */
export interface ModelConfig {
  /** V */
  vocab_size: number;
  /** D */
  hidden_size: number;
  /** dense FFN inner dim (layers < first_k_dense_replace) */
  intermediate_size: number;
  /** inner dim of one routed or shared expert */
  moe_intermediate_size: number;
  num_hidden_layers: number;
  /** layers [0, first_k_dense_replace) have a dense FFN, the rest MoE */
  first_k_dense_replace: number;
  /** H */
  num_attention_heads: number;
  /** E */
  n_routed_experts: number;
  /** shared experts, fused into one MLP of width n_shared_experts · moe_intermediate_size (0: none) */
  n_shared_experts: number;
  /** Ek */
  num_experts_per_tok: number;
  /** expert groups for group-limited routing */
  n_group: number;
  /** groups kept per token */
  topk_group: number;
  routed_scaling_factor: number;
  scoring_func: 'sigmoid' | 'softmax';
  topk_method: 'noaux_tc' | 'greedy' | 'group_limited_greedy';
  norm_topk_prob: boolean;
  /** Dq */
  q_lora_rank: number;
  /** C */
  kv_lora_rank: number;
  /** Dn */
  qk_nope_head_dim: number;
  /** R */
  qk_rope_head_dim: number;
  /** Dv */
  v_head_dim: number;
  /** HI */
  index_n_heads: number;
  /** DI */
  index_head_dim: number;
  /** k */
  index_topk: number;
  rms_norm_eps: number;
  rope_theta: number;
  /** null: no YaRN (plain RoPE) */
  rope_scaling: RopeScaling | null;
  max_position_embeddings: number;
  /** absent: float weights, no activation quantization */
  quantization_config?: QuantizationConfig;
}

/** An invalid or inconsistent config value; `key` is the config.json key (dotted for nested keys). */
export class ConfigError extends Error {
  constructor(
    readonly key: string,
    readonly expected: string,
    readonly actual: string,
    where = 'parseConfig()',
  ) {
    super(key === '(root)' ? `${where}: json (the config root) must be ${expected} but got ${actual}` : `${where}: config key "${key}": expected ${expected} but got ${actual}`);
    this.name = 'ConfigError';
  }
}

// --- Validation helpers ---

function show(v: unknown): string {
  if (v === undefined) return 'nothing (key missing)';
  if (typeof v === 'string') return JSON.stringify(v);
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 80 ? `${s.slice(0, 77)}...` : s;
  } catch {
    return String(v);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

type Obj = Record<string, unknown>;

function int(o: Obj, key: string, prefix: string, min: number): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new ConfigError(prefix + key, min === 0 ? 'an integer ≥ 0' : `an integer ≥ ${min}`, show(v));
  }
  return v;
}

function num(o: Obj, key: string, prefix: string, positive: boolean): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || (positive && v <= 0)) {
    throw new ConfigError(prefix + key, positive ? 'a finite number > 0' : 'a finite number', show(v));
  }
  return v;
}

function oneOf<T extends string>(o: Obj, key: string, prefix: string, allowed: readonly T[]): T {
  const v = o[key];
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw new ConfigError(prefix + key, `one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`, show(v));
  }
  return v as T;
}

function bool(o: Obj, key: string): boolean {
  const v = o[key];
  if (typeof v !== 'boolean') throw new ConfigError(key, 'a boolean', show(v));
  return v;
}

function isPowerOfTwo(n: number): boolean {
  return n >= 1 && (n & (n - 1)) === 0;
}

function parseRopeScaling(v: unknown): RopeScaling | null {
  if (v === null) return null;
  if (!isObject(v)) throw new ConfigError('rope_scaling', 'an object or null', show(v));
  const p = 'rope_scaling.';
  // HF spells the kind `type` (V3 configs) or `rope_type` (newer configs)
  const kind = v.type ?? v.rope_type;
  if (kind !== 'yarn') throw new ConfigError(`${p}type`, '"yarn"', show(kind));
  const factor = num(v, 'factor', p, true);
  if (factor < 1) throw new ConfigError(`${p}factor`, 'a number ≥ 1', show(factor));
  return {
    type: 'yarn',
    factor,
    original_max_position_embeddings: int(v, 'original_max_position_embeddings', p, 1),
    beta_fast: num(v, 'beta_fast', p, true),
    beta_slow: num(v, 'beta_slow', p, true),
    mscale: num(v, 'mscale', p, false),
    mscale_all_dim: num(v, 'mscale_all_dim', p, false),
  };
}

function parseQuantization(v: unknown): QuantizationConfig {
  if (!isObject(v)) throw new ConfigError('quantization_config', 'an object', show(v));
  const p = 'quantization_config.';
  const quant_method = oneOf(v, 'quant_method', p, ['fp8'] as const);
  const fmt = oneOf(v, 'fmt', p, ['e4m3'] as const);
  const activation_scheme = oneOf(v, 'activation_scheme', p, ['dynamic'] as const);
  const sf = v.scale_fmt;
  if (sf !== undefined && sf !== null && sf !== 'ue8m0') {
    throw new ConfigError(`${p}scale_fmt`, '"ue8m0", null or no key', show(sf));
  }
  const wb = v.weight_block_size;
  if (
    !Array.isArray(wb) ||
    wb.length !== 2 ||
    !wb.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 1)
  ) {
    throw new ConfigError(`${p}weight_block_size`, 'two integers ≥ 1, e.g. [128, 128]', show(wb));
  }
  return {
    quant_method,
    fmt,
    activation_scheme,
    scale_fmt: sf === 'ue8m0' ? 'ue8m0' : null,
    weight_block_size: [wb[0] as number, wb[1] as number],
  };
}

// --- Parsing ---

/** Block size of the official `act_quant` (activations are quantized per 128 values along the last dim). */
const ACT_BLOCK = 128;

/**
 * Validates a parsed `config.json` and returns the {@link ModelConfig} (only the keys dsv32 reads).
 *
 * Checks, each a {@link ConfigError} naming the key, the expectation and the value found:
 * presence and type of every key; dims ≥ 1; `first_k_dense_replace ≤ num_hidden_layers`;
 * `qk_rope_head_dim` even (RoPE rotates pairs); `qk_rope_head_dim ≤ index_head_dim` (the indexer head
 * starts with a RoPE slice of that size) and `index_head_dim` a power of two (Hadamard rotation);
 * routing: `n_routed_experts % n_group = 0`, `topk_group ≤ n_group`,
 * `num_experts_per_tok ≤ topk_group · n_routed_experts / n_group` (enough experts in the kept groups),
 * and ≥ 2 experts per group when `noaux_tc` ranks groups by their top-2 score sum with n_group > 1;
 * FP8 (`quantization_config` present): every FP8 Linear input width (`hidden_size`, `q_lora_rank`,
 * `kv_lora_rank`, `num_attention_heads·v_head_dim`, `intermediate_size`, `moe_intermediate_size`)
 * is a multiple of 128, as `act_quant` requires.
 *
 * @deviation `rope_scaling.rope_type` is accepted as a spelling of `rope_scaling.type` (newer HF configs).
 * @param json the object from `JSON.parse(config.json)`
 * @returns a fresh, validated config
 * @example
 * ```ts
 * const c = parseConfig({ ...CONFIG_671B, architectures: ['DeepseekV32ForCausalLM'] });
 * c.kv_lora_rank; // => 512
 * let message = '';
 * try {
 *   parseConfig({ ...CONFIG_671B, n_group: 3 });
 * } catch (e) {
 *   message = (e as Error).message;
 * }
 * message; // => 'parseConfig(): config key "n_group": expected a divisor of n_routed_experts (256) but got 3'
 * ```
 */
export function parseConfig(json: unknown): ModelConfig {
  if (!isObject(json)) throw new ConfigError('(root)', 'a JSON object', show(json));
  const o = json;
  const c: ModelConfig = {
    vocab_size: int(o, 'vocab_size', '', 1),
    hidden_size: int(o, 'hidden_size', '', 1),
    intermediate_size: int(o, 'intermediate_size', '', 1),
    moe_intermediate_size: int(o, 'moe_intermediate_size', '', 1),
    num_hidden_layers: int(o, 'num_hidden_layers', '', 1),
    first_k_dense_replace: int(o, 'first_k_dense_replace', '', 0),
    num_attention_heads: int(o, 'num_attention_heads', '', 1),
    n_routed_experts: int(o, 'n_routed_experts', '', 1),
    n_shared_experts: int(o, 'n_shared_experts', '', 0),
    num_experts_per_tok: int(o, 'num_experts_per_tok', '', 1),
    n_group: int(o, 'n_group', '', 1),
    topk_group: int(o, 'topk_group', '', 1),
    routed_scaling_factor: num(o, 'routed_scaling_factor', '', true),
    scoring_func: oneOf(o, 'scoring_func', '', ['sigmoid', 'softmax'] as const),
    topk_method: oneOf(o, 'topk_method', '', ['noaux_tc', 'greedy', 'group_limited_greedy'] as const),
    norm_topk_prob: bool(o, 'norm_topk_prob'),
    q_lora_rank: int(o, 'q_lora_rank', '', 1),
    kv_lora_rank: int(o, 'kv_lora_rank', '', 1),
    qk_nope_head_dim: int(o, 'qk_nope_head_dim', '', 1),
    qk_rope_head_dim: int(o, 'qk_rope_head_dim', '', 1),
    v_head_dim: int(o, 'v_head_dim', '', 1),
    index_n_heads: int(o, 'index_n_heads', '', 1),
    index_head_dim: int(o, 'index_head_dim', '', 1),
    index_topk: int(o, 'index_topk', '', 1),
    rms_norm_eps: num(o, 'rms_norm_eps', '', true),
    rope_theta: num(o, 'rope_theta', '', true),
    rope_scaling: parseRopeScaling('rope_scaling' in o ? o.rope_scaling : undefined),
    max_position_embeddings: int(o, 'max_position_embeddings', '', 1),
  };
  if (o.quantization_config !== undefined && o.quantization_config !== null) {
    c.quantization_config = parseQuantization(o.quantization_config);
  }
  checkConsistency(c);
  return c;
}

function checkConsistency(c: ModelConfig): void {
  if (c.first_k_dense_replace > c.num_hidden_layers) {
    throw new ConfigError('first_k_dense_replace', `≤ num_hidden_layers (${c.num_hidden_layers})`, show(c.first_k_dense_replace));
  }
  if (c.qk_rope_head_dim % 2 !== 0) {
    throw new ConfigError('qk_rope_head_dim', 'an even number (RoPE rotates pairs)', show(c.qk_rope_head_dim));
  }
  if (c.index_head_dim < c.qk_rope_head_dim) {
    throw new ConfigError('index_head_dim', `≥ qk_rope_head_dim (${c.qk_rope_head_dim})`, show(c.index_head_dim));
  }
  if (!isPowerOfTwo(c.index_head_dim)) {
    throw new ConfigError('index_head_dim', 'a power of two (Hadamard rotation)', show(c.index_head_dim));
  }
  if (c.n_routed_experts % c.n_group !== 0) {
    throw new ConfigError('n_group', `a divisor of n_routed_experts (${c.n_routed_experts})`, show(c.n_group));
  }
  if (c.topk_group > c.n_group) {
    throw new ConfigError('topk_group', `≤ n_group (${c.n_group})`, show(c.topk_group));
  }
  const perGroup = c.n_routed_experts / c.n_group;
  const reachable = c.topk_group * perGroup;
  if (c.num_experts_per_tok > reachable) {
    throw new ConfigError(
      'num_experts_per_tok',
      `≤ topk_group · n_routed_experts / n_group = ${c.topk_group} · ${perGroup} = ${reachable}`,
      show(c.num_experts_per_tok),
    );
  }
  if (c.topk_method === 'noaux_tc' && c.n_group > 1 && perGroup < 2) {
    throw new ConfigError(
      'n_group',
      `at most n_routed_experts / 2 = ${c.n_routed_experts / 2} (noaux_tc scores a group by its top-2 experts)`,
      show(c.n_group),
    );
  }
  const q = c.quantization_config;
  if (q) {
    const widths: [string, number][] = [
      ['hidden_size', c.hidden_size],
      ['q_lora_rank', c.q_lora_rank],
      ['kv_lora_rank', c.kv_lora_rank],
      ['num_attention_heads·v_head_dim', c.num_attention_heads * c.v_head_dim],
      ['intermediate_size', c.intermediate_size],
      ['moe_intermediate_size', c.moe_intermediate_size],
    ];
    for (const [key, w] of widths) {
      if (w % ACT_BLOCK !== 0) {
        throw new ConfigError(key, `a multiple of ${ACT_BLOCK} with FP8 quantization_config (act_quant blocks)`, show(w));
      }
    }
  }
}

// --- The released model ---

/**
 * The released DeepSeek-V3.2 (671B) `config.json` values that dsv32 reads (docs/spec-notes.md#released-config;
 * huggingface.co/deepseek-ai/DeepSeek-V3.2 `config.json`). Frozen.
 *
 * @example
 * ```ts
 * qkHeadDim(CONFIG_671B); // => 192
 * scaleFmt(CONFIG_671B); // => 'ue8m0'
 * ```
 */
export const CONFIG_671B: Readonly<ModelConfig> = Object.freeze({
  vocab_size: 129280,
  hidden_size: 7168,
  intermediate_size: 18432,
  moe_intermediate_size: 2048,
  num_hidden_layers: 61,
  first_k_dense_replace: 3,
  num_attention_heads: 128,
  n_routed_experts: 256,
  n_shared_experts: 1,
  num_experts_per_tok: 8,
  n_group: 8,
  topk_group: 4,
  routed_scaling_factor: 2.5,
  scoring_func: 'sigmoid',
  topk_method: 'noaux_tc',
  norm_topk_prob: true,
  q_lora_rank: 1536,
  kv_lora_rank: 512,
  qk_nope_head_dim: 128,
  qk_rope_head_dim: 64,
  v_head_dim: 128,
  index_n_heads: 64,
  index_head_dim: 128,
  index_topk: 2048,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  rope_scaling: Object.freeze({
    type: 'yarn',
    factor: 40,
    original_max_position_embeddings: 4096,
    beta_fast: 32,
    beta_slow: 1,
    mscale: 1.0,
    mscale_all_dim: 1.0,
  }),
  max_position_embeddings: 163840,
  quantization_config: Object.freeze({
    quant_method: 'fp8',
    fmt: 'e4m3',
    activation_scheme: 'dynamic',
    scale_fmt: 'ue8m0',
    weight_block_size: Object.freeze([128, 128]) as [number, number],
  }),
} as ModelConfig);

// --- Derived quantities (official ModelArgs / MLA.__init__) ---

/**
 * q/k head dim Dqk = qk_nope_head_dim + qk_rope_head_dim (192 in the 671B model).
 *
 * @example
 * ```ts
 * qkHeadDim(CONFIG_671B); // => 192
 * ```
 */
export function qkHeadDim(config: Pick<ModelConfig, 'qk_nope_head_dim' | 'qk_rope_head_dim'>): number {
  checkObject('qkHeadDim', 'config', config);
  return config.qk_nope_head_dim + config.qk_rope_head_dim;
}

/** The config keys {@link softmaxScale} reads (a {@link ModelConfig} has them all). */
export interface SoftmaxScaleConfig {
  qk_nope_head_dim: number;
  qk_rope_head_dim: number;
  rope_scaling: Pick<RopeScaling, 'factor' | 'mscale' | 'original_max_position_embeddings'> | null;
}

/**
 * Attention softmax scale of MLA (official `MLA.__init__`; the one formula of dsv32):
 * `Dqk^-0.5`, times `mscale²` with `mscale = 0.1 · rope_scaling.mscale · ln(factor) + 1` when YaRN is
 * active, i.e. when `maxSeqLen > original_max_position_embeddings` (the inference-time maximum, not
 * `max_position_embeddings`). Computed in float64, like the Python float it mirrors
 * (mscale from `yarnMscale` in src/rope.ts).
 *
 * @param config `qk_nope_head_dim`, `qk_rope_head_dim` and `rope_scaling` (null: no YaRN)
 * @param maxSeqLen the inference-time maximum sequence length (official `max_seq_len`, 16384 in the demo)
 * @example
 * ```ts
 * softmaxScale(CONFIG_671B, 4096); // => 0.07216878364870322
 * // YaRN active: × (0.1·ln 40 + 1)²
 * softmaxScale(CONFIG_671B, 16384); // => 0.1352337788608801
 * ```
 */
export function softmaxScale(config: SoftmaxScaleConfig, maxSeqLen: number): number {
  checkObject('softmaxScale', 'config', config);
  if (!Number.isSafeInteger(maxSeqLen) || maxSeqLen < 1) {
    throw new RangeError(`softmaxScale(): maxSeqLen must be an integer ≥ 1 but got ${maxSeqLen}`);
  }
  let scale = qkHeadDim(config) ** -0.5;
  const rs = config.rope_scaling;
  if (rs && maxSeqLen > rs.original_max_position_embeddings) {
    const mscale = yarnMscale(rs.factor, rs.mscale); // 0.1 · mscale · ln(factor) + 1
    scale *= mscale * mscale;
  }
  return scale;
}

/**
 * Activation scale format of the FP8 Linears: `'ue8m0'` (scales rounded up to powers of two) when
 * `quantization_config.scale_fmt` says so, else null (plain float32 scales, or no FP8 at all).
 *
 * @example
 * ```ts
 * scaleFmt(CONFIG_671B); // => 'ue8m0'
 * scaleFmt({ ...CONFIG_671B, quantization_config: undefined }); // => null
 * ```
 */
export function scaleFmt(config: ModelConfig): 'ue8m0' | null {
  checkObject('scaleFmt', 'config', config);
  return config.quantization_config?.scale_fmt === 'ue8m0' ? 'ue8m0' : null;
}
