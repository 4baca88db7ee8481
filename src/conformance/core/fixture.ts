/**
 * What every golden check needs to know about a fixture folder, validated once: the steps of the
 * trace (manifest `steps`), the run's `max_seq_len`, the token ids each step feeds, and which layers
 * the trace records. The attention, indexer and model checks all read a folder through these
 * helpers, so a malformed folder fails the same way, with one clear reason, whichever check meets it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { ModelConfig } from '../../config.ts';
import type { SafetensorsFile } from '../../safetensors.ts';
import { loadConfig, openSafetensors } from '../../node.ts';
import type { CheckResult } from './rows.ts';
import { traceKey } from './trace_names.ts';


/** Relative tolerance of the golden float comparisons: `max|a − b| ≤ 1e-4 · max(1, max|b|)` (fixtures README). */
export const GOLDEN_RTOL = 1e-4;

/** One step of a trace: a prefill (length > 1) or a decode step (length 1) at `start_pos`. */
export interface GoldenStep {
  step: number;
  start_pos: number;
  length: number;
}

/** A malformed fixture folder; the message says what is wrong, naming the manifest field or tensor. */
export class FixtureError extends Error {
  override name = 'FixtureError';
}

/**
 * The manifest's `steps`, validated: a non-empty array of `{step, start_pos, length}` with integer
 * fields, `length ≥ 1`, the first step at `start_pos` 0 and each next one starting where the
 * previous ended (the trace is one contiguous run). Step ids must be distinct.
 *
 * @throws FixtureError naming the first offending entry.
 * @example
 * ```ts
 * parseSteps([{ step: 0, start_pos: 0, length: 4 }, { step: 1, start_pos: 4, length: 1 }]).length; // => 2
 * ```
 */
export function parseSteps(value: unknown): GoldenStep[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new FixtureError(`manifest.json \`steps\` must be a non-empty array of {step, start_pos, length} but got ${describe(value)}`);
  }
  const seen = new Set<number>();
  let next = 0;
  return value.map((s: unknown, i) => {
    const r = (typeof s === 'object' && s !== null ? s : {}) as Partial<GoldenStep>;
    if (![r.step, r.start_pos, r.length].every((v) => Number.isInteger(v) && (v as number) >= 0)) {
      throw new FixtureError(`manifest.json steps[${i}] must have integer step, start_pos, length ≥ 0 but got ${describe(s)}`);
    }
    const step = r as GoldenStep;
    if (step.length < 1) throw new FixtureError(`manifest.json steps[${i}].length must be ≥ 1 but got ${step.length}`);
    if (step.start_pos !== next) {
      throw new FixtureError(
        `manifest.json steps[${i}].start_pos must be ${next} (steps are one contiguous run from position 0) but got ${step.start_pos}`,
      );
    }
    if (seen.has(step.step)) throw new FixtureError(`manifest.json steps[${i}].step ${step.step} is used twice`);
    seen.add(step.step);
    next += step.length;
    return { step: step.step, start_pos: step.start_pos, length: step.length };
  });
}

/**
 * The run's maximum sequence length: manifest `max_seq_len` (the official demo's `max_seq_len`),
 * else the config's `max_position_embeddings`. Only whether it exceeds
 * `original_max_position_embeddings` matters (YaRN on or off), so the fallback is safe.
 *
 * @throws FixtureError when `max_seq_len` is present but not an integer ≥ 1, or when the steps do not fit.
 */
export function maxSeqLenOf(manifest: Record<string, unknown>, config: ModelConfig, steps: GoldenStep[] = []): number {
  const m = manifest.max_seq_len;
  if (m !== undefined && !(Number.isInteger(m) && (m as number) >= 1)) {
    throw new FixtureError(`manifest.json max_seq_len must be an integer ≥ 1 but got ${describe(m)}`);
  }
  const maxSeqLen = (m as number | undefined) ?? config.max_position_embeddings;
  const end = steps.length ? steps[steps.length - 1]!.start_pos + steps[steps.length - 1]!.length : 0;
  if (end > maxSeqLen) throw new FixtureError(`the steps reach position ${end} but max_seq_len is ${maxSeqLen}`);
  return maxSeqLen;
}

/**
 * `input.tokens` of the trace as numbers, checked to cover every step and to be valid ids.
 *
 * @throws FixtureError when the tensor is missing, too short, or holds an id outside [0, vocab_size).
 */
export function readTokens(trace: SafetensorsFile, steps: GoldenStep[], config: ModelConfig): number[] {
  if (!trace.has('input.tokens')) throw new FixtureError('trace.safetensors has no `input.tokens`');
  const tokens = Array.from(trace.read('input.tokens') as ArrayLike<number | bigint>, (v) => Number(v));
  const end = steps.length ? steps[steps.length - 1]!.start_pos + steps[steps.length - 1]!.length : 0;
  if (tokens.length < end) {
    throw new FixtureError(`input.tokens must hold at least ${end} ids (the steps' positions) but holds ${tokens.length}`);
  }
  const bad = tokens.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= config.vocab_size);
  if (bad >= 0) throw new FixtureError(`input.tokens[${bad}] must be a token id in [0, ${config.vocab_size}) but is ${tokens[bad]}`);
  return tokens;
}

/** True when the trace records layer `layer` at step `step` (its `attn.in` is present). */
export function layerTraced(trace: SafetensorsFile, step: number, layer: number): boolean {
  return trace.has(traceKey(step, layer, 'attn.in'));
}

