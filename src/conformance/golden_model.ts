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
 * Tolerance: `max|a − b| ≤ 1e−4 · max(1, max|b|)` per tensor; top-k and expert ids as sets.
 * A case without `steps` whose trace holds `step0.interleaved_bug.layerL.indexer.topk` (the indexer RoPE
 * regression case) gets `e2e.rope_bug.interleaved_reproduces_bug` per layer: the whole model, run on the
 * base folder's weights with the pre-fix interleaved indexer RoPE, must make the bug's selections in
 * every layer (later layers see inputs changed by the bug's own earlier selections, so only a full
 * forward can check them). Any other case without `steps` has no model checks.
 * Nothing here throws: an unreadable fixture or a failed computation is a failed row with its reason.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tf } from '../backend.ts';
import { loadConfig, scaleFmt, type ModelConfig } from '../config.ts';
import { openCheckpoint, openSafetensors, type SafetensorsFile } from '../safetensors.ts';
import { moe, swigluFfn, type LayerRouting } from '../moe.ts';
import { rmsNorm } from '../norms.ts';
import {
  createModelCache, disposeModelCache, disposeModelWeights, headLogits, loadModelWeights, modelForward,
  type AttentionHook, type LayerTrace, type ModelWeights,
} from '../model.ts';
import type { LayerWeights } from '../checkpoint.ts';
import { createIndexerCache, disposeIndexerCache, indexerScores, type IndexerRecord } from '../indexer.ts';
import { explainFfnByMidpoints, explainScoresByMidpoints, midpointRows, steerLatentMidpoints } from './fp8_midpoints.ts';
import { compareArrays, type CheckResult } from './types.ts';
import { failure, type GoldenFixture } from './run.ts';

const RTOL = 1e-4;

interface Step {
  step: number;
  start_pos: number;
  length: number;
}

