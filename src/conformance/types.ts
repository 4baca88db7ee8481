/**
 * Result rows of the conformance suite. The JSON written by `dsv32 conformance --json FILE` is an
 * array of {@link CheckResult}: a public contract; fields are never renamed or removed.
 */

/** One check of one case. */
export interface CheckResult {
  /** fixture folder name (golden) or vector file name without `.json`. */
  case: string;
  /** what was compared, e.g. `attn.qr`, `indexer.topk`, `fp8_codec.decode`, `grpo.loss`. */
  check: string;
  /** decoding step of a golden trace (0 = prefill); null for vectors. */
  step: number | null;
  /** layer index; null where no layer applies. */
  layer: number | null;
  /** true when the comparison met its tolerance. */
  pass: boolean;
  /** max |actual − expected| (null when not numeric, e.g. a failure to read). */
  max_abs_err: number | null;
  /** max |actual − expected| / max(1, max|expected|)-style relative error as the check defines it. */
  max_rel_err: number | null;
  /** why it failed or a note (tolerance used, count of FP8 midpoint elements, ...). */
  reason?: string;
  /** `weights.finite` rows of a `--weights` run: peak bytes the layer held (weights in JS + backend tensors). */
  peak_bytes?: number;
}

/** Comparison of two float arrays with the golden tolerance `max|a−b| ≤ rtol · max(1, max|b|)`. */
export function compareArrays(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rtol = 1e-4,
): { pass: boolean; maxAbs: number; maxRel: number; reason?: string } {
  if (actual.length !== expected.length) {
    return { pass: false, maxAbs: Infinity, maxRel: Infinity, reason: `length ${actual.length} ≠ expected ${expected.length}` };
  }
  let maxAbs = 0;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const b = expected[i]!;
    const d = Math.abs(a - b);
    if (Number.isNaN(d)) {
      if (!(Number.isNaN(a) && Number.isNaN(b))) return { pass: false, maxAbs: NaN, maxRel: NaN, reason: `NaN at ${i}` };
      continue;
    }
    if (d > maxAbs) maxAbs = d;
    if (Math.abs(b) > maxRef) maxRef = Math.abs(b);
  }
  const maxRel = maxAbs / Math.max(1, maxRef);
  return { pass: maxRel <= rtol, maxAbs, maxRel };
}
