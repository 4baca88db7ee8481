/**
 * Conformance on a released checkpoint (`dsv32 conformance --weights DIR [--layers 0,3] [--tokens FILE]
 * [--expect FILE]`): runs layers of a sharded DeepSeek-V3.2 checkpoint **one layer at a time** — load
 * the layer's weights, run the block, log activation statistics, dispose, next — so memory stays
 * bounded by one layer's dequantized float32 weights (46 GB for the largest 671B layer, see
 * docs/weights-streaming.md and {@link layerFloat32Bytes}), never the whole checkpoint.
 *
 * The token ids go through layers 0..max(layers) as one prefill at position 0 (a layer's input is the
 * previous layer's output, so the layers before a chosen one run too); statistics are logged for every
 * layer run, rows are reported for the chosen ones. When the run covers every layer, the final norm and
 * head give the last position's logits.
 *
 * With `expectFile` (a trace in the golden fixture format, fixtures/golden/README.md), step 0 of the
 * trace is checked: the tokens are the trace's `input.tokens[0:n]`; for each chosen layer the modules
 * are teacher-forced from the recorded inputs (`attn.out`/`attn.qr`/`indexer.topk` from `attn.in`,
 * `gate.*`/`ffn.out` from `ffn.in`), and the streamed activations (`stream.attn.in`, `stream.ffn.out`,
 * `stream.logits`) are compared with the recorded ones. Tolerance `1e−4 · max(1, max|b|)`, sets for ids.
 *
 * Nothing throws: a missing tensor, a wrong shape or dtype is a failed row naming the tensor, what was
 * expected and what was found, and the run stops there (no layer is used half-loaded).
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { tf } from '../backend.ts';
import type { ModelConfig } from '../config.ts';
import { type Checkpoint, type SafetensorsFile } from '../safetensors.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../node.ts';
import { disposeGlobalWeights, disposeLayerWeights, loadGlobalWeights, loadLayerWeights, type LayerWeights } from '../checkpoint.ts';
import { createMlaCache, disposeMlaCache, mlaForward, truncateMlaCache } from '../mla.ts';
import { moe, swigluFfn, type LayerRouting } from '../moe.ts';
import { headLogits } from '../model.ts';
import { scaleFmt } from '../config.ts';
import type { RoundingProbe } from '../fp8.ts';
import { explainByFlips } from './fp8/midpoints.ts';
import { steeredBlock, type LayerRecord, type Steer } from './fp8/steer.ts';
import { compareArrays, failure, setsRow, withNote, type CheckResult } from './core/rows.ts';
import { FixtureError, GOLDEN_RTOL, maxSeqLenOf, parseSteps, readTokens, traceKey, type TracedTensor } from './core/fixture.ts';
import { gateRows } from './checks/gate.ts';

/** Token ids used when none are given (spread over the vocabulary, reduced modulo V). */
export const DEFAULT_TOKENS: readonly number[] = [0, 1, 100, 1000, 5000, 20000, 64000, 128000];

/** Options of {@link runWeightsConformance}. */
export interface WeightsConformanceOptions {
  /** checkpoint directory: config.json + model.safetensors.index.json (or one model.safetensors). */
  weightsDir: string;
  /** layers to report (default: the first dense and the first MoE layer). */
  layers?: number[];
  /** token ids (default {@link DEFAULT_TOKENS} mod V; the trace's tokens when `expectFile` is given). */
  tokens?: number[];
  /** a trace in the golden fixture format to compare step 0 with. */
  expectFile?: string;
  /** inference-time max sequence length (YaRN, softmax scale); default the expect trace's manifest.json
   *  `max_seq_len` when there is one, else `max_position_embeddings`. */
  maxSeqLen?: number;
  /** receives one line per layer with activation statistics. */
  log?: (line: string) => void;
}

// --- Memory bound ---

