/**
 * Conformance checks for the numerics vectors (`fixtures/vectors/numerics-*.json`, README "Numerics"):
 * `fp8_codec`, `act_quant`, `weight_dequant`, `hadamard`, `rope`. Tolerances are the README's: exact for the
 * FP8 kinds, 1e−6 relative for the Hadamard transform, 2 float32 ulp for RoPE frequencies and
 * 1e−6 + 4·t·2⁻²⁴·max|x| for rotations at position t.
 *
 * Works for any file of the same format; malformed data gives failed rows with a reason, never a throw.
 */
import { tf } from '../backend.ts';
import { compareArrays, type CheckResult } from './core/rows.ts';
import { actQuant, decodeE4m3Bytes, e4m3Decode, e4m3Encode, e4m3Round, weightDequant, FP8_BLOCK } from '../fp8.ts';
import { hadamard } from '../hadamard.ts';
import { applyRope, ropeAngles, yarnFrequencies } from '../rope.ts';
import { softmaxScale } from '../config.ts';
import { nestedShape } from '../internal/contract.ts';

/** Malformed vector data (caught and reported as a failed row). */
class VectorFormatError extends Error {
  override name = 'VectorFormatError';
}

// --- Reading the JSON defensively ---

function get(json: unknown, path: string): unknown {
  let cur: unknown = json;
  for (const key of path.split('.')) {
    if (typeof cur !== 'object' || cur === null || !(key in cur)) throw new VectorFormatError(`missing '${path}'`);
    cur = (cur as Record<string, unknown>)[key];
  }
  return cur;
}

function num(json: unknown, path: string): number {
  const v = get(json, path);
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new VectorFormatError(`'${path}' must be a finite number but got ${JSON.stringify(v)}`);
  return v;
}

/** A numeric array of the given rank, flattened; `null` entries become NaN when `allowNull`. */
function array(json: unknown, path: string, rank: number, allowNull = false): { data: number[]; shape: number[] } {
  const v = get(json, path);
  let shape: number[];
  try {
    shape = nestedShape(v, rank, path);
  } catch (e) {
    throw new VectorFormatError((e as Error).message);
  }
  const data: number[] = [];
  const walk = (node: unknown, d: number): void => {
    if (d === rank) {
      if (typeof node === 'number') data.push(node);
      else if (node === null && allowNull) data.push(NaN);
      else throw new VectorFormatError(`'${path}' holds a non-number ${JSON.stringify(node)}`);
      return;
    }
    if (!Array.isArray(node) || node.length !== shape[d]) throw new VectorFormatError(`'${path}' is ragged or not rank ${rank}`);
    for (const child of node) walk(child, d + 1);
  };
  walk(v, 0);
  return { data, shape };
}

// --- Result rows ---

function row(caseName: string, check: string, pass: boolean, maxAbs: number | null, maxRel: number | null, reason?: string): CheckResult {
  const r: CheckResult = { case: caseName, check, step: null, layer: null, pass, max_abs_err: maxAbs, max_rel_err: maxRel };
  if (reason !== undefined) r.reason = reason;
  return r;
}

/** Exact comparison (NaN equals NaN; 0 equals −0 unless `signedZero`). */
function exactRow(caseName: string, check: string, actual: ArrayLike<number>, expected: ArrayLike<number>, signedZero = false): CheckResult {
  if (actual.length !== expected.length) return row(caseName, check, false, null, null, `length ${actual.length} ≠ expected ${expected.length}`);
  let bad = 0;
  let first = -1;
  let maxAbs = 0;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const b = expected[i]!;
    const same = Number.isNaN(b) ? Number.isNaN(a) : signedZero ? Object.is(a, b) : a === b;
    if (!same) {
      bad++;
      if (first < 0) first = i;
    }
    const d = Math.abs(a - b);
    if (Number.isFinite(d) && d > maxAbs) maxAbs = d;
    if (Number.isFinite(b) && Math.abs(b) > maxRef) maxRef = Math.abs(b);
  }
  const reason = bad
    ? `${bad} of ${expected.length} differ (exact); first at ${first}: got ${actual[first]} expected ${expected[first]}`
    : `exact, ${expected.length} values`;
  return row(caseName, check, bad === 0, maxAbs, maxAbs / Math.max(1, maxRef), reason);
}

