/**
 * Fast kernels for DeepSeek Sparse Attention on the tfjs backends (wasm first): the same math as the
 * reference functions of src/sparse_attention.ts, src/indexer.ts and src/topk.ts, arranged so that the
 * arithmetic runs in the one fast kernel tfjs-wasm has — a 2-D, untransposed `matMul` (XNNPACK
 * fully-connected) — and everything else is a single pass in plain TypeScript.
 *
 * What tfjs-backend-wasm 4.22 offers (measured; docs/performance.md):
 * - `matMul(a [M, K], b [K, N])` with no transpose and no batch dimension runs on XNNPACK (≈ 20–40
 *   GFLOP/s of CPU time on one core here). Any batch dimension or transpose flag falls back to a naive
 *   triple loop (< 1 GFLOP/s). XNNPACK repacks `b` whenever `b` is a new tensor (a few ns per element)
 *   and keeps the packed form while that tensor lives, so the big operand must be `a`, or a `b` that
 *   stays the same tensor across blocks and calls.
 * - `transpose` and `gather` (GatherV2) cost 20–100 ns per element; `gatherND` is a fast row copy.
 * - No threads in Node (tfjs issue #3830: `WASM_HAS_MULTITHREAD_SUPPORT` is false under Node), hence
 *   the pool below.
 *
 * Hence, for sparse attention on wasm, two WebAssembly SIMD kernels of dsv32's own (src/wasm/sparse_mqa.c,
 * loaded by src/sparse_wasm.ts on the backend's memory) that read each query's selected latents in place
 * for all H heads at once (MQA): the gather fused into both GEMMs, as FlashMLA does on GPUs. Elsewhere:
 * gather the selected latents once (`gatherND` or row copies), give them to XNNPACK as the left operand,
 * do the softmax in TypeScript, and transpose the gathered latents in TypeScript (cache-blocked) so the
 * weighted sum is again "big operand on the left" (bench/sparse-layouts.ts measures the arrangements tried).
 *
 * Threads: every function takes an optional `pool` (src/threads.ts creates one under Node with worker
 * threads over shared memory, one tfjs instance each). The work is cut into units (src/sparse_kernels.ts, src/sparse_units.ts)
 * that compute the same arithmetic whichever thread runs them, so the results are bit-identical to one
 * thread. This module itself imports nothing from Node and runs in a browser.
 *
 * Shape letters: docs/conventions.md (T queries, S key positions, K selected slots, H heads, C latent,
 * R rope dim, D = C + R, HI/DI indexer heads/dims).
 */
import { tf } from './backend.ts';
import { checkFiniteNumber, checkInteger, checkQueryPositions, checkTensors, defineContract, MQA_ARGS } from './internal/contract.ts';
import { callerEnv } from './kernel_env.ts';
import { denseUnitCount, denseUnits, indexerUnitCount, indexerUnits, topkUnits, type KernelArgs, type KernelName } from './sparse_kernels.ts';
import { sparseUnits, transposeBlock } from './sparse_units.ts';

const SPARSE_MQA_FAST = defineContract('sparseAttentionMqaFast', MQA_ARGS);
const DENSE_MQA_FAST = defineContract('denseAttentionMqaFast', MQA_ARGS);
const INDEXER_SCORES_FAST = defineContract('indexerScoresFast', { q: '[T, HI, DI]', weights: '[T, HI]', keys: '[S, DI]', keyScales: '[S]' });
const SELECT_TOPK_FAST = defineContract('selectTopKFast', { scores: '[T, S]' });

/**
 * Threads that run the units of a kernel of src/sparse_kernels.ts over shared memory. Node:
 * `createKernelPool()` of src/threads.ts. Calls are synchronous: `run` returns when every unit is done.
 */
export interface KernelPool {
  /** how many threads compute (the calling thread only dispatches and waits). */
  readonly threads: number;
  /** The data of `t` in memory every thread reads, copied once per tensor (tensors are immutable). */
  shareTensor(t: tf.Tensor): Float32Array | Int32Array;
  /** A copy of `data` in shared memory. */
  share<A extends Float32Array | Int32Array>(data: A): A;
  /** A zero-filled array of n elements in shared memory. */
  allocFloat32(n: number): Float32Array;
  allocInt32(n: number): Int32Array;
  /** Runs the kernel over units [0, units), split into one contiguous range per thread. */
  run<N extends KernelName>(name: N, args: KernelArgs[N], units: number): void;
}