/**
 * Bytes of one layer's weights once dequantized to float32 (what {@link runWeightsConformance} holds
 * at a time): MLA + indexer + norms + dense FFN, or + gate, E experts and the shared expert.
 *
 * @example
 * ```ts
 * import { CONFIG_671B } from 'dsv32/config';
 * layerFloat32Bytes(CONFIG_671B, 3); // => 46084982784
 * layerFloat32Bytes(CONFIG_671B, 0); // => 2389771264
 * ```
 */
export function layerFloat32Bytes(config: ModelConfig, layer: number): number {
  const c = config;
  const D = c.hidden_size;
  const H = c.num_attention_heads;
  const attn =
    c.q_lora_rank * D + c.q_lora_rank + H * (c.qk_nope_head_dim + c.qk_rope_head_dim) * c.q_lora_rank +
    (c.kv_lora_rank + c.qk_rope_head_dim) * D + c.kv_lora_rank + H * (c.qk_nope_head_dim + c.v_head_dim) * c.kv_lora_rank +
    D * H * c.v_head_dim;
  const indexer = c.index_n_heads * c.index_head_dim * c.q_lora_rank + c.index_head_dim * D + 2 * c.index_head_dim + c.index_n_heads * D;
  const norms = 2 * D;
  const ffn =
    layer < c.first_k_dense_replace
      ? 3 * c.intermediate_size * D
      : c.n_routed_experts * D + c.n_routed_experts + (c.n_routed_experts + c.n_shared_experts) * 3 * c.moe_intermediate_size * D;
  return 4 * (attn + indexer + norms + ffn);
}

// --- Statistics ---

/**
 * mean, (population) std and max|x| of a tensor, and whether every element is finite — the per-layer
 * statistics of the log.
 *
 * @example
 * ```ts
 * activationStats(tf.tensor1d([1, -3])).std; // => 2
 * activationStats(tf.tensor1d([1, -3])).maxAbs; // => 3
 * ```
 */
export function activationStats(x: tf.Tensor | Float32Array): { mean: number; std: number; maxAbs: number; finite: boolean } {
  const v = x instanceof Float32Array ? x : (x.dataSync() as Float32Array);
  let s = 0;
  let s2 = 0;
  let m = 0;
  let finite = true;
  for (const a of v) {
    if (!Number.isFinite(a)) finite = false;
    s += a;
    s2 += a * a;
    m = Math.max(m, Math.abs(a));
  }
  const mean = s / v.length;
  return { mean, std: Math.sqrt(Math.max(0, s2 / v.length - mean * mean)), maxAbs: m, finite };
}

const fmt = (s: { mean: number; std: number; maxAbs: number }) =>
  `mean ${s.mean.toExponential(3)} std ${s.std.toExponential(3)} max|x| ${s.maxAbs.toExponential(3)}`;

/** The manifest.json next to an expect trace, or null when there is none. @throws FixtureError when it is not a JSON object. */
function expectManifest(expectFile: string): Record<string, unknown> | null {
  const path = join(dirname(expectFile), 'manifest.json');
  if (!existsSync(path)) return null;
  let m: unknown;
  try {
    m = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new FixtureError(`cannot parse ${path}: ${(e as Error).message}`);
  }
  if (typeof m !== 'object' || m === null || Array.isArray(m)) throw new FixtureError(`${path} must be a JSON object`);
  return m as Record<string, unknown>;
}

/**
 * Length n of step 0 of an expect trace (the prefill compared here): the manifest's first step, else the
 * rows of the first recorded `step0.expected.layerL.attn.in`.
 */
function step0Length(trace: SafetensorsFile, manifest: Record<string, unknown> | null, N: number): number {
  if (manifest?.steps !== undefined) {
    const first = parseSteps(manifest.steps)[0]!;
    if (first.step !== 0) throw new FixtureError(`manifest.json steps[0] must be step 0 (the prefill compared here) but is step ${first.step}`);
    return first.length;
  }
  for (let l = 0; l < N; l++) {
    const name = `step0.expected.layer${l}.attn.in`;
    if (trace.has(name)) return trace.info(name).shape.at(-2) ?? 1;
  }
  throw new FixtureError('the expect trace has no manifest.json `steps` and no `step0.expected.layerL.attn.in`: step 0\'s length is unknown');
}

