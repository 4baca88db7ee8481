/**
 * DeepSeekMoE as DeepSeek-V3.2 runs it: the sigmoid gate with the selection-only correction bias and
 * group-limited routing (`topk_method: noaux_tc`), SwiGLU experts, the always-on shared expert, and
 * **Keep Routing** (V3.2 paper §3.1): a routing record that a sampling forward pass emits and a
 * training forward pass replays.
 *
 * Official reference: `inference/model.py` `Gate.forward`, `MLP`/`Expert`, `MoE.forward`
 * (DeepSeek-V3.2; docs/spec-notes.md#moe-gate, docs/spec-notes.md#keep-routing,
 * docs/spec-notes.md#block; Keep Routing: paper §3.1).
 *
 * Shapes use docs/conventions.md: T tokens, D = `hidden_size`, E = `n_routed_experts`,
 * Ek = `num_experts_per_tok`, G = `n_group` (the number of expert groups here; not the GRPO group size).
 *
 * @module
 */
import { tf } from './backend.ts';
import type { ModelConfig } from './config.ts';
import { scaleFmt } from './config.ts';
import type { FfnWeights, MoeWeights } from './checkpoint.ts';
import type { Deviations } from './deviations.ts';
import { linear, probeAt, type RoundingProbe } from './fp8.ts';
import { checkArray, checkChoice, checkObject, checkTensors, CONFIG_LETTERS, configDims, defineContract, ffnWeights, MOE_WEIGHTS, under } from './internal/contract.ts';

const MOE_GATE = defineContract('moeGate', { x: '[T, D]', 'gate.weight': '[E, D]', 'gate.bias': { shape: '[E]', optional: true } }, CONFIG_LETTERS);
const SWIGLU_FFN = defineContract('swigluFfn', { x: '[T, D]', ...under('w', ffnWeights('F')) });
const MOE = defineContract('moe', { x: '[T, D]', ...under('w', MOE_WEIGHTS) }, CONFIG_LETTERS);
const ROUTING_SCORES = defineContract('routingScores', { scores: '[T, E]', 'gate.weight': '[E, D]', 'gate.bias': { shape: '[E]', optional: true } }, { E: CONFIG_LETTERS.E! });
import { asActivation, type Precision } from './precision.ts';
import type { WeightMatrix } from './weight_matrix.ts';

/** The config keys the gate reads (verbatim `config.json` names). */
export type GateConfig = Pick<
  ModelConfig,
  'n_routed_experts' | 'num_experts_per_tok' | 'n_group' | 'topk_group' | 'routed_scaling_factor' | 'scoring_func'
>;

// --- Keep Routing records (V3.2 paper §3.1) ---

/**
 * The routing of one MoE layer for T tokens: what the gate chose (`indices`, gate order = descending
 * biased score) and the combine weights it used (already normalized and × `routed_scaling_factor`).
 * Plain data (typed arrays), so it can be stored with a rollout and sent to a trainer.
 */
export interface LayerRouting {
  /** T: tokens covered. */
  tokens: number;
  /** Ek: experts per token. */
  experts: number;
  /** expert ids, row-major [T, Ek]. */
  indices: Int32Array;
  /** combine weights, row-major [T, Ek]. */
  weights: Float32Array;
}

/**
 * A routing record of one forward pass: for each MoE layer (key = layer index), the routing of the
 * tokens of that pass. Dense layers have no entry.
 */
export interface RoutingRecord {
  /** T: tokens of the pass (the same for every layer). */
  tokens: number;
  /** layer index → routing of that layer. */
  layers: Record<number, LayerRouting>;
}

/** How a supplied routing record is used by {@link moe} / {@link moeGate}. */
export interface KeepRoutingOptions {
  /** the record to enforce for this layer (Keep Routing); absent = free routing. */
  routing?: LayerRouting;
  /**
   * `recompute` (default): the recorded ids replace the gate's selection; the combine weights are
   * recomputed from the current gate, `normalize(σ_θ(x)[ids]) · routed_scaling_factor`, so gradients
   * reach the gate weight. `replay`: the recorded combine weights are used as they are.
   */
  combine?: 'recompute' | 'replay';
}