/** Reads a tensor's values and disposes it. */
function take(t: tf.Tensor): Float32Array {
  const v = t.dataSync() as Float32Array;
  t.dispose();
  return v;
}

// --- Kinds ---

function checkFp8Codec(c: string, json: unknown): CheckResult[] {
  const decode = array(json, 'expected.decode', 1, true).data;
  if (decode.length !== 256) throw new VectorFormatError(`'expected.decode' must have 256 entries but has ${decode.length}`);
  const values = array(json, 'inputs.values', 1).data;
  const codes = array(json, 'expected.codes', 1).data;
  const ours = Array.from({ length: 256 }, (_, k) => e4m3Decode(k));
  const bytes = decodeE4m3Bytes(Uint8Array.from({ length: 256 }, (_, k) => k));
  // the tensor rounding must reproduce the decoded value of each expected code
  const vt = tf.tensor1d(values);
  let rounded: Float32Array;
  try {
    rounded = take(e4m3Round(vt));
  } finally {
    vt.dispose();
  }
  const codeValues = codes.map((k) => (Number.isInteger(k) && k >= 0 && k < 256 ? e4m3Decode(k) : NaN));
  return [
    exactRow(c, 'fp8_codec.decode', ours, decode, true),
    exactRow(c, 'fp8_codec.decode_bytes', bytes, decode, true),
    exactRow(c, 'fp8_codec.encode', values.map(e4m3Encode), codes),
    exactRow(c, 'fp8_codec.round_tensor', rounded, codeValues),
  ];
}

function checkActQuant(c: string, json: unknown): CheckResult[] {
  const x = array(json, 'inputs.x', 2);
  const blockRaw = (get(json, 'inputs') as Record<string, unknown>).block;
  const block = blockRaw === undefined ? FP8_BLOCK : num(json, 'inputs.block');
  const expected = get(json, 'expected');
  const out: CheckResult[] = [];
  for (const fmt of ['none', 'ue8m0'] as const) {
    if (typeof expected !== 'object' || expected === null || !(fmt in expected)) {
      out.push(row(c, `act_quant.${fmt}`, false, null, null, `missing 'expected.${fmt}'`));
      continue;
    }
    try {
      const codes = array(json, `expected.${fmt}.codes`, 2).data;
      const scales = array(json, `expected.${fmt}.scales`, 2).data;
      const xt = tf.tensor2d(x.data, x.shape as [number, number]);
      let res: { q: tf.Tensor; scale: tf.Tensor };
      try {
        res = actQuant(xt, fmt === 'none' ? null : 'ue8m0', block);
      } finally {
        xt.dispose();
      }
      const { q, scale } = res;
      const qv = take(q);
      out.push(exactRow(c, `act_quant.${fmt}.scales`, take(scale), scales));
      out.push(exactRow(c, `act_quant.${fmt}.codes`, Array.from(qv, e4m3Encode), codes));
    } catch (e) {
      out.push(row(c, `act_quant.${fmt}`, false, null, null, (e as Error).message));
    }
  }
  return out;
}

function checkWeightDequant(c: string, json: unknown): CheckResult[] {
  const codes = array(json, 'inputs.codes', 2);
  const scale = array(json, 'inputs.weight_scale_inv', 2);
  const weight = array(json, 'expected.weight', 2).data;
  const inputs = get(json, 'inputs') as Record<string, unknown>;
  const block = inputs.block === undefined ? FP8_BLOCK : num(json, 'inputs.block');
  if (codes.data.some((k) => !Number.isInteger(k) || k < 0 || k > 255)) throw new VectorFormatError(`'inputs.codes' must hold integers 0..255`);
  const w8 = tf.tensor2d(decodeE4m3Bytes(Uint8Array.from(codes.data)), codes.shape as [number, number]);
  let s: tf.Tensor2D | undefined;
  try {
    s = tf.tensor2d(scale.data, scale.shape as [number, number]);
    return [exactRow(c, 'weight_dequant.weight', take(weightDequant(w8, s, block)), weight)];
  } finally {
    w8.dispose();
    s?.dispose();
  }
}

