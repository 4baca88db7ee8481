/**
 * Keep Sampling Mask (DeepSeek-V3.2 §3.1): the top-p / top-k truncation applied by the sampler to π_old is
 * kept and applied to π_θ in training, so that both policies share the same action subspace:
 *
 *   log π̃(o_t) = z_{o_t} − logsumexp_{v ∈ K_t} z_v        (K_t = the sampler's kept set at step t)
 *
 * and the GRPO ratio becomes ρ̃ = exp(log π̃_θ − log π̃_old).
 *
 * @deviation The paper says only "preserve the truncation masks … and apply them to π_θ"; renormalising the
 *   masked logits (softmax over K_t) is our reading (UNVERIFIED, same reading as prime-rl). Whether the mask
 *   also applies to π_ref is not stated; these functions leave that to the caller (docs/deviations.md).
 *
 * Shapes: T steps (tokens of one completion), V vocabulary.
 *
 * @module
 */
import { tf } from './backend.ts';
import { checkObject, checkTensors, defineContract, type Contract } from './internal/contract.ts';

const KEPT = { shape: '[T, V]', dtype: 'mask' } as const;
const TOKENS = { shape: '[T]', dtype: 'numeric' } as const;
const MASKED_LOG_SOFTMAX = defineContract('maskedLogSoftmax', { logits: '[..., V]', kept: { shape: '[..., V]', dtype: 'mask' } });
const TOKEN_LOG_PROBS = defineContract('tokenLogProbs', { logits: '[T, V]', tokens: TOKENS });
const KEEP_SAMPLING_LOG_PROBS = defineContract('keepSamplingLogProbs', { logits: '[T, V]', kept: KEPT, tokens: TOKENS });
const KEEP_SAMPLING_RATIO = defineContract('keepSamplingRatio', { logits: '[T, V]', logitsOld: '[T, V]', kept: KEPT, tokens: TOKENS });
const KEPT_SET_FROM_LOGITS = defineContract('keptSetFromLogits', { logits: '[T, V]' });
import { stopGradient } from './internal/stop_gradient.ts';

// --- Masked log-softmax ---

/**
 * Log-softmax of `logits` over the kept entries only; kept entries get z − logsumexp_{kept} z, the others −Infinity.
 *
 * Non-kept logits never reach arithmetic (sanitised with `tf.where` first), so NaN/±Inf there cannot leak into
 * values or gradients; the row maximum used for stability is detached (the result does not depend on it).
 * @param logits [..., V]. @param kept [..., V] bool or 0/1, at least one kept entry per row.
 * @returns [..., V]
 * @example
 * ```ts
 * maskedLogSoftmax(tf.tensor2d([[0, 0, 5]]), tf.tensor2d([[1, 1, 0]])).arraySync(); // => [[-0.693147, -0.693147, -Infinity]]
 * ```
 */
export function maskedLogSoftmax(logits: tf.Tensor, kept: tf.Tensor): tf.Tensor {
  checkTensors(MASKED_LOG_SOFTMAX, { logits, kept });
  if ( kept.shape.join() !== logits.shape.join()) {
    throw new RangeError(`maskedLogSoftmax(): kept must have the logits' shape [${logits.shape}] but got [${kept.shape}]`);
  }
  return tf.tidy(() => {
    const k = kept.dtype === 'bool' ? kept : tf.notEqual(kept, 0);
    const z = tf.where(k, logits, tf.zerosLike(logits));
    const m = stopGradient(tf.max(tf.where(k, z, tf.fill(z.shape, -Infinity)), -1, true)); // [..., 1]
    const e = tf.where(k, tf.exp(tf.sub(z, m)), tf.zerosLike(z));
    const lse = tf.add(m, tf.log(tf.sum(e, -1, true))); // [..., 1]
    return tf.where(k, tf.sub(z, lse), tf.fill(z.shape, -Infinity));
  });
}

/** [T, V] bool, true at (t, tokens[t]) (built from the ids: a constant; tf.oneHot needs V ≥ 2). */
function tokenMask(tokens: tf.Tensor1D, V: number): tf.Tensor2D {
  const ids = tokens.dataSync();
  const m = new Uint8Array(ids.length * V);
  ids.forEach((id, t) => { m[t * V + id] = 1; });
  return tf.tensor2d(m, [ids.length, V], 'bool');
}

