/**
 * Golden conformance of the MoE / block / model side (fixtures/golden/README.md):
 *
 * - **teacher forcing**, per step S and layer L, each module fed with the recorded inputs of that module:
 *   - `gate.indices` (as sets per token) and `gate.weights` (matched by expert id) from recorded `ffn.in`;
 *   - `ffn.out` from recorded `ffn.in` (dense SwiGLU or MoE);
 *   - `block.attn_in`: attn_norm of the residual stream rebuilt from the embedding and the recorded
 *     `attn.out` / `ffn.out` of the earlier layers (r ← r + a, r ← r + f) vs recorded `attn.in`;
 *   - `block.ffn_in`: ffn_norm(recorded `attn.out` + that residual) vs recorded `ffn.in`;
 *   - `logits`: final norm + head of the rebuilt residual stream vs recorded logits;
 * - **end to end** (`e2e.*`): the whole model from `input.tokens` through the manifest's prefill and
 *   decode steps, every recorded tensor (`attn.in`, `attn.qr`, `indexer.score`, `indexer.topk` as sets,
 *   `attn.out`, `ffn.in`, `gate.*`, `ffn.out`) and the logits of every step.
 *
 * Tolerance: `max|a − b| ≤ 1e−4 · max(1, max|b|)` (GOLDEN_RTOL) per tensor; top-k and expert ids as sets.
 *
 * Partial traces: a layer not recorded at a step (no `attn.in`, see `layerTraced`) gets no rows here (the
 * attention side reports it once); the end-to-end run still goes through it, and its other layers and the
 * logits are checked. The teacher-forced residual stream cannot be rebuilt past such a layer, so that
 * step's later `block.*` rows and its teacher-forced `logits` are not made; a recorded `attn.out` or
 * `ffn.out` missing or misshapen in a traced layer is one failed `block.residual` row instead.
 *
 * A case without `steps` whose trace holds `stepS.interleaved_bug.layerL.indexer.topk` (the indexer RoPE
 * regression case, at any step S of the base folder's run) gets `e2e.rope_bug.interleaved_reproduces_bug`
 * per record: the whole model, run on the base folder's weights through its steps up to the last recorded
 * one with the pre-fix interleaved indexer RoPE, must make the bug's selections in every layer (later
 * layers see inputs changed by the bug's own earlier selections, so only a full forward can check them).
 * Any other case without `steps` has no model checks.
 * Nothing here throws: an unreadable fixture or a failed computation is a failed row with its reason.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tf } from '../backend.ts';
import { scaleFmt, type ModelConfig } from '../config.ts';
import type { SafetensorsFile } from '../safetensors.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../node.ts';
import { moe, swigluFfn, type LayerRouting } from '../moe.ts';
import { rmsNorm } from '../norms.ts';
import {
  createModelCache, disposeModelCache, disposeModelWeights, headLogits, loadModelWeights, modelForward,
  type AttentionHook, type LayerTrace, type ModelCache, type ModelWeights,
} from '../model.ts';
import type { LayerWeights } from '../checkpoint.ts';
import { createIndexerCache, disposeIndexerCache, indexerScores, type IndexerCache, type IndexerRecord } from '../indexer.ts';
import { explainFfnByMidpoints, explainScoresByMidpoints, midpointRows, steerLatentMidpoints } from './fp8_midpoints.ts';
import { FixtureError, GOLDEN_RTOL, layerTraced, parseSteps, readTokens, type GoldenStep } from './fixture.ts';
import { compareArrays, type CheckResult } from './types.ts';
import { failure, validateGolden, type GoldenFixture, type ValidGolden } from './run.ts';

/**
 * Runs every model-side check of one golden fixture (see the module comment). The folder is validated
 * by `validateGolden` (run.ts) unless the runner already did: a malformed manifest or `input.tokens` is
 * one failed `manifest` row. A layer the trace does not record at a step (no `attn.in`) gets no rows here
 * (the attention side reports it once); the other layers and the logits are still checked.
 *
 * @example
 * ```ts
 * import { readFileSync } from 'node:fs';
 * const dir = 'fixtures/golden/public-fp32';
 * const fx = { name: 'public-fp32', dir, weightsDir: dir, manifest: JSON.parse(readFileSync(`${dir}/manifest.json`, 'utf8')) };
 * const rows = await checkGoldenModel(fx); // teacher-forced and e2e rows per step and layer, and the logits
 * rows.every((r) => r.pass); // => true
 * ```
 */