/** Runs every model-side check of one golden fixture (see the module comment). */
export async function checkGoldenModel(fx: GoldenFixture): Promise<CheckResult[]> {
  const steps = parseSteps(fx.manifest.steps);
  if (steps === null) return ropeBugEndToEnd(fx);
  if (typeof steps === 'string') return [failure(fx.name, 'manifest', steps)];
  let config: ModelConfig;
  let trace: SafetensorsFile;
  let weights: ModelWeights;
  try {
    config = loadConfig(join(fx.weightsDir, 'config.json'));
  } catch (e) {
    return [failure(fx.name, 'config', `cannot load ${join(fx.weightsDir, 'config.json')}: ${(e as Error).message}`)];
  }
  try {
    trace = openSafetensors(join(fx.dir, 'trace.safetensors'));
  } catch (e) {
    return [failure(fx.name, 'trace', `cannot open ${join(fx.dir, 'trace.safetensors')}: ${(e as Error).message}`)];
  }
  try {
    const ckpt = openCheckpoint(fx.weightsDir);
    try {
      weights = loadModelWeights(ckpt, config);
    } finally {
      ckpt.close();
    }
  } catch (e) {
    trace.close();
    return [failure(fx.name, 'weights', `cannot load weights from ${fx.weightsDir}: ${(e as Error).message}`)];
  }
  const maxSeqLen = typeof fx.manifest.max_seq_len === 'number' ? fx.manifest.max_seq_len : config.max_position_embeddings;
  const ctx: Ctx = { name: fx.name, config, trace, weights, maxSeqLen, steps, tokens: [] };
  const rows: CheckResult[] = [];
  try {
    ctx.tokens = Array.from(trace.read('input.tokens'), Number);
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
  steps: Step[];
  tokens: number[];
}

function parseSteps(v: unknown): Step[] | null | string {
  if (v === undefined) return null;
  if (!Array.isArray(v)) return `manifest.steps must be an array but is ${typeof v}`;
  const out: Step[] = [];
  for (const [i, s] of v.entries()) {
    const o = s as Record<string, unknown>;
    if (!o || typeof o.step !== 'number' || typeof o.start_pos !== 'number' || typeof o.length !== 'number') {
      return `manifest.steps[${i}] must be {step, start_pos, length} but is ${JSON.stringify(s)}`;
    }
    out.push({ step: o.step, start_pos: o.start_pos, length: o.length });
  }
  return out;
}

// --- Comparisons ---

function row(ctx: Ctx, check: string, step: number, layer: number | null, actual: ArrayLike<number>, expected: ArrayLike<number>): CheckResult {
  const c = compareArrays(actual, expected, RTOL);
  const r: CheckResult = { case: ctx.name, check, step, layer, pass: c.pass, max_abs_err: c.maxAbs, max_rel_err: c.maxRel };
  if (c.reason) r.reason = c.reason;
  else if (!c.pass) r.reason = `max|a−b| = ${c.maxAbs.toExponential(3)} > ${RTOL} · max(1, max|b|)`;
  return r;
}

/** Row-wise set comparison of index lists ([rows, k] row-major), ignoring −1 padding. */
function setRow(ctx: Ctx, check: string, step: number, layer: number | null, actual: ArrayLike<number>, expected: ArrayLike<number>, k: number, kActual = k): CheckResult {
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

function gateRows(ctx: Ctx, prefix: string, step: number, layer: number, r: LayerRouting): CheckResult[] {
  const key = `step${step}.expected.layer${layer}.gate`;
  const ids = ctx.trace.read(`${key}.indices`);
  const expectedIds = Array.from(ids, Number);
  const out = [setRow(ctx, `${prefix}gate.indices`, step, layer, r.indices, expectedIds, r.experts)];
  const aligned = alignWeights(r, expectedIds);
  out.push(
    aligned
      ? row(ctx, `${prefix}gate.weights`, step, layer, aligned, ctx.trace.read(`${key}.weights`) as Float32Array)
      : failure(ctx.name, `${prefix}gate.weights`, 'expert ids differ (see gate.indices): weights not comparable', step, layer),
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
  return explainFfnByMidpoints(r, x, spec, scaleFmt(ctx.config), actual, expected, RTOL);
}

function readMatrix(ctx: Ctx, name: string, D: number): tf.Tensor2D {
  const v = ctx.trace.read(name) as Float32Array;
  return tf.tensor2d(v, [v.length / D, D]);
}

/** Runs one check, turning an exception into a failed row. */
function guard(ctx: Ctx, check: string, step: number, layer: number | null, fn: () => CheckResult[]): CheckResult[] {
  try {
    return fn();
  } catch (e) {
    return [failure(ctx.name, check, `check threw: ${(e as Error).message}`, step, layer)];
  }
}

// --- Teacher forcing ---

function teacherForced(ctx: Ctx): CheckResult[] {
  const { config, weights, trace } = ctx;
  const D = config.hidden_size;
  const eps = config.rms_norm_eps;
  const rows: CheckResult[] = [];
  for (const s of ctx.steps) {
    const p = (l: number, what: string) => `step${s.step}.expected.layer${l}.${what}`;
    let residual: tf.Tensor2D | null = null;
    try {
      residual = tf.gather(weights.global.embed, ctx.tokens.slice(s.start_pos, s.start_pos + s.length)) as tf.Tensor2D;
      for (let l = 0; l < config.num_hidden_layers; l++) {
        const w = weights.layers[l]!;
        const r0: tf.Tensor2D = residual!;
        // attn_norm of the rebuilt residual stream
        rows.push(...guard(ctx, 'block.attn_in', s.step, l, () => {
          const a = tf.tidy(() => rmsNorm(r0, w.attn_norm, eps));
          const res = row(ctx, 'block.attn_in', s.step, l, a.dataSync(), trace.read(p(l, 'attn.in')) as Float32Array);
          a.dispose();
          return [res];
        }));
        // r ← r + attn.out; ffn_norm
        const r1: tf.Tensor2D = tf.tidy(() => tf.add(r0, readMatrix(ctx, p(l, 'attn.out'), D)));
        r0.dispose();
        residual = r1;
        rows.push(...guard(ctx, 'block.ffn_in', s.step, l, () => {
          const f = tf.tidy(() => rmsNorm(r1, w.ffn_norm, eps));
          const res = row(ctx, 'block.ffn_in', s.step, l, f.dataSync(), trace.read(p(l, 'ffn.in')) as Float32Array);
          f.dispose();
          return [res];
        }));
        // gate and FFN from the recorded ffn.in
        rows.push(...guard(ctx, 'ffn.out', s.step, l, () => {
          const x = readMatrix(ctx, p(l, 'ffn.in'), D);
          try {
            const expected = trace.read(p(l, 'ffn.out')) as Float32Array;
            if (w.ffn.kind === 'dense') {
              const y = swigluFfn(x, w.ffn.dense, scaleFmt(config));
              const res = ffnRow(ctx, 'ffn.out', s.step, l, x, w.ffn, null, y, expected);
              y.dispose();
              return [res];
            }
            const y = moe(x, w.ffn.moe, config); // y.routing = the gate's ids and combine weights
            const res = ffnRow(ctx, 'ffn.out', s.step, l, x, w.ffn, y.routing, y.out, expected);
            y.out.dispose();
            return [...gateRows(ctx, '', s.step, l, y.routing), res];
          } finally {
            x.dispose();
          }
        }));
        // r ← r + ffn.out
        const r2: tf.Tensor2D = tf.tidy(() => tf.add(r1, readMatrix(ctx, p(l, 'ffn.out'), D)));
        r1.dispose();
        residual = r2;
      }
      // final norm + head of the last position, from the rebuilt stream
      const last = residual!;
      rows.push(...guard(ctx, 'logits', s.step, null, () => {
        const zero = tf.zerosLike(last) as tf.Tensor2D;
        const logits = headLogits(zero, last, weights.global, eps);
        zero.dispose();
        const res = row(ctx, 'logits', s.step, null, logits.dataSync(), trace.read(`step${s.step}.expected.logits`) as Float32Array);
        logits.dispose();
        return [res];
      }));
    } catch (e) {
      rows.push(failure(ctx.name, 'block', `teacher-forced pass threw: ${(e as Error).message}`, s.step));
    } finally {
      residual?.dispose();
    }
  }
  return rows;
}

// --- End to end ---

function endToEnd(ctx: Ctx): CheckResult[] {
  const { config, weights, trace } = ctx;
  const rows: CheckResult[] = [];
  const cache = createModelCache(config);
  const shadows = weights.layers.map(() => createIndexerCache());
  const forcedShadows = weights.layers.map(() => createIndexerCache());
  const keyFlags: boolean[][] = weights.layers.map(() => []);
  const ue8m0 = scaleFmt(config) === 'ue8m0';
  try {
    for (const s of ctx.steps) {
      const p = (l: number, what: string) => `step${s.step}.expected.layer${l}.${what}`;
      const onLayer = (l: number, t: LayerTrace): void => {
        const dense: Array<[string, tf.Tensor]> = [['attn.in', t.attnIn], ['attn.qr', t.qr], ['attn.out', t.attnOut], ['ffn.in', t.ffnIn]];
        // the indexer's quantizer inputs of this call, from a shadow indexer fed the same inputs, and
        // from one fed the recorded inputs (teacher forcing) to measure how far ours drifted
        const T = t.attnIn.shape[0];
        const iw = weights.layers[l]!.attn.indexer;
        const iopts = { config, maxSeqLen: ctx.maxSeqLen };
        const ours: IndexerRecord = {};
        const forced: IndexerRecord = {};
        const xr = readMatrix(ctx, p(l, 'attn.in'), config.hidden_size);
        const qrr = readMatrix(ctx, p(l, 'attn.qr'), config.q_lora_rank);
        tf.dispose([
          indexerScores(t.attnIn, t.qr, iw, shadows[l]!, s.start_pos, { ...iopts, record: ours }),
          indexerScores(xr, qrr, iw, forcedShadows[l]!, s.start_pos, { ...iopts, record: forced }),
          xr, qrr,
        ]);
        const data = (r: IndexerRecord, k: 'q' | 'k' | 'qScale' | 'kScale') => r[k]!.dataSync() as Float32Array;
        const queryFlags = midpointRows(data(ours, 'q'), data(ours, 'qScale'), T, ue8m0, { values: data(forced, 'q'), scales: data(forced, 'qScale') });
        keyFlags[l]!.push(...midpointRows(data(ours, 'k'), data(ours, 'kScale'), T, ue8m0, { values: data(forced, 'k'), scales: data(forced, 'kScale') }));
        tf.dispose([ours, forced].flatMap((r) => [r.q!, r.k!, r.qScale!, r.kScale!]));
        if (trace.has(p(l, 'indexer.score'))) {
          rows.push(...guard(ctx, 'e2e.indexer.score', s.step, l, () => {
            const actual = t.indexScores.dataSync() as Float32Array;
            const expected = trace.read(p(l, 'indexer.score')) as Float32Array;
            const r = row(ctx, 'e2e.indexer.score', s.step, l, actual, expected);
            return [r.reason?.startsWith('length') ? r : explainScoresByMidpoints(r, actual, expected, t.indexScores.shape[1], queryFlags, keyFlags[l]!, RTOL)];
          }));
        }
        for (const [name, tensor] of dense) {
          if (!trace.has(p(l, name))) continue;
          rows.push(...guard(ctx, `e2e.${name}`, s.step, l, () => [row(ctx, `e2e.${name}`, s.step, l, tensor.dataSync() as Float32Array, trace.read(p(l, name)) as Float32Array)]));
        }
        if (trace.has(p(l, 'ffn.out'))) {
          rows.push(...guard(ctx, 'e2e.ffn.out', s.step, l, () => [
            ffnRow(ctx, 'e2e.ffn.out', s.step, l, t.ffnIn, weights.layers[l]!.ffn, t.routing, t.ffnOut, trace.read(p(l, 'ffn.out')) as Float32Array),
          ]));
        }
        if (trace.has(p(l, 'indexer.topk'))) {
          rows.push(...guard(ctx, 'e2e.indexer.topk', s.step, l, () => {
            const info = trace.info(p(l, 'indexer.topk'));
            const k = info.shape[info.shape.length - 1]!;
            return [setRow(ctx, 'e2e.indexer.topk', s.step, l, t.topk.dataSync(), Array.from(trace.read(p(l, 'indexer.topk')), Number), k, t.topk.shape[1])];
          }));
        }
        if (t.routing && trace.has(p(l, 'gate.indices'))) {
          rows.push(...guard(ctx, 'e2e.gate', s.step, l, () => gateRows(ctx, 'e2e.', s.step, l, t.routing!)));
        }
      };
      const notes = new Map<number, string>();
      const onAttention = (l: number, call: Parameters<AttentionHook>[0]): tf.Tensor2D | null => {
        if (!trace.has(p(l, 'attn.out'))) return null;
        const steered = steerLatentMidpoints(config, ctx.maxSeqLen, weights.layers[l]!.attn, call, trace.read(p(l, 'attn.out')) as Float32Array, RTOL);
        if (steered) notes.set(l, steered.note);
        return steered?.out ?? null;
      };
      const stepTokens = ctx.tokens.slice(s.start_pos, s.start_pos + s.length);
      const { logits } = modelForward(stepTokens, weights, cache, s.start_pos, { config, maxSeqLen: ctx.maxSeqLen, onLayer, onAttention });
      for (const r of rows) {
        if (r.step === s.step && r.check === 'e2e.attn.out' && r.layer !== null && notes.has(r.layer)) {
          r.reason = `${r.reason ? `${r.reason}; ` : ''}${notes.get(r.layer)}`;
        }
      }
      rows.push(...guard(ctx, 'e2e.logits', s.step, null, () => [row(ctx, 'e2e.logits', s.step, null, logits.dataSync(), trace.read(`step${s.step}.expected.logits`) as Float32Array)]));
      logits.dispose();
    }
  } catch (e) {
    rows.push(failure(ctx.name, 'e2e', `end-to-end run threw: ${(e as Error).message}`));
  } finally {
    disposeModelCache(cache);
    [...shadows, ...forcedShadows].forEach(disposeIndexerCache);
  }
  return rows;
}

// --- The indexer RoPE regression case, end to end ---

function ropeBugEndToEnd(fx: GoldenFixture): CheckResult[] {
  const bugKey = (l: number) => `step0.interleaved_bug.layer${l}.indexer.topk`;
  let trace: SafetensorsFile;
  try {
    trace = openSafetensors(join(fx.dir, 'trace.safetensors'));
  } catch (e) {
    return [failure(fx.name, 'trace', `cannot open ${join(fx.dir, 'trace.safetensors')}: ${(e as Error).message}`)];
  }
  if (!trace.has(bugKey(0))) {
    trace.close();
    return [];
  }
  const check = 'e2e.rope_bug.interleaved_reproduces_bug';
  const rows: CheckResult[] = [];
  let weights: ModelWeights | null = null;
  const cache: { c: ReturnType<typeof createModelCache> | null } = { c: null };
  try {
    const config = loadConfig(join(fx.weightsDir, 'config.json'));
    const ckpt = openCheckpoint(fx.weightsDir);
    try {
      weights = loadModelWeights(ckpt, config);
    } finally {
      ckpt.close();
    }
    let maxSeqLen = typeof fx.manifest.max_seq_len === 'number' ? fx.manifest.max_seq_len : config.max_position_embeddings;
    try {
      const base = JSON.parse(readFileSync(join(fx.weightsDir, 'manifest.json'), 'utf8')) as { max_seq_len?: unknown };
      if (typeof fx.manifest.max_seq_len !== 'number' && typeof base.max_seq_len === 'number') maxSeqLen = base.max_seq_len;
    } catch {
      // no base manifest: the config's max_position_embeddings
    }
    const info = trace.info(bugKey(0));
    const n = info.shape[0]!;
    const k = info.shape[1]!;
    const tokens = Array.from(trace.read('input.tokens'), Number).slice(0, n);
    const ctx = { name: fx.name } as Ctx;
    cache.c = createModelCache(config);
    const { logits } = modelForward(tokens, weights, cache.c, 0, {
      config, maxSeqLen, indexerRopeInterleaved: true,
      onLayer: (l, t) => {
        if (!trace.has(bugKey(l))) return;
        rows.push(setRow(ctx, check, 0, l, t.topk.dataSync(), Array.from(trace.read(bugKey(l)), Number), k, t.topk.shape[1]));
      },
    });
    logits.dispose();
  } catch (e) {
    rows.push(failure(fx.name, check, `end-to-end run threw: ${(e as Error).message}`, 0));
  } finally {
    if (cache.c) disposeModelCache(cache.c);
    if (weights) disposeModelWeights(weights);
    trace.close();
  }
  return rows;
}