function checkTokens(c: Contract, params: Record<string, unknown>, logits: tf.Tensor2D, tokens: tf.Tensor1D): void {
  const fn = `${c.fn}()`;
  checkTensors(c, params);
  const V = logits.shape[1];
  tokens.dataSync().forEach((id, t) => {
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new RangeError(`${fn}: tokens[${t}] must be an id in [0, ${V}) but got ${id}`);
  });
}

/**
 * Full-vocabulary log-probs of the sampled tokens: log softmax(z_t)[o_t] (no sampling mask).
 * @param logits [T, V]. @param tokens [T] int ids. @returns [T]
 * @example
 * ```ts
 * tokenLogProbs(tf.tensor2d([[0, 0]]), tf.tensor1d([1], 'int32')).arraySync(); // => [-0.693147]
 * ```
 */
export function tokenLogProbs(logits: tf.Tensor2D, tokens: tf.Tensor1D): tf.Tensor1D {
  checkTokens(TOKEN_LOG_PROBS, { logits, tokens }, logits, tokens);
  return tf.tidy(() => {
    const onehot = tokenMask(tokens, logits.shape[1]); // [T, V]
    const lp = tf.logSoftmax(logits);
    return tf.sum(tf.where(onehot, lp, tf.zerosLike(lp)), 1) as tf.Tensor1D;
  });
}

/**
 * Log-probs of the sampled tokens renormalised over the sampler's kept set (Keep Sampling Mask):
 * log π̃(o_t) = z_{t,o_t} − logsumexp_{v ∈ K_t} z_{t,v}. Use the same `kept` for π_θ and π_old.
 * @param logits [T, V]. @param kept [T, V] bool or 0/1 (from the sampler, or {@link keptSetFromLogits}).
 * @param tokens [T] sampled ids; each must be in its row's kept set.
 * @returns [T]
 * @throws RangeError when a token is outside its kept set (the sampler cannot have drawn it) or shapes disagree.
 * @example
 * ```ts
 * keepSamplingLogProbs(tf.tensor2d([[0, 0, 5]]), tf.tensor2d([[1, 1, 0]]), tf.tensor1d([0], 'int32')).arraySync(); // => [-0.693147]
 * ```
 */
export function keepSamplingLogProbs(logits: tf.Tensor2D, kept: tf.Tensor2D, tokens: tf.Tensor1D): tf.Tensor1D {
  const fn = 'keepSamplingLogProbs()';
  checkTokens(KEEP_SAMPLING_LOG_PROBS, { logits, kept, tokens }, logits, tokens);
  const V = logits.shape[1];
  const k = kept.dataSync();
  tokens.dataSync().forEach((id, t) => {
    if (!k[t * V + id]) throw new RangeError(`${fn}: tokens[${t}] = ${id} is not in the kept set of step ${t} (a sampler with this mask cannot have drawn it)`);
  });
  return tf.tidy(() => {
    const onehot = tokenMask(tokens, V); // [T, V]
    const lp = maskedLogSoftmax(logits, kept);
    return tf.sum(tf.where(onehot, lp, tf.zerosLike(lp)), 1) as tf.Tensor1D;
  });
}

/**
 * Ratio under the Keep Sampling Mask: ρ̃_t = exp(log π̃_θ(o_t) − log π̃_old(o_t)), both renormalised on K_t.
 * @param logits [T, V] current policy. @param logitsOld [T, V]. @param kept [T, V]. @param tokens [T].
 * @returns `{ logp, logpOld, ratio }`, each [T]
 * @example
 * ```ts
 * const r = keepSamplingRatio(tf.tensor2d([[0, 0, 5]]), tf.tensor2d([[1, 0, 5]]), tf.tensor2d([[1, 1, 0]]), tf.tensor1d([0], 'int32'));
 * r.logpOld.arraySync(); // => [-0.313262]  (1 − log(e + 1): the logit 5 is outside the kept set)
 * r.ratio.arraySync(); // => [0.683940]
 * ```
 */