export async function checkGoldenModel(fx: GoldenFixture): Promise<CheckResult[]> {
  // a malformed manifest is reported as such even where the config is unreadable too
  if (!fx.steps && fx.manifest.steps !== undefined) {
    try {
      parseSteps(fx.manifest.steps);
    } catch (e) {
      if (e instanceof FixtureError) return [failure(fx.name, 'manifest', e.message)];
      throw e;
    }
  }
  let config: ModelConfig;
  try {
    config = loadConfig(join(fx.weightsDir, 'config.json'));
  } catch (e) {
    return [failure(fx.name, 'config', `cannot load ${join(fx.weightsDir, 'config.json')}: ${(e as Error).message}`)];
  }
  let v: ValidGolden;
  try {
    v = validateGolden(fx);
  } catch (e) {
    if (e instanceof FixtureError) return [failure(fx.name, 'manifest', e.message)];
    return [failure(fx.name, 'trace', `cannot read ${join(fx.dir, 'trace.safetensors')}: ${(e as Error).message}`)];
  }
  if (v.steps.length === 0) return ropeBugEndToEnd(v, config);
  let trace: SafetensorsFile;
  let weights: ModelWeights;
  try {
    trace = openSafetensors(join(fx.dir, 'trace.safetensors'));
  } catch (e) {
    return [failure(fx.name, 'trace', `cannot open ${join(fx.dir, 'trace.safetensors')}: ${(e as Error).message}`)];
  }
  try {
    weights = loadWeights(fx.weightsDir, config);
  } catch (e) {
    trace.close();
    return [failure(fx.name, 'weights', `cannot load weights from ${fx.weightsDir}: ${(e as Error).message}`)];
  }
  const ctx: Ctx = { name: fx.name, config, trace, weights, maxSeqLen: v.maxSeqLen, steps: v.steps, tokens: v.tokens };
  const rows: CheckResult[] = [];
  try {
    rows.push(...teacherForced(ctx), ...endToEnd(ctx));
  } catch (e) {
    rows.push(failure(fx.name, 'model', `check threw: ${(e as Error).message}`));
  } finally {
    disposeModelWeights(weights);
    trace.close();
  }
  return rows;
}

interface Ctx {
  name: string;
  config: ModelConfig;
  trace: SafetensorsFile;
  weights: ModelWeights;
  maxSeqLen: number;
  steps: GoldenStep[];
  tokens: number[];
}

function loadWeights(dir: string, config: ModelConfig): ModelWeights {
  const ckpt = openCheckpoint(dir);
  try {
    return loadModelWeights(ckpt, config);
  } finally {
    ckpt.close();
  }
}

// --- Reading the trace ---

/** A recorded tensor as float32 values. @throws FixtureError when the trace lacks it. */
function recorded(ctx: { trace: SafetensorsFile }, name: string): Float32Array {
  if (!ctx.trace.has(name)) throw new FixtureError(`trace.safetensors has no \`${name}\``);
  const v = ctx.trace.read(name);
  return v instanceof Float32Array ? v : Float32Array.from(v as ArrayLike<number | bigint>, Number);
}

/**
 * A recorded module input `[1, n, D]` (or `[n, D]`) as an [n, D] tensor (owned by the caller).
 * @throws FixtureError when the trace lacks it or its shape is not n rows of D.
 */
