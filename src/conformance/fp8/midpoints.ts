/**
 * FP8 rounding midpoints: the one place that decides when an activation entering an e4m3 quantizer may
 * have been rounded the other way by the official run, and how that other rounding is tried.
 *
 * Before every FP8 linear (and in the KV-latent round trip and the indexer's q/k quantization),
 * `act_quant` rounds `y = x/s` to e4m3 (src/fp8.ts `actQuant`). When `y` lies within float32 noise of the
 * midpoint between two e4m3 values, a different float32 summation order upstream (ours vs the machine that
 * ran the official code) can send it to the other neighbour: one e4m3 quantum (up to 1/16 relative) in one
 * activation, far above the golden tolerance 1e-4 downstream (fixtures/golden/README.md, "Tolerances").
 *
 * - **Detection** ({@link nearMidpoint}, {@link MIDPOINT_TOL}): `|y − m| ≤ MIDPOINT_TOL` for the nearest
 *   midpoint m.
 * - **Flips** ({@link Flip}, {@link roundingProbe}): a flip names one quantizer input element (site input,
 *   FFN branch, layer, call token, element of the row); the probe rounds exactly those elements to their
 *   other neighbour, wherever that input is quantized (the official code quantizes `attn.in` once per
 *   linear — wq_a, wkv_a, indexer wk — with the same result, so one flip applies to all of them).
 * - **Search** ({@link subsets}, {@link searchFlips}): subsets of candidates, smallest first, closest to
 *   their midpoint first, until one reproduces the recorded tensor.
 *
 * Used by the teacher-forced checks (src/conformance/checks/), by the end-to-end steering
 * (./steer.ts) and by `--weights --expect` (src/conformance/weights.ts).
 */
import { tf } from '../../backend.ts';
import { FP8_E4M3_MAX, type QuantSite, type RoundingProbe } from '../../fp8.ts';
import { compareArrays, type CheckResult } from '../core/rows.ts';

/**
 * The one detection tolerance: an element counts as lying on an e4m3 rounding midpoint when its quantizer
 * input `y = x/s` is within 448 · 2⁻²² ≈ 1.1e-4 of the midpoint, in units of `y` (whose block maximum is
 * 448): about 3.5 float32 ulps of the block maximum. Our activations differ from the official ones by
 * float32 summation order only, and a sum of n terms carries an absolute error of a few ulps of its largest
 * terms whatever the size of the result. The flips seen in the shipped fixtures sat at 1e-6 to 4e-5.
 */
export const MIDPOINT_TOL = 448 * 2 ** -22;

/**
 * End to end, the run's own quantizer inputs also carry the float32 drift of every earlier layer and step
 * (each layer is fed our previous layer's output, not the recorded one), so an element the official run
 * rounded on the other side can sit farther from its midpoint in our run: the steering
 * (./steer.ts) searches a window of `E2E_WINDOW · MIDPOINT_TOL` ≈ 8.5e-4 (closest first). Measured: at
 * public-fp32 step 0 layer 2 the indexer query of token 35 that the official run rounded the other way sits
 * 4.0e-4 from its midpoint in our run. A flip is kept only when it reproduces the recorded tensor, so the
 * wider window adds candidates, never a pass by itself.
 */
export const E2E_WINDOW = 8;

/** 2^(e − 6) for e = 0..14: the lower ends of the e4m3 binades (2⁻⁶ … 2⁸). */
const BINADE = Array.from({ length: 15 }, (_, e) => 2 ** (e - 6));

/**
 * Distance from v (|v| < 448) to the nearest rounding midpoint of the e4m3 grid, and the e4m3 value on
 * the other side of that midpoint (the rounding a tiny perturbation of v could give instead).
 *
 * @example
 * ```ts
 * midpoint(1.0625).dist;  // => 0        (1.0625 is halfway between 1 and 1.125)
 * midpoint(1.0625).other; // => 1.125    (ties go to 1, the even mantissa)
 * midpoint(1.07).dist;    // => 0.0075
 * midpoint(-0.0029296875).other; // => -0.001953125  (subnormals: spacing 2⁻⁹)
 * ```
 */
