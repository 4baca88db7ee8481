/**
 * FP8 rounding midpoints in the golden checks of the FFN (fixtures/golden/README.md, tolerances: "FP8
 * weights: same, except where an activation lies within rounding error of an FP8 rounding midpoint;
 * report the count of such elements instead of failing on them").
 *
 * Before every FP8 linear, `act_quant` rounds `x/s` to e4m3. When `x/s` lies within float32 noise of
 * a midpoint between two e4m3 values, a different float32 summation order upstream (ours vs the
 * official CPU code) can send it to the other neighbour: one e4m3 quantum (up to 1/16 relative) in one
 * activation, which moves the linear's output by `quantum · s · W[:, i]`, well above 1e-4.
 *
 * {@link explainFfnByMidpoints} does not just count: for each token row above tolerance it lists the
 * quantizer inputs near a midpoint (the FFN input before W1/W3, the SwiGLU product before W2 of each
 * branch), re-runs that token's FFN with subsets of them rounded the other way, and exempts the row only
 * if one such flip makes the whole row match. A row it cannot explain stays failed.
 */
import { tf } from '../backend.ts';
import type { AttentionWeights, FfnWeights } from '../checkpoint.ts';
import { scaleFmt, type ModelConfig } from '../config.ts';
import { mlaAttend, mlaLatent, mlaQuery } from '../mla.ts';
import type { AttentionHook } from '../model.ts';
import { compareArrays } from './types.ts';
import { FP8_E4M3_MAX, actQuant } from '../fp8.ts';
import type { LayerRouting } from '../moe.ts';
import type { CheckResult } from './types.ts';
import { MIDPOINT_TOL } from './fixture.ts';
import { matMulWeightT, type WeightMatrix } from '../weight_matrix.ts';

/** At most this many re-evaluations per token row. */
const MAX_TRIES = 512;

/**
 * Distance from v (|v| < 448) to the nearest rounding midpoint of the e4m3 grid, and the e4m3 value on
 * the other side of that midpoint (the rounding a tiny perturbation of v could give instead).
 *
 * @example
 * ```ts
 * midpoint(1.0625).dist;  // => 0        (1.0625 is halfway between 1 and 1.125)
 * midpoint(1.0625).other; // => 1.125    (ties go to 1, the even mantissa)
 * midpoint(1.07).dist;    // => 0.0075
 * ```
 */
export function midpoint(v: number): { dist: number; other: number } {
  const a = Math.abs(v);
  if (a >= FP8_E4M3_MAX) return { dist: Infinity, other: v };
  const ulp = 2 ** (Math.floor(Math.log2(Math.max(a, 2 ** -6))) - 3); // spacing of the e4m3 grid around a
  const lower = Math.floor(a / ulp) * ulp;
  const mid = lower + ulp / 2;
  const rounded = a - lower < ulp / 2 || (a - lower === ulp / 2 && (lower / ulp) % 2 === 0) ? lower : lower + ulp;
  const other = rounded === lower ? lower + ulp : lower;
  return { dist: Math.abs(a - mid), other: Math.sign(v) * other };
}

/** A quantizer input near a midpoint: where, and its dequantized value when rounded the other way. */
interface Candidate {
  /** 'x' = FFN input (before W1, W3), or the branch index of a SwiGLU product (before W2). */
  site: 'x' | number;
  index: number;
  flipped: number;
  dist: number;
}

/** act_quant round trip of one row, and the elements near a midpoint. */
function quantRow(v: tf.Tensor2D, fmt: 'ue8m0' | null, site: Candidate['site']): { deq: Float32Array; cands: Candidate[] } {
  const { q, scale } = actQuant(v, fmt);
  const x = v.dataSync() as Float32Array;
  const qv = q.dataSync() as Float32Array;
  const s = scale.dataSync() as Float32Array;
  tf.dispose([q, scale]);
  const block = x.length / s.length;
  const deq = new Float32Array(x.length);
  const cands: Candidate[] = [];
  for (let i = 0; i < x.length; i++) {
    const si = s[Math.floor(i / block)]!;
    deq[i] = Math.fround(qv[i]! * si);
    const m = midpoint(Math.fround(x[i]! / si));
    if (m.dist <= MIDPOINT_TOL) cands.push({ site, index: i, flipped: Math.fround(m.other * si), dist: m.dist });
  }
  return { deq, cands };
}

/** One FFN branch of one token: (quantized) x → W1, W3 → SwiGLU → (quantized) → W2. */
interface Branch {
  w: FfnWeights<WeightMatrix>;
  coef: number;
}