function readMatrix(ctx: { trace: SafetensorsFile }, name: string, n: number, D: number): tf.Tensor2D {
  const shape = ctx.trace.has(name) ? ctx.trace.info(name).shape : null;
  if (shape && (shape.reduce((a, b) => a * b, 1) !== n * D || shape[shape.length - 1] !== D)) {
    throw new FixtureError(`\`${name}\` must have shape [1, ${n}, ${D}] but has [${shape.join(', ')}]`);
  }
  return tf.tensor2d(recorded(ctx, name), [n, D]);
}

// --- Comparisons ---

function row(ctx: Ctx, check: string, step: number, layer: number | null, actual: ArrayLike<number>, expected: ArrayLike<number>): CheckResult {
  const c = compareArrays(actual, expected, GOLDEN_RTOL);
  const r: CheckResult = { case: ctx.name, check, step, layer, pass: c.pass, max_abs_err: c.maxAbs, max_rel_err: c.maxRel };
  if (c.reason) r.reason = c.reason;
  else if (!c.pass) r.reason = `max|a−b| = ${c.maxAbs.toExponential(3)} > ${GOLDEN_RTOL} · max(1, max|b|)`;
  return r;
}

/** Row-wise set comparison of index lists ([rows, k] row-major), ignoring −1 padding. */
function setRow(ctx: { name: string }, check: string, step: number, layer: number | null, actual: ArrayLike<number>, expected: ArrayLike<number>, k: number, kActual = k): CheckResult {
  const rows = expected.length / k;
  const base = { case: ctx.name, check, step, layer, max_abs_err: null, max_rel_err: null };
  if (actual.length !== rows * kActual) return { ...base, pass: false, reason: `shape: ${actual.length / kActual} rows of ${kActual} ≠ expected ${rows} rows of ${k}` };
  const bad: string[] = [];
  for (let r = 0; r < rows; r++) {
    const a = new Set(Array.from({ length: kActual }, (_, j) => Number(actual[r * kActual + j])).filter((v) => v >= 0));
    const b = new Set(Array.from({ length: k }, (_, j) => Number(expected[r * k + j])).filter((v) => v >= 0));
    if (a.size !== b.size || [...b].some((v) => !a.has(v))) {
      bad.push(`row ${r}: missing {${[...b].filter((v) => !a.has(v))}} extra {${[...a].filter((v) => !b.has(v))}}`);
    }
  }
  return bad.length ? { ...base, pass: false, reason: `${bad.length} of ${rows} rows differ as sets; ${bad.slice(0, 3).join('; ')}` } : { ...base, pass: true };
}

/** Gate weights matched by expert id (the gate order may differ); null when the id sets differ. */
function alignWeights(r: LayerRouting, expectedIds: ArrayLike<number>): Float32Array | null {
  const k = r.experts;
  if (expectedIds.length !== r.tokens * k) return null;
  const out = new Float32Array(expectedIds.length);
  for (let t = 0; t < r.tokens; t++) {
    for (let j = 0; j < k; j++) {
      const id = Number(expectedIds[t * k + j]);
      const at = r.indices.subarray(t * k, t * k + k).indexOf(id);
      if (at < 0) return null;
      out[t * k + j] = r.weights[t * k + at]!;
    }
  }
  return out;
}

/** `gate.indices` (as sets per token) and `gate.weights` (matched by expert id), each its own row. */
function gateRows(ctx: Ctx, prefix: string, step: number, layer: number, r: LayerRouting): CheckResult[] {
  const key = `step${step}.expected.layer${layer}.gate`;
  let expectedIds: number[] | null = null;
  const out = guard(ctx, `${prefix}gate.indices`, step, layer, () => {
    expectedIds = Array.from(recorded(ctx, `${key}.indices`), Number);
    return [setRow(ctx, `${prefix}gate.indices`, step, layer, r.indices, expectedIds, r.experts)];
  });
  out.push(
    ...guard(ctx, `${prefix}gate.weights`, step, layer, () => {
      const aligned = expectedIds && alignWeights(r, expectedIds);
      if (!aligned) return [failure(ctx.name, `${prefix}gate.weights`, 'expert ids differ or are missing (see gate.indices): weights not comparable', step, layer)];
      return [row(ctx, `${prefix}gate.weights`, step, layer, aligned, recorded(ctx, `${key}.weights`))];
    }),
  );
  return out;
}