export function midpoint(v: number): { dist: number; other: number } {
  const a = Math.abs(v);
  if (a >= FP8_E4M3_MAX) return { dist: Infinity, other: v };
  let e = 0; // binade of a: 2^(e − 6) ≤ a < 2^(e − 5), subnormals in binade 0
  while (e < 14 && a >= BINADE[e + 1]!) e++;
  const ulp = BINADE[e]! / 8; // spacing of the e4m3 grid around a
  const lower = Math.floor(a / ulp) * ulp;
  const mid = lower + ulp / 2;
  const rounded = a - lower < ulp / 2 || (a - lower === ulp / 2 && (lower / ulp) % 2 === 0) ? lower : lower + ulp;
  const other = rounded === lower ? lower + ulp : lower;
  return { dist: Math.abs(a - mid), other: Math.sign(v) * other };
}

/**
 * Is quantizer input y = x/s on an e4m3 rounding midpoint, within `tol` (default {@link MIDPOINT_TOL})?
 *
 * @example
 * ```ts
 * nearMidpoint(1.0625 + 1e-5); // => true
 * nearMidpoint(1.07);          // => false
 * ```
 */
export function nearMidpoint(y: number, tol = MIDPOINT_TOL): boolean {
  return midpoint(y).dist <= tol;
}

/**
 * Is a ue8m0 scale at a power-of-two step? `act_quant` rounds the raw scale `amax · float32(1/448)` UP
 * to a power of two; when the raw scale itself lies within float32 noise of a power of two, a different
 * summation order upstream can put it on either side, doubling or halving the block's scale. The test
 * is on the raw scale, computed from the block's amax (floored at 1e-4 as in `act_quant`), never on the
 * already-rounded scale (a power of two by construction).
 *
 * @param amax max |x| of the block's quantizer inputs
 * @example
 * ```ts
 * scaleAtPow2Step(56);  // => true   (56 · fround(1/448) ≈ 2⁻³)
 * scaleAtPow2Step(57);  // => false
 * ```
 */
export function scaleAtPow2Step(amax: number): boolean {
  const raw = Math.fround(Math.max(amax, 1e-4) * Math.fround(1 / FP8_E4M3_MAX));
  const l = Math.log2(raw);
  return Math.abs(l - Math.round(l)) < 1e-6;
}

/**
 * Per row: does any quantizer input `values/scale` (blocks of `values.length / scales.length`) lie on an
 * e4m3 midpoint ({@link nearMidpoint}), or (ue8m0) does its block's raw scale sit at a power-of-two step
 * ({@link scaleAtPow2Step})? Used where an exact flip search is not made (the indexer's score rows);
 * `tol` is {@link MIDPOINT_TOL}, or `E2E_WINDOW · MIDPOINT_TOL` end to end.
 *
 * @param values [rows, n] quantizer inputs; `scales` [rows, n / block] the scales act_quant used
 * @example
 * ```ts
 * midpointRows(Float32Array.of(1.0625, 1.3), Float32Array.of(1, 1), 2, false); // => [true, false]
 * midpointRows(Float32Array.of(56, 3, 57, 3), Float32Array.of(0.125, 0.25), 2, true); // => [true, false]
 * ```
 */
export function midpointRows(values: ArrayLike<number>, scales: ArrayLike<number>, rows: number, ue8m0: boolean, tol = MIDPOINT_TOL): boolean[] {
  const perRow = values.length / rows;
  const block = values.length / scales.length;
  const flags = new Array<boolean>(rows).fill(false);
  for (let b = 0; b < scales.length; b++) {
    const s = scales[b]!;
    let amax = 0;
    for (let i = b * block; i < (b + 1) * block; i++) {
      amax = Math.max(amax, Math.abs(values[i]!));
      if (nearMidpoint(Math.fround(values[i]! / s), tol)) flags[Math.floor(i / perRow)] = true;
    }
    if (ue8m0 && scaleAtPow2Step(amax)) flags[Math.floor((b * block) / perRow)] = true;
  }
  return flags;
}

/** Relative bound of an index-score element counted at a midpoint: one e4m3 quantum of q or k moves a score by ~1e-3. */
export const MIDPOINT_SCORE_RTOL = 1e-2;

