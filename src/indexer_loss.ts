/**
 * Training losses of the DSA lightning indexer (DeepSeek-V3.2 §2.1.1, Eqs. 3–4; the same text as V3.2-Exp).
 *
 * - Target (Eq. 3): p_{t,s} = Σ_h A_{h,t,s} / Σ_{s′ ≤ t} Σ_h A_{h,t,s′}: the main attention probabilities summed
 *   over heads and L1-normalised over the causal row s ≤ t.
 * - Dense warm-up (Eq. 3): Lᴵ = Σ_t KL(p_{t,:} ‖ Softmax(I_{t,:})), both over s ≤ t.
 * - Sparse stage (Eq. 4): S_t = top-k of I_{t,s} over s ≤ t; Lᴵ = Σ_t KL(p_{t,S_t} ‖ Softmax(I_{t,S_t})), the target
 *   restricted to S_t and renormalised, the softmax taken over S_t only.
 *
 * The indexer input is detached from the main model: the indexer is trained only by Lᴵ and the main model only
 * by the LM loss. Here the target is built from `stopGradient(A)` (src/internal/stop_gradient.ts), so `tf.grad`
 * of Lᴵ gives exactly zero for the main-attention probabilities (and for anything upstream of them); detach the
 * hidden states fed to the indexer (`stopGradient(h)`) in a full model.
 *
 * Shapes: H main-attention heads, T query positions = key positions (a prefill from position 0: query t sees s ≤ t).
 *
 * @module
 */
import { tf } from './backend.ts';
import { stopGradient } from './internal/stop_gradient.ts';
import { maskedLogSoftmax } from './sampling_mask.ts';
import { checkInteger, checkTensors, defineContract } from './internal/contract.ts';
import { selectTopK } from './topk.ts';

const INDEXER_TARGET = defineContract('indexerTarget', { attentionProbs: '[H, T, T]' });
const INDEXER_SELECTION = defineContract('indexerSelection', { indexScores: '[T, T]' });
const INDEXER_KL_DENSE = defineContract('indexerKlDense', { attentionProbs: '[H, T, T]', indexScores: '[T, T]' });
const INDEXER_KL_SPARSE = defineContract('indexerKlSparse', { attentionProbs: '[H, T, T]', indexScores: '[T, T]' });

/** Values at s ≤ t must be finite (the shapes are checked by the contract before). */
function checkSquare(fn: string, name: string, x: tf.Tensor, rank: number): void {
  const v = x.dataSync();
  const T = x.shape[rank - 1]!;
  for (let i = 0; i < v.length; i++) {
    const s = i % T;
    const t = Math.floor(i / T) % T;
    if (s <= t && !Number.isFinite(v[i]!)) throw new RangeError(`${fn}: ${name} must be finite for s ≤ t but got ${v[i]} at flat index ${i} (t=${t}, s=${s})`);
  }
}

/** [T, T] bool, true where s ≤ t. */
function causalMask(T: number): tf.Tensor2D {
  return tf.tidy(() => tf.greaterEqual(tf.expandDims(tf.range(0, T, 1, 'int32'), 1), tf.expandDims(tf.range(0, T, 1, 'int32'), 0)) as tf.Tensor2D);
}

// --- Target distribution (Eq. 3) ---

/**
 * Indexer target p_{t,s} = Σ_h A_{h,t,s} / Σ_{s′≤t} Σ_h A_{h,t,s′} for s ≤ t, 0 for s > t; detached (no gradient
 * reaches `attentionProbs`). Entries above the diagonal of `attentionProbs` are ignored, whatever they hold.
 * @param attentionProbs [H, T, T] main-attention probabilities (causal, non-negative).
 * @returns [T, T]
 * @throws RangeError on a shape that is not [H, T, T], a non-finite or negative value at s ≤ t, or a row with zero mass.
 * @example
 * ```ts
 * indexerTarget(tf.tensor3d([[[1, 0], [0.5, 0.5]], [[1, 0], [0.9, 0.1]]])).arraySync(); // => [[1, 0], [0.7, 0.3]]
 * ```
 */
