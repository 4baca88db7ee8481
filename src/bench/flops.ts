/**
 * FLOP model of the benchmarked operations (docs/spec-notes.md#flop-model): FlashMLA `tests/lib.py` counting for
 * attention, the indexer of Eq. 1.
 *
 * Counting 2 FLOPs per multiply-add, per attended (query, key) pair:
 *
 * - core attention, MQA / absorbed mode: `2·H·(D_qk + D_v)` with D_qk = C + R = 576 and D_v = C = 512
 *   (FlashMLA's `tests/lib.py` convention; 278,528 at H = 128);
 * - lightning indexer: `HI·2·DI + 2·HI` (16,512 at HI = 64, DI = 128).
 *
 * Pairs: dense masked attention and the indexer score every causal pair (t, s ≤ t); sparse attention
 * scores min(k, t + 1) pairs per query t. The measured unit is a block of T queries at the end of a
 * context of L positions (t = L − T … L − 1), i.e. the last chunk of a chunked prefill (T = 1: decode).
 */

/** Head dimensions of DeepSeek-V3.2 671B (config.json: kv_lora_rank, qk_rope_head_dim, index_head_dim). */
export const DIMS_671B = { C: 512, R: 64, H: 128, HI: 64, DI: 128 } as const;

/** Σ_{t = L−T}^{L−1} (t + 1): causal (query, key) pairs of the last T queries of a length-L context. */
export function causalPairs(L: number, T: number): number {
  return T * L - (T * (T - 1)) / 2;
}

/** Σ_{t = L−T}^{L−1} min(k, t + 1): pairs that sparse attention (top-k) attends. */
export function sparsePairs(L: number, T: number, k: number): number {
  let pairs = 0;
  for (let t = L - T; t < L; t++) pairs += Math.min(k, t + 1);
  return pairs;
}

/** FLOPs per attended pair of MQA-mode core attention: 2·H·((C + R) + C). */
export function attentionFlopsPerPair(H: number, C: number = DIMS_671B.C, R: number = DIMS_671B.R): number {
  return 2 * H * (C + R + C);
}

/** FLOPs per scored pair of the lightning indexer: HI·2·DI + 2·HI. */
export function indexerFlopsPerPair(HI: number, DI: number = DIMS_671B.DI): number {
  return HI * 2 * DI + 2 * HI;
}

/**
 * FLOPs of one decode step (one query at position L − 1) of DSA: the indexer scores all L keys, then
 * core attention attends min(k, L) of them: `L·(HI·2·DI + 2·HI) + min(k, L)·2·H·(C + R + C)`.
 * Dense decode (V3.1's absorbed MQA over all L latents) is `L·2·H·(C + R + C)`.
 */
export function dsaDecodeFlops(L: number, k: number, H: number, HI: number): number {
  return L * indexerFlopsPerPair(HI) + Math.min(k, L) * attentionFlopsPerPair(H);
}
