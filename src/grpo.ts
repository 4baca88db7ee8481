/**
 * GRPO as used to post-train DeepSeek-V3.2 (arXiv 2512.02556 §3.1, Eqs. 5–9), with the DeepSeekMath form
 * (arXiv 2402.03300 §4.1) as an option: group advantages, token ratios, the clipped surrogate, the k3 KL
 * and its unbiased importance-weighted form, Off-Policy Sequence Masking, and the loss aggregations.
 *
 * Everything is a tfjs tensor op, differentiable with `tf.grad` / `tf.valueAndGrad` with respect to `logp`.
 *
 * Padding rule (every function here): a position with `mask = 0` never contributes, whatever it holds
 * (NaN and ±Infinity included). Inputs are sanitised with `tf.where(valid, x, 0)` *before* any arithmetic,
 * and outputs are selected with `tf.where`, so neither a NaN value nor a NaN gradient (`0 · NaN`) can leak.
 *
 * Shapes: G completions per prompt (the group), T padded completion length.
 *
 * @module
 */
import { tf } from './backend.ts';
import { checkChoice, checkFiniteNumber, checkObject, checkTensors, defineContract } from './internal/contract.ts';

const MASK = { shape: '[G, T]', dtype: 'mask' } as const;
const GROUP_ADVANTAGES = defineContract('groupAdvantages', { rewards: '[G]' });
const TOKEN_RATIO = defineContract('tokenRatio', { logp: '[G, T]', logpOld: '[G, T]', mask: MASK });
const CLIPPED_SURROGATE = defineContract('clippedSurrogate', { ratio: '[G, T]', advantages: '[G]', mask: MASK });
const KL_K3 = defineContract('klK3', { logp: '[G, T]', logpRef: '[G, T]', mask: MASK });
const KL_UNBIASED_K3 = defineContract('klUnbiasedK3', { logp: '[G, T]', logpOld: '[G, T]', logpRef: '[G, T]', mask: MASK });
const OPSM_SEQUENCE_KL = defineContract('opsmSequenceKl', { logpSampler: '[G, T]', logp: '[G, T]', mask: MASK });
const OPSM_KEEP_MASK = defineContract('opsmKeepMask', { advantages: '[G]', seqKl: '[G]' });
const AGGREGATE_LOSS = defineContract('aggregateLoss', { perToken: '[G, T]', mask: MASK });
const GRPO_INPUTS = {
  'inputs.mask': MASK,
  'inputs.rewards': '[G]',
  'inputs.logp': '[G, T]',
  'inputs.logpOld': '[G, T]',
  'inputs.logpRef': { shape: '[G, T]', optional: true },
  'inputs.logpSampler': { shape: '[G, T]', optional: true },
};
const GRPO_LOSS = defineContract('grpoLoss', GRPO_INPUTS);
const GRPO_LOSS_AND_GRAD = defineContract('grpoLossAndGrad', GRPO_INPUTS);
import { stopGradient } from './internal/stop_gradient.ts';

/** Advantage baseline: `mean` = R − mean(R) (V3.2, Eq. 5); `mean_std_*` = (R − mean) / (std + stdEps) (DeepSeekMath). */
export type AdvantageMode = 'mean' | 'mean_std_sample' | 'mean_std_population';
/** Per-token KL estimator: `k3` (DeepSeekMath Eq. 4), `unbiased_k3` = ρ·k3 (V3.2 Eq. 7), or `none`. */
export type KlEstimator = 'k3' | 'unbiased_k3' | 'none';
/** How per-token losses become one scalar (names as in verl `agg_loss`). */
export type Aggregation = 'token-mean' | 'seq-mean-token-mean' | 'seq-mean-token-sum' | 'seq-mean-token-sum-norm';

const ADVANTAGE_MODES: readonly AdvantageMode[] = ['mean', 'mean_std_sample', 'mean_std_population'];
const KL_ESTIMATORS: readonly KlEstimator[] = ['k3', 'unbiased_k3', 'none'];
const AGGREGATIONS: readonly Aggregation[] = ['token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum', 'seq-mean-token-sum-norm'];

