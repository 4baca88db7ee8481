/**
 * The DeepSeek-V3.2 transformer as the official inference demo runs it (`inference/model.py`
 * `Block.forward`, `Transformer.forward`; docs/spec-notes.md#block):
 *
 * ```
 * h, r = embed(tokens), None
 * for each layer l:                     # Block.forward
 *   x, r = attn_norm(h, r)              #   fused residual RMSNorm: r ← h + r; x = RMSNorm(r)
 *   a    = MLA(x)                       #   MLA + DSA (src/mla.ts), per-layer latent and indexer caches
 *   x, r = ffn_norm(a, r)               #   r ← a + r
 *   h    = FFN(x)                       #   dense SwiGLU for l < first_k_dense_replace, MoE after
 * x, _ = norm(h, r)
 * logits = head(x[last])                # only the last position, head weight held in float32
 * ```
 *
 * A call processes T tokens at positions startPos..startPos+T−1: T > 1 is a prefill (MHA mode), T = 1
 * a decode step (absorbed MQA mode). FP8 checkpoints run through the same code: their Linears carry
 * `fp8: true` and `linear()` block-quantizes activations before them; embed, head, gate and the
 * indexer's weights_proj stay exact. Activations are float32 throughout.
 *
 * @module
 */
import { tf } from './backend.ts';
import type { GlobalWeights, LayerWeights } from './checkpoint.ts';
import { loadGlobalWeights, loadLayerWeights, disposeLayerWeights, disposeGlobalWeights } from './checkpoint.ts';
import { type ModelConfig, scaleFmt } from './config.ts';
import type { RoundingProbe } from './fp8.ts';
import { createMlaCache, disposeMlaCache, mlaCacheLength, mlaForward, type MlaCache, type MlaOptions } from './mla.ts';
import { moe, swigluFfn, type KeepRoutingOptions, type LayerRouting, type RoutingRecord } from './moe.ts';
import type { Deviations } from './deviations.ts';
import { rmsNormResidual } from './norms.ts';
import { asActivation, type Precision } from './precision.ts';
import type { Checkpoint } from './safetensors.ts';
import { checkArray, checkFiniteNumber, checkInteger, checkObject, checkTensors, CONFIG_LETTERS, configDims, defineContract, GLOBAL_WEIGHTS, kindOf, LAYER_WEIGHTS, MLA_CACHE, under } from './internal/contract.ts';

const EMBED_TOKENS = defineContract('embedTokens', { embed: '[V, D]' });
const BLOCK_FORWARD = defineContract(
  'blockForward',
  { h: '[T, D]', residual: { shape: '[T, D]', optional: true }, ...under('w', LAYER_WEIGHTS), ...under('cache', MLA_CACHE) },
  CONFIG_LETTERS,
);
const HEAD_LOGITS = defineContract('headLogits', { h: '[T, D]', residual: '[T, D]', ...under('global', GLOBAL_WEIGHTS) });
const MODEL_FORWARD = defineContract(
  'modelForward',
  { ...under('weights.global', GLOBAL_WEIGHTS), ...under('weights.layers[]', LAYER_WEIGHTS), ...under('cache.layers[]', MLA_CACHE) },
  CONFIG_LETTERS,
);

/** Token ids: an array-like of integers (the range is checked against the vocabulary by {@link embedTokens}). */
function checkTokens(fn: string, tokens: unknown): ArrayLike<number> {
  const t = tokens as ArrayLike<number> | null | undefined;
  if (t === null || t === undefined || typeof t !== 'object' || typeof t.length !== 'number') {
    throw new TypeError(`${fn}(): tokens must be an array of token ids but got ${kindOf(tokens)}`);
  }
  return t;
}
import { gatherRows, matMulWeightT, type WeightMatrix } from './weight_matrix.ts';

/** Every weight of the model. */
export interface ModelWeights {
  global: GlobalWeights;
  /** one record per layer, `num_hidden_layers` of them. */
  layers: LayerWeights[];
}

/** Per-layer caches (MLA latents + indexer keys), filled by prefill and decode calls. */
export interface ModelCache {
  layers: MlaCache[];
}