function checkHadamard(c: string, json: unknown): CheckResult[] {
  const x = array(json, 'inputs.x', 2);
  const y = array(json, 'expected.y', 2).data;
  const xt = tf.tensor2d(x.data, x.shape as [number, number]);
  let ours: Float32Array;
  try {
    ours = take(hadamard(xt));
  } finally {
    xt.dispose();
  }
  const r = compareArrays(ours, y, 1e-6);
  return [row(c, 'hadamard.y', r.pass, r.maxAbs, r.maxRel, r.reason ?? 'rtol 1e-6 of max(1, max|y|)')];
}

/** Spacing of float32 values at |v| (2⁻¹⁴⁹ for subnormals). */
function ulp32(v: number): number {
  const a = Math.abs(v);
  if (a < 2 ** -126) return 2 ** -149;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1;
  if (2 ** (e + 1) <= a) e += 1;
  return 2 ** (e - 23);
}

function checkRopeCase(c: string, json: unknown, k: number): CheckResult[] {
  const p = `cases.${k}`;
  const cfg = {
    dim: num(json, `${p}.config.R`),
    theta: num(json, `${p}.config.theta`),
    factor: num(json, `${p}.config.factor`),
    originalMaxPos: num(json, `${p}.config.L0`),
    betaFast: num(json, `${p}.config.bf`),
    betaSlow: num(json, `${p}.config.bs`),
    maxSeqLen: num(json, `${p}.config.max_seq_len`),
  };
  const tag = `rope[${k}]`;
  const out: CheckResult[] = [];
  const freqs = yarnFrequencies(cfg);
  // frequencies: 2 float32 ulp each
  const ef = array(json, `${p}.freqs`, 1).data;
  if (ef.length !== freqs.length) {
    out.push(row(c, `${tag}.freqs`, false, null, null, `length ${freqs.length} ≠ expected ${ef.length}`));
  } else {
    let worstUlp = 0;
    let maxAbs = 0;
    for (let i = 0; i < ef.length; i++) {
      const d = Math.abs(freqs[i]! - ef[i]!);
      maxAbs = Math.max(maxAbs, d);
      worstUlp = Math.max(worstUlp, d / ulp32(ef[i]!));
    }
    out.push(row(c, `${tag}.freqs`, worstUlp <= 2, maxAbs, maxAbs / Math.max(1, ...ef.map(Math.abs)), `max ${worstUlp} float32 ulp (tolerance 2)`));
  }
  // softmax scale (float64 formula)
  const qkHeadDim = num(json, `${p}.config.qk_head_dim`);
  const mscale = num(json, `${p}.config.mscale`);
  const es = num(json, `${p}.softmax_scale`);
  const rope_scaling = { factor: cfg.factor, mscale, original_max_position_embeddings: cfg.originalMaxPos };
  const ours = softmaxScale({ qk_nope_head_dim: qkHeadDim - cfg.dim, qk_rope_head_dim: cfg.dim, rope_scaling }, cfg.maxSeqLen);
  const ds = Math.abs(ours - es);
  out.push(row(c, `${tag}.softmax_scale`, ds <= 1e-12 * Math.abs(es), ds, ds / Math.abs(es), 'rtol 1e-12'));
  // rotations at each position, both layouts
  const positions = array(json, `${p}.positions`, 1).data;
  const x = array(json, `${p}.x`, 2);
  if (x.shape[0] !== positions.length || x.shape[1] !== cfg.dim) {
    throw new VectorFormatError(`'${p}.x' must be [${positions.length}, ${cfg.dim}] but is [${x.shape}]`);
  }
  for (const [layout, interleaved] of [['rope_interleaved', true], ['rope_non_interleaved', false]] as const) {
    const expected = array(json, `${p}.${layout}`, 2).data;
    if (expected.length !== x.data.length) throw new VectorFormatError(`'${p}.${layout}' must be [${x.shape}]`);
    let pass = true;
    let maxAbs = 0;
    let worst = 0; // max err / tolerance
    let maxRef = 0;
    for (let r = 0; r < positions.length; r++) {
      const t = positions[r]!;
      if (!Number.isInteger(t) || t < 0) throw new VectorFormatError(`'${p}.positions' must hold non-negative integers`);
      const xr = x.data.slice(r * cfg.dim, (r + 1) * cfg.dim);
      const { cos, sin } = ropeAngles(freqs, t, 1);
      const xt = tf.tensor2d(xr, [1, cfg.dim]);
      const y = take(applyRope(xt, cos, sin, interleaved));
      tf.dispose([cos, sin, xt]);
      const tol = 1e-6 + 4 * t * 2 ** -24 * Math.max(...xr.map(Math.abs));
      for (let i = 0; i < cfg.dim; i++) {
        const e = expected[r * cfg.dim + i]!;
        const d = Math.abs(y[i]! - e);
        maxAbs = Math.max(maxAbs, d);
        maxRef = Math.max(maxRef, Math.abs(e));
        worst = Math.max(worst, d / tol);
        if (!(d <= tol)) pass = false;
      }
    }
    out.push(row(c, `${tag}.${layout}`, pass, maxAbs, maxAbs / Math.max(1, maxRef),
      `worst error ${worst.toFixed(3)}× its tolerance 1e-6 + 4·t·2^-24·max|x|`));
  }
  return out;
}

