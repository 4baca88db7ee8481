/**
 * What the explorer page shows for one layer at one step of a golden fixture, computed live by dsv32
 * on the active backend, next to what the official code recorded (fixtures/golden/README.md).
 *
 * Teacher forcing, as the conformance checks do: for layer L, steps 0..S run in order on the RECORDED
 * inputs of each step (`stepK.expected.layerL.attn.in`, `.ffn.in`), so the caches of step S hold what the
 * official run's did. For the chosen step:
 *
 * - index scores `I[t,s]` (paper Eq. 1; `indexerScores`), shown with the causal mask `s ≤ t`;
 * - the selected positions `Top-k(I[t,:])` (Eq. 2; `selectTopK`) next to the recorded ones, as sets;
 * - the same with the indexer RoPE in the pre-fix interleaved layout (the bug fixed on 2025-11-17),
 *   compared with the official bug run at layer 0, step 0 (the only teacher-forcible one);
 * - the attention weights of one head over each query's selected keys,
 *   `p[t,j] = softmax_j(scale · (q̃[t,h]·c_{s_j} + q_pe[t,h]·k_pe_{s_j}))` (Eq. 2, MLA absorbed form);
 * - the MLA output after `wo` compared with `attn.out`;
 * - the MoE routing per token (§3.1; `moeGate`): group scores, the groups kept, the chosen experts and
 *   combine weights, next to the recorded `gate.indices` / `gate.weights`.
 *
 * Every read of a GPU-computed tensor is asynchronous (`await t.data()`) before a function that reads
 * synchronously (`selectTopK`): WebGPU under SwiftShader returns zeros from a synchronous read.
 *
 * Browser-safe: no Node built-in; the caller supplies the opened fixture.
 *
 * @module
 */
import { tf } from '../backend.ts';
import { softmaxScale, type ModelConfig } from '../config.ts';
import type { LayerWeights } from '../checkpoint.ts';
import { createIndexerCache, disposeIndexerCache, indexerScores, type IndexerCache } from '../indexer.ts';
import { selectTopK } from '../topk.ts';
import { mlaAttend, mlaLatent, mlaQuery } from '../mla.ts';
import { moeGate } from '../moe.ts';
import type { SafetensorsFile } from '../safetensors.ts';
import { ropeBugKey, traceKey } from '../conformance/core/trace_names.ts';

/** A golden fixture opened in memory: config, manifest, weights and trace (and the RoPE-bug trace, if loaded). */
export interface OpenFixture {
  name: string;
  config: ModelConfig;
  manifest: { steps: { step: number; start_pos: number; length: number }[]; max_seq_len?: number };
  trace: SafetensorsFile;
  /** the `public-fp32-indexer-rope-bug` trace (selections of the pre-fix layout), when it applies to these weights. */
  bugTrace?: SafetensorsFile;
  /** weights of one layer (loaded on demand, cached by the caller). */
  layer(L: number): LayerWeights;
}

/** Routing of one token by the MoE gate. */
export interface TokenRouting {
  /** per group g: the group score (sum of the top-2 biased scores σ + b of its experts); empty when n_group = 1. */
  groupScores: number[];
  /** groups kept (the `topk_group` best), ascending. */
  keptGroups: number[];
  /** chosen expert ids, gate order (dsv32). */
  experts: number[];
  /** combine weights (dsv32), same order. */
  weights: number[];
  /** recorded expert ids and weights (official), gate order. */
  officialExperts: number[];
  officialWeights: number[];
  /** same expert set as the official gate. */
  match: boolean;
}

/** Everything the page renders for (fixture, step, layer, head). */
export interface ExplorerView {
  fixture: string;
  step: number;
  layer: number;
  head: number;
  /** position of the first query row; rows are t = startPos .. startPos + T − 1. */
  startPos: number;
  /** T query rows, S = startPos + T key positions. */
  T: number;
  S: number;
  /** token ids of positions 0..S−1. */
  tokens: number[];
  /** [T][S] index scores before the mask (dsv32). */
  scores: number[][];
  /** max |I − I_official| / max(1, max |I_official|) over the causal part. */
  scoreRelErr: number;
  /** [T][k'] selected positions, ascending, −1 padded (dsv32, shipped layout). */
  selected: number[][];
  /** [T][k'] recorded selections (official). */
  officialTopk: number[][];
  /** per row: same set as the official selection. */
  topkMatch: boolean[];
  /** [T][k'] selections with the interleaved (pre-fix) indexer RoPE (dsv32). */
  bugTopk: number[][];
  /** recorded bug-run selections (official), only where teacher-forcible (layer 0, step 0); else null. */
  officialBugTopk: number[][] | null;
  /** per row: the bug selection differs from the shipped one. */
  bugDiffers: boolean[];
  /** per row, per selected slot: attention weight of head `head` (−1 slots omitted), aligned with `topk`. */
  attention: { positions: number[]; weights: number[] }[];
  /** MLA output vs recorded `attn.out`: max relative error. */
  attnOutRelErr: number;
  /** MoE routing per row; null for a dense layer (`first_k_dense_replace`). */
  routing: TokenRouting[] | null;
}