/** Options of {@link blockForward} and {@link modelForward}. */
export interface ModelOptions {
  config: ModelConfig;
  /** inference-time maximum sequence length (official `max_seq_len`): YaRN and the softmax scale. */
  maxSeqLen: number;
  /** MLA mode; default as the official code ('mha' iff T > 1). */
  mode?: 'mha' | 'mqa';
  /** 'sparse' (default), 'dense' or 'fast' DSA attention (src/mla.ts `MlaOptions.attention`). */
  attention?: MlaOptions['attention'];
  /** indexer RoPE layout: false (default) = V3.2 final; true = the pre-fix bug. */
  indexerRopeInterleaved?: boolean;
  /** Keep Routing: combine weights recomputed (default) or replayed when a record is supplied. */
  combine?: KeepRoutingOptions['combine'];
  /** activation precision (src/precision.ts): 'fp32' (default) or 'bf16' where the official code is bf16. */
  precision?: Precision;
  /** catalogue deviations to apply (src/deviations.ts); absent or empty = the official math. */
  deviations?: Deviations;
  /** observe every block, replace FP8 roundings ({@link ForwardProbe}); absent = the plain forward. */
  probe?: ForwardProbe;
}

/**
 * What one block computed, handed to the `layer` callback of a {@link ForwardProbe}. The tensors are valid only during the
 * callback (they are disposed right after it).
 */
export interface LayerTrace {
  /** [T, D] MLA input (after attn_norm). */
  attnIn: tf.Tensor2D;
  /** [T, Dq] q_norm(wq_a(x)). */
  qr: tf.Tensor2D;
  /** [T, S] index scores before the causal mask. */
  indexScores: tf.Tensor2D;
  /** [T, min(k, S)] int32 selected positions, ascending, −1 padded. */
  topk: tf.Tensor2D;
  /** [T, D] MLA output (after wo). */
  attnOut: tf.Tensor2D;
  /** [T, D] FFN input (after ffn_norm). */
  ffnIn: tf.Tensor2D;
  /** [T, D] FFN output. */
  ffnOut: tf.Tensor2D;
  /** MoE routing of this layer (null for a dense layer). */
  routing: LayerRouting | null;
}

/**
 * The one seam of the model forward (option `probe` of {@link blockForward} and {@link modelForward}),
 * used by the conformance suite and free for any reader who wants to look inside:
 *
 * - **observe** — `layer(l, trace)` receives every block's intermediates ({@link LayerTrace}; valid during
 *   the call only);
 * - **replace** — `rounding(site, x, q, scale)` is called at every FP8 activation quantizer of the block
 *   (src/fp8.ts `QuantSite`: the inputs of wq_a / wkv_a / indexer wk, of wq_b / indexer wq_b, the KV-latent
 *   round trip, wkv_b in MHA mode, wo, the indexer's q and k, the FFN inputs and SwiGLU products of the
 *   dense FFN, of every routed expert and of the shared expert) with `site.layer` filled in, and may
 *   return another e4m3 rounding q of the same shape. What is replaced flows on as the model's own value
 *   (the caches keep it). Nothing else can be changed.
 */
export interface ForwardProbe {
  layer?: (layer: number, trace: LayerTrace) => void;
  rounding?: RoundingProbe;
}

// --- Caches and weights ---

/**
 * Empty caches for every layer.
 *
 * @example
 * ```ts
 * import { CONFIG_671B } from 'dsv32/config';
 * createModelCache(CONFIG_671B).layers.length; // => 61
 * ```
 */
export function createModelCache(config: ModelConfig): ModelCache {
  checkObject('createModelCache', 'config', config);
  checkInteger('createModelCache', 'config.num_hidden_layers', config.num_hidden_layers, 0);
  return { layers: Array.from({ length: config.num_hidden_layers }, () => createMlaCache()) };
}

/**
 * Disposes every layer cache (latents, rope keys, indexer keys).
 *
 * @example
 * ```ts
 * import { CONFIG_671B } from 'dsv32/config';
 * const cache = createModelCache(CONFIG_671B);
 * disposeModelCache(cache);
 * cache.layers[0]!.kv; // => null
 * ```
 */
