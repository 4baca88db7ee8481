/**
 * Conformance on a released checkpoint (`dsv32 conformance --weights DIR [--layers 0,3] [--tokens FILE]
 * [--expect FILE | --steps N]`): runs a sharded DeepSeek-V3.2 checkpoint **one layer at a time with
 * resident weights** (src/layer_stream.ts): a layer's FP8/BF16 weights are held as stored bytes and
 * dequantized one band per product, the MoE reads only the experts its gate picks, the embedding only
 * the tokens' rows, the head in bands — so what is held is bounded by {@link weight_budget!layerResidentBytes}
 * plus activations (docs/weights-streaming.md), never a whole layer in float32.
 *
 * A run is a prefill of the token ids at position 0 and then decode steps, the caches of every layer
 * kept between them: the steps of the `expectFile` trace (its manifest's `steps`; step 0 only without
 * one), or `steps` greedy decode steps. The layers 0..max(layers) run (a layer's input is the previous
 * layer's output), all of them when logits are needed; statistics are logged for every layer run, rows
 * are reported for the chosen ones: `weights.finite` per step (with the peak bytes the layer held), the
 * comparisons with the trace (src/conformance/weights_trace.ts).
 *
 * Nothing throws: a missing tensor, a wrong shape or dtype is a failed row naming the tensor, what was
 * expected and what was found, and the run stops there (no layer is used half-loaded).
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { tf } from '../backend.ts';
import type { ModelConfig } from '../config.ts';
import type { Checkpoint, SafetensorsFile } from '../safetensors.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../node.ts';
import { createStreamState, disposeStreamState, streamCall, type StreamState } from '../layer_stream.ts';
import { MemoryMeter } from '../resident.ts';
import { TraceChecks } from './weights_trace.ts';
import { steeredBlock } from './fp8/steer.ts';
import { failure, type CheckResult } from './core/rows.ts';
import { FixtureError, GOLDEN_RTOL, maxSeqLenOf, parseSteps, readTokens, type GoldenStep } from './core/fixture.ts';

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
  /** a trace in the golden fixture format: every step of it is run and compared. */
  expectFile?: string;
  /** greedy decode steps after the prefill of `tokens` (each feeds the argmax of the previous logits;
   *  the run then goes through every layer). Not with `expectFile`, whose steps are given. */
  steps?: number;
  /** attention kernels (src/mla.ts `MlaOptions.attention`); default 'sparse', as the golden checks. */
  attention?: 'sparse' | 'dense' | 'fast';
  /** run a long prefill in chunks of at most this many tokens (src/layer_stream.ts `StreamOptions.chunk`);
   *  not with `expectFile`, whose comparisons take each step whole. */
  prefillChunk?: number;
  /** inference-time max sequence length (YaRN, softmax scale); default the expect trace's manifest.json
   *  `max_seq_len` when there is one, else `max_position_embeddings`. */
  maxSeqLen?: number;
  /** receives one line per layer and step with activation statistics and the peak bytes held. */
  log?: (line: string) => void;
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
 * The steps of an expect trace: the manifest's, else one prefill whose length is the rows of the first
 * recorded `step0.expected.layerL.attn.in`.
 */
function traceSteps(trace: SafetensorsFile, manifest: Record<string, unknown> | null, N: number): GoldenStep[] {
  if (manifest?.steps !== undefined) {
    const steps = parseSteps(manifest.steps);
    if (steps[0]!.step !== 0) throw new FixtureError(`manifest.json steps[0] must be step 0 (the prefill) but is step ${steps[0]!.step}`);
    return steps;
  }
  for (let l = 0; l < N; l++) {
    const name = `step0.expected.layer${l}.attn.in`;
    if (trace.has(name)) return [{ step: 0, start_pos: 0, length: trace.info(name).shape.at(-2) ?? 1 }];
  }
  throw new FixtureError('the expect trace has no manifest.json `steps` and no `step0.expected.layerL.attn.in`: step 0\'s length is unknown');
}

