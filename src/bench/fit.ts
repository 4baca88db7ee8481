/** Power-law fit of time against context length: ms ≈ a · L^e, by least squares on (ln L, ln ms). */

/** Result of {@link fitExponent}: the exponent e, the prefactor a and the R² of the log-log fit. */
export interface PowerFit {
  exponent: number;
  prefactor: number;
  r2: number;
  points: number;
}

/**
 * Fits `y ≈ a · x^e` through the points (x > 0, y > 0) by ordinary least squares on logarithms.
 * Returns null when fewer than two distinct x values are given.
 *
 * @example
 * ```ts
 * fitExponent([[1, 2], [2, 8], [4, 32]])?.exponent; // 2
 * ```
 */
export function fitExponent(points: ReadonlyArray<readonly [number, number]>): PowerFit | null {
  const pts = points.filter(([x, y]) => x > 0 && y > 0 && Number.isFinite(y));
  if (new Set(pts.map(([x]) => x)).size < 2) return null;
  const lx = pts.map(([x]) => Math.log(x));
  const ly = pts.map(([, y]) => Math.log(y));
  const n = pts.length;
  const mx = lx.reduce((a, b) => a + b, 0) / n;
  const my = ly.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (lx[i]! - mx) * (ly[i]! - my);
    sxx += (lx[i]! - mx) ** 2;
    syy += (ly[i]! - my) ** 2;
  }
  const exponent = sxy / sxx;
  const r2 = syy === 0 ? 1 : (sxy * sxy) / (sxx * syy);
  return { exponent, prefactor: Math.exp(my - exponent * mx), r2, points: n };
}
