/**
 * Known deviations from the official DeepSeek-V3.2 inference code, each one a switch on dsv32's own forward
 * (`deviations` option of `modelForward`, `mlaForward`, `indexerScores`, `moe`). They are the catalogue
 * of `dsv32 check` (docs/check-your-implementation.md): a trace that fails the spec but passes with a
 * switch on is diagnosed with that switch's id. The reference math is unchanged when the set is empty.
 *
 * | id | what the deviating code does | official (`inference/model.py`, V3.2 final) |
 * |---|---|---|
 * | `indexer-rope-interleaved` | indexer RoPE on interleaved pairs (2i, 2i+1) | non-interleaved pairs (i, i + R/2), fixed 2025-11-17 |
 * | `kv-latent-no-fp8-roundtrip` | caches / attends to the normalized KV latent as is (V3.2-Exp) | FP8 quantize→dequantize of the latent (`MLA.forward`) |
 * | `softmax-no-mscale` | softmax scale `Dqk^-1/2` | `Dqk^-1/2 · mscale²` when YaRN is active (`MLA.__init__`) |
 * | `moe-bias-in-weights` | combine weights from σ + b (the correction bias) | combine weights from σ; b only selects (`Gate.forward`) |
 * | `indexer-weights-no-scale` | head weights `weights_proj(x) · s_q` | `weights_proj(x) · HI^-1/2 · s_q · DI^-1/2` (`Indexer.forward`) |
 * | `moe-group-fill-zero` | experts of dropped groups get score 0.0 (HF transformers, mlx-lm) | `-inf` (`Gate.forward` `masked_fill_(mask, float("-inf"))`) |
 *
 * @module
 */

/** Stable ids of the catalogue (public: they appear in `dsv32 check --json` diagnoses). */
export const DEVIATION_IDS = [
  'indexer-rope-interleaved',
  'kv-latent-no-fp8-roundtrip',
  'softmax-no-mscale',
  'moe-bias-in-weights',
  'indexer-weights-no-scale',
  'moe-group-fill-zero',
] as const;

/** One catalogue id. */
export type DeviationId = (typeof DEVIATION_IDS)[number];

/** The deviations a forward applies (empty or absent = the official math). */
export type Deviations = ReadonlySet<DeviationId>;

/**
 * True when `id` is a catalogue id.
 *
 * @example
 * ```ts
 * isDeviationId('softmax-no-mscale'); // => true
 * isDeviationId('softmax'); // => false
 * ```
 */
export function isDeviationId(id: string): id is DeviationId {
  if (typeof id !== 'string') throw new TypeError(`isDeviationId(): id must be a string but got ${typeof id}`);
  return (DEVIATION_IDS as readonly string[]).includes(id);
}