// --- Helpers: padding ---

/** `mask` (0/1 float or bool) as a bool tensor. */
function validOf(mask: tf.Tensor): tf.Tensor {
  return mask.dtype === 'bool' ? mask : tf.notEqual(mask, 0);
}

/** `x` where valid, 0 elsewhere (the first op on every input: no NaN/Inf of padding reaches arithmetic or gradients). */
function clean(x: tf.Tensor, valid: tf.Tensor): tf.Tensor {
  return tf.where(valid, x, tf.zerosLike(x));
}

// --- Group advantages (V3.2 Eq. 5; DeepSeekMath §4.1.2) ---

/**
 * Outcome advantages of one group: every token of completion i gets Â_i.
 *
 * - `mean` (DeepSeek-V3.2 §3.1): Â_i = R_i − mean(R). No division by the std.
 * - `mean_std_sample` / `mean_std_population` (DeepSeekMath): Â_i = (R_i − mean) / (std + stdEps), with the
 *   Bessel-corrected (n−1, TRL/verl `torch.std`) or the population (n) std.
 *
 * @param rewards [G] one scalar reward per completion, G ≥ 2.
 * @returns [G]
 * @throws RangeError for G < 2 (verl passes a lone completion through with mean 0, std 1; a group of one has no baseline).
 * @deviation G < 2 throws instead of verl's pass-through (docs/deviations.md, Training-side math).
 * @example
 * ```ts
 * groupAdvantages(tf.tensor1d([1, 0, 0.5, 0]), 'mean').arraySync(); // => [0.625, -0.375, 0.125, -0.375]
 * ```
 */
export function groupAdvantages(rewards: tf.Tensor1D, mode: AdvantageMode = 'mean', stdEps = 0): tf.Tensor1D {
  checkTensors(GROUP_ADVANTAGES, { rewards });
  const G = rewards.shape[0];
  if (G < 2) throw new RangeError(`groupAdvantages(): a group needs G ≥ 2 completions but got G = ${G}`);
  if (!ADVANTAGE_MODES.includes(mode)) throw new TypeError(`groupAdvantages(): mode must be one of ${ADVANTAGE_MODES.join(', ')} but got '${String(mode)}'`);
  if (!(stdEps >= 0 && Number.isFinite(stdEps))) throw new RangeError(`groupAdvantages(): stdEps must be a finite number ≥ 0 but got ${stdEps}`);
  return tf.tidy(() => {
    const centred = tf.sub(rewards, tf.mean(rewards)); // [G]
    if (mode === 'mean') return centred as tf.Tensor1D;
    const dof = mode === 'mean_std_sample' ? G - 1 : G;
    const std = tf.sqrt(tf.div(tf.sum(tf.square(centred)), dof));
    return tf.div(centred, tf.add(std, stdEps)) as tf.Tensor1D;
  });
}

// --- Token ratio and clipped surrogate (V3.2 Eq. 5–6) ---

/**
 * Token importance ratio ρ_{i,t} = π_θ / π_old = exp(logp − logpOld); 0 at padding.
 *
 * No clamp of the log-ratio (verl clamps it to ±20 before `exp`).
 * @param logp [G, T] log π_θ of the sampled tokens. @param logpOld [G, T]. @param mask [G, T] 1 = token.
 * @returns [G, T]
 * @example
 * ```ts
 * tokenRatio(tf.tensor2d([[-0.5, 0]]), tf.tensor2d([[-0.6, 0]]), tf.tensor2d([[1, 0]])).arraySync(); // => [[1.105171, 0]]
 * ```
 */
export function tokenRatio(logp: tf.Tensor2D, logpOld: tf.Tensor2D, mask: tf.Tensor2D): tf.Tensor2D {
  checkTensors(TOKEN_RATIO, { logp, logpOld, mask });
  return tf.tidy(() => {
    const valid = validOf(mask);
    const rho = tf.exp(tf.sub(clean(logp, valid), clean(logpOld, valid)));
    return clean(rho, valid) as tf.Tensor2D;
  });
}

