/**
 * Rotary position embedding with the YaRN frequency correction, as in the official V3.2 inference code
 * [inference/model.py precompute_freqs_cis, apply_rotary_emb; docs/spec-notes.md#rope-and-yarn,
 * docs/spec-notes.md#rope-layouts].
 *
 * Two pair layouts use the same angles:
 * - interleaved (MLA q_pe / k_pe): pairs (x[2i], x[2i+1]), a complex multiplication by e^{jφ};
 * - non-interleaved (lightning indexer, after the Nov-2025 fix): rotate-half pairs (x[i], x[i + R/2]).
 *
 * Frequencies and angles follow float32 semantics step by step (every intermediate rounded with
 * `Math.fround`), so they match the official float32 tensors up to the accuracy of `pow`.
 *
 * @module
 */
import { tf } from './backend.ts';
import { checkFiniteNumber, checkInteger, checkObject, checkTensors, defineContract, kindOf } from './internal/contract.ts';

const APPLY_ROPE = defineContract('applyRope', { x: '[T, ..., R]', cos: '[T, Rh]', sin: '[T, Rh]' });

/** Parameters of {@link yarnFrequencies}, in the official `ModelArgs` meaning. */
export interface RopeParams {
  /** rotary dims R (`qk_rope_head_dim`), even. */
  dim: number;
  /** base θ (`rope_theta`). */
  theta: number;
  /** YaRN factor (`rope_scaling.factor`; 1 = none). */
  factor: number;
  /** pretraining context L0 (`rope_scaling.original_max_position_embeddings`). */
  originalMaxPos: number;
  /** `rope_scaling.beta_fast` (rotations at the high-frequency end of the ramp). */
  betaFast: number;
  /** `rope_scaling.beta_slow`. */
  betaSlow: number;
  /** the run's maximum sequence length; YaRN applies only when it exceeds `originalMaxPos`. */
  maxSeqLen: number;
}

/** The config keys {@link ropeParams} reads (structurally a subset of `ModelConfig`). */
export interface RopeConfigLike {
  qk_rope_head_dim: number;
  rope_theta: number;
  rope_scaling: {
    factor: number;
    original_max_position_embeddings: number;
    beta_fast: number;
    beta_slow: number;
    mscale?: number;
  } | null;
}

const f32 = Math.fround;

// --- YaRN frequencies ---

