/**
 * Comparison metrics of `dsv32 check`, as FlashMLA's tests define them (relative error and the cosine
 * difference, in float64), plus the selection recall of top-k and expert choices.
 *
 * @module
 */

/** Errors of one float tensor against its reference. */
export interface FloatErrors {
  /** max |a − b| */
  maxAbs: number;
  /** max |a − b| / max |b| (|b| = 0 everywhere → max |a − b|) */
  maxRel: number;
  /** 1 − 2⟨a, b⟩ / (|a|² + |b|²), float64; 0 for identical tensors, 0 when both are all zero */
  cosDiff: number;
  /** a NaN or ±∞ where the reference is finite */
  nonFinite: number;
}

/**
 * `maxRel = max|a−b| / max|b|` and `cosDiff = 1 − 2⟨a,b⟩/(|a|²+|b|²)` (FlashMLA `cal_diff`) over the
 * elements where `include(i)` holds (all by default), accumulated in float64.
 *
 * @param a the trace's values
 * @param b the reference values (same length)
 * @example
 * ```ts
 * const e = floatErrors([1.01, 2.02], [1, 2]);
 * e.maxRel.toFixed(4); // => '0.0100'
 * e.cosDiff.toExponential(2); // => '4.95e-5'
 * ```
 */
export function floatErrors(a: ArrayLike<number>, b: ArrayLike<number>, include?: (i: number) => boolean): FloatErrors {
  let maxAbs = 0;
  let maxRef = 0;
  let dot = 0;
  let aa = 0;
  let bb = 0;
  let nonFinite = 0;
  for (let i = 0; i < b.length; i++) {
    if (include && !include(i)) continue;
    const x = a[i]!;
    const y = b[i]!;
    if (!Number.isFinite(x) && Number.isFinite(y)) {
      nonFinite++;
      continue;
    }
    maxAbs = Math.max(maxAbs, Math.abs(x - y));
    maxRef = Math.max(maxRef, Math.abs(y));
    dot += x * y;
    aa += x * x;
    bb += y * y;
  }
  const denom = aa + bb;
  return {
    maxAbs,
    maxRel: maxRef > 0 ? maxAbs / maxRef : maxAbs,
    cosDiff: denom > 0 ? 1 - (2 * dot) / denom : 0,
    nonFinite,
  };
}

/** Result of comparing the selections of a trace with the reference's. */
export interface SelectionErrors {
  /** mean over rows of |trace ∩ reference| / |reference| */
  recall: number;
  /** selections that differ and whose scores are NOT within `tolerance` of the row's cut (real differences) */
  unexplained: number;
  /** selections that differ within the tolerance (precision noise) */
  nearTies: number;
  /** largest |score − cut| of a differing selection (0 when none differs) */
  maxGap: number;
  /** first unexplained difference, for the reason text */
  example: string | null;
}

/**
 * Compares per-row selections (sets of ids; −1 = padding). A position in the symmetric difference of the
 * trace's set A and the reference's set B is explained when its reference score lies within `tolerance`
 * of the row's cut (the lowest reference score in B): `|score − cut| ≤ tolerance`, i.e. the two scores
 * it swaps are within the noise of the precision. Recall = |A ∩ B| / |B| averaged over rows.
 *
 * @param traced rows of ids from the trace
 * @param reference rows of ids from the reference
 * @param score reference score of id `s` in row `t` (finite; −∞ for an id that cannot be chosen)
 * @example
 * ```ts
 * const score = (_t: number, s: number) => [5, 4, 3.999, 1][s]!;
 * selectionErrors([[0, 2]], [[0, 1]], score, 1e-2).unexplained; // => 0
 * selectionErrors([[0, 3]], [[0, 1]], score, 1e-2).unexplained; // => 1
 * ```
 */
export function selectionErrors(
  traced: readonly (readonly number[])[],
  reference: readonly (readonly number[])[],
  score: (row: number, id: number) => number,
  tolerance: number,
): SelectionErrors {
  let recall = 0;
  let unexplained = 0;
  let nearTies = 0;
  let maxGap = 0;
  let example: string | null = null;
  for (let t = 0; t < reference.length; t++) {
    const A = new Set(traced[t]!.filter((s) => s >= 0));
    const B = new Set(reference[t]!.filter((s) => s >= 0));
    const cut = Math.min(...[...B].map((s) => score(t, s)));
    let common = 0;
    for (const s of B) if (A.has(s)) common++;
    recall += B.size ? common / B.size : A.size === 0 ? 1 : 0;
    const differing = [...A].filter((s) => !B.has(s)).concat([...B].filter((s) => !A.has(s)));
    for (const s of differing) {
      const gap = Math.abs(score(t, s) - cut);
      maxGap = Math.max(maxGap, gap);
      if (gap <= tolerance) nearTies++;
      else {
        unexplained++;
        example ??= `row ${t}: id ${s} ${A.has(s) ? 'selected by the trace only' : 'missing from the trace'}, score ${fmt(score(t, s))} vs cut ${fmt(cut)} (tolerance ${fmt(tolerance)})`;
      }
    }
    if (A.size !== B.size && example === null) {
      unexplained++;
      example = `row ${t}: the trace selects ${A.size} ids, the reference ${B.size}`;
    }
  }
  return { recall: reference.length ? recall / reference.length : 1, unexplained, nearTies, maxGap, example };
}

/** Short number for reasons: 3 significant digits. */
export function fmt(x: number): string {
  return Number.isFinite(x) ? Number(x.toPrecision(3)).toString() : String(x);
}