/** Options of {@link moe}: Keep Routing, precision and catalogue deviations. */
export interface MoeOptions extends KeepRoutingOptions {
  /** activation precision (src/precision.ts); default 'fp32'. */
  precision?: Precision | undefined;
  /** catalogue deviations (src/deviations.ts): `moe-bias-in-weights`, `moe-group-fill-zero`. */
  deviations?: Deviations | undefined;
  /** conformance seam: the rounding probe of every expert's quantizers ({@link FfnProbe}). */
  probe?: RoundingProbe;
}

/**
 * Joins the records of consecutive forward passes (e.g. a prefill and its decode steps) along the
 * token axis, so that a training pass over the whole sequence can replay them.
 *
 * @param records records of passes in token order; every record must cover the same MoE layers.
 * @returns a record with `tokens = Σ tokens`.
 * @throws RangeError when the records do not cover the same layers or Ek differs.
 * @example
 * ```ts
 * const a = { tokens: 1, layers: { 1: { tokens: 1, experts: 1, indices: Int32Array.of(3), weights: Float32Array.of(2.5) } } };
 * const b = { tokens: 1, layers: { 1: { tokens: 1, experts: 1, indices: Int32Array.of(5), weights: Float32Array.of(2.5) } } };
 * Array.from(concatRoutingRecords([a, b]).layers[1]!.indices); // => [3, 5]
 * ```
 */
export function concatRoutingRecords(records: readonly RoutingRecord[]): RoutingRecord {
  checkArray('concatRoutingRecords', 'records', records);
  const first = records[0];
  if (!first) return { tokens: 0, layers: {} };
  const keys = Object.keys(first.layers).sort().join(',');
  const layers: Record<number, LayerRouting> = {};
  for (const key of Object.keys(first.layers).map(Number)) {
    const parts = records.map((r, i) => {
      const p = r.layers[key];
      if (!p || Object.keys(r.layers).sort().join(',') !== keys) {
        throw new RangeError(`concatRoutingRecords(): record ${i} must cover layers [${keys}] but covers [${Object.keys(r.layers).sort().join(',')}]`);
      }
      if (p.experts !== first.layers[key]!.experts) {
        throw new RangeError(`concatRoutingRecords(): layer ${key} of record ${i} has Ek=${p.experts}, expected ${first.layers[key]!.experts}`);
      }
      return p;
    });
    const tokens = parts.reduce((n, p) => n + p.tokens, 0);
    const experts = first.layers[key]!.experts;
    const indices = new Int32Array(tokens * experts);
    const weights = new Float32Array(tokens * experts);
    let at = 0;
    for (const p of parts) {
      indices.set(p.indices, at);
      weights.set(p.weights, at);
      at += p.indices.length;
    }
    layers[key] = { tokens, experts, indices, weights };
  }
  return { tokens: records.reduce((n, r) => n + r.tokens, 0), layers };
}

// --- Gate (official Gate.forward; spec §4.1) ---