function evalToken(xq: Float32Array, branches: Branch[], fmt: 'ue8m0' | null, flips: Candidate[], collect: Candidate[] | null): Float32Array {
  const x = Float32Array.from(xq);
  for (const f of flips) if (f.site === 'x') x[f.index] = f.flipped;
  const xt = tf.tensor2d(x, [1, x.length]);
  let y: Float32Array | null = null;
  branches.forEach((b, bi) => {
    const a = tf.tidy(() => {
      const h1 = matMulWeightT(xt, b.w.w1.weight);
      const h3 = matMulWeightT(xt, b.w.w3.weight);
      return tf.mul(tf.mul(h1, tf.sigmoid(h1)), h3) as tf.Tensor2D; // [1, F]
    });
    let act: Float32Array;
    if (b.w.w2.fp8) {
      const r = quantRow(a, fmt, bi);
      act = r.deq;
      if (collect) collect.push(...r.cands);
    } else act = Float32Array.from(a.dataSync());
    a.dispose();
    for (const f of flips) if (f.site === bi) act[f.index] = f.flipped;
    const out = tf.tidy(() => matMulWeightT(tf.tensor2d(act, [1, act.length]), b.w.w2.weight).dataSync() as Float32Array);
    if (!y) y = new Float32Array(out.length);
    for (let d = 0; d < out.length; d++) y[d] = y[d]! + b.coef * out[d]!;
  });
  xt.dispose();
  return y!;
}

/** All subsets of `c` up to `limit` of them, smallest first. */
function* subsets<T>(c: T[], limit: number): Generator<T[]> {
  let n = 0;
  for (let size = 1; size <= c.length; size++) {
    const idx = Array.from({ length: size }, (_, i) => i);
    for (;;) {
      if (n++ >= limit) return;
      yield idx.map((i) => c[i]!);
      let i = size - 1;
      while (i >= 0 && idx[i] === c.length - size + i) i--;
      if (i < 0) break;
      idx[i]!++;
      for (let j = i + 1; j < size; j++) idx[j] = idx[j - 1]! + 1;
    }
  }
}

/**
 * Re-examines a failed `ffn.out` row (see the module comment). Returns the row unchanged when it passed,
 * when nothing is FP8, or when a failing token cannot be explained by midpoint flips; otherwise a
 * passing row whose reason counts the exempted elements and names them.
 *
 * @param row the failed comparison
 * @param x [T, D] the FFN input that produced `actual`
 * @param ffn dense weights, or MoE experts + shared expert with the routing used
 * @param actual [T, D] our output; `expected` [T, D] the recorded one; `rtol` the tolerance
 * @example
 * ```ts
 * // see golden_model.ts `ffnRow`: explainFfnByMidpoints(row, ffnIn, { kind: 'dense', dense }, 'ue8m0', actual, expected, 1e-4)
 * ```
 */
export function explainFfnByMidpoints(
  row: CheckResult,
  x: tf.Tensor2D,
  ffn: { kind: 'dense'; dense: FfnWeights<WeightMatrix> } | { kind: 'moe'; experts: FfnWeights<WeightMatrix>[]; shared: FfnWeights<WeightMatrix> | null; routing: LayerRouting },
  fmt: 'ue8m0' | null,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rtol: number,
): CheckResult {
  if (row.pass) return row;
  const [T, D] = x.shape;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) maxRef = Math.max(maxRef, Math.abs(expected[i]!));
  const bound = rtol * Math.max(1, maxRef);
  /** max error of token row t; `y` holds that row at offset `off`. */
  const rowErr = (y: ArrayLike<number>, t: number, off = t * D) => {
    let m = 0;
    for (let d = 0; d < D; d++) m = Math.max(m, Math.abs(y[off + d]! - expected[t * D + d]!));
    return m;
  };
  const explained: string[] = [];
  let exempt = 0;
  let worst = 0;
  for (let t = 0; t < T; t++) {
    if (rowErr(actual, t) <= bound) continue;
    const branches: Branch[] =
      ffn.kind === 'dense'
        ? [{ w: ffn.dense, coef: 1 }]
        : [
            ...Array.from({ length: ffn.routing.experts }, (_, j) => ({
              w: ffn.experts[ffn.routing.indices[t * ffn.routing.experts + j]!]!,
              coef: ffn.routing.weights[t * ffn.routing.experts + j]!,
            })),
            ...(ffn.shared ? [{ w: ffn.shared, coef: 1 }] : []),
          ];
    if (!branches[0]!.w.w1.fp8) return row;
    const xt = tf.slice(x, [t, 0], [1, D]) as tf.Tensor2D;
    const { deq: xq, cands: xCands } = quantRow(xt, fmt, 'x');
    xt.dispose();
    const base: Candidate[] = [];
    evalToken(xq, branches, fmt, [], base);
    const cands = [...xCands, ...base];
    let found: { flips: Candidate[]; err: number } | null = null;
    for (const flips of subsets(cands, MAX_TRIES)) {
      const y = evalToken(xq, branches, fmt, flips, null);
      const err = rowErr(y, t, 0);
      if (err <= bound) {
        found = { flips, err };
        break;
      }
    }
    if (!found) {
      return { ...row, reason: `${row.reason ?? 'above tolerance'}; token ${t}: ${cands.length} quantizer inputs near an e4m3 midpoint, no flip of ≤ ${MAX_TRIES} subsets reproduces the row` };
    }
    exempt += found.flips.length;
    worst = Math.max(worst, found.err / Math.max(1, maxRef));
    explained.push(
      `token ${t}: ` +
        found.flips.map((f) => `${f.site === 'x' ? 'ffn.in' : `SwiGLU product of branch ${f.site}`}[${f.index}] (|x/s − midpoint| = ${f.dist.toExponential(1)})`).join(', '),
    );
  }
  return {
    ...row,
    pass: true,
    reason:
      `${exempt} FP8-midpoint elements exempted (max rel err ${row.max_rel_err?.toExponential(2)} before): ${explained.join('; ')}; ` +
      `rounded the other way, each row matches (max rel err ${worst.toExponential(2)})`,
  };
}

