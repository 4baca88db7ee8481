/**
 * The public API of dsv32 in one import (`import { ... } from 'dsv32'`).
 *
 * Every public module is re-exported twice:
 * - flat: every exported name of every module (they are unambiguous across modules; a future clash
 *   fails the type check with TS2308, so it cannot go unnoticed);
 * - as a namespace named after its file (`mla.mlaForward`, `indexer.indexerScores`,
 *   `sparseAttention.sparseAttentionMqa`, ...), except `hadamard` and `moe`, whose names are
 *   taken by the functions `hadamard()` and `moe()` (import `dsv32/hadamard` / `dsv32/moe` for
 *   those modules).
 *
 * Each module is also its own entry point, `dsv32/<file>` (package.json `exports`), which is what
 * the docs import. This entry and every module in it are browser-safe (no Node built-in); the
 * functions that read and write files (`loadConfig`, `openSafetensors`, `openCheckpoint`,
 * `writeSafetensors`) come from the Node-only entry `dsv32/node`. Modules in paper order: DSA (indexer → topk → sparse_attention → mla, and the
 * same math arranged for speed in sparse_fast), MoE and
 * Keep Routing (moe, model), training math (grpo, sampling_mask, indexer_loss), context management
 * (context, encoding). docs/tour.md walks them.
 *
 * @example
 * ```ts
 * import { fp8Index, selectTopK, indexer } from 'dsv32';
 * const I = fp8Index(tf.tensor3d([[[1, 0]]]), tf.tensor2d([[1]]), tf.tensor2d([[2, 0], [1, 5], [3, 1]]), tf.tensor1d([1, 1, 1]));
 * I.arraySync(); // => [[2, 1, 3]]
 * selectTopK(I, 2, 2).arraySync(); // => [[0, 2]]
 * indexer.fp8Index === fp8Index; // => true
 * ```
 * @module
 */

// --- Tensor backend ---
export * from './backend.ts';
export * as backend from './backend.ts';

// --- Checkpoint: config, safetensors, weight records ---
export * from './config.ts';
export * as config from './config.ts';
export * from './safetensors.ts';
export * as safetensors from './safetensors.ts';
export * from './checkpoint.ts';
export * as checkpoint from './checkpoint.ts';
export * from './weight_matrix.ts';
export * from './resident.ts';
export * from './weight_budget.ts';

// --- Numerics of the official kernels ---
export * from './fp8.ts';
export * as fp8 from './fp8.ts';
export * from './hadamard.ts';
export * from './rope.ts';
export * as rope from './rope.ts';
export * from './norms.ts';
export * as norms from './norms.ts';
export * from './precision.ts';
export * from './deviations.ts';

// --- DeepSeek Sparse Attention (paper §2.1, Eq. 1–4) ---
export * from './indexer.ts';
export * as indexer from './indexer.ts';
export * from './topk.ts';
export * as topk from './topk.ts';
export * from './sparse_attention.ts';
export * as sparseAttention from './sparse_attention.ts';
export * from './mla.ts';
export * as mla from './mla.ts';
export * from './sparse_fast.ts';
export * as sparseFast from './sparse_fast.ts';

// --- MoE, Keep Routing, the whole model (paper §3.1) ---
export * from './moe.ts';
export * from './model.ts';
export * as model from './model.ts';
export * from './layer_stream.ts';

// --- Training-side math (paper §2.1.1 Eq. 3–4, §3.1 Eq. 5–9) ---
export * from './grpo.ts';
export * as grpo from './grpo.ts';
export * from './sampling_mask.ts';
export * as samplingMask from './sampling_mask.ts';
export * from './indexer_loss.ts';
export * as indexerLoss from './indexer_loss.ts';

// --- Context management and chat encoding (paper §3.2.1) ---
export * from './context.ts';
export * as context from './context.ts';
export * from './encoding.ts';
export * as encoding from './encoding.ts';
export * from './pyjson.ts';
export * as pyjson from './pyjson.ts';