/**
 * Clipped surrogate as a loss to minimise: ℓ_{i,t} = −min(ρ Â_i, clip(ρ, 1 − clipLow, 1 + clipHigh) Â_i); 0 at padding.
 *
 * Min form (TRL, DeepSeekMath Eq. 3): no verl dual clip, so a large ρ with Â < 0 is not bounded.
 * @deviation No dual clip and no ±20 clamp of the log-ratio (verl has both).
 * @param ratio [G, T] from {@link tokenRatio}. @param advantages [G]. @param mask [G, T].
 * @returns [G, T]
 * @example
 * ```ts
 * clippedSurrogate(tf.tensor2d([[1.5]]), tf.tensor1d([1]), tf.tensor2d([[1]]), 0.2, 0.2).arraySync(); // => [[-1.2]]
 * ```
 */
export function clippedSurrogate(
  ratio: tf.Tensor2D, advantages: tf.Tensor1D, mask: tf.Tensor2D, clipLow: number, clipHigh: number,
): tf.Tensor2D {
  checkTensors(CLIPPED_SURROGATE, { ratio, advantages, mask });
  checkFiniteNumber('clippedSurrogate', 'clipLow', clipLow);
  checkFiniteNumber('clippedSurrogate', 'clipHigh', clipHigh);
  return tf.tidy(() => {
    const valid = validOf(mask);
    const rho = clean(ratio, valid);
    const adv = tf.expandDims(advantages, 1); // [G, 1]
    const unclipped = tf.mul(rho, adv);
    const clipped = tf.mul(tf.clipByValue(rho, 1 - clipLow, 1 + clipHigh), adv);
    return clean(tf.neg(tf.minimum(unclipped, clipped)), valid) as tf.Tensor2D;
  });
}

// --- KL estimators (DeepSeekMath Eq. 4; V3.2 Eq. 7) ---

/**
 * Schulman's k3: k3 = π_ref/π_θ − log(π_ref/π_θ) − 1 = expm1(d) − d with d = logpRef − logp; ≥ 0; 0 at padding.
 *
 * Its gradient weight ∂k3/∂logp = 1 − π_ref/π_θ is unbounded where π_θ ≪ π_ref (the V3.2 paper's point).
 * @param logp [G, T]. @param logpRef [G, T]. @param mask [G, T]. @returns [G, T]
 * @example
 * ```ts
 * klK3(tf.tensor2d([[-4]]), tf.tensor2d([[-0.5]]), tf.tensor2d([[1]])).arraySync(); // => [[28.615452]]
 * ```
 */
export function klK3(logp: tf.Tensor2D, logpRef: tf.Tensor2D, mask: tf.Tensor2D): tf.Tensor2D {
  checkTensors(KL_K3, { logp, logpRef, mask });
  return tf.tidy(() => {
    const valid = validOf(mask);
    const d = tf.sub(clean(logpRef, valid), clean(logp, valid));
    return clean(tf.sub(tf.expm1(d), d), valid) as tf.Tensor2D;
  });
}

/**
 * Unbiased KL estimate of DeepSeek-V3.2 Eq. 7: D = ρ · k3 with ρ = π_θ/π_old kept **in** the gradient graph.
 *
 * Gradient weight ∂(ρ·k3)/∂logp = ρ · (logp − logpRef): bounded (→ 0 as π_θ → 0), and its expectation under
 * π_old is ∇ KL(π_θ ‖ π_ref). 0 at padding.
 * @param logp [G, T]. @param logpOld [G, T]. @param logpRef [G, T]. @param mask [G, T]. @returns [G, T]
 * @example
 * ```ts
 * klUnbiasedK3(tf.tensor2d([[-4]]), tf.tensor2d([[-1]]), tf.tensor2d([[-0.5]]), tf.tensor2d([[1]])).arraySync(); // => [[1.424679]]
 * ```
 */
