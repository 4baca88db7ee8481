/**
 * The comparison step of the judge (src/check/judge.ts): one traced tensor against the reference, on the
 * two sides of a {@link Pair}, into one row.
 *
 * @module
 */
import { tf } from '../backend.ts';
import { floatErrors, fmt, type FloatErrors, type SelectionErrors } from './metrics.ts';
import type { CheckRow } from './report.ts';
import type { FloatCheck, Thresholds } from './thresholds.ts';
import { traceName } from './names.ts';
import type { OpenedTrace } from './trace.ts';

/** What the comparisons need of the judge's options. */
export interface RowContext {
  caseName: string;
  thresholds: Thresholds;
}

/**
 * A value as the trace has it (`t`: the recorded tensor, or the reference where the trace lacks it) and
 * with every failed tensor upstream replaced by the reference (`s`). `t === s` when nothing upstream
 * failed. A module passes when its recorded output matches the reference applied to either: a wrong
 * recorded input (a bug upstream) does not fail the modules after it, whether they consumed the wrong
 * value (a real deviation) or the right one (a dump of one tensor gone wrong).
 */
export interface Pair {
  t: tf.Tensor2D;
  s: tf.Tensor2D;
}
/** Which side of a {@link Pair}. */
export type Side = keyof Pair;

/** True when some input's two sides differ (a failed tensor upstream). */
export const isDirty = (...pairs: Pair[]): boolean => pairs.some((p) => p.t !== p.s);
/** A pair whose sides agree. */
export const samePair = (x: tf.Tensor2D): Pair => ({ t: x, s: x });
/** `f` on both sides (once when the inputs are clean). */
export function both(inputs: Pair[], f: (side: Side) => tf.Tensor2D): Pair {
  const t = f('t');
  return isDirty(...inputs) ? { t, s: f('s') } : samePair(t);
}

/** A row of this trace, null metrics unless given. */
export function row(opts: RowContext, step: number, layer: number | null, check: string, fields: Partial<CheckRow> & { pass: boolean; reason: string }): CheckRow {
  return { case: opts.caseName, check, step, layer, max_abs_err: null, max_rel_err: null, cos_diff: null, recall: null, ...fields };
}

/**
 * Compares the trace's tensor (when present) with the reference `refOf('t')` [rows, cols], and, when that
 * fails and an input is dirty, with `refOf('s')`; returns the pair the modules downstream use.
 */
export function judgeFloat(
  trace: OpenedTrace,
  opts: RowContext,
  rows: CheckRow[],
  step: number,
  layer: number | null,
  check: FloatCheck,
  inputs: Pair[],
  refOf: (side: Side) => tf.Tensor2D,
  include?: (i: number) => boolean,
): Pair {
  const refT = refOf('t');
  let refS: tf.Tensor2D | undefined;
  const sideS = () => (refS ??= isDirty(...inputs) ? refOf('s') : refT);
  const traced = trace.get(traceName(step, layer, check)) as Float32Array | undefined;
  if (!traced) return { t: refT, s: sideS() };
  const t = opts.thresholds.float[check];
  const ok = (e: FloatErrors) => e.nonFinite === 0 && e.maxRel <= t.maxRel && e.cosDiff <= t.cosDiff;
  let e = floatErrors(traced, refT.dataSync() as Float32Array, include);
  let pass = ok(e);
  let note = '';
  if (!pass && isDirty(...inputs)) {
    const e2 = floatErrors(traced, sideS().dataSync() as Float32Array, include);
    if (ok(e2)) [e, pass, note] = [e2, true, ' (computed from the reference value of a failed tensor upstream)'];
  }
  const why = e.nonFinite ? `${e.nonFinite} NaN/inf value(s) where the reference is finite; ` : '';
  rows.push(row(opts, step, layer, check, {
    pass, max_abs_err: e.maxAbs, max_rel_err: e.maxRel, cos_diff: e.cosDiff,
    reason: `${why}${pass ? 'within' : 'outside'} max_rel_err ≤ ${fmt(t.maxRel)}, cos_diff ≤ ${fmt(t.cosDiff)}${note}`,
  }));
  const recorded = tf.tensor2d(traced, refT.shape) as tf.Tensor2D;
  return pass ? samePair(recorded) : { t: recorded, s: sideS() };
}

/**
 * Pushes the row of a selection check: `compare(side)` judges the trace's ids against the reference of one
 * side; the `s` side is tried when the `t` side fails and an input is dirty.
 */
export function selectionRow(
  opts: RowContext,
  rows: CheckRow[],
  step: number,
  layer: number,
  check: 'indexer.topk' | 'gate.indices',
  inputs: Pair[],
  compare: (side: Side) => { e: SelectionErrors; gap: number; scale: number },
): void {
  let { e, gap, scale } = compare('t');
  let note = '';
  if (e.unexplained > 0 && isDirty(...inputs)) {
    const retry = compare('s');
    if (retry.e.unexplained === 0) [{ e, gap, scale }, note] = [retry, ' (computed from the reference value of a failed tensor upstream)'];
  }
  const pass = e.unexplained === 0;
  const what = check === 'indexer.topk' ? 'position(s)' : 'expert(s)';
  rows.push(row(opts, step, layer, check, {
    pass, recall: e.recall, max_abs_err: e.maxGap, max_rel_err: scale > 0 ? e.maxGap / scale : e.maxGap,
    reason: (pass ? `${e.nearTies} ${what} differ within the score gap ${fmt(gap)}` : `${e.unexplained} ${what} differ beyond the score gap ${fmt(gap)}; ${e.example}`) + note,
  }));
}