/**
 * The MoE gate of DeepSeek-V3.2 (`topk_method: noaux_tc`), exactly as the official `Gate.forward`:
 *
 * 1. `σ = sigmoid(x · Wᵀ)` in float32 (`softmax` when `scoring_func` says so); the gate linear is never
 *    FP8 (the checkpoint keeps it in BF16), so no activation quantization.
 * 2. `σ_b = σ + b` (`e_score_correction_bias`) — used **for selection only**.
 * 3. If G = `n_group` > 1: group score = sum of the top-2 of σ_b in each group of E/G contiguous
 *    experts (max of σ when there is no bias); keep the `topk_group` best groups; every expert of the
 *    other groups gets σ_b = **−∞**.
 * 4. `ids = top-Ek(σ_b)` (descending, ties → lower id).
 * 5. `w = σ[ids]` (the **unbiased** scores); for sigmoid `w ← w / Σw` (no epsilon);
 *    then `w ← w · routed_scaling_factor`.
 *
 * With Keep Routing (`opts.routing`), steps 2–4 are replaced by the recorded ids; step 5 is
 * recomputed from the current σ (`combine: 'recompute'`, default) or the recorded weights are used
 * (`combine: 'replay'`).
 *
 * @deviation HF transformers' DeepseekV3 router and mlx-lm fill dropped groups with 0.0 (and HF adds
 *   1e−20 to the normalizer); the official code — and this function — use −∞ and no epsilon. Since
 *   σ + b can be negative, 0.0 can let an expert of a dropped group win (docs/deviations.md).
 * @deviation Keep Routing: whether combine weights are recomputed or replayed is UNVERIFIED in the
 *   paper; default `recompute` keeps gradients to the gate (docs/deviations.md).
 * @param x [T, D] gate input (the FFN input).
 * @param gate `{ weight [E, D], bias [E] | null }`.
 * @param config gate keys of the model config.
 * @returns `weights` [T, Ek] float32, `indices` [T, Ek] int32 (gate order).
 * @throws RangeError for a bad config, shape or routing record (message names what and why).
 * @example
 * ```ts
 * const cfg = { n_routed_experts: 4, num_experts_per_tok: 2, n_group: 2, topk_group: 1,
 *   routed_scaling_factor: 2.5, scoring_func: 'sigmoid' };
 * const w = tf.tensor2d([[1], [2], [0], [-1]]);            // [E=4, D=1]
 * const { weights, indices } = moeGate(tf.tensor2d([[1]]), { weight: w, bias: null }, cfg);
 * indices.arraySync(); // => [[1, 0]]
 * weights.sum().arraySync(); // => 2.5
 * ```
 */
export function moeGate(
  x: tf.Tensor2D,
  gate: MoeWeights['gate'],
  config: GateConfig,
  opts: KeepRoutingOptions & Pick<MoeOptions, 'deviations'> = {},
): { weights: tf.Tensor2D; indices: tf.Tensor2D } {
  const biasInWeights = opts.deviations?.has('moe-bias-in-weights') ?? false; // deviation: σ + b weighs the experts
  const { n_routed_experts: E, num_experts_per_tok: Ek } = config;
  checkGateArgs(x, gate, config, opts.routing);
  const T = x.shape[0];
  return tf.tidy(() => {
    // 1. scores in float32 [T, E]
    const logits = tf.matMul(x, gate.weight, false, true);
    const scores = config.scoring_func === 'softmax' ? tf.softmax(logits) : tf.sigmoid(logits);

    let indices: tf.Tensor2D;
    if (opts.routing) {
      indices = tf.tensor2d(opts.routing.indices, [T, Ek], 'int32');
      if (opts.combine === 'replay') {
        return { weights: tf.tensor2d(opts.routing.weights, [T, Ek], 'float32'), indices };
      }
    } else {
      // 2. biased scores, for selection only. The selection is discrete: it runs on a detached view of
      // the scores (the same data, a tensor the gradient tape did not record), so no gradient tape
      // reaches top-k (which has no gradient in tfjs). No read-back: the values stay on the backend,
      // which matters on GPU backends (WebGPU under SwiftShader has no working synchronous read).
      const detached = detachedView(scores as tf.Tensor2D);
      // 3. group-limited routing
      const { selection } = routingScores(detached, gate, config, opts.deviations);
      // 4. top-Ek experts, gate order
      indices = tf.topk(selection, Ek).indices as tf.Tensor2D; // [T, Ek] int32
    }

    // 5. combine weights from the unbiased scores
    // σ[ids] as a one-hot contraction (exact: one product by 1, the rest by 0), which keeps the
    // gradient path free of gather (whose gradient kernel the wasm backend lacks)
    const combineScores = biasInWeights && gate.bias ? tf.add(scores, gate.bias) : scores; // [T, E]
    const picked = tf.mul(tf.expandDims(combineScores, 1), tf.oneHot(indices, E)); // [T, Ek, E]
    let weights = tf.sum(picked, -1) as tf.Tensor2D; // [T, Ek]
    if (config.scoring_func === 'sigmoid') weights = tf.div(weights, tf.sum(weights, -1, true));
    weights = tf.mul(weights, tf.scalar(config.routed_scaling_factor));
    return { weights, indices };
  });
}