export function klUnbiasedK3(logp: tf.Tensor2D, logpOld: tf.Tensor2D, logpRef: tf.Tensor2D, mask: tf.Tensor2D): tf.Tensor2D {
  checkTensors(KL_UNBIASED_K3, { logp, logpOld, logpRef, mask });
  return tf.tidy(() => clean(tf.mul(tokenRatio(logp, logpOld, mask), klK3(logp, logpRef, mask)), validOf(mask)) as tf.Tensor2D);
}

// --- Off-Policy Sequence Masking (V3.2 Eq. 8–9) ---

/**
 * OPSM statistic per sequence: (1/|o_i|) Σ_t (logpSampler − logp), the k1 estimate of KL(π_sampler ‖ π_θ),
 * computed on a detached `logp` (`stopGradient`, src/internal/stop_gradient.ts); 0 for an empty row.
 * @param logpSampler [G, T] log-probs returned by the inference engine. @param logp [G, T]. @param mask [G, T].
 * @returns [G] (no gradient reaches `logp`)
 * @example
 * ```ts
 * opsmSequenceKl(tf.tensor2d([[-0.9, 0]]), tf.tensor2d([[-4, 0]]), tf.tensor2d([[1, 0]])).arraySync(); // => [3.1]
 * ```
 */
export function opsmSequenceKl(logpSampler: tf.Tensor2D, logp: tf.Tensor2D, mask: tf.Tensor2D): tf.Tensor1D {
  checkTensors(OPSM_SEQUENCE_KL, { logpSampler, logp, mask });
  return tf.tidy(() => {
    const valid = validOf(mask);
    const diff = clean(tf.sub(clean(logpSampler, valid), clean(stopGradient(logp), valid)), valid);
    const len = tf.maximum(tf.sum(tf.cast(valid, 'float32'), 1), 1); // [G]
    return tf.div(tf.sum(diff, 1), len) as tf.Tensor1D;
  });
}

/**
 * OPSM decision M_i (Eq. 9): drop (false) iff Â_i < 0 **and** seqKl_i > δ; keep otherwise.
 *
 * Returned as a constant bool tensor built from the values (the decision is discrete: it has no gradient, and
 * tfjs comparison kernels have no gradient functions, so they are kept off the tape).
 * @param advantages [G]. @param seqKl [G] from {@link opsmSequenceKl}. @param delta δ.
 * @returns [G] bool
 * @example
 * ```ts
 * opsmKeepMask(tf.tensor1d([1, -1, -1]), tf.tensor1d([2, 0.5, 2]), 1).arraySync(); // => [1, 1, 0]  (true, true, false)
 * ```
 */
export function opsmKeepMask(advantages: tf.Tensor1D, seqKl: tf.Tensor1D, delta: number): tf.Tensor1D {
  checkTensors(OPSM_KEEP_MASK, { advantages, seqKl });
  checkFiniteNumber('opsmKeepMask', 'delta', delta);
  const a = advantages.dataSync();
  const s = seqKl.dataSync();
  return tf.tensor1d(Array.from(a, (ai, i) => !(ai < 0 && s[i]! > delta)), 'bool');
}

// --- Aggregation (Eq. 8: (1/G) Σ_i (1/|o_i|) Σ_t …) ---

/**
 * Reduces per-token losses to a scalar; padding never counts.
 *
 * - `token-mean`: Σ_{i,t} mℓ / Σ_{i,t} m (DAPO, verl default).
 * - `seq-mean-token-mean`: (1/G′) Σ_i (Σ_t mℓ / |o_i|), the paper's Eq. 8 (DeepSeekMath, V3.2).
 * - `seq-mean-token-sum`: (1/G′) Σ_i Σ_t mℓ.
 * - `seq-mean-token-sum-norm`: Σ_{i,t} mℓ / T, T the padded length (Dr. GRPO; not divided by G).
 *
 * G′ counts the non-empty rows: an all-padding row (an empty completion) is left out of the sequence means.
 * @deviation Empty rows: not specified by the paper; TRL counts them (value 0), we leave them out.
 * @param perToken [G, T]. @param mask [G, T].
 * @throws RangeError when the mask holds no token at all.
 * @example
 * ```ts
 * aggregateLoss(tf.tensor2d([[1, 3], [2, 9]]), tf.tensor2d([[1, 1], [1, 0]]), 'seq-mean-token-mean').arraySync(); // => 2
 * ```
 */