function rows(values: ArrayLike<number | bigint>, width: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < values.length; i += width) out.push(Array.from({ length: width }, (_, j) => Number(values[i + j]!)));
  return out;
}

function readRows(trace: SafetensorsFile, name: string): number[][] {
  const shape = trace.info(name).shape;
  return rows(trace.read(name) as ArrayLike<number | bigint>, shape[shape.length - 1]!);
}

function recorded(trace: SafetensorsFile, name: string, T: number, width: number): tf.Tensor2D {
  const info = trace.info(name);
  if (info.shape.reduce((a, b) => a * b, 1) !== T * width) {
    throw new RangeError(`${name} must hold [1, ${T}, ${width}] but has shape [${info.shape.join(', ')}]`);
  }
  return tf.tensor2d(trace.read(name) as Float32Array, [T, width]);
}

function sameSet(a: number[], b: number[]): boolean {
  const sa = new Set(a.filter((v) => v >= 0));
  const sb = new Set(b.filter((v) => v >= 0));
  return sa.size === sb.size && [...sa].every((v) => sb.has(v));
}

function relErr(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let maxAbs = 0;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(actual[i]! - expected[i]!));
    maxRef = Math.max(maxRef, Math.abs(expected[i]!));
  }
  return maxAbs / Math.max(1, maxRef);
}

/** Reads a tensor asynchronously (works on every backend, WebGPU included) and disposes it. */
async function take(t: tf.Tensor): Promise<Float32Array | Int32Array> {
  const v = (await t.data()) as Float32Array | Int32Array;
  t.dispose();
  return v;
}

/** Index scores and selections of one step, read back asynchronously before the synchronous top-k. */
async function select(
  x: tf.Tensor2D, qr: tf.Tensor2D, w: LayerWeights, cache: IndexerCache, startPos: number,
  config: ModelConfig, maxSeqLen: number, ropeInterleaved: boolean,
): Promise<{ scores: tf.Tensor2D; selected: tf.Tensor2D }> {
  const scores = indexerScores(x, qr, w.attn.indexer, cache, startPos, { config, maxSeqLen, ropeInterleaved });
  await scores.data(); // the values now live on the CPU side too; selectTopK reads them synchronously
  return { scores, selected: selectTopK(scores, startPos, config.index_topk) };
}

/**
 * Attention weights of head `h` over each query's selected slots, MLA absorbed form (paper Eq. 2;
 * official `MLA.forward` decode branch restricted to the selected set):
 * `p[t,j] = softmax_j(scale · (q̃[t,h]·c_{s_j} + q_pe[t,h]·k_pe_{s_j}))`, `q̃ = W_UKᵀ q_nope`, −1 slots excluded.
 *
 * @param qNope [T, H, Dn]  @param qPe [T, H, R]  @param kv [S, C]  @param pe [S, R]
 * @param selected [T, K] int32 selected positions (−1 padded)
 * @returns [T, K] weights (0 on −1 slots)
 */