export function disposeModelCache(cache: ModelCache): void {
  checkArray('disposeModelCache', 'cache.layers', checkObject('disposeModelCache', 'cache', cache).layers);
  for (const c of cache.layers) disposeMlaCache(c);
}

/**
 * Number of cached positions: the next call's startPos.
 *
 * @example
 * ```ts
 * import { CONFIG_671B } from 'dsv32/config';
 * modelCacheLength(createModelCache(CONFIG_671B)); // => 0
 * ```
 */
export function modelCacheLength(cache: ModelCache): number {
  checkArray('modelCacheLength', 'cache.layers', checkObject('modelCacheLength', 'cache', cache).layers);
  return cache.layers[0] ? mlaCacheLength(cache.layers[0]) : 0;
}

/**
 * Loads every layer and the global weights (for small models; see src/conformance/weights.ts for
 * running a large checkpoint one layer at a time). On an error nothing stays allocated.
 *
 * @example
 * ```ts
 * import { openCheckpoint, loadConfig } from 'dsv32/node';
 * const config = loadConfig('fixtures/golden/public-fp32/config.json');
 * const w = loadModelWeights(openCheckpoint('fixtures/golden/public-fp32'), config);
 * w.layers[1]!.ffn.kind; // => 'moe'
 * disposeModelWeights(w);
 * ```
 */
export function loadModelWeights(ckpt: Checkpoint, config: ModelConfig): ModelWeights {
  checkObject('loadModelWeights', 'ckpt', ckpt);
  checkObject('loadModelWeights', 'config', config);
  const layers: LayerWeights[] = [];
  try {
    for (let l = 0; l < config.num_hidden_layers; l++) layers.push(loadLayerWeights(ckpt, config, l));
    return { global: loadGlobalWeights(ckpt, config), layers };
  } catch (e) {
    layers.forEach(disposeLayerWeights);
    throw e;
  }
}

/**
 * Disposes every tensor of {@link loadModelWeights}' result.
 *
 * @example
 * ```ts
 * import { openCheckpoint, loadConfig } from 'dsv32/node';
 * const w = loadModelWeights(openCheckpoint('fixtures/golden/public-fp32'), loadConfig('fixtures/golden/public-fp32/config.json'));
 * disposeModelWeights(w);
 * w.global.embed.isDisposed; // => true
 * ```
 */
export function disposeModelWeights(w: ModelWeights): void {
  checkArray('disposeModelWeights', 'w.layers', checkObject('disposeModelWeights', 'w', w).layers);
  w.layers.forEach(disposeLayerWeights);
  disposeGlobalWeights(w.global);
}

// --- Embedding ---

/**
 * Embedding lookup h = E[tokens] (official `ParallelEmbedding`).
 *
 * @param tokens T token ids in [0, V)
 * @param embed [V, D]
 * @returns [T, D]
 * @throws RangeError when a token id is not an integer in [0, V)
 * @example
 * ```ts
 * embedTokens([1, 0], tf.tensor2d([[1, 2], [3, 4]])).arraySync(); // => [[3, 4], [1, 2]]
 * ```
 */
export function embedTokens(tokens: ArrayLike<number>, embed: WeightMatrix): tf.Tensor2D {
  checkTokens('embedTokens', tokens);
  const { V } = checkTensors(EMBED_TOKENS, { embed }) as Record<'V', number>;
  const ids = Int32Array.from(tokens as ArrayLike<number>);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (!Number.isInteger(t) || t < 0 || t >= V) {
      throw new RangeError(`embedTokens(): token ids must be integers in [0, ${V}) but tokens[${i}] = ${t}`);
    }
  }
  return tf.tidy(() => gatherRows(embed, ids));
}

// --- Block (official Block.forward) ---