/** `ffn.out` comparison; a failure is re-examined for FP8 rounding midpoints (fp8_midpoints.ts). */
function ffnRow(
  ctx: Ctx, check: string, step: number, layer: number, x: tf.Tensor2D, ffn: LayerWeights['ffn'], routing: LayerRouting | null,
  y: tf.Tensor, expected: Float32Array,
): CheckResult {
  const actual = y.dataSync() as Float32Array;
  const r = row(ctx, check, step, layer, actual, expected);
  if (r.pass || r.reason?.startsWith('length')) return r;
  const spec = ffn.kind === 'dense' ? ffn : { kind: 'moe' as const, experts: ffn.moe.experts, shared: ffn.moe.shared, routing: routing! };
  return explainFfnByMidpoints(r, x, spec, scaleFmt(ctx.config), actual, expected, GOLDEN_RTOL);
}

/**
 * Runs one check, turning an exception into a failed row: a malformed trace (FixtureError) with its
 * message, anything else (a bug of ours) as `check threw`.
 */
function guard(ctx: { name: string }, check: string, step: number, layer: number | null, fn: () => CheckResult[]): CheckResult[] {
  try {
    return fn();
  } catch (e) {
    const reason = e instanceof FixtureError ? e.message : `check threw: ${(e as Error).message}`;
    return [failure(ctx.name, check, reason, step, layer)];
  }
}

// --- Teacher forcing ---

function teacherForced(ctx: Ctx): CheckResult[] {
  const { config, weights } = ctx;
  const D = config.hidden_size;
  const eps = config.rms_norm_eps;
  const rows: CheckResult[] = [];
  for (const s of ctx.steps) {
    const n = s.length;
    const p = (l: number, what: string) => `step${s.step}.expected.layer${l}.${what}`;
    // the residual stream rebuilt from the recorded attn.out / ffn.out; null once a layer cannot be
    // rebuilt (not traced, or a recorded output missing): the rows that need it are then not made
    let residual: tf.Tensor2D | null = tf.gather(weights.global.embed, ctx.tokens.slice(s.start_pos, s.start_pos + n)) as tf.Tensor2D;
    /** r ← r + recorded `what`; on a missing or misshapen tensor one failed `block.residual` row, and null. */
    const addRecorded = (l: number, what: string): void => {
      if (!residual) return;
      const r0: tf.Tensor2D = residual;
      residual = null;
      try {
        const a = readMatrix(ctx, p(l, what), n, D);
        residual = tf.add(r0, a) as tf.Tensor2D;
        a.dispose();
      } catch (e) {
        const why = e instanceof FixtureError ? e.message : (e as Error).message;
        rows.push(failure(ctx.name, 'block.residual', `residual stream not rebuilt past layer ${l}: ${why}; later block.* and logits rows of step ${s.step} not checked`, s.step, l));
      } finally {
        r0.dispose();
      }
    };
    try {
      for (let l = 0; l < config.num_hidden_layers; l++) {
        const w = weights.layers[l]!;
        if (!layerTraced(ctx.trace, s.step, l)) {
          // reported once by the attention side; the stream cannot be rebuilt past this layer
          (residual as tf.Tensor2D | null)?.dispose();
          residual = null;
          continue;
        }
        // attn_norm of the rebuilt residual stream
        const r0 = residual as tf.Tensor2D | null;
        if (r0) rows.push(...normRow(ctx, 'block.attn_in', s.step, l, r0, w.attn_norm, eps, p(l, 'attn.in')));
        // r ← r + attn.out; ffn_norm
        addRecorded(l, 'attn.out');
        const r1 = residual as tf.Tensor2D | null;
        if (r1) rows.push(...normRow(ctx, 'block.ffn_in', s.step, l, r1, w.ffn_norm, eps, p(l, 'ffn.in')));
        // gate and FFN from the recorded ffn.in
        rows.push(...ffnFromRecorded(ctx, s.step, l, n, w));
        // r ← r + ffn.out
        addRecorded(l, 'ffn.out');
      }
      // final norm + head of the last position, from the rebuilt stream
      const last = residual as tf.Tensor2D | null;
      if (last) {
        rows.push(...guard(ctx, 'logits', s.step, null, () => {
          const zero = tf.zerosLike(last) as tf.Tensor2D;
          const logits = headLogits(zero, last, weights.global, eps);
          zero.dispose();
          try {
            return [row(ctx, 'logits', s.step, null, logits.dataSync(), recorded(ctx, `step${s.step}.expected.logits`))];
          } finally {
            logits.dispose();
          }
        }));
      }
    } finally {
      (residual as tf.Tensor2D | null)?.dispose();
    }
  }
  return rows;
}