/**
 * Selection scores of the gate (steps 2–3 of {@link moeGate}): `σ_b = σ + b`; with G = `n_group` > 1,
 * group score = sum of the top-2 σ_b of each group of E/G experts (max σ without a bias), and every
 * expert outside the `topk_group` best groups gets −∞ (0.0 under the deviation `moe-group-fill-zero`).
 *
 * @param scores [T, E] gate scores σ
 * @param gate the gate weights (only `bias` is read)
 * @param config gate keys of the model config
 * @param deviations catalogue deviations (src/deviations.ts)
 * @returns `biased` [T, E] σ_b, `groupScores` [T, G] (null when G = 1), `selection` [T, E] (σ_b with dropped groups masked)
 * @example
 * ```ts
 * const cfg = { n_routed_experts: 4, num_experts_per_tok: 1, n_group: 2, topk_group: 1, routed_scaling_factor: 1, scoring_func: 'sigmoid' };
 * const gate = { weight: tf.zeros([4, 1]) as tf.Tensor2D, bias: tf.tensor1d([-0.9, -0.9, -0.7, -0.7]) };
 * routingScores(tf.fill([1, 4], 0.5) as tf.Tensor2D, gate, cfg).selection.arraySync(); // => [[-Infinity, -Infinity, -0.2, -0.2]]
 * routingScores(tf.fill([1, 4], 0.5) as tf.Tensor2D, gate, cfg, new Set(['moe-group-fill-zero'])).selection.arraySync(); // => [[0, 0, -0.2, -0.2]]
 * ```
 */
export function routingScores(
  scores: tf.Tensor2D,
  gate: MoeWeights['gate'],
  config: GateConfig,
  deviations?: Deviations,
): { biased: tf.Tensor2D; groupScores: tf.Tensor2D | null; selection: tf.Tensor2D } {
  checkObject('routingScores', 'gate', gate);
  const known = configDims('routingScores', config);
  checkTensors(ROUTING_SCORES, { scores, gate }, known.E !== undefined ? { E: known.E } : {});
  const { n_routed_experts: E, n_group: G, topk_group } = config;
  const droppedGroupScore = deviations?.has('moe-group-fill-zero') ? 0 : -Infinity; // deviation: 0.0 (HF, mlx-lm)
  const [T] = scores.shape;
  const biasedScores = () => (gate.bias ? tf.add(scores, gate.bias) : scores.clone()) as tf.Tensor2D; // [T, E]
  if (G <= 1) return { ...tf.tidy(() => ({ biased: biasedScores(), selection: biasedScores() })), groupScores: null };
  return tf.tidy(() => {
    const biased = biasedScores();
    const grouped = tf.reshape(biased, [T, G, E / G]); // [T, G, E/G]
    const groupScores = (gate.bias ? tf.sum(tf.topk(grouped, 2).values, -1) : tf.max(grouped, -1)) as tf.Tensor2D; // [T, G]
    const keptGroups = tf.topk(groupScores, topk_group).indices; // [T, topk_group]
    // a float32 one-hot (counts 0/1 are exact): on tfjs-backend-webgpu 4.22 an int32 one-hot, or one
    // cast from int32 (a relabelling there, not a conversion), breaks the transpose that the sum
    // over axis 1 runs (a WGSL type error; docs/deviations.md)
    const kept = tf.greater(tf.sum(tf.oneHot(keptGroups, G, 1, 0, 'float32'), 1), 0); // [T, G] bool
    const masked = tf.where(tf.expandDims(kept, -1), grouped, tf.scalar(droppedGroupScore)); // [T, G, E/G]
    return { biased, groupScores, selection: tf.reshape(masked, [T, E]) as tf.Tensor2D };
  });
}

/**
 * A second tensor over the same data as `x` that the gradient tape has not recorded (tfjs has no
 * stop-gradient op): the engine makes a tensor from `x`'s data id and the backend counts one more
 * reference to that data, so disposing either tensor leaves the other valid. A backend without
 * reference counting gets a copy read back from it instead.
 */
function detachedView(x: tf.Tensor2D): tf.Tensor2D {
  const backend = tf.backend();
  if (typeof backend.incRef !== 'function') return tf.tensor2d(x.dataSync() as Float32Array, x.shape);
  backend.incRef(x.dataId);
  return tf.engine().makeTensorFromDataId(x.dataId, x.shape, x.dtype, backend) as tf.Tensor2D;
}