// --- Index scores (e2e) ---

/** Relative bound for an index score element exempted as an FP8 midpoint element (as golden_indexer.ts). */
export const MIDPOINT_RTOL = 1e-2;

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
 * Per row: does any quantizer input `values/scale` (blocks of `values.length / scales.length`) lie
 * within `MIDPOINT_TOL` (fixture.ts) of an e4m3 midpoint, or (ue8m0) does its block's raw scale sit at
 * a power-of-two step ({@link scaleAtPow2Step})? With `reference` (the same quantizer inputs computed
 * from the recorded module inputs), the window of each element grows by its distance to the reference value.
 *
 * @param values [rows, n] quantizer inputs; `scales` [rows, n / block] the scales act_quant used
 * @example
 * ```ts
 * midpointRows(Float32Array.of(1.0625, 1.3), Float32Array.of(1, 1), 2, false); // => [true, false]
 * midpointRows(Float32Array.of(56, 3, 57, 3), Float32Array.of(0.125, 0.25), 2, true); // => [true, false]
 * ```
 */
export function midpointRows(
  values: Float32Array, scales: Float32Array, rows: number, ue8m0: boolean,
  reference?: { values: Float32Array; scales: Float32Array },
): boolean[] {
  const perRow = values.length / rows;
  const block = values.length / scales.length;
  const flags = new Array<boolean>(rows).fill(false);
  for (let b = 0; b < scales.length; b++) {
    const s = scales[b]!;
    let amax = 0;
    for (let i = b * block; i < (b + 1) * block; i++) {
      amax = Math.max(amax, Math.abs(values[i]!));
      const y = Math.fround(values[i]! / s);
      // end to end, our quantizer input may sit further from the official one: widen by the distance to
      // the teacher-forced value (computed from the recorded inputs), which itself is within MIDPOINT_TOL
      const drift = reference ? Math.abs(y - Math.fround(reference.values[i]! / reference.scales[b]!)) : 0;
      if (midpoint(y).dist <= MIDPOINT_TOL + drift) flags[Math.floor(i / perRow)] = true;
    }
    if (ue8m0 && scaleAtPow2Step(amax)) flags[Math.floor((b * block) / perRow)] = true;
  }
  return flags;
}

/**
 * Re-examines a failed index-score row [T, S]: an element above tolerance is counted instead of failed
 * when its query row or key column had a quantizer input at an e4m3 midpoint and it stays within
 * {@link MIDPOINT_RTOL} (one e4m3 quantum moves a score by ~1e-3 relative).
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
  const loose = MIDPOINT_RTOL * Math.max(1, maxRef);
  let counted = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    if (d <= bound) continue;
    const t = Math.floor(i / S);
    const s = i % S;
    if (!(queryFlags[t] || keyFlags[s]) || !(d <= loose)) {
      return { ...row, reason: `${row.reason ?? 'above tolerance'}; element [${t}, ${s}] is not explained by an e4m3 midpoint of its query or key` };
    }
    counted++;
  }
  return { ...row, pass: true, reason: `${counted} FP8-midpoint elements counted (query row or key column at an e4m3 rounding midpoint, each within ${MIDPOINT_RTOL} relative)` };
}

// --- End to end across an FP8 midpoint of the KV latent ---

/** At most this many subsets of latent midpoint candidates are tried per layer call, of at most 4 flips each. */
const MAX_STEER_TRIES = 64;
const MAX_STEER_FLIPS = 4;