/** rmsNorm(r) vs the recorded norm output `name`. */
function normRow(ctx: Ctx, check: string, step: number, layer: number, r: tf.Tensor2D, weight: tf.Tensor1D, eps: number, name: string): CheckResult[] {
  return guard(ctx, check, step, layer, () => {
    const a = tf.tidy(() => rmsNorm(r, weight, eps));
    try {
      return [row(ctx, check, step, layer, a.dataSync(), recorded(ctx, name))];
    } finally {
      a.dispose();
    }
  });
}

/** `ffn.out` (and for a MoE layer `gate.*`, in their own rows) from the recorded `ffn.in`. */
function ffnFromRecorded(ctx: Ctx, step: number, l: number, n: number, w: LayerWeights): CheckResult[] {
  const p = (what: string) => `step${step}.expected.layer${l}.${what}`;
  let routing: LayerRouting | null = null;
  const rows = guard(ctx, 'ffn.out', step, l, () => {
    const x = readMatrix(ctx, p('ffn.in'), n, ctx.config.hidden_size);
    let y: tf.Tensor | null = null;
    try {
      if (w.ffn.kind === 'dense') y = swigluFfn(x, w.ffn.dense, scaleFmt(ctx.config));
      else ({ out: y, routing } = moe(x, w.ffn.moe, ctx.config)); // routing = the gate's ids and combine weights
      return [ffnRow(ctx, 'ffn.out', step, l, x, w.ffn, routing, y, recorded(ctx, p('ffn.out')))];
    } finally {
      tf.dispose([x, ...(y ? [y] : [])]);
    }
  });
  const r = routing as LayerRouting | null;
  return r ? [...gateRows(ctx, '', step, l, r), ...rows] : rows;
}

// --- End to end ---

/**
 * Shadow indexers of one layer: `ours` fed the run's own inputs, `forced` fed the recorded ones (to
 * measure how far ours drifted). `forced` stops for good once a step lacks its recorded inputs (its
 * cache would fall behind); the midpoint flags are then computed without that reference, never wider.
 */
interface Shadow {
  ours: IndexerCache;
  forced: IndexerCache;
  forcedOk: boolean;
  keyFlags: boolean[];
}