/**
 * Re-examines a failed index-score row [T, S]: an element above tolerance is counted instead of failed
 * when its query row or key column had a quantizer input on an e4m3 midpoint ({@link midpointRows}) and
 * it stays within {@link MIDPOINT_SCORE_RTOL} · max(1, max|b|). (The indexer scores are not flipped here:
 * they do not feed the model's values, only the selection, which its own row compares.)
 *
 * @example
 * ```ts
 * const row = { case: 'c', check: 'indexer.score', step: 0, layer: 0, pass: false, max_abs_err: 2e-3, max_rel_err: 2e-3 };
 * explainScoresByMidpoints(row, [1.002, 0], [1, 0], 2, [true], [false, false], 1e-4).pass; // => true
 * explainScoresByMidpoints(row, [1.002, 0], [1, 0], 2, [false], [false, false], 1e-4).pass; // => false
 * ```
 */
export function explainScoresByMidpoints(
  row: CheckResult, actual: ArrayLike<number>, expected: ArrayLike<number>, S: number, queryFlags: boolean[], keyFlags: boolean[], rtol: number,
): CheckResult {
  if (row.pass) return row;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) maxRef = Math.max(maxRef, Math.abs(expected[i]!));
  const bound = rtol * Math.max(1, maxRef);
  const loose = MIDPOINT_SCORE_RTOL * Math.max(1, maxRef);
  let counted = 0;
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    if (d <= bound) continue;
    const t = Math.floor(i / S);
    const s = i % S;
    if (!(queryFlags[t] || keyFlags[s]) || !(d <= loose)) {
      return { ...row, reason: `${row.reason ?? 'above tolerance'}; element [${t}, ${s}] is not explained by an e4m3 midpoint of its query or key` };
    }
    counted++;
    worst = Math.max(worst, d);
  }
  return {
    ...row, pass: true,
    reason: `${counted} FP8-midpoint elements counted (query row or key column with a quantizer input at an e4m3 rounding midpoint; max rel err ${(worst / Math.max(1, maxRef)).toExponential(2)} ≤ ${MIDPOINT_SCORE_RTOL})`,
  };
}

// --- Flips ---

/** One quantizer input element rounded to its other e4m3 neighbour. */
export interface Flip {
  /** layer of the call (undefined outside a model forward). */
  layer?: number;
  /** the quantized tensor (src/fp8.ts `QuantSite.input`). */
  input: QuantSite['input'];
  /** FFN branch for `ffn.act` (`dense`, `shared`, `expert E`); unused for the other inputs. */
  branch?: string;
  /** token of the call (row of the quantizer input; negative = a cached position before the call). */
  token: number;
  /** element within the row (flattened over heads for `indexer.q`). */
  element: number;
  /** |x/s − midpoint| when found. */
  dist: number;
  /** the quantizer input x/s when found (its e4m3 quantum, and so the flip's effect, grows with |x/s|). */
  y?: number;
  /** the first consumer seen (`wq_a`, `expert 3.w2`, ...), for the report. */
  linear: string;
}

/** Identity of a flip: the same element of the same quantized tensor, wherever it is quantized. */
export function flipKey(f: Pick<Flip, 'layer' | 'input' | 'branch' | 'token' | 'element'>): string {
  return `${f.layer ?? ''}|${f.input}|${f.input === 'ffn.act' ? f.branch : ''}|${f.token}|${f.element}`;
}

/**
 * A rounding probe (src/model.ts `ForwardProbe.rounding`) that rounds the elements named by `flips` to
 * their other e4m3 neighbour, and, with `found`, lists every element within `tol` of a midpoint of every
 * quantizer (of the inputs in `only`, when given), each once (by {@link flipKey}).
 *
 * @example
 * ```ts
 * import { actQuant } from 'dsv32/fp8';
 * const found: Flip[] = [];
 * const probe = roundingProbe([{ input: 'wo.in', token: 0, element: 1, dist: 0, linear: 'wo' }], found);
 * const x = tf.tensor2d([[448, 1.0625]]);   // s = 1: 1.0625 sits on the midpoint between 1 and 1.125
 * const { q } = actQuant(x, null, 2, (xx, qq, s) => probe({ input: 'wo.in', linear: 'wo' }, xx, qq, s));
 * Array.from(q.dataSync()); // => [448, 1.125]
 * found.map((f) => f.element); // => [1]
 * ```
 */