const megabytes = (b: number) => `${(b / 1e6).toFixed(1)} MB`;

// --- Run ---

/** What a run does: its steps (tokens of each), the layers it goes through, the trace it compares with. */
interface Plan {
  steps: GoldenStep[];
  tokens: number[];
  /** greedy decode steps to append after `steps` */
  greedy: number;
  last: number;
  maxSeqLen: number;
}

/**
 * Runs the chosen layers of a released checkpoint one layer at a time (see the module comment).
 *
 * @returns rows: `weights.finite` per chosen layer and step (activations finite; `reason` notes the
 *   peak bytes held), the comparisons with `expectFile`, or failed rows (`weights.load`, `weights.args`,
 *   `weights.expect`, ...) with reasons.
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
  const greedy = opts.steps ?? 0;
  if (!Number.isInteger(greedy) || greedy < 0) return [failure(name, 'weights.args', `steps must be an integer ≥ 0 but got ${opts.steps}`)];
  if (greedy > 0 && opts.expectFile) return [failure(name, 'weights.args', 'steps and an expect trace exclude each other: the trace gives the steps')];
  const chunk = opts.prefillChunk;
  if (chunk !== undefined && (!Number.isInteger(chunk) || chunk < 1 || opts.expectFile)) {
    return [failure(name, 'weights.args', `prefillChunk must be an integer ≥ 1, without an expect trace, but got ${chunk}${opts.expectFile ? ' with one' : ''}`)];
  }

  let trace: SafetensorsFile | null = null;
  let ckpt: Checkpoint | null = null;
  const rows: CheckResult[] = [];
  try {
    let tokens = opts.tokens ?? DEFAULT_TOKENS.map((t) => t % config.vocab_size);
    let steps: GoldenStep[] = [{ step: 0, start_pos: 0, length: tokens.length }];
    let maxSeqLen = opts.maxSeqLen ?? config.max_position_embeddings;
    if (opts.expectFile) {
      trace = openSafetensors(opts.expectFile);
      let recorded: number[];
      try {
        const manifest = expectManifest(opts.expectFile);
        steps = traceSteps(trace, manifest, N);
        if (opts.maxSeqLen === undefined && manifest) maxSeqLen = maxSeqLenOf(manifest, config, steps);
        const end = steps.at(-1)!.start_pos + steps.at(-1)!.length;
        recorded = readTokens(trace, steps, config).slice(0, end);
      } catch (e) {
        if (!(e instanceof FixtureError)) throw e;
        return [failure(name, 'weights.expect', `${opts.expectFile}: ${e.message}`)];
      }
      const n = steps[0]!.length;
      if (opts.tokens && opts.tokens.join(',') !== recorded.slice(0, n).join(',')) {
        return [failure(name, 'weights.args', `tokens differ from the trace's input.tokens[0:${n}] (${recorded.slice(0, n).join(',')})`)];
      }
      tokens = recorded;
    }
    const badToken = tokens.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= config.vocab_size);
    if (badToken >= 0 || tokens.length === 0) {
      return [failure(name, 'weights.args', `tokens must be ≥ 1 integers in [0, ${config.vocab_size}) but tokens[${badToken}] = ${tokens[badToken]}`)];
    }
    if (tokens.length + greedy > maxSeqLen) {
      return [failure(name, 'weights.args', `${tokens.length} tokens + ${greedy} steps exceed max_seq_len ${maxSeqLen}`)];
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
    const last = greedy > 0 ? N - 1 : layers[layers.length - 1]!;
    const plan: Plan = { steps, tokens, greedy, last, maxSeqLen };
    run(ckpt, config, layers, plan, trace, name, { attention: opts.attention, chunk }, log, rows);
  } catch (e) {
    rows.push(failure(name, 'weights.load', (e as Error).message));
  } finally {
    trace?.close();
    ckpt?.close();
  }
  return rows;
}

/**
 * Runs the plan's steps (and greedy steps) streamed, pushing onto `rows` the rows per chosen layer and
 * step and the comparisons (also those made before a failure, which it rethrows).
 */