// --- Run ---

/**
 * Runs the chosen layers of a released checkpoint one layer at a time (see the module comment).
 *
 * @returns rows: `weights.finite` per chosen layer (activations finite), the comparisons with
 *   `expectFile`, or failed rows (`weights.load`, `weights.args`, ...) with reasons.
 * @example
 * ```ts
 * const rows = await runWeightsConformance({ weightsDir: 'fixtures/golden/public-fp8', layers: [1], tokens: [3, 1, 4] });
 * rows.every((r) => r.pass); // => true
 * ```
 */
export async function runWeightsConformance(opts: WeightsConformanceOptions): Promise<CheckResult[]> {
  const name = basename(resolve(opts.weightsDir));
  const log = opts.log ?? (() => {});
  let config: ModelConfig;
  try {
    config = loadConfig(join(opts.weightsDir, 'config.json'));
  } catch (e) {
    return [failure(name, 'weights.config', (e as Error).message)];
  }
  const N = config.num_hidden_layers;
  const layers = [...new Set(opts.layers ?? [0, Math.min(config.first_k_dense_replace, N - 1)])].sort((a, b) => a - b);
  const badLayer = layers.find((l) => !Number.isInteger(l) || l < 0 || l >= N);
  if (badLayer !== undefined || layers.length === 0) {
    return [failure(name, 'weights.args', `layers must be integers in [0, ${N}) but got [${opts.layers}]`)];
  }
  let maxSeqLen = opts.maxSeqLen ?? config.max_position_embeddings;

  let trace: SafetensorsFile | null = null;
  let ckpt: Checkpoint | null = null;
  const rows: CheckResult[] = [];
  try {
    let tokens = opts.tokens ?? DEFAULT_TOKENS.map((t) => t % config.vocab_size);
    if (opts.expectFile) {
      trace = openSafetensors(opts.expectFile);
      let recorded: number[];
      try {
        const manifest = expectManifest(opts.expectFile);
        if (opts.maxSeqLen === undefined && manifest) maxSeqLen = maxSeqLenOf(manifest, config);
        const n = step0Length(trace, manifest, N);
        recorded = readTokens(trace, [{ step: 0, start_pos: 0, length: n }], config).slice(0, n);
      } catch (e) {
        if (!(e instanceof FixtureError)) throw e;
        return [failure(name, 'weights.expect', `${opts.expectFile}: ${e.message}`)];
      }
      if (opts.tokens && opts.tokens.join(',') !== recorded.join(',')) {
        return [failure(name, 'weights.args', `tokens differ from the trace's input.tokens[0:${recorded.length}] (${recorded.join(',')})`)];
      }
      tokens = recorded;
    }
    const badToken = tokens.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= config.vocab_size);
    if (badToken >= 0 || tokens.length === 0) {
      return [failure(name, 'weights.args', `tokens must be ≥ 1 integers in [0, ${config.vocab_size}) but tokens[${badToken}] = ${tokens[badToken]}`)];
    }
    if (trace) {
      // a chosen layer the expect trace does not record would silently compare nothing
      const names = trace.names();
      for (const l of layers) {
        if (!names.some((n) => n.startsWith(`step0.expected.layer${l}.`))) {
          rows.push(failure(name, 'weights.expect', `${opts.expectFile} has no step0.expected.layer${l}.* tensors: layer ${l} is not compared`, 0, l));
        }
      }
    }
    ckpt = openCheckpoint(opts.weightsDir);
    rows.push(...stream(ckpt, config, layers, tokens, maxSeqLen, trace, name, log));
  } catch (e) {
    rows.push(failure(name, 'weights.load', (e as Error).message));
  } finally {
    trace?.close();
    ckpt?.close();
  }
  return rows;
}