/** Options of every fast kernel. */
export interface FastOptions {
  /** run on these threads (default: the calling thread only). */
  pool?: KernelPool;
}

/** Options of {@link sparseAttentionMqaFast}. */
export interface FastGatherOptions extends FastOptions {
  /**
   * Where the selected rows are read from. `'host'`: copy the whole cache to JS once per call (cheap
   * per query; O(S·D) per call). `'device'`: read each query's rows on the backend (O(K·D) per query; on
   * wasm the SIMD kernels read them in place, elsewhere `gatherND` gathers them and they are read back).
   * Default `'auto'`: device on wasm; elsewhere host when T·K ≥ S. With a pool, workers read the
   * pool's shared copy of the cache (made once per tensor), as host rows or as a tensor of their own.
   */
  rows?: 'auto' | 'host' | 'device';
  /**
   * When given (length 6, one thread only), accumulates the milliseconds spent per phase:
   * operands, GEMM 1, softmax, transpose, GEMM 2, output (SPARSE_PHASES of src/sparse_units.ts; on wasm the
   * gather runs inside the two GEMM kernels and the transpose phase is 0).
   */
  profile?: Float64Array;
}

// --- Sparse attention, MQA / absorbed mode (Eq. 2 over the gathered latents) ---

/**
 * Sparse MQA attention over the latent cache — same contract and result as `sparseAttentionMqa`
 * (src/sparse_attention.ts), computed query by query with two GEMMs shared by all heads (on wasm the
 * SIMD kernels of src/wasm/sparse_mqa.c, which read G in place; elsewhere XNNPACK or the backend's matMul).
 * For query t with valid slots s_1..s_n (`0 ≤ s_j ≤ t`, in the order given; −1 and future positions
 * are skipped and never read):
 *
 *   G = [c_{s_j} ; k_pe_{s_j}]_j                      [n, D]   read once per GEMM, serves all H heads
 *   zᵀ = G · [q̃_t ; q_pe_t]ᵀ                           [n, H]   GEMM 1: 2·n·D·H FLOPs
 *   p[h, j] = softmax_j(scale · z[h, j])               over the n valid slots only
 *   ōᵀ = Gcᵀ · pᵀ                                       [C, H]   GEMM 2: 2·n·C·H FLOPs (Gc = G[:, :C])
 *
 * FLOPs per (query, valid slot) = 2H(D + C) = 2H(576 + 512) at the 671B dims (the FlashMLA convention,
 * docs/spec-notes.md#flop-model). Memory: O(K·D) per query plus the output; with `rows: 'host'` also one copy of the cache.
 * A row with no valid slot gives NaN (softmax over nothing), as the reference and the official code.
 *
 * @param qLatent [T, H, C] absorbed no-rope queries q̃ = W_UKᵀ q_nope
 * @param qPe [T, H, R] rotated rope queries
 * @param kv [S, C] latent cache; @param pe [S, R] rotated rope keys
 * @param selected [T, K] int32 selected positions (any order, −1 = padding); row i is query t = startPos + i
 * @param startPos absolute position of query row 0
 * @param scale softmax scale
 * @returns ō [T, H, C]
 * @example
 * ```ts
 * const o = sparseAttentionMqaFast(tf.ones([1, 1, 2]), tf.zeros([1, 1, 1]), tf.tensor2d([[1, 0], [0, 1]]),
 *   tf.zeros([2, 1]), tf.tensor2d([[0, 1]], [1, 2], 'int32'), 1, 1);
 * o.arraySync(); // [[[0.5, 0.5]]]
 * ```
 */