function checkGateArgs(x: tf.Tensor, gate: MoeWeights['gate'], config: GateConfig, routing: LayerRouting | undefined): void {
  checkObject('moeGate', 'gate', gate);
  const { n_routed_experts: E, num_experts_per_tok: Ek, n_group: G, topk_group } = config;
  const known = configDims('moeGate', config);
  const { T } = checkTensors(MOE_GATE, { x, gate }, { ...(known.E !== undefined ? { E: known.E } : {}) }) as Record<'T', number>;
  if (config.scoring_func !== 'sigmoid' && config.scoring_func !== 'softmax') {
    throw new RangeError(`moeGate(): scoring_func must be 'sigmoid' or 'softmax' but got '${config.scoring_func}'`);
  }
  if (!(G >= 1) || E % G !== 0) throw new RangeError(`moeGate(): n_group must divide n_routed_experts (${E}) but got ${G}`);
  if (G > 1 && !(topk_group >= 1 && topk_group <= G)) {
    throw new RangeError(`moeGate(): topk_group must be in [1, n_group=${G}] but got ${topk_group}`);
  }
  if (G > 1 && gate.bias && E / G < 2) {
    throw new RangeError(`moeGate(): the top-2 group score needs ≥ 2 experts per group but n_routed_experts/n_group = ${E / G}`);
  }
  const selectable = G > 1 ? (topk_group * E) / G : E;
  if (!(Ek >= 1 && Ek <= selectable)) {
    throw new RangeError(`moeGate(): num_experts_per_tok must be in [1, ${selectable}] (experts in the kept groups) but got ${Ek}`);
  }
  if (routing) {
    if (routing.tokens !== T || routing.experts !== Ek || routing.indices.length !== T * Ek || routing.weights.length !== T * Ek) {
      throw new RangeError(
        `moeGate(): routing record must cover [T=${T}, Ek=${Ek}] but covers [${routing.tokens}, ${routing.experts}] ` +
          `(indices ${routing.indices.length}, weights ${routing.weights.length})`,
      );
    }
    for (let i = 0; i < routing.indices.length; i++) {
      const id = routing.indices[i]!;
      if (!(Number.isInteger(id) && id >= 0 && id < E)) {
        throw new RangeError(`moeGate(): routing record expert id must be in [0, ${E}) but got ${id} at [${Math.floor(i / Ek)}, ${i % Ek}]`);
      }
    }
  }
}

// --- Experts (official MLP / Expert; spec §1.7) ---

/**
 * SwiGLU feed-forward network, used for the dense FFN of the first `first_k_dense_replace` layers,
 * for every routed expert and for the shared expert:
 * `y = W2( silu(W1 x) ⊙ (W3 x) )`, with `silu(h) = h · sigmoid(h)`. Each linear is the official
 * `linear()`: an FP8 weight quantizes its input activations per 128-block first (ue8m0 scales when
 * `scale_fmt` is set), so W2 sees the quantized SwiGLU product.
 *
 * @param x [T, D]
 * @param w `{ w1 [F, D], w2 [D, F], w3 [F, D] }` (F = inter dim).
 * @param fmt activation scale format, `scaleFmt(config)`.
 * @param at conformance seam: a rounding probe of the two quantizers (`ffn.in` before W1 and W3, `ffn.act`
 *   before W2; src/fp8.ts `QuantSite`), the FFN `branch` it reports and the call token of each row; and
 *   `precision` ('bf16' rounds the linear outputs and the SwiGLU product to bf16, src/precision.ts).
 * @returns [T, D]
 * @example
 * ```ts
 * const lin = (a: number[][]) => ({ weight: tf.tensor2d(a), fp8: false });
 * // silu(1) · 2 = 1.4621172
 * swigluFfn(tf.tensor2d([[1, 0]]), { w1: lin([[1, 0]]), w3: lin([[2, 0]]), w2: lin([[1], [0]]) }, null).arraySync(); // => [[1.4621172, 0]]
 * ```
 */