/** Midpoint flags of this call's indexer queries (per row); appends the keys' flags to `sh.keyFlags`. */
function shadowFlags(ctx: Ctx, sh: Shadow, s: GoldenStep, l: number, t: LayerTrace): boolean[] {
  const { config, weights } = ctx;
  const iw = weights.layers[l]!.attn.indexer;
  const iopts = { config, maxSeqLen: ctx.maxSeqLen };
  const ue8m0 = scaleFmt(config) === 'ue8m0';
  const ours: IndexerRecord = {};
  const forced: IndexerRecord = {};
  const owned: tf.Tensor[] = [];
  const p = (what: string) => `step${s.step}.expected.layer${l}.${what}`;
  try {
    owned.push(indexerScores(t.attnIn, t.qr, iw, sh.ours, s.start_pos, { ...iopts, record: ours }));
    if (sh.forcedOk) {
      try {
        const xr = readMatrix(ctx, p('attn.in'), s.length, config.hidden_size);
        owned.push(xr);
        const qrr = readMatrix(ctx, p('attn.qr'), s.length, config.q_lora_rank);
        owned.push(qrr);
        owned.push(indexerScores(xr, qrr, iw, sh.forced, s.start_pos, { ...iopts, record: forced }));
      } catch (e) {
        if (!(e instanceof FixtureError)) throw e;
        sh.forcedOk = false;
      }
    }
    const data = (r: IndexerRecord, k: 'q' | 'k' | 'qScale' | 'kScale') => r[k]!.dataSync() as Float32Array;
    const ref = (k: 'q' | 'k') => (sh.forcedOk && forced[k] ? { values: data(forced, k), scales: data(forced, k === 'q' ? 'qScale' : 'kScale') } : undefined);
    const T = t.attnIn.shape[0];
    const queryFlags = midpointRows(data(ours, 'q'), data(ours, 'qScale'), T, ue8m0, ref('q'));
    sh.keyFlags.push(...midpointRows(data(ours, 'k'), data(ours, 'kScale'), T, ue8m0, ref('k')));
    return queryFlags;
  } finally {
    tf.dispose([...owned, ...[ours, forced].flatMap((r) => [r.q, r.k, r.qScale, r.kScale].filter((x) => x !== undefined) as tf.Tensor[])]);
  }
}

/** The e2e rows of one layer call: every tensor the trace records for (step, layer). */
function e2eLayerRows(ctx: Ctx, s: GoldenStep, l: number, t: LayerTrace, queryFlags: boolean[], keyFlags: boolean[]): CheckResult[] {
  const { trace, weights } = ctx;
  const p = (what: string) => `step${s.step}.expected.layer${l}.${what}`;
  const rows: CheckResult[] = [];
  if (trace.has(p('indexer.score'))) {
    rows.push(...guard(ctx, 'e2e.indexer.score', s.step, l, () => {
      const actual = t.indexScores.dataSync() as Float32Array;
      const expected = recorded(ctx, p('indexer.score'));
      const r = row(ctx, 'e2e.indexer.score', s.step, l, actual, expected);
      return [r.reason?.startsWith('length') ? r : explainScoresByMidpoints(r, actual, expected, t.indexScores.shape[1], queryFlags, keyFlags, GOLDEN_RTOL)];
    }));
  }
  const dense: Array<[string, tf.Tensor]> = [['attn.in', t.attnIn], ['attn.qr', t.qr], ['attn.out', t.attnOut], ['ffn.in', t.ffnIn]];
  for (const [name, tensor] of dense) {
    if (!trace.has(p(name))) continue;
    rows.push(...guard(ctx, `e2e.${name}`, s.step, l, () => [row(ctx, `e2e.${name}`, s.step, l, tensor.dataSync() as Float32Array, recorded(ctx, p(name)))]));
  }
  if (trace.has(p('ffn.out'))) {
    rows.push(...guard(ctx, 'e2e.ffn.out', s.step, l, () => [
      ffnRow(ctx, 'e2e.ffn.out', s.step, l, t.ffnIn, weights.layers[l]!.ffn, t.routing, t.ffnOut, recorded(ctx, p('ffn.out'))),
    ]));
  }
  if (trace.has(p('indexer.topk'))) {
    rows.push(...guard(ctx, 'e2e.indexer.topk', s.step, l, () => {
      const info = trace.info(p('indexer.topk'));
      const k = info.shape[info.shape.length - 1]!;
      return [setRow(ctx, 'e2e.indexer.topk', s.step, l, t.topk.dataSync(), Array.from(trace.read(p('indexer.topk')), Number), k, t.topk.shape[1])];
    }));
  }
  if (t.routing && (trace.has(p('gate.indices')) || trace.has(p('gate.weights')))) rows.push(...gateRows(ctx, 'e2e.', s.step, l, t.routing));
  return rows;
}