export function sparseAttentionMqaFast(
  qLatent: tf.Tensor3D,
  qPe: tf.Tensor3D,
  kv: tf.Tensor2D,
  pe: tf.Tensor2D,
  selected: tf.Tensor2D,
  startPos: number,
  scale: number,
  opts: FastGatherOptions = {},
): tf.Tensor3D {
  const fn = 'sparseAttentionMqaFast';
  const { T, H, C, R, S, K } = checkTensors(SPARSE_MQA_FAST, { qLatent, qPe, kv, pe, selected }) as Record<'T' | 'H' | 'C' | 'R' | 'S' | 'K', number>;
  checkQueryPositions(fn, startPos, S, T, 'S from kv, T from qLatent');
  checkFiniteNumber(fn, 'scale', scale);
  const D = C + R;
  const rowsMode = opts.rows ?? 'auto';
  if (!['auto', 'host', 'device'].includes(rowsMode)) {
    throw new RangeError(`${fn}(): opts.rows must be 'auto', 'host' or 'device' but got '${String(rowsMode)}'`);
  }
  // rows from a host copy of the cache only where that is cheaper: never on wasm, whose gather runs in its own memory
  const hostMode = rowsMode === 'host' || (rowsMode === 'auto' && T * K >= S && tf.getBackend() !== 'wasm');
  const pool = opts.pool && T > 1 ? opts.pool : undefined;
  const args = {
    T, H, C, R, S, K, startPos, scale, kvId: kv.id, peId: pe.id, gather: hostMode ? ('host' as const) : ('backend' as const),
    qL: hostData(qLatent, pool) as Float32Array,
    qR: hostData(qPe, pool) as Float32Array,
    slots: hostData(selected, pool) as Int32Array,
    kv: pool ? (pool.shareTensor(kv) as Float32Array) : hostMode ? (kv.dataSync() as Float32Array) : null,
    pe: pool ? (pool.shareTensor(pe) as Float32Array) : hostMode ? (pe.dataSync() as Float32Array) : null,
    out: pool ? pool.allocFloat32(T * H * C) : new Float32Array(T * H * C),
    profile: pool ? undefined : opts.profile,
  };
  if (pool) pool.run('sparse', args, T);
  else sparseUnits(args, callerEnv(new Map([[kv.id, kv], [pe.id, pe]])), 0, T);
  return tf.tensor3d(args.out, [T, H, C]);
}

// --- Dense masked attention, MQA mode (the official decode-branch computation) ---

/**
 * Dense masked MQA attention — same contract and result as `denseAttentionMqa` (src/sparse_attention.ts):
 * every query scores every key position, then `M[t,s] = 0` if s is selected and s ≤ t, −∞ otherwise:
 *
 *   Zᵀ = kv · Q̃ᵀ + pe · Q_peᵀ     [S, Tb·H]   (a block of Tb queries × H heads as columns)
 *   P = exp(scale · Z + M − max)            ō = (P · kv) / Σ_s P   [Tb·H, C]
 *
 * Arranged for XNNPACK without touching the cache: kv and pe are the left operands of the score GEMMs
 * (never transposed or repacked), and kv is the right operand of the weighted sum, which XNNPACK packs once
 * per kv tensor and keeps while the tensor lives (a decode loop that builds a new cache tensor every step
 * pays that packing every step). Blocks of Tb queries keep Z ≤ 32 MiB. With T = 1 and every position
 * selected this is one dense decode step (V3.1's absorbed MQA over all S latents).
 * FLOPs: T · S · 2H(D + C) (every position, selected or not: that is what "dense masked" costs).
 * With a pool, blocks (or, for fewer blocks than threads, head groups of a block) run on the threads.
 *
 * @param qLatent [T, H, C]; @param qPe [T, H, R]; @param kv [S, C]; @param pe [S, R]
 * @param selected [T, K] int32 selected positions (−1 = padding); @param startPos position of row 0
 * @param scale softmax scale
 * @returns ō [T, H, C]
 * @example
 * ```ts
 * denseAttentionMqaFast(tf.ones([1, 1, 2]), tf.zeros([1, 1, 1]), tf.tensor2d([[1, 0], [0, 1]]), tf.zeros([2, 1]),
 *   tf.tensor2d([[0, 1]], [1, 2], 'int32'), 1, 1).arraySync(); // [[[0.5, 0.5]]]
 * ```
 */