function stream(
  ckpt: Checkpoint, config: ModelConfig, layers: number[], tokens: number[], maxSeqLen: number,
  trace: SafetensorsFile | null, name: string, log: (line: string) => void,
): CheckResult[] {
  const rows: CheckResult[] = [];
  const last = layers[layers.length - 1]!;
  const N = config.num_hidden_layers;
  const T = tokens.length;
  const D = config.hidden_size;
  const compare: Compare = (check, layer, actual, key, explain) => {
    if (!trace || !trace.has(key)) return;
    const expected = trace.read(key) as Float32Array;
    const c = compareArrays(actual, expected, GOLDEN_RTOL);
    const r: CheckResult = { case: name, check, step: 0, layer, pass: c.pass, max_abs_err: c.maxAbs, max_rel_err: c.maxRel, ...(c.reason ? { reason: c.reason } : {}) };
    rows.push(explain && !c.reason ? explain(r, expected, actual) : r);
  };
  const key = (l: number, what: TracedTensor) => traceKey(0, l, what);

  // embedding rows only; the global weights are dropped before the first layer loads
  let h: tf.Tensor2D;
  {
    const g = loadGlobalWeights(ckpt, config);
    h = tf.gather(g.embed, tokens) as tf.Tensor2D; // [T, D]
    disposeGlobalWeights(g);
  }
  let residual: tf.Tensor2D | null = null;
  try {
    for (let l = 0; l <= last; l++) {
      const w = loadLayerWeights(ckpt, config, l); // throws CheckpointError naming the tensor; nothing kept
      const cache = createMlaCache();
      try {
        const chosen = layers.includes(l);
        let stats = '';
        // follow the recorded rounding at verified FP8 midpoints of every quantizer (fp8/steer.ts)
        const b = steeredBlock(h, residual, w, cache, 0, { config, maxSeqLen, layer: l }, trace ? layerRecord(trace, l) : {}, GOLDEN_RTOL);
        const note = (tensor: Steer['decidedBy']) => (r: CheckResult) => b.steers.filter((st) => st.decidedBy === tensor).reduce((row, st) => withNote(row, st.note), r);
        stats = `attn.out ${fmt(activationStats(b.snap.attnOut))} | ffn.out ${fmt(activationStats(b.snap.ffnOut))}`;
        if (chosen) {
          compare('stream.attn.in', l, b.snap.attnIn, key(l, 'attn.in'));
          compare('stream.attn.out', l, b.snap.attnOut, key(l, 'attn.out'), note('attn.out'));
          compare('stream.ffn.out', l, b.snap.ffnOut, key(l, 'ffn.out'), note('ffn.out'));
        }
        h.dispose();
        residual?.dispose();
        h = b.out;
        residual = b.residual;
        const s = activationStats(residual);
        log(`layer ${l}${chosen ? '' : ' (on the way)'} [${w.ffn.kind}] T=${T}: ${stats} | residual ${fmt(s)}`);
        if (chosen) {
          rows.push({ case: name, check: 'weights.finite', step: 0, layer: l, pass: s.finite, max_abs_err: null, max_rel_err: null, ...(s.finite ? {} : { reason: 'non-finite activations' }) });
          if (trace) rows.push(...teacherForced(w, config, maxSeqLen, trace, l, D, name, compare));
        }
      } finally {
        disposeMlaCache(cache);
        disposeLayerWeights(w);
      }
    }
    if (last === N - 1) {
      const g = loadGlobalWeights(ckpt, config);
      try {
        const logits = headLogits(h, residual!, g, config.rms_norm_eps);
        const s = activationStats(logits);
        log(`logits (last position): ${fmt(s)}`);
        compare('stream.logits', null, logits.dataSync(), traceKey(0, null, 'logits'));
        logits.dispose();
      } finally {
        disposeGlobalWeights(g);
      }
    }
  } finally {
    h.dispose();
    (residual as tf.Tensor2D | null)?.dispose();
  }
  return rows;
}

/** Layer-local checks from the recorded inputs of step 0 (prefill at position 0, fresh cache). */
type Compare = (
  check: string, layer: number | null, actual: ArrayLike<number>, key: string,
  explain?: (row: CheckResult, expected: Float32Array, actual: ArrayLike<number>) => CheckResult,
) => void;