/**
 * One transformer block: fused residual RMSNorm, MLA + DSA, fused residual RMSNorm, FFN.
 * `r' = h + r` (just `h` in the first block, `residual = null`), `x = attn_norm(r')`,
 * `a = MLA(x)`, `r'' = a + r'`, `f = FFN(ffn_norm(r''))`; returns `out = f` and `residual = r''`.
 *
 * @param h [T, D] previous block's FFN output (the embedding for layer 0)
 * @param residual [T, D] residual stream, or null in the first block
 * @param w the layer's weights
 * @param cache the layer's MLA cache (holds startPos positions; grows by T)
 * @param startPos absolute position of the first row
 * @param opts model options; `routing` = this layer's Keep Routing record; `layer` = this block's index
 *   (default 0), reported to the `probe` ({@link ForwardProbe})
 * @returns `out` [T, D], `residual` [T, D] (owned by the caller), `routing` (null for a dense layer)
 * @example
 * ```ts
 * import { openCheckpoint, loadConfig } from 'dsv32/node';
 * import { loadLayerWeights, disposeLayerWeights } from 'dsv32/checkpoint';
 * import { createMlaCache, disposeMlaCache } from 'dsv32/mla';
 * const config = loadConfig('fixtures/golden/public-fp8/config.json');
 * const layer = loadLayerWeights(openCheckpoint('fixtures/golden/public-fp8'), config, 1);
 * const cache = createMlaCache();
 * const h = tf.randomNormal([4, 256], 0, 1, 'float32', 1) as tf.Tensor2D;
 * const b = blockForward(h, null, layer, cache, 0, { config, maxSeqLen: 8192 });   // layer 1 as the first block
 * b.out.shape; // => [4, 256]
 * b.routing!.indices.length; // => 8   (T · Ek)
 * disposeMlaCache(cache);
 * disposeLayerWeights(layer);
 * ```
 */
export function blockForward(
  h: tf.Tensor2D,
  residual: tf.Tensor2D | null,
  w: LayerWeights<WeightMatrix>,
  cache: MlaCache,
  startPos: number,
  opts: ModelOptions & { routing?: LayerRouting; layer?: number },
): { out: tf.Tensor2D; residual: tf.Tensor2D; routing: LayerRouting | null } {
  checkObject('blockForward', 'w', w);
  checkObject('blockForward', 'cache', cache);
  checkObject('blockForward', 'opts', opts);
  const { config, precision } = opts;
  checkTensors(BLOCK_FORWARD, { h, residual, w, cache }, configDims('blockForward', config));
  checkInteger('blockForward', 'startPos', startPos, 0);
  const eps = config.rms_norm_eps;
  const layer = opts.layer ?? 0;
  const rounding = roundingAt(opts.probe, layer);
  let routing: LayerRouting | null = null;
  const block = tf.tidy(() => {
    const n1 = normInActivationDtype(h, residual, w.attn_norm, eps, precision); // r ← h + r;  x = attn_norm(r)
    const att = mlaForward(n1.out as tf.Tensor2D, w.attn, cache, startPos, { ...opts, probe: rounding }); // a = MLA(x)
    const n2 = normInActivationDtype(att.out, n1.residual, w.ffn_norm, eps, precision); // r ← a + r;  x = ffn_norm(r)
    const ffn = ffnForward(n2.out as tf.Tensor2D, w.ffn, opts, rounding); // f = FFN(x)
    routing = ffn.routing;
    const trace = { attnIn: n1.out, qr: att.qr, indexScores: att.indexScores, topk: att.topk, attnOut: att.out, ffnIn: n2.out, ffnOut: ffn.out, routing };
    opts.probe?.layer?.(layer, trace as LayerTrace);
    return { out: ffn.out, residual: n2.residual as tf.Tensor2D };
  });
  return { ...block, routing };
}

/** FFN(x) [T, D]: the dense SwiGLU of the first `first_k_dense_replace` layers, the MoE after (with its routing). */
function ffnForward(
  x: tf.Tensor2D, ffn: LayerWeights<WeightMatrix>['ffn'], opts: ModelOptions & { routing?: LayerRouting }, probe: RoundingProbe | undefined,
): { out: tf.Tensor2D; routing: LayerRouting | null } {
  const { precision, deviations } = opts;
  if (ffn.kind === 'dense') return { out: swigluFfn(x, ffn.dense, scaleFmt(opts.config), { precision, probe }), routing: null };
  return moe(x, ffn.moe, opts.config, { routing: opts.routing, combine: opts.combine, precision, deviations, probe });
}