export function aggregateLoss(perToken: tf.Tensor2D, mask: tf.Tensor2D, mode: Aggregation): tf.Scalar {
  checkTensors(AGGREGATE_LOSS, { perToken, mask });
  if (!AGGREGATIONS.includes(mode)) throw new TypeError(`aggregateLoss(): mode must be one of ${AGGREGATIONS.join(', ')} but got '${String(mode)}'`);
  return tf.tidy(() => {
    const valid = validOf(mask);
    const m = tf.cast(valid, 'float32');
    const nTokens = tf.sum(m).dataSync()[0]!;
    if (nTokens === 0) throw new RangeError(`aggregateLoss(): mask holds no token (every row is padding)`);
    const rowSum = tf.sum(clean(perToken, valid), 1); // [G]
    const rowLen = tf.sum(m, 1); // [G]
    const nonEmpty = tf.sum(tf.cast(tf.greater(rowLen, 0), 'float32'));
    switch (mode) {
      case 'token-mean':
        return tf.div(tf.sum(rowSum), nTokens) as tf.Scalar;
      case 'seq-mean-token-mean':
        return tf.div(tf.sum(tf.div(rowSum, tf.maximum(rowLen, 1))), nonEmpty) as tf.Scalar;
      case 'seq-mean-token-sum':
        return tf.div(tf.sum(rowSum), nonEmpty) as tf.Scalar;
      default:
        return tf.div(tf.sum(rowSum), perToken.shape[1]) as tf.Scalar;
    }
  });
}

// --- The V3.2 loss (Eq. 8) ---

/** Inputs of {@link grpoLoss}: one group of G completions, padded to T tokens. */
export interface GrpoInputs {
  /** [G] scalar reward per completion. */
  rewards: tf.Tensor1D;
  /** [G, T] 1 = token of the completion, 0 = padding (float 0/1 or bool). */
  mask: tf.Tensor2D;
  /** [G, T] log π_θ (the differentiated argument). */
  logp: tf.Tensor2D;
  /** [G, T] log π_old, the ratio's denominator. */
  logpOld: tf.Tensor2D;
  /** [G, T] log π_ref; required unless `kl` is `none`. */
  logpRef?: tf.Tensor2D;
  /** [G, T] log-probs returned by the inference engine; required when `opsmDelta` is set. */
  logpSampler?: tf.Tensor2D;
}

/** Options of {@link grpoLoss} (the vectors' `options`, in camelCase). */
export interface GrpoOptions {
  advantage: AdvantageMode;
  /** added to the std in the `mean_std_*` modes. */
  stdEps: number;
  /** ε_low: ratio clipped below at 1 − clipLow. */
  clipLow: number;
  /** ε_high: ratio clipped above at 1 + clipHigh. */
  clipHigh: number;
  /** KL coefficient β. */
  beta: number;
  kl: KlEstimator;
  /** OPSM threshold δ; null = off. */
  opsmDelta: number | null;
  aggregation: Aggregation;
}

/** Every intermediate of {@link grpoLoss} (0 at padding). */
export interface GrpoLossParts {
  loss: tf.Scalar;
  /** [G, T] −min(ρÂ, clip(ρ)Â)·M + β·D. */
  perTokenLoss: tf.Tensor2D;
  advantages: tf.Tensor1D;
  ratio: tf.Tensor2D;
  kl: tf.Tensor2D;
  /** [G] bool, all true when OPSM is off. */
  opsmKeep: tf.Tensor1D;
  /** [G] or null when OPSM is off. */
  opsmSeqKl: tf.Tensor1D | null;
}