function headAttention(
  qNope: tf.Tensor3D, qPe: tf.Tensor3D, kv: tf.Tensor2D, pe: tf.Tensor2D, selected: tf.Tensor2D,
  w: LayerWeights, h: number, config: ModelConfig, maxSeqLen: number,
): tf.Tensor2D {
  const [T, H, Dn] = qNope.shape;
  const C = config.kv_lora_rank;
  const R = config.qk_rope_head_dim;
  return tf.tidy(() => {
    const wUK = w.attn.wkv_b.weight.reshape([H, Dn + config.v_head_dim, C]).slice([h, 0, 0], [1, Dn, C]).reshape([Dn, C]); // [Dn, C]
    const qLatent = tf.matMul(qNope.slice([0, h, 0], [T, 1, Dn]).reshape([T, Dn]), wUK); // [T, C]
    const qRope = qPe.slice([0, h, 0], [T, 1, R]).reshape([T, R]); // [T, R]
    const valid = tf.greaterEqual(selected, 0); // [T, K]
    const slots = tf.maximum(selected, tf.scalar(0, 'int32')); // [T, K] (−1 reads row 0, masked below)
    const c = tf.gather(kv, slots); // [T, K, C]
    const r = tf.gather(pe, slots); // [T, K, R]
    const z = tf.add(
      tf.matMul(qLatent.expandDims(1), c, false, true),
      tf.matMul(qRope.expandDims(1), r, false, true),
    ).reshape(selected.shape).mul(softmaxScale(config, maxSeqLen)); // [T, K]
    return tf.softmax(tf.where(valid, z, tf.fill(selected.shape, -Infinity))) as tf.Tensor2D;
  });
}

/**
 * Group scores and kept groups of the gate (official `Gate.forward` steps 2–3), for display: the sum of
 * the top-2 biased scores of each group (the max when the gate has no bias), the `topk_group` best kept.
 */
function groups(biased: ArrayLike<number>, config: ModelConfig, hasBias: boolean): { groupScores: number[]; keptGroups: number[] } {
  const G = config.n_group;
  if (G <= 1) return { groupScores: [], keptGroups: [] };
  const per = config.n_routed_experts / G;
  const groupScores = Array.from({ length: G }, (_, g) => {
    const top = Array.from({ length: per }, (_, j) => biased[g * per + j]!).sort((a, b) => b - a);
    return hasBias ? top[0]! + (top[1] ?? 0) : top[0]!;
  });
  const keptGroups = groupScores.map((s, g) => [s, g] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1])
    .slice(0, config.topk_group).map(([, g]) => g).sort((a, b) => a - b);
  return { groupScores, keptGroups };
}

/**
 * Computes the {@link ExplorerView} of one layer at one step (see the module doc).
 *
 * @param fx the opened fixture
 * @param step step id (manifest `steps[].step`)
 * @param layer layer index < `num_hidden_layers`
 * @param head attention head < `num_attention_heads`
 * @throws RangeError naming the argument when step, layer or head is out of range, or a recorded tensor is missing
 */
