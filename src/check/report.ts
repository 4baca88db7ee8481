/**
 * The report of `dsv32 check` (public contract: `--json FILE` writes a {@link CheckReport}; the names and
 * fields are never renamed or removed).
 *
 * @module
 */
import type { DeviationId } from '../deviations.ts';
import type { CheckResult } from '../conformance/core/rows.ts';
import type { Precision } from '../precision.ts';
import { LAYER_CHECKS } from './names.ts';

/**
 * One judged tensor (or one problem of the trace file): the row of `dsv32 conformance` (`case`, `check`
 * without the `stepS.expected.layerL.` prefix, `step`, `layer` — null for `logits` and for the file —,
 * `pass`, `max_abs_err`, `max_rel_err` = max |trace − reference| / max |reference|), plus the cosine
 * difference of float tensors and the recall of selections. For a selection (`indexer.topk`,
 * `gate.indices`) `max_abs_err` / `max_rel_err` hold the largest score gap of a differing selection
 * (absolute / over max |score|).
 */
export interface CheckRow extends Omit<CheckResult, 'reason'> {
  /** 1 − 2⟨x, y⟩ / (|x|² + |y|²) in float64, for float tensors (null otherwise). */
  cos_diff: number | null;
  /** mean fraction of the reference's selections the trace also made, for `indexer.topk` and `gate.indices`. */
  recall: number | null;
  /** the thresholds used, or why it failed. */
  reason: string;
}

/** One diagnosed catalogue deviation. */
export interface Diagnosis {
  id: DeviationId;
  /** the layers whose failing rows pass with this deviation switched on in the reference. */
  layers: number[];
  /** the numbers that support it (first failing row with and without the switch, rows fixed). */
  evidence: string;
}

/** What `dsv32 check --json FILE` writes. */
export interface CheckReport {
  verdict: 'pass' | 'fail';
  precision: Precision;
  first_failure: { check: string; step: number | null; layer: number | null } | null;
  diagnosis: Diagnosis[];
  rows: CheckRow[];
}

/** Forward position of a check within a step: every layer's checks in order, then `logits`. */
function forwardOrder(row: CheckRow): [number, number, number] {
  if (row.step === null) return [-1, -1, 0];
  const layer = row.layer === null ? Number.MAX_SAFE_INTEGER : row.layer;
  const index = (LAYER_CHECKS as readonly string[]).indexOf(row.check);
  return [row.step, layer, index];
}

/**
 * Rows sorted in step, then layer, then forward order (file-level rows first, `logits` after the layers
 * of its step).
 *
 * @example
 * ```ts
 * const r = (check: string, step: number, layer: number | null) => ({ case: 'c', check, step, layer, pass: true, max_abs_err: 0, max_rel_err: 0, cos_diff: 0, recall: null, reason: '' });
 * sortRows([r('logits', 0, null), r('attn.out', 0, 1), r('attn.in', 0, 1)]).map((x) => x.check); // => ['attn.in', 'attn.out', 'logits']
 * ```
 */
export function sortRows(rows: readonly CheckRow[]): CheckRow[] {
  return [...rows].sort((a, b) => {
    const x = forwardOrder(a);
    const y = forwardOrder(b);
    return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
  });
}

/** The earliest failing row (rows sorted by {@link sortRows}), or null. */
export function firstFailure(rows: readonly CheckRow[]): CheckReport['first_failure'] {
  const row = sortRows(rows).find((r) => !r.pass);
  return row ? { check: row.check, step: row.step, layer: row.layer } : null;
}