function endToEnd(ctx: Ctx): CheckResult[] {
  const { config, weights, trace } = ctx;
  const rows: CheckResult[] = [];
  const cache = createModelCache(config);
  const shadows: Shadow[] = weights.layers.map(() => ({ ours: createIndexerCache(), forced: createIndexerCache(), forcedOk: true, keyFlags: [] }));
  try {
    for (const s of ctx.steps) {
      const p = (l: number, what: string) => `step${s.step}.expected.layer${l}.${what}`;
      const onLayer = (l: number, t: LayerTrace): void => {
        // the indexer's quantizer inputs of this call (every step, so the shadow caches stay in step)
        try {
          const queryFlags = shadowFlags(ctx, shadows[l]!, s, l, t);
          if (layerTraced(trace, s.step, l)) rows.push(...e2eLayerRows(ctx, s, l, t, queryFlags, shadows[l]!.keyFlags));
        } catch (e) {
          rows.push(failure(ctx.name, 'e2e', `layer ${l}: check threw: ${(e as Error).message}`, s.step, l));
        }
      };
      const notes = new Map<number, string>();
      const onAttention = (l: number, call: Parameters<AttentionHook>[0]): tf.Tensor2D | null => {
        if (!layerTraced(trace, s.step, l) || !trace.has(p(l, 'attn.out'))) return null;
        try {
          const steered = steerLatentMidpoints(config, ctx.maxSeqLen, weights.layers[l]!.attn, call, recorded(ctx, p(l, 'attn.out')), GOLDEN_RTOL);
          if (steered) notes.set(l, steered.note);
          return steered?.out ?? null;
        } catch {
          return null; // no steering; the e2e.attn.out row reports the mismatch
        }
      };
      const stepTokens = ctx.tokens.slice(s.start_pos, s.start_pos + s.length);
      const { logits } = modelForward(stepTokens, weights, cache, s.start_pos, { config, maxSeqLen: ctx.maxSeqLen, onLayer, onAttention });
      for (const r of rows) {
        if (r.step === s.step && r.check === 'e2e.attn.out' && r.layer !== null && notes.has(r.layer)) {
          r.reason = `${r.reason ? `${r.reason}; ` : ''}${notes.get(r.layer)}`;
        }
      }
      try {
        rows.push(...guard(ctx, 'e2e.logits', s.step, null, () => [row(ctx, 'e2e.logits', s.step, null, logits.dataSync(), recorded(ctx, `step${s.step}.expected.logits`))]));
      } finally {
        logits.dispose();
      }
    }
  } catch (e) {
    rows.push(failure(ctx.name, 'e2e', `end-to-end run threw: ${(e as Error).message}`));
  } finally {
    disposeModelCache(cache);
    for (const sh of shadows) {
      disposeIndexerCache(sh.ours);
      disposeIndexerCache(sh.forced);
    }
  }
  return rows;
}

// --- The indexer RoPE regression case, end to end ---

const BUG_NAME = /^step(\d+)\.interleaved_bug\.layer(\d+)\.indexer\.topk$/;

/**
 * The RoPE-bug case: bug records `stepS.interleaved_bug.layerL.indexer.topk` at any steps S of the base
 * folder's run (its manifest `steps`). The whole model runs those steps, up to the last recorded one,
 * with the interleaved indexer RoPE; each record must hold the step's n rows and equal the selections.
 */