function validateGrpo(contract: typeof GRPO_LOSS, x: GrpoInputs, o: GrpoOptions): void {
  checkObject(contract.fn, 'inputs', x);
  checkObject(contract.fn, 'options', o);
  checkTensors(contract, { inputs: x });
  checkChoice(contract.fn, 'options.advantage', o.advantage, ADVANTAGE_MODES);
  checkChoice(contract.fn, 'options.aggregation', o.aggregation, AGGREGATIONS);
  const fn = `${contract.fn}()`;
  const [G, T] = x.mask.shape; // shapes checked by the contract above
  if (G < 2) throw new RangeError(`${fn}: a group needs G ≥ 2 completions but got G = ${G}`);
  if (!KL_ESTIMATORS.includes(o.kl)) throw new TypeError(`${fn}: options.kl must be one of ${KL_ESTIMATORS.join(', ')} but got '${String(o.kl)}'`);
  if (!(o.clipLow >= 0 && o.clipLow < 1)) throw new RangeError(`${fn}: options.clipLow must be in [0, 1) but got ${o.clipLow}`);
  if (!(o.clipHigh >= 0 && Number.isFinite(o.clipHigh))) throw new RangeError(`${fn}: options.clipHigh must be a finite number ≥ 0 but got ${o.clipHigh}`);
  if (!(o.beta >= 0 && Number.isFinite(o.beta))) throw new RangeError(`${fn}: options.beta must be a finite number ≥ 0 but got ${o.beta}`);
  if (o.opsmDelta !== null && !Number.isFinite(o.opsmDelta)) throw new RangeError(`${fn}: options.opsmDelta must be a finite number or null but got ${o.opsmDelta}`);
  const m = x.mask.dataSync();
  for (let i = 0; i < m.length; i++) {
    if (m[i] !== 0 && m[i] !== 1) throw new RangeError(`${fn}: mask must hold only 0 and 1 but got ${m[i]} at [${Math.floor(i / T)}, ${i % T}]`);
  }
  const r = x.rewards.dataSync();
  r.forEach((v, i) => { if (!Number.isFinite(v)) throw new RangeError(`${fn}: rewards must be finite but got ${v} at [${i}]`); });
  const need: [string, tf.Tensor2D | undefined][] = [['logp', x.logp], ['logpOld', x.logpOld]];
  if (o.kl !== 'none') need.push(['logpRef', x.logpRef]);
  if (o.opsmDelta !== null) need.push(['logpSampler', x.logpSampler]);
  for (const [name, t] of need) {
    if (t === undefined) throw new TypeError(`${fn}: ${name} is required with kl '${o.kl}' and opsmDelta ${o.opsmDelta} but got undefined`);
    const v = t.dataSync();
    for (let i = 0; i < v.length; i++) {
      if (m[i] === 1 && !Number.isFinite(v[i]!)) throw new RangeError(`${fn}: ${name} must be finite at tokens (mask = 1) but got ${v[i]} at [${Math.floor(i / T)}, ${i % T}]`);
    }
  }
}

/**
 * The DeepSeek-V3.2 GRPO loss (Eq. 8, negated to be minimised), or DeepSeekMath's with the matching options:
 *
 *   ℓ_{i,t} = −min(ρ_{i,t} Â_i, clip(ρ_{i,t}, 1 − ε_low, 1 + ε_high) Â_i) · M_i + β · D_{i,t},   loss = agg(ℓ)
 *
 * with Â from {@link groupAdvantages}, ρ = exp(logp − logpOld), D = k3 or ρ·k3, and M_i the OPSM keep mask
 * (statistic on detached logp; the KL term is never masked). Differentiate with
 * `tf.grad((lp) => grpoLoss({ ...inputs, logp: lp }, options).loss)`.
 *
 * @throws RangeError on shape mismatch, G < 2, a mask value other than 0/1, a non-finite value at a token
 *   (padding may hold anything), an all-padding batch, or an option out of range; TypeError on unknown
 *   option values or a missing logpRef / logpSampler.
 * @example
 * ```ts
 * const parts = grpoLoss({ rewards: tf.tensor1d([1, 0]), mask: tf.tensor2d([[1], [1]]),
 *   logp: tf.tensor2d([[-1], [-1]]), logpOld: tf.tensor2d([[-1], [-1]]) },
 *   { advantage: 'mean', stdEps: 0, clipLow: 0.2, clipHigh: 0.2, beta: 0, kl: 'none', opsmDelta: null, aggregation: 'token-mean' });
 * parts.perTokenLoss.arraySync(); // => [[-0.5], [0.5]]
 * ```
 */