/** Official `find_correction_dim`: the dim whose wavelength makes `rotations` turns over L0 positions (float64). */
function correctionDim(rotations: number, dim: number, theta: number, originalMaxPos: number): number {
  return (dim * Math.log(originalMaxPos / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
}

function checkParams(p: RopeParams): void {
  if (!Number.isInteger(p.dim) || p.dim < 2 || p.dim % 2 !== 0) {
    throw new RangeError(`yarnFrequencies(): dim must be an even integer ≥ 2 but got ${p.dim}`);
  }
  for (const key of ['theta', 'factor', 'originalMaxPos', 'betaFast', 'betaSlow', 'maxSeqLen'] as const) {
    if (!(typeof p[key] === 'number' && Number.isFinite(p[key]) && p[key] > 0)) {
      throw new RangeError(`yarnFrequencies(): ${key} must be a finite number > 0 but got ${String(p[key])}`);
    }
  }
}

/**
 * Rotary frequencies f_i, i = 0..R/2−1, with the YaRN correction [`precompute_freqs_cis`; docs/spec-notes.md#rope-and-yarn]:
 * - f_i = 1 / θ^(2i/R) in float32;
 * - iff maxSeqLen > originalMaxPos: low = max(⌊corr(betaFast)⌋, 0), high = min(⌈corr(betaSlow)⌉, R−1) with
 *   corr(n) = R·ln(L0/(2πn)) / (2 ln θ); ramp_i = clamp((i − low)/(high − low), 0, 1) (high += 0.001 if equal);
 *   smooth_i = 1 − ramp_i; f_i ← (f_i / factor)·(1 − smooth_i) + f_i·smooth_i.
 *   So low-index (fast) dims are unchanged and high-index (slow) dims are divided by `factor`.
 *
 * Each float32 step is rounded as the official torch float32 tensors are; `pow` itself may differ from the
 * device's `powf` by an ulp.
 *
 * @deviation θ^e is `Math.pow` (float64) rounded to float32, not the device's float32 `powf`: up to 2 float32
 * ulp from the reference vector (the README's tolerance).
 * @param p see {@link RopeParams}
 * @returns Float32Array [R/2]
 * @throws RangeError on a non-even dim or a non-positive parameter
 * @example
 * ```ts
 * const f = yarnFrequencies({ dim: 64, theta: 10000, factor: 40, originalMaxPos: 4096, betaFast: 32, betaSlow: 1, maxSeqLen: 16384 });
 * f[0]; // => 1
 * // the slowest dim is divided by the factor: 10000^(−62/64) / 40
 * f[31] * 1e6; // => 3.3338036
 * ```
 */
export function yarnFrequencies(p: RopeParams): Float32Array {
  checkObject('yarnFrequencies', 'p', p);
  checkParams(p);
  const half = p.dim / 2;
  const freqs = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const exponent = f32((2 * i) / p.dim); // arange(0, dim, 2, float32) / dim
    freqs[i] = f32(1 / f32(Math.pow(f32(p.theta), exponent)));
  }
  if (p.maxSeqLen > p.originalMaxPos) {
    const low = Math.max(Math.floor(correctionDim(p.betaFast, p.dim, p.theta, p.originalMaxPos)), 0);
    let high = Math.min(Math.ceil(correctionDim(p.betaSlow, p.dim, p.theta, p.originalMaxPos)), p.dim - 1);
    if (low === high) high += 0.001;
    const span = f32(high - low);
    const factor = f32(p.factor);
    for (let i = 0; i < half; i++) {
      const ramp = Math.min(Math.max(f32(f32(i - low) / span), 0), 1);
      const smooth = f32(1 - ramp);
      const f = freqs[i]!;
      freqs[i] = f32(f32(f32(f / factor) * f32(1 - smooth)) + f32(f * smooth));
    }
  }
  return freqs;
}

/**
 * The {@link RopeParams} of a checkpoint config for a run of `maxSeqLen` positions.
 *
 * @deviation `rope_scaling: null` gives factor 1 and no correction (the official demo's `ModelArgs` would fall
 * back to its YaRN defaults, which belong to the 671B config).
 * @param config `qk_rope_head_dim`, `rope_theta`, `rope_scaling` of a `ModelConfig`
 * @param maxSeqLen the run's maximum sequence length (official `max_seq_len`)
 * @example
 * ```ts
 * import { CONFIG_671B } from 'dsv32/config';
 * ropeParams(CONFIG_671B, 16384).factor; // => 40
 * ```
 */
export function ropeParams(config: RopeConfigLike, maxSeqLen: number): RopeParams {
  checkObject('ropeParams', 'config', config);
  checkInteger('ropeParams', 'maxSeqLen', maxSeqLen, 1);
  const rs = config.rope_scaling;
  return {
    dim: config.qk_rope_head_dim,
    theta: config.rope_theta,
    factor: rs ? rs.factor : 1,
    originalMaxPos: rs ? rs.original_max_position_embeddings : maxSeqLen,
    betaFast: rs ? rs.beta_fast : 32,
    betaSlow: rs ? rs.beta_slow : 1,
    maxSeqLen,
  };
}

/**
 * YaRN attention-temperature factor m = 0.1·mscale·ln(factor) + 1 (1 when factor ≤ 1) [official `ModelArgs`
 * / MLA `__init__`]. The MLA softmax scale (`softmaxScale`, src/config.ts) is multiplied by m² when YaRN is active;
 * cos/sin are not scaled.
 *
 * @example
 * ```ts
 * yarnMscale(40, 1); // => 1.3688879454113936
 * ```
 */
export function yarnMscale(factor: number, mscale: number): number {
  checkFiniteNumber('yarnMscale', 'factor', factor);
  checkFiniteNumber('yarnMscale', 'mscale', mscale);
  if (factor <= 1) return 1;
  return 0.1 * mscale * Math.log(factor) + 1;
}

// --- Angles ---

/**
 * cos and sin of φ(t, i) = float32(t · f_i) for positions t = start .. start+length−1.
 *
 * The angle is the official float32 outer product; cos/sin are then evaluated in float64 on that float32
 * angle (`Math.cos`, `Math.sin`, with exact argument reduction) and rounded to float32, the same on every
 * backend. `tf.cos` on wasm errs by up to 3e-7 (≈ 5 ulp) at the large angles of long contexts (φ reaches
 * 1.6e5 rad at t = 163839; measured), cpu by 3e-8.
 *
 * @deviation cos/sin tables are computed in JavaScript float64 and rounded to float32 (the official
 * `torch.polar` evaluates them in float32 on the device: ≤ 1 ulp apart).
 * @param freqs [R/2] from {@link yarnFrequencies}
 * @param start first absolute position (official `start_pos`)
 * @param length number of positions T
 * @returns cos, sin: [T, R/2] float32
 * @throws RangeError when start or length is not a non-negative integer
 * @example
 * ```ts
 * const { cos, sin } = ropeAngles(new Float32Array([1, 0.5]), 2, 1);
 * cos; // => [[-0.41614684, 0.54030231]]
 * ```
 */
export function ropeAngles(
  freqs: Float32Array,
  start: number,
  length: number,
): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
  if (!(freqs instanceof Float32Array)) throw new TypeError(`ropeAngles(): freqs must be a Float32Array but got ${kindOf(freqs)}`);
  if (!Number.isInteger(start) || start < 0) {
    throw new RangeError(`ropeAngles(): start must be a non-negative integer but got ${start}`);
  }
  if (!Number.isInteger(length) || length < 0) {
    throw new RangeError(`ropeAngles(): length must be a non-negative integer but got ${length}`);
  }
  const half = freqs.length;
  const cos = new Float32Array(length * half);
  const sin = new Float32Array(length * half);
  for (let r = 0; r < length; r++) {
    const t = f32(start + r);
    for (let i = 0; i < half; i++) {
      const phi = f32(t * freqs[i]!);
      cos[r * half + i] = Math.cos(phi);
      sin[r * half + i] = Math.sin(phi);
    }
  }
  return { cos: tf.tensor2d(cos, [length, half]), sin: tf.tensor2d(sin, [length, half]) };
}