export function swigluFfn(x: tf.Tensor2D, w: FfnWeights<WeightMatrix>, fmt: 'ue8m0' | null, at: FfnOptions = {}): tf.Tensor2D {
  checkObject('swigluFfn', 'w', w);
  checkTensors(SWIGLU_FFN, { x, w });
  checkChoice('swigluFfn', 'fmt', fmt, ['ue8m0', null]);
  const site = (input: 'ffn.in' | 'ffn.act', name: string) =>
    probeAt(at.probe, { input, linear: `${at.branch ?? 'dense'}.${name}`, branch: at.branch ?? 'dense', ...(at.tokens ? { tokens: at.tokens } : {}) });
  const act = (t: tf.Tensor) => asActivation(t, at.precision); // bf16 mode: the official tensor dtype
  return tf.tidy(() => {
    const h1 = act(linear(x, w.w1, fmt, site('ffn.in', 'w1'))); // [T, F]
    const h3 = act(linear(x, w.w3, fmt, site('ffn.in', 'w3'))); // [T, F]
    const gated = act(tf.mul(tf.mul(h1, tf.sigmoid(h1)), h3)); // [T, F], silu and product in float32
    return act(linear(gated, w.w2, fmt, site('ffn.act', 'w2'))) as tf.Tensor2D; // [T, D]
  });
}

/** The conformance seam of {@link swigluFfn}: a rounding probe, the branch name and the token of each row. */
export interface FfnProbe {
  probe?: RoundingProbe;
  /** `dense` (default), `shared` or `expert E`. */
  branch?: string;
  /** call token of each row of x (default row r = token r). */
  tokens?: ArrayLike<number>;
}

/** Options of {@link swigluFfn}: the conformance seam and the activation precision (src/precision.ts). */
export interface FfnOptions extends FfnProbe {
  precision?: Precision | undefined;
}

// --- MoE layer (official MoE.forward; spec §4.1 step 7) ---

/**
 * Rows of `a` reordered by a permutation, `out[i] = a[perm[i]]`, with the gradient written as the
 * inverse permutation (`dA = dOut[inverse]`): tfjs's own gather gradient needs `UnsortedSegmentSum`,
 * which the wasm backend lacks, so this keeps MoE trainable on every backend.
 */
function permuteRows(a: tf.Tensor2D, perm: Int32Array, inverse: Int32Array): tf.Tensor2D {
  const f = tf.customGrad((input) => ({
    value: tf.gather(input as tf.Tensor2D, perm) as tf.Tensor2D,
    gradFunc: (dy: tf.Tensor2D) => tf.gather(dy, inverse),
  }));
  return f(a);
}

/**
 * One MoE FFN: `y = Σ_i w_i · Expert_{ids_i}(x) + Shared(x)`, accumulated in float32.
 * Each routed expert runs only on the tokens routed to it (as the official loop over experts); the
 * shared expert runs on every token. Returns the routing it used, which is the Keep Routing record
 * of this layer (for a sampling pass) — with `opts.routing` it equals that record's ids.
 *
 * @param x [T, D] FFN input (after `ffn_norm`).
 * @param w gate, E experts, shared expert (null when `n_shared_experts` = 0).
 * @param config model config (gate keys and `quantization_config.scale_fmt`).
 * @param opts Keep Routing record and combine mode (see {@link moeGate}); `probe`: the rounding probe of
 *   every expert's quantizers (conformance seam, {@link FfnProbe}).
 * @returns `out` [T, D]; `routing` the ids and combine weights used.
 * @example
 * ```ts
 * import { CONFIG_671B } from 'dsv32/config';
 * const config = { ...CONFIG_671B, hidden_size: 1, moe_intermediate_size: 1, n_routed_experts: 2, n_shared_experts: 0, num_experts_per_tok: 1, n_group: 1, topk_group: 1, quantization_config: undefined };
 * const one = { w1: { weight: tf.tensor2d([[1]]), fp8: false }, w2: { weight: tf.tensor2d([[1]]), fp8: false }, w3: { weight: tf.tensor2d([[1]]), fp8: false } };
 * const w = { gate: { weight: tf.tensor2d([[1], [-1]]), bias: null }, experts: [one, one], shared: null };
 * const { out, routing } = moe(tf.tensor2d([[1]]), w, config);   // sampling: free routing
 * Array.from(routing.indices); // => [0]
 * out.arraySync(); // => [[1.8276465]]
 * // training: the recorded ids are enforced even when the gate now prefers expert 1
 * const w2 = { ...w, gate: { weight: tf.tensor2d([[-1], [1]]), bias: null } };
 * Array.from(moe(tf.tensor2d([[1]]), w2, config, { routing }).routing.indices); // => [0]
 * ```
 */