export function roundingProbe(flips: readonly Flip[], found?: Flip[], tol = MIDPOINT_TOL, only?: ReadonlySet<QuantSite['input']>): RoundingProbe {
  const wanted = new Set(flips.map(flipKey));
  const inputs = new Set(flips.map((f) => f.input));
  const seen = new Set<string>();
  return (site, x, q, scale) => {
    const apply = inputs.has(site.input);
    const list = found !== undefined && (!only || only.has(site.input));
    if (!apply && !list) return null;
    const xs = x.dataSync() as Float32Array;
    const ss = scale.dataSync() as Float32Array;
    const rows = x.shape[0] ?? 1;
    const perRow = xs.length / rows;
    const block = xs.length / ss.length;
    let out: Float32Array | null = null;
    const key = { layer: site.layer, input: site.input, branch: site.branch, token: 0, element: 0 };
    for (let i = 0; i < xs.length; i++) {
      const y = Math.fround(xs[i]! / ss[Math.floor(i / block)]!);
      const m = midpoint(y);
      if (!apply && !(list && m.dist <= tol)) continue;
      const r = Math.floor(i / perRow);
      key.token = site.tokens ? site.tokens[r]! : r;
      key.element = i - r * perRow;
      const k = flipKey(key);
      if (list && m.dist <= tol && !seen.has(k)) {
        seen.add(k);
        found.push({ ...key, ...(site.layer === undefined ? {} : { layer: site.layer }), dist: m.dist, y, linear: site.linear });
      }
      if (apply && wanted.has(k) && m.dist !== Infinity) {
        out ??= Float32Array.from(q.dataSync() as Float32Array);
        out[i] = m.other;
      }
    }
    return out ? tf.tensor(out, q.shape) : null;
  };
}

/**
 * Non-empty subsets of `items` of at most `maxSize` elements, smallest first (in index order within a size).
 *
 * @example
 * ```ts
 * [...subsets(['a', 'b', 'c'], 2)].map((s) => s.join('')); // => ['a', 'b', 'c', 'ab', 'ac', 'bc']
 * ```
 */
export function* subsets<T>(items: readonly T[], maxSize = items.length): Generator<T[]> {
  const n = items.length;
  for (let size = 1; size <= Math.min(n, maxSize); size++) {
    const idx = Array.from({ length: size }, (_, i) => i);
    for (;;) {
      yield idx.map((i) => items[i]!);
      let k = size - 1;
      while (k >= 0 && idx[k] === n - size + k) k--;
      if (k < 0) break;
      idx[k]!++;
      for (let j = k + 1; j < size; j++) idx[j] = idx[j - 1]! + 1;
    }
  }
}

/** Limits of {@link searchFlips}: candidates kept (closest first), subset size, evaluations. */
export const FLIP_SEARCH: { readonly candidates: number; readonly maxSize: number; readonly tries: number } = { candidates: 24, maxSize: 3, tries: 96 };

/**
 * The flip search: tries subsets of `candidates` ({@link subsets}; the first {@link FLIP_SEARCH}.candidates
 * in `order` — default: closest to their midpoint first —, at most `maxSize` at a time, at most `tries`
 * evaluations) and returns the first subset for which `reproduces` is true, or null.
 *
 * @example
 * ```ts
 * const c = [1, 2, 3].map((e) => ({ input: 'wo.in' as const, token: 0, element: e, dist: e * 1e-6, linear: 'wo' }));
 * searchFlips(c, (s) => s.length === 2 && s[1]!.element === 3)!.map((f) => f.element); // => [1, 3]
 * searchFlips(c, () => false); // => null
 * ```
 */
