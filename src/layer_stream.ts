/**
 * The model run over a released checkpoint one layer at a time, with resident weights
 * (src/resident.ts): the same `Transformer.forward` as src/model.ts `modelForward`, but no layer is
 * held beyond its own block call, and none is ever dequantized whole.
 *
 * ```
 * per model call (a prefill of T tokens, or a decode step, T = 1, at the next position):
 *   h = E[tokens]                         only these rows of the embedding are read (by byte offset)
 *   for l = 0 .. last:
 *     W_l = stored bytes of layer l        attention, shared expert or dense FFN; experts not read yet
 *     h, r = Block_l(h, r; cache_l)        each product dequantizes one band of W at a time; the MoE
 *                                          reads from the shards only the experts its gate picked
 *     release W_l
 *   logits = head(norm(h + r)[last])      the head in bands of vocabulary rows
 * ```
 *
 * The caches (`cache_l`, latents and indexer keys) stay between calls, so a run is a prefill followed
 * by decode steps exactly as with {@link model!modelForward}. A {@link resident!MemoryMeter} records
 * the peak bytes held while each layer ran (weights in JS + every live backend tensor, caches included).
 *
 * @module
 */
import { tf } from './backend.ts';
import { disposeGlobalWeights, disposeLayerWeights, loadResidentGlobals, loadResidentLayer, type ResidentLayerWeights } from './checkpoint.ts';
import type { ModelConfig } from './config.ts';
import { createMlaCache, disposeMlaCache, mlaCacheLength, type MlaCache, type MlaOptions } from './mla.ts';
import { blockForward, embedTokens, headLogits, type LayerTrace } from './model.ts';
import { MemoryMeter } from './resident.ts';
import type { Checkpoint } from './safetensors.ts';
import { checkArray, checkInteger, checkObject } from './internal/contract.ts';

/** The caches of layers 0..last, kept between the calls of one run. */
export interface StreamState {
  caches: MlaCache[];
}

/** What one layer of a streamed call reports. */
export interface StreamedLayer {
  layer: number;
  kind: 'dense' | 'moe';
  /** [T, D] the residual stream after the block */
  residual: tf.Tensor2D;
  /** peak bytes held while the layer ran: its weights in JS + live backend tensors */
  peakBytes: number;
}

/** Options of {@link streamCall}. */
export interface StreamOptions {
  config: ModelConfig;
  /** inference-time maximum sequence length (official `max_seq_len`) */
  maxSeqLen: number;
  /** the last layer to run (the layers before it run too: each one's input is the previous one's output) */
  last: number;
  /** compute the last position's logits (needs `last` = num_hidden_layers − 1) */
  logits: boolean;
  /** attention kernels (src/mla.ts `MlaOptions.attention`); default 'sparse' */
  attention?: MlaOptions['attention'];
  /**
   * At most this many tokens per block call: a longer prefill runs, layer by layer, as consecutive
   * prefills over the same cache with the layer's weights loaded once (prefill of n ≡ prefill of m +
   * prefill of n − m, src/mla.ts), which bounds its activations. `onTrace` then sees each chunk, and
   * the MoE reads its picked experts once per chunk. Default: the whole call at once.
   */
  chunk?: number;
  meter?: MemoryMeter;
  /** sees the block's internals while its weights are loaded (tensors valid during the callback) */
  onTrace?: (layer: number, w: ResidentLayerWeights, t: LayerTrace) => void;
  /**
   * Runs one block instead of {@link model!blockForward} (same contract; e.g. the conformance run's
   * steered block, src/conformance/fp8/steer.ts). `onTrace` is then not called.
   */
  block?: (layer: number, w: ResidentLayerWeights, h: tf.Tensor2D, residual: tf.Tensor2D | null, cache: MlaCache, startPos: number) => { out: tf.Tensor2D; residual: tf.Tensor2D };
  /** after each layer, with its weights still loaded */
  onLayer?: (w: ResidentLayerWeights, done: StreamedLayer) => void;
}

/**
 * Empty caches for layers 0..last.
 *
 * @example
 * ```ts
 * createStreamState(2).caches.length; // => 3
 * ```
 */
export function createStreamState(last: number): StreamState {
  checkInteger('createStreamState', 'last', last, 0);
  return { caches: Array.from({ length: last + 1 }, () => createMlaCache()) };
}

/**
 * Frees every cache.
 *
 * @example
 * ```ts
 * const s = createStreamState(0);
 * disposeStreamState(s);
 * s.caches[0]!.kv; // => null
 * ```
 */
export function disposeStreamState(s: StreamState): void {
  checkArray('disposeStreamState', 's.caches', checkObject('disposeStreamState', 's', s).caches);
  for (const c of s.caches) disposeMlaCache(c);
}