function checkRope(c: string, json: unknown): CheckResult[] {
  const cases = get(json, 'cases');
  if (!Array.isArray(cases) || cases.length === 0) throw new VectorFormatError(`'cases' must be a non-empty array`);
  const out: CheckResult[] = [];
  for (let k = 0; k < cases.length; k++) {
    try {
      out.push(...checkRopeCase(c, json, k));
    } catch (e) {
      out.push(row(c, `rope[${k}]`, false, null, null, (e as Error).message));
    }
  }
  return out;
}

const KINDS: Record<string, (c: string, json: unknown) => CheckResult[]> = {
  fp8_codec: checkFp8Codec,
  act_quant: checkActQuant,
  weight_dequant: checkWeightDequant,
  hadamard: checkHadamard,
  rope: checkRope,
};

/**
 * Runs every check of one numerics vector file.
 *
 * @param caseName the file name without `.json`
 * @param json the parsed file (`kind` one of fp8_codec, act_quant, weight_dequant, hadamard, rope)
 * @returns one row per compared quantity; failed rows carry a reason; never throws
 * @example
 * ```ts
 * const rows = await checkNumericsVector('h', { kind: 'hadamard', inputs: { x: [[1, 0]] }, expected: { y: [[0.70710678, 0.70710678]] } });
 * rows[0].pass; // => true
 * // malformed data is a failed row, not an exception
 * (await checkNumericsVector('h', { kind: 'hadamard' }))[0].reason; // => "missing 'inputs.x'"
 * ```
 */
export async function checkNumericsVector(caseName: string, json: any): Promise<CheckResult[]> {
  const kind = typeof json === 'object' && json !== null ? (json as { kind?: unknown }).kind : undefined;
  const fn = typeof kind === 'string' ? KINDS[kind] : undefined;
  if (!fn) {
    return [row(caseName, String(kind ?? 'numerics'), false, null, null, `not a numerics vector kind: ${JSON.stringify(kind)} (known: ${Object.keys(KINDS).join(', ')})`)];
  }
  try {
    return fn(caseName, json);
  } catch (e) {
    return [row(caseName, kind as string, false, null, null, (e as Error).message)];
  }
}