export function moe(
  x: tf.Tensor2D,
  w: MoeWeights<WeightMatrix>,
  config: ModelConfig,
  opts: MoeOptions = {},
): { out: tf.Tensor2D; routing: LayerRouting } {
  checkObject('moe', 'w', w);
  checkArray('moe', 'w.experts', w.experts);
  const act = (t: tf.Tensor) => asActivation(t, opts.precision); // bf16 mode: the official tensor dtype
  const E = config.n_routed_experts;
  checkTensors(MOE, { x, w }, configDims('moe', config));
  if (w.experts.length !== E) {
    throw new RangeError(`moe(): weights must hold n_routed_experts=${E} experts but hold ${w.experts.length}`);
  }
  const fmt = scaleFmt(config);
  let routing: LayerRouting | undefined;
  const out = tf.tidy(() => {
    const [T, D] = x.shape;
    const gate = moeGate(x, w.gate, config, opts);
    const indices = gate.indices;
    const weights = act(gate.weights); // official `weights.type_as(x)`
    const Ek = indices.shape[1];
    const ids = indices.dataSync() as Int32Array;
    routing = { tokens: T, experts: Ek, indices: Int32Array.from(ids), weights: Float32Array.from(weights.dataSync()) };

    // group the (token, slot) pairs by expert, in expert order as the official loop
    const rowsOf: number[][] = Array.from({ length: E }, () => []);
    const slotsOf: number[][] = Array.from({ length: E }, () => []);
    for (let i = 0; i < ids.length; i++) {
      rowsOf[ids[i]!]!.push(Math.floor(i / Ek));
      slotsOf[ids[i]!]!.push(i);
    }
    if (T === 0) return tf.zeros([T, D]) as tf.Tensor2D;
    // (token, slot) pairs in expert order, and back: two permutations of the T·Ek rows
    const order = Int32Array.from(slotsOf.flat()); // expert-order row → (token, slot) index t·Ek + j
    const slotRow = new Int32Array(T * Ek); // (token, slot) → expert-order row
    order.forEach((slot, row) => (slotRow[slot] = row));
    const perPair = tf.reshape(tf.tile(x, [1, Ek]), [T * Ek, D]); // [T·Ek, D], row t·Ek + j = x_t
    const byExpert = permuteRows(perPair as tf.Tensor2D, order, slotRow); // [T·Ek, D], expert order
    const outputs: tf.Tensor2D[] = [];
    let n = 0;
    for (let e = 0; e < E; e++) {
      const count = rowsOf[e]!.length;
      if (count === 0) continue;
      const at = { precision: opts.precision, ...(opts.probe ? { probe: opts.probe, branch: `expert ${e}`, tokens: rowsOf[e]! } : {}) };
      outputs.push(swigluFfn(tf.slice(byExpert, [n, 0], [count, D]), w.experts[e]!, fmt, at)); // [n_e, D]
      n += count;
    }
    const expertOut = outputs.length === 1 ? outputs[0]! : (tf.concat(outputs, 0) as tf.Tensor2D); // [T·Ek, D], expert order
    const perSlot = tf.reshape(permuteRows(expertOut, slotRow, order), [T, Ek, D]); // [T, Ek, D], gate order
    const y = tf.sum(tf.mul(perSlot, tf.expandDims(weights, -1)), 1) as tf.Tensor2D; // [T, D], float32
    const shared = (s: FfnWeights<WeightMatrix>) => swigluFfn(x, s, fmt, { precision: opts.precision, ...(opts.probe ? { probe: opts.probe, branch: 'shared' } : {}) });
    return act(w.shared ? tf.add(y, shared(w.shared)) : y) as tf.Tensor2D;
  });
  return { out, routing: routing! };
}
