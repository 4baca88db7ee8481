/**
 * What every golden check needs to know about a fixture folder, validated once: the steps of the
 * trace (manifest `steps`), the run's `max_seq_len`, the token ids each step feeds, and which layers
 * the trace records. The attention, indexer and model checks all read a folder through these
 * helpers, so a malformed folder fails the same way, with one clear reason, whichever check meets it.
 */
import type { ModelConfig } from '../config.ts';
import type { SafetensorsFile } from '../safetensors.ts';
import type { CheckResult } from './types.ts';

/** Relative tolerance of the golden float comparisons: `max|a − b| ≤ 1e-4 · max(1, max|b|)` (fixtures README). */
export const GOLDEN_RTOL = 1e-4;

/**
 * Distance (in float32 quantizer units, 448·2⁻²²) within which an e4m3 quantizer input counts as lying on a
 * rounding midpoint: float32 summation order can round such an element either way.
 */
export const MIDPOINT_TOL = 448 * 2 ** -22;

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
  return trace.has(`step${step}.expected.layer${layer}.attn.in`);
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
