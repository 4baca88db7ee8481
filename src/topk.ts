/**
 * Top-k selection of DeepSeek Sparse Attention: the set S_t of paper Eq. (2).
 *
 *   S_t = { s ≤ t | I_{t,s} ∈ Top-k(I_{t,:}) },   |S_t| = k_t = min(k, t + 1)
 *
 * The official code (inference/model.py Indexer.forward) adds the causal mask to the index scores and
 * calls `torch.topk(scores, min(index_topk, end_pos))`. Rows with t + 1 ≤ k therefore also pick
 * −inf (future) entries, which MLA masks again; the effective set is every s ≤ t. This module
 * returns exactly the effective set, never a future position, with a deterministic tie rule.
 *
 * Consumers: the MLA / sparse-attention code gathers keys with {@link selectTopK}'s indices
 * (−1 = empty slot) or adds {@link selectionMask} to dense [T, S] scores.
 *
 * @module
 */
import { tf } from './backend.ts';
import { checkInteger, checkQueryPositions, checkTensors, defineContract } from './internal/contract.ts';

const SELECT_TOPK = defineContract('selectTopK', { scores: '[T, S]' });
const SELECTION_MASK = defineContract('selectionMask', { indices: { shape: '[T, K]', dtype: 'int32' } });

// --- Selection (Eq. 2) ---

/**
 * Selects, for every query row, the k_t = min(k, t + 1) positions s ≤ t with the largest index
 * score (paper Eq. 2, `S_t`; official: `topk(I + M_causal, min(k, end_pos))`).
 *
 * Row i of `scores` is the query at absolute position t = startPos + i and column s is the key at
 * absolute position s (S = end_pos). Columns s > t are ignored whatever they hold (the scores
 * may be unmasked, as `indexerScores` returns them).
 *
 * Tie rule: among equal scores the lower position wins (order: higher score first, then lower s).
 * −Infinity is an ordinary (lowest) score; NaN is rejected in rows that need a comparison (t + 1 > k).
 *
 * @deviation torch.topk leaves the order of equal scores unspecified (CUDA kernels differ), so
 *   the official code can pick either of two tied positions at the k-th boundary. dsv32 fixes the
 *   rule above; a set difference against another implementation is legitimate only at such ties
 *   (see docs/deviations.md).
 *
 * @param scores [T, S] index scores I_{t,s} (float32), before or after the causal mask.
 * @param startPos absolute position of row 0 (the call's start_pos); S ≥ startPos + T.
 * @param k index_topk (≥ 1).
 * @returns int32 [T, min(k, S)]: row i holds the selected positions in ascending order, then −1
 *   padding (rows with t + 1 < min(k, S) select all of 0..t and pad the rest).
 * @throws RangeError for a non-integer or < 1 `k`, a bad `startPos`, S < startPos + T or a NaN score.
 * @example
 * ```ts
 * const idx = selectTopK(tf.tensor2d([[0.5, 0, 0], [0.1, 0.9, 0], [0.3, 0.2, 0.3]]), 0, 2);
 * idx.arraySync(); // => [[0, -1], [0, 1], [0, 2]]
 * // row 0 (t = 0): only s = 0 exists; row 2: the two 0.3 scores beat 0.2
 * selectTopK(tf.tensor2d([[1, 1, 1, 0]]), 3, 2).arraySync(); // => [[0, 1]]   (tie: lower positions win)
 * ```
 */
export function selectTopK(scores: tf.Tensor2D, startPos: number, k: number): tf.Tensor2D {
  const fn = 'selectTopK';
  const { T, S } = checkTensors(SELECT_TOPK, { scores }) as Record<'T' | 'S', number>;
  checkInteger(fn, 'k', k, 1);
  checkQueryPositions(fn, startPos, S, T, 'S and T from scores');
  const width = Math.min(k, S);
  const data = scores.dataSync();
  const values = data instanceof Float32Array ? data : Float32Array.from(data);
  const out = new Int32Array(T * width).fill(-1);
  for (let i = 0; i < T; i++) {
    const t = startPos + i;
    const row = values.subarray(i * S, i * S + t + 1); // candidates s = 0..t
    const picked = selectRow(row, Math.min(k, t + 1), i);
    out.set(picked, i * width);
  }
  return tf.tensor2d(out, [T, width], 'int32');
}

/**
 * One row: the `n` best positions of `row` (higher score, then lower position), ascending.
 * Runs in O(|row| log |row|); rows are short compared with the O(T·S·HI·DI) scores.
 */
function selectRow(row: Float32Array, n: number, rowIndex: number): Int32Array {
  if (n >= row.length) return Int32Array.from(row.keys()); // k_t = t + 1: every s ≤ t, no comparison
  const order = Array.from(row.keys());
  for (const s of order) {
    if (Number.isNaN(row[s]!)) throw new RangeError(`selectTopK(): scores must not be NaN but row ${rowIndex} column ${s} is NaN`);
  }
  order.sort((a, b) => row[b]! - row[a]! || a - b); // −inf − −inf = NaN → falls through to the position order
  return Int32Array.from(order.slice(0, n)).sort();
}

// --- Dense form of the selection (official prefill: M_index + M_causal) ---

/**
 * Additive mask of a selection for a dense [T, S] score matrix: 0 where s ∈ S_t, −Infinity
 * elsewhere (official `index_mask`, which already includes the causal mask because S_t holds no
 * future position). Adding it to every head's attention logits gives DSA's masked-dense form.
 *
 * @param indices int32 [T, n] positions from {@link selectTopK} (−1 = empty slot).
 * @param S number of key positions (end_pos).
 * @returns float32 [T, S] additive mask.
 * @throws RangeError when an index is ≥ S or < −1, or `indices` is not rank 2.
 * @example
 * ```ts
 * selectionMask(tf.tensor2d([[0, -1], [0, 1]], [2, 2], 'int32'), 2).arraySync(); // => [[0, -Infinity], [0, 0]]
 * ```
 */
export function selectionMask(indices: tf.Tensor2D, S: number): tf.Tensor2D {
  const { T, K: n } = checkTensors(SELECTION_MASK, { indices }) as Record<'T' | 'K', number>;
  checkInteger('selectionMask', 'S', S, 1);
  const idx = indices.dataSync();
  const mask = new Float32Array(T * S).fill(-Infinity);
  for (let i = 0; i < T; i++) {
    for (let j = 0; j < n; j++) {
      const s = idx[i * n + j]!;
      if (s === -1) continue;
      if (!Number.isInteger(s) || s < -1 || s >= S) {
        throw new RangeError(`selectionMask(): indices must lie in [-1, S) = [-1, ${S}) but row ${i} holds ${s}`);
      }
      mask[i * S + s] = 0;
    }
  }
  return tf.tensor2d(mask, [T, S]);
}