/** The model probe's rounding callback for one layer (the site told its layer), or undefined. */
function roundingAt(probe: ForwardProbe | undefined, layer: number): RoundingProbe | undefined {
  const rounding = probe?.rounding;
  return rounding && ((site, x, q, scale) => rounding({ ...site, layer }, x, q, scale));
}

/**
 * The fused residual RMSNorm of {@link norms!rmsNormResidual} with both results in the activation dtype
 * (official `RMSNorm.forward`: float32 inside, `.to(dtype)` on the output and on the residual).
 */
function normInActivationDtype(
  x: tf.Tensor,
  residual: tf.Tensor | null,
  weight: tf.Tensor1D,
  eps: number,
  precision: Precision | undefined,
): { out: tf.Tensor; residual: tf.Tensor } {
  const n = rmsNormResidual(x, residual, weight, eps);
  if (precision !== 'bf16') return n;
  const rounded = { out: asActivation(n.out, precision), residual: asActivation(n.residual, precision) };
  tf.dispose([n.out, n.residual]);
  return rounded;
}

// --- Head (official Transformer.forward tail) ---

/**
 * Final fused norm and output head: `x = norm(h + r)`, `logits = head · x` (head weight exact, no
 * activation quantization).
 *
 * @param h [T, D] last block's FFN output
 * @param residual [T, D] residual stream
 * @param global embed / norm / head
 * @param eps `rms_norm_eps`
 * @param positions 'last' (official: only the last position) or 'all'
 * @param precision 'bf16' rounds the normalized input to bf16 (official `self.norm(x)` in bf16, then
 *   `.float()` for the float32 head); default 'fp32'
 * @returns [1, V] or [T, V]
 * @example
 * ```ts
 * const g = { embed: tf.zeros([2, 2]), norm: tf.ones([2]), head: tf.tensor2d([[1, 0], [0, 1]]) };
 * headLogits(tf.tensor2d([[3, 0]]), tf.tensor2d([[0, 4]]), g, 0).arraySync(); // => [[0.8485281, 1.1313709]]
 * ```
 */
export function headLogits(
  h: tf.Tensor2D,
  residual: tf.Tensor2D,
  global: GlobalWeights<WeightMatrix>,
  eps: number,
  positions: 'last' | 'all' = 'last',
  precision: Precision = 'fp32',
): tf.Tensor2D {
  checkObject('headLogits', 'global', global);
  const { T } = checkTensors(HEAD_LOGITS, { h, residual, global }) as Record<'T', number>;
  checkFiniteNumber('headLogits', 'eps', eps);
  if (positions !== 'last' && positions !== 'all') throw new TypeError(`headLogits(): positions must be 'last' or 'all' but got ${kindOf(positions)}`);
  if (T < 1) throw new RangeError(`headLogits(): h must hold at least one position but got [${h.shape.join(', ')}]`);
  return tf.tidy(() => {
    const out = asActivation(rmsNormResidual(h, residual, global.norm, eps).out, precision);
    const T = out.shape[0]!;
    const x = positions === 'last' ? tf.slice(out, [T - 1, 0], [1, -1]) : out; // [1 or T, D]
    return matMulWeightT(x as tf.Tensor2D, global.head); // [1 or T, V]
  });
}

// --- Model (official Transformer.forward) ---