/**
 * Follows the official rounding at a verified FP8 midpoint of the KV latent (used by the end-to-end runs
 * of golden_model.ts and weights.ts through the model's attention hook).
 *
 * V3.2 rounds the normalized KV latent to e4m3 before caching it (also with float32 weights). When one
 * latent element lies within float32 noise of a rounding midpoint, the official run may have rounded
 * it the other way; every later layer and step then differs by far more than 1e-4 (README: "a
 * difference of one FP8 quantum ... can change ... every later value"). The end-to-end run follows the
 * official rounding there, and only there: when this call's attention output misses the recorded one,
 * the latent elements of this call at a midpoint (|x/s − m| ≤ MIDPOINT_TOL) are flipped, smallest
 * subsets first; if one flip makes the whole attention output match, the cache keeps the flipped latent
 * (so later steps see it too) and the row names the flip. Otherwise nothing changes and rows fail.
 *
 * @returns the matching output [T, D] (owned by the caller), `flips` (what was flipped) and `note` (for a
 *   steered row); null when the output already matches or no flip explains it. The cache is changed
 *   only when a flip is returned.
 * @example
 * ```ts
 * // inside modelForward's onAttention hook (golden_model.ts `endToEnd`):
 * // const s = steerLatentMidpoints(config, maxSeqLen, layer.attn, call, recordedAttnOut, 1e-4); return s?.out ?? null;
 * ```
 */
export function steerLatentMidpoints(
  config: ModelConfig, maxSeqLen: number, w: AttentionWeights<WeightMatrix>, call: Parameters<AttentionHook>[0], expected: Float32Array, rtol: number,
): { out: tf.Tensor2D; flips: string; note: string } | null {
  const { x, att, cache, startPos } = call;
  // a length mismatch is a malformed record, not a rounding question: no flip can fix it
  if (expected.length !== att.out.size || compareArrays(att.out.dataSync(), expected, rtol).pass || !cache.kv) return null;
  const T = x.shape[0];
  const C = config.kv_lora_rank;
  const block = Math.min(C, 128);
  const { values, scales } = tf.tidy(() => {
    const { normalized } = mlaLatent(x, w, startPos, { config, maxSeqLen });
    const { scale } = actQuant(normalized, scaleFmt(config), block);
    return { values: normalized.dataSync() as Float32Array, scales: scale.dataSync() as Float32Array };
  });
  const candidates: Array<{ pos: number; dim: number; dist: number; other: number }> = [];
  for (let i = 0; i < values.length; i++) {
    const si = scales[Math.floor(i / block)]!;
    const m = midpoint(Math.fround(values[i]! / si));
    if (m.dist <= MIDPOINT_TOL) candidates.push({ pos: startPos + Math.floor(i / C), dim: i % C, dist: m.dist, other: Math.fround(m.other * si) });
  }
  if (candidates.length === 0) return null;
  const { qNope, qPe, qr } = mlaQuery(x, w, startPos, { config, maxSeqLen });
  const mode = T > 1 ? 'mha' : 'mqa';
  try {
    for (const subset of subsets(candidates, MAX_STEER_TRIES)) {
      if (subset.length > MAX_STEER_FLIPS) break;
      const kv = cache.kv.dataSync().slice() as Float32Array;
      for (const m of subset) kv[m.pos * C + m.dim] = m.other;
      const kvT = tf.tensor2d(kv, cache.kv.shape);
      let out: tf.Tensor2D;
      try {
        out = mlaAttend(qNope, qPe, kvT, cache.pe!, att.topk, w, startPos, { config, maxSeqLen, mode });
      } catch (e) {
        kvT.dispose();
        throw e;
      }
      if (compareArrays(out.dataSync(), expected, rtol).pass) {
        cache.kv.dispose();
        cache.kv = kvT;
        const names = subset.map((m) => `position ${m.pos} dim ${m.dim} (|x/s − midpoint| = ${m.dist.toExponential(1)})`).join(', ');
        const flips = `KV latent ${names} rounded the other way reproduces the recorded attention output`;
        return { out, flips, note: `steered at an FP8 midpoint: ${flips}; the cache keeps the flipped latent for later steps` };
      }
      tf.dispose([out, kvT]);
    }
    return null;
  } finally {
    tf.dispose([qNope, qPe, qr]);
  }
}