/**
 * One model call on T tokens at the next position (prefill when the caches are empty and T > 1, a
 * decode step when T = 1), streamed layer by layer (see the module comment).
 *
 * @param ckpt an open checkpoint in the released format
 * @param tokens T token ids in [0, vocab_size)
 * @param state caches of layers 0..last (from {@link createStreamState}); each grows by T
 * @returns `logits` [V] of the last position when asked, else null
 * @throws CheckpointError for a missing or misshapen tensor (nothing stays allocated but the caches)
 * @example
 * ```ts
 * import { loadConfig, openCheckpoint } from 'dsv32/node';
 * const config = loadConfig('fixtures/golden/public-fp8/config.json');
 * const ckpt = openCheckpoint('fixtures/golden/public-fp8');
 * const state = createStreamState(config.num_hidden_layers - 1);
 * const opts = { config, maxSeqLen: 8192, last: config.num_hidden_layers - 1, logits: true };
 * streamCall(ckpt, [5, 6, 7], state, opts);                  // prefill
 * streamCall(ckpt, [8], state, opts).logits!.length; // => 512
 * disposeStreamState(state);
 * ckpt.close();
 * ```
 */
export function streamCall(ckpt: Checkpoint, tokens: number[], state: StreamState, opts: StreamOptions): { logits: Float32Array | null } {
  checkObject('streamCall', 'ckpt', ckpt);
  checkArray('streamCall', 'tokens', tokens);
  checkObject('streamCall', 'state', state);
  checkObject('streamCall', 'opts', opts);
  const { config, last } = opts;
  if (opts.logits && last !== config.num_hidden_layers - 1) {
    throw new RangeError(`streamCall(): logits need every layer (last = ${config.num_hidden_layers - 1}) but last = ${last}`);
  }
  if (state.caches.length !== last + 1) throw new RangeError(`streamCall(): state must hold ${last + 1} caches but holds ${state.caches.length}`);
  const meter = opts.meter ?? new MemoryMeter();
  const startPos = mlaCacheLength(state.caches[0]!);
  const globals = loadResidentGlobals(ckpt, config, meter);
  let h: tf.Tensor2D | null = null;
  let residual: tf.Tensor2D | null = null;
  try {
    h = embedTokens(tokens, globals.embed); // [T, D], only the tokens' rows read
    meter.restart();
    for (let l = 0; l <= last; l++) {
      const w = loadResidentLayer(ckpt, config, l, meter);
      try {
        const cache = state.caches[l]!;
        const b = chunkedBlock(h, residual, startPos, opts.chunk ?? tokens.length, (x, r, pos) =>
          opts.block
            ? opts.block(l, w, x, r, cache, pos)
            : blockForward(x, r, w, cache, pos, {
                config,
                maxSeqLen: opts.maxSeqLen,
                ...(opts.attention ? { attention: opts.attention } : {}),
                ...(opts.onTrace ? { probe: { layer: (_l: number, t: LayerTrace) => opts.onTrace!(l, w, t) } } : {}),
              }),
        );
        h.dispose();
        residual?.dispose();
        h = b.out;
        residual = b.residual;
        meter.sample();
        opts.onLayer?.(w, { layer: l, kind: w.ffn.kind, residual, peakBytes: meter.peak });
      } finally {
        disposeLayerWeights(w);
      }
      meter.restart();
    }
    if (!opts.logits) return { logits: null };
    const logits = headLogits(h, residual!, globals, config.rms_norm_eps); // [1, V], head read in bands
    const values = Float32Array.from(logits.dataSync());
    logits.dispose();
    return { logits: values };
  } finally {
    h?.dispose();
    residual?.dispose();
    disposeGlobalWeights(globals);
  }
}

/**
 * One block over T rows in consecutive chunks of at most `chunk` rows at positions startPos + a:
 * `out` and `residual` [T, D] are the chunks' outputs in order.
 */
function chunkedBlock(
  h: tf.Tensor2D, residual: tf.Tensor2D | null, startPos: number, chunk: number,
  block: (x: tf.Tensor2D, r: tf.Tensor2D | null, pos: number) => { out: tf.Tensor2D; residual: tf.Tensor2D },
): { out: tf.Tensor2D; residual: tf.Tensor2D } {
  const T = h.shape[0];
  if (T <= chunk) return block(h, residual, startPos);
  const outs: tf.Tensor2D[] = [];
  const residuals: tf.Tensor2D[] = [];
  try {
    for (let a = 0; a < T; a += chunk) {
      const n = Math.min(chunk, T - a);
      const x = tf.slice(h, [a, 0], [n, -1]) as tf.Tensor2D;
      const r = residual ? (tf.slice(residual, [a, 0], [n, -1]) as tf.Tensor2D) : null;
      try {
        const b = block(x, r, startPos + a);
        outs.push(b.out);
        residuals.push(b.residual);
      } finally {
        tf.dispose([x, ...(r ? [r] : [])]);
      }
    }
    return { out: tf.concat(outs, 0) as tf.Tensor2D, residual: tf.concat(residuals, 0) as tf.Tensor2D };
  } finally {
    tf.dispose([...outs, ...residuals]);
  }
}