// --- Rotation ---

/**
 * Rotates the last dim of x by the position angles, in one of the two pair layouts.
 *
 * - `interleaved = true` (MLA): (x[2i] + j·x[2i+1]) · e^{jφ_i}, written back interleaved:
 *   y[2i] = x[2i]cos φ_i − x[2i+1] sin φ_i, y[2i+1] = x[2i] sin φ_i + x[2i+1] cos φ_i.
 * - `interleaved = false` (indexer, rotate-half / NeoX): with h = R/2,
 *   y[i] = x[i]cos φ_i − x[i+h] sin φ_i, y[i+h] = x[i] sin φ_i + x[i+h] cos φ_i.
 * Using the wrong layout is exactly the pre-Nov-2025 indexer bug [docs/spec-notes.md#rope-layouts].
 *
 * @param x [T, ..., R] (e.g. [T, H, R] or [T, R]); middle dims share the position's angles
 * @param cos [T, R/2] from {@link ropeAngles}
 * @param sin [T, R/2]
 * @param interleaved pair layout (true: MLA, false: indexer)
 * @returns [T, ..., R] float32
 * @throws RangeError when R is odd, x has rank < 2, or cos/sin are not [T, R/2]
 * @example
 * ```ts
 * const cos = tf.tensor2d([[0, 1]]), sin = tf.tensor2d([[1, 0]]); // φ = (π/2, 0)
 * applyRope(tf.tensor2d([[1, 2, 3, 4]]), cos, sin, true); // => [[-2, 1, 3, 4]]
 * applyRope(tf.tensor2d([[1, 2, 3, 4]]), cos, sin, false); // => [[-3, 2, 1, 4]]
 * ```
 */
export function applyRope(x: tf.Tensor, cos: tf.Tensor, sin: tf.Tensor, interleaved: boolean): tf.Tensor {
  const { T, R, Rh } = checkTensors(APPLY_ROPE, { x, cos, sin }) as Record<'T' | 'R' | 'Rh', number>;
  if (R % 2 !== 0) throw new RangeError(`applyRope(): last dim R of x must be even but got ${R}`);
  if (Rh * 2 !== R) throw new RangeError(`applyRope(): cos and sin must be [T, R/2] = [${T}, ${R / 2}] (R from x) but got [${cos.shape.join(', ')}]`);
  return tf.tidy(() => {
    const bshape = [T, ...new Array<number>(x.rank - 2).fill(1), R / 2];
    const c = tf.reshape(cos, bshape); // [T, 1.., R/2]
    const s = tf.reshape(sin, bshape);
    const xf = tf.cast(x, 'float32');
    if (interleaved) {
      const pairs = tf.reshape(xf, [...x.shape.slice(0, -1), R / 2, 2]); // [T, .., R/2, 2]
      const [re, im] = tf.unstack(pairs, x.rank) as [tf.Tensor, tf.Tensor]; // each [T, .., R/2]
      const yRe = tf.sub(tf.mul(re, c), tf.mul(im, s));
      const yIm = tf.add(tf.mul(re, s), tf.mul(im, c));
      return tf.reshape(tf.stack([yRe, yIm], x.rank), x.shape);
    }
    const [x1, x2] = tf.split(xf, 2, -1) as [tf.Tensor, tf.Tensor]; // halves [T, .., R/2]
    return tf.concat([tf.sub(tf.mul(x1, c), tf.mul(x2, s)), tf.add(tf.mul(x1, s), tf.mul(x2, c))], -1);
  });
}