export async function computeView(fx: OpenFixture, step: number, layer: number, head: number): Promise<ExplorerView> {
  const { config } = fx;
  const steps = fx.manifest.steps;
  const at = steps.findIndex((s) => s.step === step);
  if (at < 0) throw new RangeError(`computeView(): step must be one of ${steps.map((s) => s.step).join(', ')} but got ${step}`);
  if (!(Number.isInteger(layer) && layer >= 0 && layer < config.num_hidden_layers)) {
    throw new RangeError(`computeView(): layer must be an integer in [0, ${config.num_hidden_layers}) but got ${layer}`);
  }
  if (!(Number.isInteger(head) && head >= 0 && head < config.num_attention_heads)) {
    throw new RangeError(`computeView(): head must be an integer in [0, ${config.num_attention_heads}) but got ${head}`);
  }
  const maxSeqLen = fx.manifest.max_seq_len ?? config.max_position_embeddings;
  const D = config.hidden_size;
  const w = fx.layer(layer);
  const shipped = createIndexerCache();
  const bug = createIndexerCache();
  let kv: tf.Tensor2D | null = null;
  let pe: tf.Tensor2D | null = null;
  try {
    for (let i = 0; i <= at; i++) {
      const { step: s, start_pos: startPos, length: T } = steps[i]!;
      const x = recorded(fx.trace, traceKey(s, layer, 'attn.in'), T, D);
      const { qr, qNope, qPe } = mlaQuery(x, w.attn, startPos, { config, maxSeqLen });
      const { normalized, latent, kPe } = mlaLatent(x, w.attn, startPos, { config, maxSeqLen });
      normalized.dispose();
      const kvNext: tf.Tensor2D = kv ? tf.concat([kv, latent], 0) : latent;
      const peNext: tf.Tensor2D = pe ? tf.concat([pe, kPe], 0) : kPe;
      if (kv) tf.dispose([kv, pe!, latent, kPe]);
      kv = kvNext;
      pe = peNext;
      const ours = await select(x, qr, w, shipped, startPos, config, maxSeqLen, false);
      const theirs = await select(x, qr, w, bug, startPos, config, maxSeqLen, true);
      if (i < at) {
        tf.dispose([x, qr, qNope, qPe, ours.scores, ours.selected, theirs.scores, theirs.selected]);
        continue;
      }
      // --- the chosen step ---
      const S = startPos + T;
      const out = mlaAttend(qNope, qPe, kv, pe, ours.selected, w.attn, startPos, { config, maxSeqLen, mode: T > 1 ? 'mha' : 'mqa' });
      const probs = headAttention(qNope, qPe, kv, pe, ours.selected, w, head, config, maxSeqLen);
      const K = ours.selected.shape[1];
      const topkValues = await ours.selected.data();
      const selected = rows(topkValues, K);
      const scores = rows(await take(ours.scores), S);
      const bugTopk = rows(await take(theirs.selected), K);
      const p = rows(await take(probs), K);
      const outValues = await take(out);
      tf.dispose([x, qr, qNope, qPe, ours.selected, theirs.scores]);

      const officialTopk = readRows(fx.trace, traceKey(s, layer, 'indexer.topk'));
      const officialScores = readRows(fx.trace, traceKey(s, layer, 'indexer.score'));
      const causal = (m: number[][]) => m.flatMap((row, r) => row.slice(0, startPos + r + 1));
      const bugName = ropeBugKey(s, layer);
      const teacherForcibleBug = layer === 0 && startPos === 0 && fx.bugTrace?.has(bugName);
      const view: ExplorerView = {
        fixture: fx.name, step: s, layer, head, startPos, T, S,
        tokens: Array.from(fx.trace.read('input.tokens') as ArrayLike<number | bigint>, Number).slice(0, S),
        scores,
        scoreRelErr: relErr(causal(scores), causal(officialScores)),
        selected,
        officialTopk,
        topkMatch: selected.map((row, r) => sameSet(row, officialTopk[r] ?? [])),
        bugTopk,
        officialBugTopk: teacherForcibleBug ? readRows(fx.bugTrace!, bugName) : null,
        bugDiffers: bugTopk.map((row, r) => !sameSet(row, selected[r]!)),
        attention: selected.map((row, r) => ({
          positions: row.filter((v) => v >= 0),
          weights: row.map((v, j) => (v >= 0 ? p[r]![j]! : NaN)).filter((v) => !Number.isNaN(v)),
        })),
        attnOutRelErr: relErr(outValues, fx.trace.read(traceKey(s, layer, 'attn.out')) as Float32Array),
        routing: await routing(fx, s, layer, T, w),
      };
      return view;
    }
    throw new RangeError(`computeView(): step ${step} not reached`);
  } finally {
    tf.dispose([kv, pe].filter((t): t is tf.Tensor2D => t !== null));
    disposeIndexerCache(shipped);
    disposeIndexerCache(bug);
  }
}

async function routing(fx: OpenFixture, step: number, layer: number, T: number, w: LayerWeights): Promise<TokenRouting[] | null> {
  if (w.ffn.kind !== 'moe') return null;
  const { config } = fx;
  const gate = w.ffn.moe.gate;
  const x = recorded(fx.trace, traceKey(step, layer, 'ffn.in'), T, config.hidden_size);
  const biased = tf.tidy(() => {
    const s = tf.sigmoid(tf.matMul(x, gate.weight, false, true));
    return gate.bias ? tf.add(s, gate.bias) : s;
  });
  const { weights, indices } = moeGate(x, gate, config);
  x.dispose();
  const E = config.n_routed_experts;
  const Ek = config.num_experts_per_tok;
  const b = await take(biased);
  const ids = rows(await take(indices), Ek);
  const cw = rows(await take(weights), Ek);
  const officialIds = readRows(fx.trace, traceKey(step, layer, 'gate.indices'));
  const officialW = readRows(fx.trace, traceKey(step, layer, 'gate.weights'));
  return ids.map((experts, t) => ({
    ...groups(b.subarray(t * E, (t + 1) * E), config, gate.bias !== null),
    experts,
    weights: cw[t]!,
    officialExperts: officialIds[t]!,
    officialWeights: officialW[t]!,
    match: sameSet(experts, officialIds[t]!),
  }));
}