function run(
  ckpt: Checkpoint, config: ModelConfig, layers: number[], plan: Plan, trace: SafetensorsFile | null, name: string,
  kernels: { attention: WeightsConformanceOptions['attention']; chunk: number | undefined }, log: (line: string) => void,
  rows: CheckResult[],
): void {
  const N = config.num_hidden_layers;
  const logits = plan.last === N - 1;
  const checks = trace ? new TraceChecks(trace, config, plan.maxSeqLen, name) : null;
  const state: StreamState = createStreamState(plan.last);
  const meter = new MemoryMeter();
  const tokens = [...plan.tokens];
  const steps = [...plan.steps];
  const attention = kernels.attention ? { attention: kernels.attention } : {};
  const keyFlags: boolean[][] = []; // per layer, across the steps (fp8/steer.ts `steeredBlock`)
  for (let g = 1; g <= plan.greedy; g++) steps.push({ step: g, start_pos: tokens.length + g - 1, length: 1 });
  try {
    for (const s of steps) {
      const stepTokens = tokens.slice(s.start_pos, s.start_pos + s.length);
      const prefix = s.step === 0 ? '' : `step ${s.step}: `;
      let stats = '';
      const { logits: values } = streamCall(ckpt, stepTokens, state, {
        config, maxSeqLen: plan.maxSeqLen, last: plan.last, logits, meter,
        ...attention,
        ...(kernels.chunk ? { chunk: kernels.chunk } : {}),
        // each block follows the recorded rounding at verified FP8 midpoints of its quantizers (fp8/steer.ts)
        block: (l, w, h, residual, cache, pos) => {
          // every recorded layer steers, also the layers on the way: a midpoint there changes every later layer
          const record = checks ? checks.record(s.step, l) : {};
          const b = steeredBlock(h, residual, w, cache, pos, { config, maxSeqLen: plan.maxSeqLen, layer: l, ...attention }, record, GOLDEN_RTOL, (keyFlags[l] ??= []));
          stats = `attn.out ${fmt(activationStats(b.snap.attnOut))} | ffn.out ${fmt(activationStats(b.snap.ffnOut))}`;
          if (checks && layers.includes(l)) checks.streamed(s.step, l, b.snap, b.steers);
          return b;
        },
        onLayer: (w, done) => {
          const l = done.layer;
          const chosen = layers.includes(l);
          const r = activationStats(done.residual);
          log(`${prefix}layer ${l}${chosen ? '' : ' (on the way)'} [${done.kind}] T=${s.length}: ${stats} | residual ${fmt(r)} | peak ${megabytes(done.peakBytes)}`);
          if (!chosen) return;
          rows.push({
            case: name, check: 'weights.finite', step: s.step, layer: l, pass: r.finite, max_abs_err: null, max_rel_err: null,
            reason: `${r.finite ? '' : 'non-finite activations; '}peak ${megabytes(done.peakBytes)} held (weights in JS + backend tensors)`,
            peak_bytes: done.peakBytes,
          });
          checks?.teacherForced(s.step, s.start_pos, l, w);
        },
      });
      if (values) {
        log(`${prefix}logits (last position): ${fmt(activationStats(values))}`);
        checks?.logits(s.step, values);
        if (s.start_pos + s.length === tokens.length && tokens.length < plan.tokens.length + plan.greedy) {
          const next = argmax(values);
          tokens.push(next);
          log(`${prefix}greedy next token ${next}`);
        }
      }
    }
  } finally {
    disposeStreamState(state);
    checks?.dispose();
    rows.push(...(checks?.rows ?? []));
  }
}

function argmax(v: Float32Array): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}
