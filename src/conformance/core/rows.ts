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

/** A failed check carrying a reason (unreadable case, unknown kind, exception). */
export function failure(caseName: string, check: string, reason: string, step: number | null = null, layer: number | null = null): CheckResult {
  return { case: caseName, check, step, layer, pass: false, max_abs_err: null, max_rel_err: null, reason };
}
/** Comparison of two float arrays

 with the golden tolerance `max|a−b| ≤ rtol · max(1, max|b|)`. */
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

/**
 * A tolerance row: `max|a − b| ≤ rtol · max(1, max|b|)` (the golden tolerance), with the reason of a failure.
 *
 * @example
 * ```ts
 * numericRow('fx', 'attn.out', 0, 1, [1, 2], [1, 2.5], 1e-4).reason; // => 'max|a−b| = 5.000e-1 > 0.0001 · max(1, max|b|)'
 * ```
 */
export function numericRow(
  caseName: string, check: string, step: number | null, layer: number | null, actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number,
): CheckResult {
  const c = compareArrays(actual, expected, rtol);
  const r: CheckResult = { case: caseName, check, step, layer, pass: c.pass, max_abs_err: c.maxAbs, max_rel_err: c.maxRel };
  if (c.reason) r.reason = c.reason;
  else if (!c.pass) r.reason = `max|a−b| = ${c.maxAbs.toExponential(3)} > ${rtol} · max(1, max|b|)`;
  return r;
}

/**
 * Row-wise set comparison of index lists (`expected` [rows, k], `actual` [rows, kActual], row-major,
 * −1 padding ignored): top-k selections and expert ids.
 *
 * @example
 * ```ts
 * setsRow('fx', 'gate.indices', 0, 1, [2, 1], [1, 2], 2).pass; // => true
 * setsRow('fx', 'gate.indices', 0, 1, [2, 3], [1, 2], 2).reason; // => '1 of 1 rows differ as sets; row 0: missing {1} extra {3}'
 * ```
 */
export function setsRow(
  caseName: string, check: string, step: number | null, layer: number | null, actual: ArrayLike<number>, expected: ArrayLike<number>, k: number, kActual = k,
): CheckResult {
  const rows = expected.length / k;
  const base = { case: caseName, check, step, layer, max_abs_err: null, max_rel_err: null };
  if (actual.length !== rows * kActual) return { ...base, pass: false, reason: `shape: ${actual.length / kActual} rows of ${kActual} ≠ expected ${rows} rows of ${k}` };
  const bad: string[] = [];
  for (let r = 0; r < rows; r++) {
    const { missing, extra } = rowSetDiff(actual, kActual, expected, k, r);
    if (missing.length || extra.length) bad.push(`row ${r}: missing {${missing}} extra {${extra}}`);
  }
  return bad.length ? { ...base, pass: false, reason: `${bad.length} of ${rows} rows differ as sets; ${bad.slice(0, 3).join('; ')}` } : { ...base, pass: true };
}

/** Appends a note to a row's reason. */
export function withNote(r: CheckResult, note: string): CheckResult {
  return { ...r, reason: r.reason ? `${r.reason}; ${note}` : note };
}

/**
 * Row r of two index lists (`actual` [rows, kActual], `expected` [rows, k], −1 padding ignored) as sets:
 * the expected positions missing from `actual` and the extra ones. The one set comparison of the suite
 * ({@link setsRow}; the tie-aware top-k rows of checks/indexer.ts).
 *
 * @example
 * ```ts
 * rowSetDiff([3, 1, -1], 3, [1, 2, -1], 3, 0); // => { missing: [2], extra: [3] }
 * ```
 */
export function rowSetDiff(
  actual: ArrayLike<number>, kActual: number, expected: ArrayLike<number>, k: number, r: number,
): { missing: number[]; extra: number[] } {
  const a = new Set(Array.from({ length: kActual }, (_, j) => Number(actual[r * kActual + j])).filter((v) => v >= 0));
  const b = new Set(Array.from({ length: k }, (_, j) => Number(expected[r * k + j])).filter((v) => v >= 0));
  return { missing: [...b].filter((v) => !a.has(v)), extra: [...a].filter((v) => !b.has(v)) };
}