/** The recorded step-0 tensors of layer l that decide steers (fp8/steer.ts). */
function layerRecord(trace: SafetensorsFile, l: number): LayerRecord {
  const out: LayerRecord = {};
  for (const t of ['attn.qr', 'indexer.score', 'attn.out', 'ffn.in', 'ffn.out'] as const) {
    const k = traceKey(0, l, t);
    if (trace.has(k)) out[t] = trace.read(k) as Float32Array;
  }
  const k = traceKey(0, l, 'indexer.topk');
  if (trace.has(k)) out['indexer.topk'] = { data: Array.from(trace.read(k), Number), k: trace.info(k).shape.at(-1)! };
  return out;
}

function teacherForced(
  w: LayerWeights, config: ModelConfig, maxSeqLen: number, trace: SafetensorsFile, l: number, D: number, name: string,
  compare: Compare,
): CheckResult[] {
  const rows: CheckResult[] = [];
  const key = (what: TracedTensor) => traceKey(0, l, what);
  const matrix = (k: string) => {
    const { shape } = trace.info(k);
    if (shape[shape.length - 1] !== D) {
      throw new FixtureError(`${k} must be [1, T, ${D}] (hidden_size ${D}) but is [${shape.join(', ')}]`);
    }
    const v = trace.read(k) as Float32Array;
    return tf.tensor2d(v, [v.length / D, D]);
  };
  if (trace.has(key('attn.in'))) {
    const x = matrix(key('attn.in'));
    const cache = createMlaCache();
    try {
      const T = x.shape[0];
      const attend = (probe?: RoundingProbe) => {
        truncateMlaCache(cache, 0);
        const a = mlaForward(x, w.attn, cache, 0, { config, maxSeqLen, ...(probe ? { probe } : {}) });
        const got = { qr: a.qr.dataSync() as Float32Array, out: a.out.dataSync() as Float32Array, topk: a.topk.dataSync() as Int32Array, k: a.topk.shape[1] };
        tf.dispose([a.out, a.qr, a.indexScores, a.topk]);
        return got;
      };
      const a = attend();
      compare('attn.qr', l, a.qr, key('attn.qr'));
      // a miss at an FP8 midpoint: the flip search of fp8/midpoints.ts (the last run is the kept one)
      compare('attn.out', l, a.out, key('attn.out'), (r, expected) => explainByFlips(r, (probe) => attend(probe).out, expected, T, 0, GOLDEN_RTOL, true));
      if (trace.has(key('indexer.topk'))) {
        const want = Array.from(trace.read(key('indexer.topk')), Number);
        rows.push(setsRow(name, 'indexer.topk', 0, l, a.topk, want, trace.info(key('indexer.topk')).shape.at(-1)!, a.k));
      }
    } finally {
      disposeMlaCache(cache);
      x.dispose();
    }
  }
  if (trace.has(key('ffn.in'))) {
    const x = matrix(key('ffn.in'));
    try {
      let y: tf.Tensor2D;
      let routing: LayerRouting | null = null;
      if (w.ffn.kind === 'dense') y = swigluFfn(x, w.ffn.dense, scaleFmt(config));
      else ({ out: y, routing } = moe(x, w.ffn.moe, config));
      const actualOut = y.dataSync() as Float32Array;
      y.dispose();
      const fixed = routing as LayerRouting | null;
      const ffn = (probe: RoundingProbe) => {
        const out = w.ffn.kind === 'dense'
          ? swigluFfn(x, w.ffn.dense, scaleFmt(config), { probe })
          : moe(x, w.ffn.moe, config, { ...(fixed ? { routing: fixed, combine: 'replay' as const } : {}), probe }).out;
        const v = out.dataSync() as Float32Array;
        out.dispose();
        return v;
      };
      compare('ffn.out', l, actualOut, key('ffn.out'), (r, expected) => explainByFlips(r, ffn, expected, x.shape[0], 0, GOLDEN_RTOL));
      if (fixed && trace.has(key('gate.indices'))) rows.push(...gateRows({ name, trace }, '', 0, l, fixed));
    } finally {
      x.dispose();
    }
  }
  return rows;
}