export function indexerTarget(attentionProbs: tf.Tensor3D): tf.Tensor2D {
  checkTensors(INDEXER_TARGET, { attentionProbs });
  return targetOf('indexerTarget()', attentionProbs);
}

/** Eq. 3 for {@link indexerTarget} and the losses, with their name in the messages. */
function targetOf(fn: string, attentionProbs: tf.Tensor3D): tf.Tensor2D {
  checkSquare(fn, 'attentionProbs', attentionProbs, 3);
  const T = attentionProbs.shape[1];
  return tf.tidy(() => {
    const causal = causalMask(T);
    const summed = tf.sum(stopGradient(attentionProbs), 0); // [T, T]
    const p = tf.where(causal, summed, tf.zerosLike(summed));
    const pv = p.dataSync();
    for (let i = 0; i < pv.length; i++) {
      if (pv[i]! < 0) throw new RangeError(`${fn}: attentionProbs summed over heads must be ≥ 0 but got ${pv[i]} at (t=${Math.floor(i / T)}, s=${i % T})`);
    }
    const mass = tf.sum(p, 1, true); // [T, 1]
    const mv = mass.dataSync();
    mv.forEach((m, t) => { if (!(m > 0)) throw new RangeError(`${fn}: row t=${t} of attentionProbs has zero mass over s ≤ t`); });
    return tf.div(p, mass) as tf.Tensor2D;
  });
}

// --- Selection S_t (Eq. 4) ---

/**
 * Top-k selection of each row of the index scores over s ≤ t (Eq. 2's S_t, computed by `selectTopK` of
 * src/topk.ts from position 0): n_t = min(k, t+1) positions, ascending, padded with −1 to width k.
 * Ties: the higher score first, then the lower position (a deterministic rule; torch.topk leaves it unspecified).
 * @deviation Deterministic tie rule of the reference vectors (docs/spec-notes.md#selection); torch.topk's is unspecified.
 * @param indexScores [T, T] I_{t,s}. @param topk k ≥ 1.
 * @returns [T, k] int32 (also when k > T: the columns beyond T hold −1)
 * @example
 * ```ts
 * indexerSelection(tf.tensor2d([[0, 0, 0], [1, 2, 0], [3, 1, 2]]), 2).arraySync(); // => [[0, -1], [0, 1], [0, 2]]
 * indexerSelection(tf.tensor2d([[0, 0], [1, 2]]), 3).arraySync(); // => [[0, -1, -1], [0, 1, -1]]
 * ```
 */
export function indexerSelection(indexScores: tf.Tensor2D, topk: number): tf.Tensor2D {
  const fn = 'indexerSelection()';
  checkTensors(INDEXER_SELECTION, { indexScores });
  checkInteger('indexerSelection', 'topk', topk, 1);
  checkSquare(fn, 'indexScores', indexScores, 2);
  const T = indexScores.shape[0];
  return tf.tidy(() => {
    const selected = selectTopK(indexScores, 0, topk); // [T, min(k, T)]
    return topk > T ? tf.pad(selected, [[0, 0], [0, topk - T]], -1) : selected; // [T, k]
  });
}

// --- KL losses (Eqs. 3–4) ---

/** A bool tensor of `x`'s shape from a predicate on its values: a constant, off the gradient tape (tfjs comparison kernels have no gradient functions). */
function constMask(x: tf.Tensor, pred: (v: number) => boolean): tf.Tensor {
  return tf.tensor(Uint8Array.from(x.dataSync(), (v) => (pred(v) ? 1 : 0)), x.shape, 'bool');
}