export function keepSamplingRatio(
  logits: tf.Tensor2D, logitsOld: tf.Tensor2D, kept: tf.Tensor2D, tokens: tf.Tensor1D,
): { logp: tf.Tensor1D; logpOld: tf.Tensor1D; ratio: tf.Tensor1D } {
  checkTensors(KEEP_SAMPLING_RATIO, { logits, logitsOld, kept, tokens });
  const logp = keepSamplingLogProbs(logits, kept, tokens);
  const logpOld = keepSamplingLogProbs(logitsOld, kept, tokens);
  const ratio = tf.tidy(() => tf.exp(tf.sub(logp, logpOld)) as tf.Tensor1D);
  return { logp, logpOld, ratio };
}

// --- The sampler's kept set ---

/** Truncation of {@link keptSetFromLogits}; omit a field to disable that filter. */
export interface TruncationOptions {
  /** nucleus mass p ∈ (0, 1]; 1 keeps everything. */
  topP?: number;
  /** keep the k largest logits (k ≥ 1). */
  topK?: number;
}

/**
 * The kept set K_t of a top-k then top-p sampler, as vLLM / HF apply them (top-k first, then top-p on the
 * renormalised top-k distribution). Computed in float64 from the (float32) logits; pass logits / temperature.
 *
 * @deviation The sampler's exact rule is engine-specific (GPU float32); this is the HF/vLLM semantics in float64.
 * Tie and boundary rules:
 * - top-k keeps every token whose logit is ≥ the k-th largest (ties at the k-th value are all kept, as the
 *   HF/vLLM threshold comparison does);
 * - top-p sorts by probability, descending, equal probabilities by lower token id, and keeps the shortest
 *   prefix whose cumulative probability reaches p: the token that crosses p is kept (HF `TopPLogitsWarper`,
 *   vLLM); at least one token is always kept.
 * @param logits [T, V]. @returns [T, V] bool
 * @throws RangeError for topP ∉ (0, 1] or topK not an integer ≥ 1.
 * @example
 * ```ts
 * keptSetFromLogits(tf.tensor2d([[Math.log(0.5), Math.log(0.3), Math.log(0.2)]]), { topP: 0.6 }).arraySync(); // => [[1, 1, 0]]
 * ```
 */
export function keptSetFromLogits(logits: tf.Tensor2D, options: TruncationOptions): tf.Tensor2D {
  const fn = 'keptSetFromLogits()';
  checkTensors(KEPT_SET_FROM_LOGITS, { logits });
  checkObject('keptSetFromLogits', 'options', options);
  const { topP = 1, topK } = options;
  if (!(topP > 0 && topP <= 1)) throw new RangeError(`${fn}: topP must be in (0, 1] but got ${topP}`);
  if (topK !== undefined && !(Number.isInteger(topK) && topK >= 1)) throw new RangeError(`${fn}: topK must be an integer ≥ 1 but got ${topK}`);
  const [T, V] = logits.shape;
  const z = logits.dataSync();
  const out = new Uint8Array(T * V);
  for (let t = 0; t < T; t++) {
    const row = Array.from(z.subarray(t * V, (t + 1) * V));
    if (row.some((x) => Number.isNaN(x))) throw new RangeError(`${fn}: logits row ${t} holds NaN`);
    const order = row.map((_, v) => v).sort((a, b) => row[b]! - row[a]! || a - b); // descending, lower id first
    let kept = order;
    if (topK !== undefined && topK < V) {
      const kth = row[order[topK - 1]!]!;
      kept = order.filter((v) => row[v]! >= kth);
    }
    if (topP < 1) {
      const max = row[kept[0]!]!;
      const w = kept.map((v) => Math.exp(row[v]! - max));
      const total = w.reduce((a, b) => a + b, 0);
      let cum = 0;
      let n = 0;
      while (n < kept.length) {
        cum += w[n]! / total;
        n++;
        if (cum >= topP) break;
      }
      kept = kept.slice(0, n);
    }
    for (const v of kept) out[t * V + v] = 1;
  }
  return tf.tensor2d(out, [T, V], 'bool');
}