export function grpoLoss(inputs: GrpoInputs, options: GrpoOptions): GrpoLossParts {
  validateGrpo(GRPO_LOSS, inputs, options);
  const { rewards, mask, logp, logpOld } = inputs;
  const o = options;
  const parts = tf.tidy(() => {
    const valid = validOf(mask);
    const advantages = groupAdvantages(rewards, o.advantage, o.stdEps); // [G]
    const ratio = tokenRatio(logp, logpOld, mask); // [G, T]
    let surrogate = clippedSurrogate(ratio, advantages, mask, o.clipLow, o.clipHigh);
    let opsmSeqKl: tf.Tensor1D | null = null;
    let opsmKeep = tf.onesLike(advantages).cast('bool') as tf.Tensor1D;
    if (o.opsmDelta !== null) {
      opsmSeqKl = opsmSequenceKl(inputs.logpSampler!, logp, mask);
      opsmKeep = opsmKeepMask(advantages, opsmSeqKl, o.opsmDelta);
      const keepRows = tf.logicalAnd(valid, tf.expandDims(opsmKeep, 1)); // [G, T]
      surrogate = clean(surrogate, keepRows) as tf.Tensor2D;
    }
    const kl =
      o.kl === 'k3' ? klK3(logp, inputs.logpRef!, mask)
      : o.kl === 'unbiased_k3' ? klUnbiasedK3(logp, logpOld, inputs.logpRef!, mask)
      : (tf.zerosLike(logp) as tf.Tensor2D);
    const perTokenLoss = clean(tf.add(surrogate, tf.mul(kl, o.beta)), valid) as tf.Tensor2D;
    const loss = aggregateLoss(perTokenLoss, mask, o.aggregation);
    const out: GrpoLossParts = { loss, perTokenLoss, advantages, ratio, kl, opsmKeep, opsmSeqKl };
    return out as unknown as tf.TensorContainer;
  });
  return parts as unknown as GrpoLossParts;
}

/**
 * {@link grpoLoss} value and its gradient ∂loss/∂logp ([G, T], 0 at padding) through `tf.valueAndGrad`.
 * @example
 * ```ts
 * const { value, grad } = grpoLossAndGrad({ rewards: tf.tensor1d([1, 0]), mask: tf.tensor2d([[1], [1]]),
 *   logp: tf.tensor2d([[-1], [-1]]), logpOld: tf.tensor2d([[-1], [-1]]) },
 *   { advantage: 'mean', stdEps: 0, clipLow: 0.2, clipHigh: 0.2, beta: 0, kl: 'none', opsmDelta: null, aggregation: 'token-mean' });
 * value.arraySync(); // => 0
 * grad.arraySync(); // => [[-0.25], [0.25]]
 * ```
 */
export function grpoLossAndGrad(inputs: GrpoInputs, options: GrpoOptions): { value: tf.Scalar; grad: tf.Tensor2D } {
  validateGrpo(GRPO_LOSS_AND_GRAD, inputs, options);
  const f = tf.valueAndGrad((lp: tf.Tensor) => grpoLoss({ ...inputs, logp: lp as tf.Tensor2D }, options).loss);
  const { value, grad } = f(inputs.logp);
  return { value: value as tf.Scalar, grad: grad as tf.Tensor2D };
}