export function denseAttentionMqaFast(
  qLatent: tf.Tensor3D,
  qPe: tf.Tensor3D,
  kv: tf.Tensor2D,
  pe: tf.Tensor2D,
  selected: tf.Tensor2D,
  startPos: number,
  scale: number,
  opts: FastOptions = {},
): tf.Tensor3D {
  const fn = 'denseAttentionMqaFast';
  const { T, H, C, R, S, K } = checkTensors(DENSE_MQA_FAST, { qLatent, qPe, kv, pe, selected }) as Record<'T' | 'H' | 'C' | 'R' | 'S' | 'K', number>;
  checkQueryPositions(fn, startPos, S, T, 'S from kv, T from qLatent');
  checkFiniteNumber(fn, 'scale', scale);
  const Tb = Math.max(1, Math.min(T, Math.floor((8 << 20) / (H * S)))); // Z block ≤ 32 MiB
  const blocks = Math.ceil(T / Tb);
  const threads = opts.pool?.threads ?? 1;
  const groups = threads > blocks ? Math.min(H, Math.ceil(threads / blocks)) : 1;
  const pool = opts.pool && blocks * groups > 1 ? opts.pool : undefined;
  // prefill (T > 1): one [kv ; pe]ᵀ per call, right operand of every block; decode: the cache untouched
  const D = C + R;
  let keysT: Float32Array | null = null;
  if (T > 1) {
    keysT = pool ? pool.allocFloat32(D * S) : new Float32Array(D * S);
    transposeBlock(kv.dataSync() as Float32Array, S, C, C, keysT.subarray(0, C * S));
    transposeBlock(pe.dataSync() as Float32Array, S, R, R, keysT.subarray(C * S));
  }
  const keysTId = keysT ? nextCallId-- : 0; // per-call operand ids are negative
  const args = {
    T, H, C, R, S, K, startPos, scale, Tb, groups, kvId: kv.id, peId: pe.id, keysTId: keysT ? keysTId : -1,
    qL: hostData(qLatent, pool) as Float32Array,
    qR: hostData(qPe, pool) as Float32Array,
    slots: hostData(selected, pool) as Int32Array,
    kv: pool ? (pool.shareTensor(kv) as Float32Array) : null,
    pe: pool ? (pool.shareTensor(pe) as Float32Array) : null,
    keysT: pool ? keysT : null,
    out: pool ? pool.allocFloat32(T * H * C) : new Float32Array(T * H * C),
  };
  const units = denseUnitCount(args);
  if (pool) pool.run('dense', args, units);
  else {
    const keysTTensor = keysT ? tf.tensor2d(keysT, [D, S]) : undefined;
    try {
      const tensors = new Map<number, tf.Tensor2D>([[kv.id, kv], [pe.id, pe]]);
      if (keysTTensor) tensors.set(keysTId, keysTTensor);
      denseUnits(args, callerEnv(tensors), 0, units);
    } finally {
      keysTTensor?.dispose();
    }
  }
  return tf.tensor3d(args.out, [T, H, C]);
}

// --- Index scores (Eq. 1), fast form of fp8Index ---

/**
 * Lightning-indexer scores from (quantized) queries and cached keys — same contract and result as
 * `fp8Index` (src/indexer.ts):
 *
 *   I[t,s] = s_k[s] · Σ_j w[t,j] · ReLU(q[t,j] · k_s)                                   (Eq. 1)
 *
 * For a block of Tb queries (Tb·HI columns), keys on the left so the big operand is never repacked:
 *
 *   Aᵀ = ReLU(keys · Qᵀ)        [S, Tb·HI]   fused GEMM + ReLU: 2·S·DI·Tb·HI FLOPs
 *   Iᵀ = Aᵀ · W                  [S, Tb]      W [Tb·HI, Tb] block-diagonal, W[t·HI + j, t] = w[t, j]
 *
 * The block-diagonal head sum costs Tb/DI of the first GEMM (≤ 12.5 % here). FLOPs per (query, key):
 * 2·HI·DI + 2·HI (the indexer count of docs/spec-notes.md#flop-model). Scores are returned for all S keys, before the causal mask.
 *
 * @param q [T, HI, DI] queries (e4m3 values q₈ in the official path)
 * @param weights [T, HI] head weights w' (scales folded in)
 * @param keys [S, DI] cached keys k₈; @param keyScales [S] key scales s_k
 * @returns [T, S] float32 index scores
 * @example
 * ```ts
 * const I = indexerScoresFast(tf.tensor3d([[[1, 0], [0, 1]]]), tf.tensor2d([[1, 2]]), tf.tensor2d([[1, 1], [-1, 3]]), tf.tensor1d([1, 0.5]));
 * I.arraySync(); // [[3, 3]]
 * ```
 */