/**
 * One model call on T tokens at positions startPos..startPos+T−1 (prefill when T > 1, decode step when
 * T = 1), updating every layer's cache. Prefill of n tokens ≡ prefill of m + (n − m) decode steps, up
 * to float32 rounding (test/model.test.ts).
 *
 * Keep Routing: `opts.routing` (e.g. {@link moe!concatRoutingRecords} of the sampling passes) enforces the
 * recorded experts in every MoE layer; the returned `routing` is this pass's record either way.
 *
 * @param tokens T token ids
 * @param weights all layers + globals
 * @param cache per-layer caches holding exactly startPos positions
 * @param startPos absolute position of the first token
 * @param opts model options, plus `routing` and `logits` ('last' default | 'all'); `probe` observes every
 *   block and may replace FP8 roundings ({@link ForwardProbe})
 * @returns `logits` [1, V] (or [T, V]), `routing` record of the MoE layers
 * @throws RangeError for bad tokens, a cache that does not hold startPos positions, or a record that
 *   lacks a MoE layer
 * @example
 * ```ts
 * import { openCheckpoint, loadConfig } from 'dsv32/node';
 * const config = loadConfig('fixtures/golden/public-fp32/config.json');
 * const w = loadModelWeights(openCheckpoint('fixtures/golden/public-fp32'), config);
 * const cache = createModelCache(config);
 * const pre = modelForward([5, 6, 7], w, cache, 0, { config, maxSeqLen: 8192 });   // prefill
 * const dec = modelForward([8], w, cache, 3, { config, maxSeqLen: 8192 });         // one decode step
 * dec.logits.shape; // => [1, 512]
 * Object.keys(pre.routing.layers); // => ['1', '2']
 * disposeModelCache(cache);
 * disposeModelWeights(w);
 * ```
 */
export function modelForward(
  tokens: ArrayLike<number>,
  weights: ModelWeights,
  cache: ModelCache,
  startPos: number,
  opts: ModelOptions & {
    routing?: RoutingRecord;
    logits?: 'last' | 'all';
  },
): { logits: tf.Tensor2D; routing: RoutingRecord } {
  checkTokens('modelForward', tokens);
  checkObject('modelForward', 'weights', weights);
  checkArray('modelForward', 'weights.layers', weights.layers);
  checkObject('modelForward', 'cache', cache);
  checkArray('modelForward', 'cache.layers', cache.layers);
  checkObject('modelForward', 'opts', opts);
  const { config } = opts;
  checkTensors(MODEL_FORWARD, { weights, cache }, configDims('modelForward', config));
  checkInteger('modelForward', 'startPos', startPos, 0);
  const T = tokens.length;
  if (T < 1) throw new RangeError('modelForward(): tokens must hold at least 1 id but got 0');
  if (weights.layers.length !== config.num_hidden_layers || cache.layers.length !== config.num_hidden_layers) {
    throw new RangeError(
      `modelForward(): weights and cache must have num_hidden_layers=${config.num_hidden_layers} layers but have ${weights.layers.length} and ${cache.layers.length}`,
    );
  }
  const cached = modelCacheLength(cache);
  if (cached !== startPos) throw new RangeError(`modelForward(): startPos must equal the cached length ${cached} but got ${startPos}`);
  // validate the whole record first: a failure must not leave some layers' caches advanced
  weights.layers.forEach((w, l) => {
    if (opts.routing && w.ffn.kind === 'moe' && !opts.routing.layers[l]) {
      throw new RangeError(`modelForward(): routing record has no entry for MoE layer ${l}`);
    }
  });
  const record: RoutingRecord = { tokens: T, layers: {} };
  let h = embedTokens(tokens, weights.global.embed);
  if (opts.precision === 'bf16') {
    const embedded = h;
    h = asActivation(embedded, 'bf16') as tf.Tensor2D; // official: the embedding table is bf16
    embedded.dispose();
  }
  let residual: tf.Tensor2D | null = null;
  try {
    for (let l = 0; l < config.num_hidden_layers; l++) {
      const w = weights.layers[l]!;
      const layerRouting = opts.routing?.layers[l];
      const { routing: _record, logits: _positions, ...modelOpts } = opts;
      const b = blockForward(h, residual, w, cache.layers[l]!, startPos, {
        ...modelOpts,
        layer: l,
        ...(layerRouting ? { routing: layerRouting } : {}),
      });
      h.dispose();
      residual?.dispose();
      h = b.out;
      residual = b.residual;
      if (b.routing) record.layers[l] = b.routing;
    }
    return { logits: headLogits(h, residual!, weights.global, config.rms_norm_eps, opts.logits ?? 'last', opts.precision), routing: record };
  } finally {
    h.dispose();
    residual?.dispose();
  }
}