export function searchFlips(
  candidates: readonly Flip[], reproduces: (subset: Flip[]) => boolean, limits: Partial<typeof FLIP_SEARCH> = {},
  order: (a: Flip, b: Flip) => number = (a, b) => a.dist - b.dist,
): Flip[] | null {
  const { candidates: keep, maxSize, tries } = { ...FLIP_SEARCH, ...limits };
  const closest = [...candidates].sort(order).slice(0, keep);
  let n = 0;
  for (const subset of subsets(closest, maxSize)) {
    if (n++ >= tries) break;
    if (reproduces(subset)) return subset;
  }
  return null;
}

/**
 * One flip as the report names it.
 *
 * @example
 * ```ts
 * describeFlip({ layer: 2, input: 'attn.in', token: 19, element: 200, dist: 7.6e-6, linear: 'wq_a' }, 0);
 * // => 'attn.in (quantized before wq_a) token 19 element 200, |x/s − midpoint| = 7.6e-6'
 * ```
 */
export function describeFlip(f: Flip, startPos: number): string {
  const where = f.input === 'wkv_b.in' ? `position ${startPos + f.token}` : `token ${startPos + f.token}`;
  const branch = f.input === 'ffn.act' ? ` of ${f.branch}` : '';
  return `${f.input}${branch} (quantized before ${f.linear}) ${where} element ${f.element}, |x/s − midpoint| = ${f.dist.toExponential(1)}`;
}

/**
 * Re-examines a failed teacher-forced row by the flip search: `evaluate(probe)` recomputes the tensor
 * ([T, width], from the recorded inputs) with the given rounding probe. The quantizer inputs on a midpoint
 * in the failing rows (every row up to the last failing one with `causal`, whose keys and latents those
 * rows read) are the candidates; the row passes only if one subset rounded the other way reproduces the
 * WHOLE recorded tensor; its errors are then those after the flip and its reason names the flips and the
 * error before. Otherwise the row is returned failed, with what
 * was tried. The last evaluation is the kept one (the flips found, or none), so an evaluation that fills
 * a cache leaves it holding the official rounding.
 *
 * @example
 * ```ts
 * // checks/model.ts: explainByFlips(row, (probe) => ffnOut(x, probe), expected, T, 0, GOLDEN_RTOL)
 * ```
 */
export function explainByFlips(
  row: CheckResult, evaluate: (probe: RoundingProbe) => Float32Array, expected: ArrayLike<number>, T: number, startPos: number, rtol: number,
  causal = false,
): CheckResult {
  if (row.pass || row.reason?.startsWith('length')) return row;
  const found: Flip[] = [];
  const base = evaluate(roundingProbe([], found));
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) maxRef = Math.max(maxRef, Math.abs(expected[i]!));
  const bound = rtol * Math.max(1, maxRef);
  const width = expected.length / T;
  const failing = new Set<number>();
  for (let i = 0; i < expected.length; i++) if (!(Math.abs(base[i]! - expected[i]!) <= bound)) failing.add(Math.floor(i / width));
  const last = Math.max(...failing);
  const candidates = found.filter((f) => (causal ? f.token <= last : failing.has(f.token)));
  let after = { maxAbs: 0, maxRel: 0 };
  const subset = searchFlips(candidates, (s) => {
    const c = compareArrays(evaluate(roundingProbe(s)), expected, rtol);
    after = c;
    return c.pass;
  });
  const rowsText = `rows [${[...failing].map((t) => startPos + t).join(', ')}]`;
  if (!subset) {
    if (candidates.length > 0) evaluate(roundingProbe([])); // a stateful evaluation (a cache) ends as it began
    const tried = candidates.length === 0
      ? 'no quantizer input of these rows lies on an e4m3 midpoint'
      : `${candidates.length} quantizer inputs on an e4m3 midpoint, no flip of ≤ ${FLIP_SEARCH.tries} subsets reproduces the recorded tensor`;
    return { ...row, reason: `${row.reason ?? 'above tolerance'}; ${rowsText}: ${tried}` };
  }
  return {
    ...row, pass: true, max_abs_err: after.maxAbs, max_rel_err: after.maxRel,
    reason: `FP8 midpoint (${rowsText}, max rel err ${row.max_rel_err?.toExponential(2)} before): ${subset.map((f) => describeFlip(f, startPos)).join('; ')}; ` +
      `rounded the other way, the whole tensor matches (the errors of this row are after the flip)`,
  };
}