export function indexerScoresFast(
  q: tf.Tensor3D,
  weights: tf.Tensor2D,
  keys: tf.Tensor2D,
  keyScales: tf.Tensor1D,
  opts: FastOptions = {},
): tf.Tensor2D {
  const fn = 'indexerScoresFast';
  const { T, HI, DI, S } = checkTensors(INDEXER_SCORES_FAST, { q, weights, keys, keyScales }) as Record<'T' | 'HI' | 'DI' | 'S', number>;
  const Tb = Math.max(1, Math.min(T, Math.floor(128 / HI), Math.floor((8 << 20) / (S * HI)))); // Aᵀ ≤ 32 MiB
  const blocks = Math.ceil(T / Tb);
  const threads = opts.pool?.threads ?? 1;
  const ranges = threads > blocks ? Math.min(S, threads) : 1; // few queries (decode): split the keys
  const pool = opts.pool && blocks * ranges > 1 ? opts.pool : undefined;
  const args = {
    T, HI, DI, S, Tb, ranges, keysId: keys.id,
    q: hostData(q, pool) as Float32Array,
    w: hostData(weights, pool) as Float32Array,
    keyScales: (pool ? pool.shareTensor(keyScales) : keyScales.dataSync()) as Float32Array,
    keys: pool ? (pool.shareTensor(keys) as Float32Array) : null,
    out: pool ? pool.allocFloat32(T * S) : new Float32Array(T * S),
  };
  const units = indexerUnitCount(args);
  if (pool) pool.run('indexer', args, units);
  else indexerUnits(args, callerEnv(new Map([[keys.id, keys]])), 0, units);
  return tf.tensor2d(args.out, [T, S]);
}

// --- Top-k selection (Eq. 2), linear-time form of selectTopK ---

/**
 * Same contract and result as `selectTopK` (src/topk.ts): row i (query t = startPos + i) selects the
 * n_t = min(k, t + 1) positions s ≤ t with the largest score (ties: lower position first), returned
 * ascending and −1 padded to width min(k, S). Columns s > t are ignored.
 *
 * Linear time per row instead of a sort: a quickselect finds the n_t-th largest value θ, then one
 * ascending scan keeps every s with score > θ and the lowest positions with score = θ.
 *
 * @param scores [T, S] index scores; @param startPos position of row 0; @param k index_topk ≥ 1
 * @returns int32 [T, min(k, S)]
 * @example
 * ```ts
 * selectTopKFast(tf.tensor2d([[0.5, 0, 0], [0.1, 0.9, 0], [0.3, 0.2, 0.3]]), 0, 2).arraySync();
 * // [[0, -1], [0, 1], [0, 2]]
 * ```
 */
export function selectTopKFast(scores: tf.Tensor2D, startPos: number, k: number, opts: FastOptions = {}): tf.Tensor2D {
  const fn = 'selectTopKFast';
  const { T, S } = checkTensors(SELECT_TOPK_FAST, { scores }) as Record<'T' | 'S', number>;
  checkInteger(fn, 'k', k, 1);
  checkQueryPositions(fn, startPos, S, T, 'S and T from scores');
  const width = Math.min(k, S);
  const pool = opts.pool && T > 1 ? opts.pool : undefined;
  const out = pool ? pool.allocInt32(T * width) : new Int32Array(T * width);
  out.fill(-1);
  const args = { T, S, k, width, startPos, scores: hostData(scores, pool) as Float32Array, out };
  if (pool) pool.run('topk', args, T);
  else topkUnits(args, callerEnv(new Map()), 0, T);
  return tf.tensor2d(out, [T, width], 'int32');
}

// --- Helpers ---

/** Ids of per-call operands (negative: never a tensor id). */
let nextCallId = -2;

/** The data of a (small, per-call) tensor: shared with the pool's threads, or the caller's own copy. */
function hostData(t: tf.Tensor, pool: KernelPool | undefined): Float32Array | Int32Array {
  const data = t.dataSync() as Float32Array | Int32Array;
  return pool ? pool.share(data) : data;
}