function ropeBugEndToEnd(fx: ValidGolden, config: ModelConfig): CheckResult[] {
  const check = 'e2e.rope_bug.interleaved_reproduces_bug';
  let trace: SafetensorsFile;
  try {
    trace = openSafetensors(join(fx.dir, 'trace.safetensors'));
  } catch (e) {
    return [failure(fx.name, 'trace', `cannot open ${join(fx.dir, 'trace.safetensors')}: ${(e as Error).message}`)];
  }
  const rows: CheckResult[] = [];
  let weights: ModelWeights | null = null;
  let cache: ModelCache | null = null;
  try {
    const records = trace.names().flatMap((nm) => {
      const m = BUG_NAME.exec(nm);
      return m ? [{ name: nm, step: Number(m[1]), layer: Number(m[2]) }] : [];
    });
    if (records.length === 0) return [];
    // the base run's steps: a bug record at step S covers the positions of the base folder's step S
    const baseManifest = join(fx.weightsDir, 'manifest.json');
    if (fx.weightsDir === fx.dir || !existsSync(baseManifest)) {
      return [failure(fx.name, check, 'manifest.json `weights` must name a base golden folder (manifest.json with `steps`, config.json, weights)')];
    }
    let steps: GoldenStep[];
    const lastStep = Math.max(...records.map((r) => r.step));
    try {
      steps = parseSteps((JSON.parse(readFileSync(baseManifest, 'utf8')) as Record<string, unknown>).steps);
      const upTo = steps.findIndex((st) => st.step === lastStep);
      if (upTo < 0) throw new FixtureError(`the base folder's manifest has no step ${lastStep} (bug record ${records.find((r) => r.step === lastStep)!.name})`);
      steps = steps.slice(0, upTo + 1);
    } catch (e) {
      if (!(e instanceof FixtureError) && !(e instanceof SyntaxError)) throw e;
      return [failure(fx.name, check, `base folder ${fx.weightsDir}: ${(e as Error).message}`)];
    }
    // every record at a step the run reaches; its rows must be the step's n query rows
    const byStep = new Map<number, typeof records>();
    for (const r of records) {
      const st = steps.find((x) => x.step === r.step);
      const shape = trace.info(r.name).shape;
      if (!st) rows.push(failure(fx.name, check, `bug record ${r.name}: the base run has no step ${r.step} before step ${lastStep}`, r.step, r.layer));
      else if (shape.length !== 2 || shape[0] !== st.length) {
        rows.push(failure(fx.name, check, `bug record ${r.name} must have shape [${st.length}, k] (step ${st.step} has ${st.length} query rows) but has [${shape.join(', ')}]`, r.step, r.layer));
      } else if (r.layer >= config.num_hidden_layers) {
        rows.push(failure(fx.name, check, `bug record ${r.name}: the model has ${config.num_hidden_layers} layers`, r.step, r.layer));
      } else byStep.set(r.step, [...(byStep.get(r.step) ?? []), r]);
    }
    // the bug run's tokens (the same as the base run's, which the indexer side checks): they must cover its steps
    let tokens: number[];
    try {
      tokens = readTokens(trace, steps, config);
    } catch (e) {
      if (!(e instanceof FixtureError)) throw e;
      return [...rows, failure(fx.name, check, e.message)];
    }
    if (byStep.size === 0) return rows;
    weights = loadWeights(fx.weightsDir, config);
    cache = createModelCache(config);
    for (const st of steps) {
      const due = byStep.get(st.step) ?? [];
      const { logits } = modelForward(tokens.slice(st.start_pos, st.start_pos + st.length), weights, cache, st.start_pos, {
        config, maxSeqLen: fx.maxSeqLen, indexerRopeInterleaved: true,
        onLayer: (l, t) => {
          const r = due.find((x) => x.layer === l);
          if (!r) return;
          const k = trace.info(r.name).shape[1]!;
          rows.push(setRow(fx, check, st.step, l, t.topk.dataSync(), Array.from(trace.read(r.name), Number), k, t.topk.shape[1]));
        },
      });
      logits.dispose();
    }
  } catch (e) {
    rows.push(failure(fx.name, check, `end-to-end run threw: ${(e as Error).message}`));
  } finally {
    if (cache) disposeModelCache(cache);
    if (weights) disposeModelWeights(weights);
    trace.close();
  }
  return rows;
}