/** Σ_t KL(p̃_t ‖ softmax over `set_t` of I_t), p̃_t = p_t on set_t renormalised; a row with no target mass on set_t adds 0. */
function klOverSet(p: tf.Tensor2D, indexScores: tf.Tensor2D, set: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => {
    const zeros = tf.zerosLike(p);
    const pS = tf.where(set, p, zeros);
    const mass = tf.sum(pS, 1, true); // [T, 1]
    const target = tf.div(pS, tf.where(constMask(mass, (v) => v > 0), mass, tf.onesLike(mass)));
    const logq = tf.where(set, maskedLogSoftmax(indexScores, set), zeros); // [T, T], 0 outside the set
    const pos = constMask(target, (v) => v > 0);
    const logTarget = tf.log(tf.where(pos, target, tf.onesLike(target)));
    const terms = tf.where(pos, tf.mul(target, tf.sub(logTarget, logq)), zeros); // 0·log 0 = 0
    return tf.sum(terms) as tf.Scalar;
  });
}

/**
 * Dense warm-up indexer loss (Eq. 3): Lᴵ = Σ_t KL(p_{t,:} ‖ Softmax(I_{t,:})) over s ≤ t.
 * Gradient: ∂Lᴵ/∂I_{t,s} = softmax(I_t)_s − p_{t,s}; zero for `attentionProbs` (detached) and for s > t.
 * @param attentionProbs [H, T, T]. @param indexScores [T, T] (entries s > t are ignored).
 * @returns scalar
 * @example
 * ```ts
 * indexerKlDense(tf.tensor3d([[[1, 0], [0.5, 0.5]]]), tf.tensor2d([[0, 9], [0, 0]])).arraySync(); // => 0  (p = softmax on s ≤ t; the 9 is in the future)
 * ```
 */
export function indexerKlDense(attentionProbs: tf.Tensor3D, indexScores: tf.Tensor2D): tf.Scalar {
  checkTensors(INDEXER_KL_DENSE, { attentionProbs, indexScores });
  checkSquare('indexerKlDense()', 'indexScores', indexScores, 2);
  return tf.tidy(() => klOverSet(targetOf('indexerKlDense()', attentionProbs), indexScores, causalMask(indexScores.shape[0])));
}

/**
 * Sparse-stage indexer loss (Eq. 4): Lᴵ = Σ_t KL(p_{t,S_t} ‖ Softmax(I_{t,S_t})), S_t = {@link indexerSelection}.
 * The target is restricted to S_t and renormalised; a row whose target has no mass on S_t contributes 0.
 * @deviation A row with no target mass on S_t contributes 0 (KL undefined there; the paper is silent).
 * The selection is discrete (no gradient); gradients reach I only at selected positions.
 * @param attentionProbs [H, T, T]. @param indexScores [T, T]. @param topk k.
 * @returns scalar
 * @example
 * ```ts
 * // row 1: KL([0.25, 0.75] ‖ softmax([0, 1])); with k = 1 only s = 1 is kept and the KL is 0
 * indexerKlSparse(tf.tensor3d([[[1, 0], [0.25, 0.75]]]), tf.tensor2d([[0, 0], [0, 1]]), 2).arraySync(); // => 0.000927
 * indexerKlSparse(tf.tensor3d([[[1, 0], [0.25, 0.75]]]), tf.tensor2d([[0, 0], [0, 1]]), 1).arraySync(); // => 0
 * ```
 */
export function indexerKlSparse(attentionProbs: tf.Tensor3D, indexScores: tf.Tensor2D, topk: number): tf.Scalar {
  checkTensors(INDEXER_KL_SPARSE, { attentionProbs, indexScores });
  checkInteger('indexerKlSparse', 'topk', topk, 1);
  const sel = indexerSelection(indexScores, topk);
  const T = indexScores.shape[0];
  const idx = sel.dataSync();
  sel.dispose();
  const k = idx.length / T;
  const setData = new Uint8Array(T * T);
  for (let t = 0; t < T; t++) for (let j = 0; j < k; j++) if (idx[t * k + j]! >= 0) setData[t * T + idx[t * k + j]!] = 1;
  return tf.tidy(() => {
    const set = tf.tensor2d(setData, [T, T], 'bool'); // S_t as a [T, T] mask (−1 padding selects nothing)
    return klOverSet(targetOf('indexerKlSparse()', attentionProbs), indexScores, set);
  });
}