/**
 * The failed row of a traced step that cannot be checked because an earlier step of the same layer
 * did not run (untraced, or unreadable): the caches would not hold what the official run's did.
 *
 * @example
 * ```ts
 * skippedRow('fx', 'attn.out', 3, 1).reason; // => 'skipped: an earlier step of layer 1 did not run, so the cache is not teacher-forced'
 * ```
 */
export function skippedRow(caseName: string, check: string, step: number, layer: number): CheckResult {
  const reason = `skipped: an earlier step of layer ${layer} did not run, so the cache is not teacher-forced`;
  return { case: caseName, check, step, layer, pass: false, max_abs_err: null, max_rel_err: null, reason };
}

function describe(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

// --- Golden folders ---

/**
 * One golden fixture folder, as found on disk. `steps`, `maxSeqLen` and `tokens` are filled in by
 * {@link validateGolden} (which {@link openGolden} calls); a hand-built fixture may leave them out and
 * each check validates it on entry.
 */
export interface GoldenFixture {
  /** folder name, used as the case name. */
  name: string;
  /** absolute folder path. */
  dir: string;
  /** parsed `manifest.json`. */
  manifest: Record<string, unknown>;
  /** folder that holds `config.json` and `model.safetensors` (the fixture's own, or `manifest.weights`). */
  weightsDir: string;
  /** manifest `steps`, validated (contiguous from position 0, length ≥ 1); empty for the RoPE-bug case (no `steps`). */
  steps?: GoldenStep[];
  /** manifest `max_seq_len`, else the config's `max_position_embeddings` (see `maxSeqLenOf`). */
  maxSeqLen?: number;
  /** `input.tokens`, covering every step; empty for the RoPE-bug case. */
  tokens?: number[];
}

/** A golden fixture whose manifest and tokens passed {@link validateGolden}. */
export type ValidGolden = GoldenFixture & { steps: GoldenStep[]; maxSeqLen: number; tokens: number[] };


/**
 * Validates a golden folder once for every check: `steps` (parseSteps), `max_seq_len` (maxSeqLenOf)
 * and `input.tokens` (readTokens). A manifest without `steps` is the RoPE-bug case: `steps` and
 * `tokens` are empty and `max_seq_len` comes from its own manifest, else the base folder's, else the
 * config. Returns `fx` itself when it is already validated.
 *
 * @throws FixtureError for a malformed manifest or tokens; other errors (unreadable config or trace) as they come.
 * @example
 * ```ts
 * const dir = 'fixtures/golden/public-fp32';
 * validateGolden({ name: 'fp32', dir, weightsDir: dir, manifest: { max_seq_len: 64, steps: [{ step: 0, start_pos: 0, length: 3 }] } }).tokens.length; // => 44
 * try {
 *   validateGolden({ name: 'fp32', dir, weightsDir: dir, manifest: { steps: [{ step: 0, start_pos: 0, length: 0 }] } });
 * } catch (e) {
 *   (e as Error).message; // => 'manifest.json steps[0].length must be ≥ 1 but got 0'
 * }
 * ```
 */
export function validateGolden(fx: GoldenFixture): ValidGolden {
  if (fx.steps && fx.maxSeqLen !== undefined && fx.tokens) return fx as ValidGolden;
  const config = loadConfig(join(fx.weightsDir, 'config.json'));
  if (fx.manifest.steps === undefined) {
    let manifest = fx.manifest;
    const baseManifest = join(fx.weightsDir, 'manifest.json');
    if (manifest.max_seq_len === undefined && fx.weightsDir !== fx.dir && existsSync(baseManifest)) {
      manifest = JSON.parse(readFileSync(baseManifest, 'utf8')) as Record<string, unknown>;
    }
    return { ...fx, steps: [], maxSeqLen: maxSeqLenOf(manifest, config), tokens: [] };
  }
  const steps = parseSteps(fx.manifest.steps);
  const maxSeqLen = maxSeqLenOf(fx.manifest, config, steps);
  const trace = openSafetensors(join(fx.dir, 'trace.safetensors'));
  try {
    return { ...fx, steps, maxSeqLen, tokens: readTokens(trace, steps, config) };
  } finally {
    trace.close();
  }
}

/**
 * Reads a golden folder's manifest, resolves its weights folder and validates it ({@link validateGolden}).
 *
 * @throws FixtureError for a malformed manifest; other errors for an unreadable manifest, config or trace.
 */
export function openGolden(c: { name: string; dir: string; type?: 'golden' }): ValidGolden {
  return validateGolden(readGolden(c));
}

/**
 * Reads a golden folder's `manifest.json` and resolves its weights folder (`manifest.weights` when it
 * names a folder with a `config.json`, else the folder itself). Nothing is validated yet.
 *
 * @throws for an unreadable manifest, or one that is not a JSON object
 */
export function readGolden(c: { name: string; dir: string; type?: 'golden' }): GoldenFixture {
  const manifest = JSON.parse(readFileSync(join(c.dir, 'manifest.json'), 'utf8')) as Record<string, unknown>;
  if (typeof manifest !== 'object' || manifest === null || Array.isArray(manifest)) {
    throw new TypeError(`manifest.json must be a JSON object`);
  }
  // `weights` is a folder pointer in derived cases (`"../public-fp32"`) and a plain description
  // (`"float32"`) in base cases: it counts as a pointer only when it names a folder with weights.
  let weightsDir = c.dir;
  if (typeof manifest.weights === 'string') {
    const target = resolve(c.dir, manifest.weights);
    if (existsSync(join(target, 'config.json'))) weightsDir = target;
  }
  return { name: c.name, dir: c.dir, manifest, weightsDir };
}
