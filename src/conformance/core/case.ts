/**
 * A golden case opened once for every check family: the validated folder (core/fixture.ts), its config,
 * its trace (one open handle) and its weights (every layer loaded once, shared by the checks, released
 * by {@link closeCase}). Plus the readers of recorded tensors that every check uses.
 */
import { join } from 'node:path';
import { tf } from '../../backend.ts';
import type { ModelConfig } from '../../config.ts';
import { disposeModelWeights, loadModelWeights, type ModelWeights } from '../../model.ts';
import type { SafetensorsFile } from '../../safetensors.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../../node.ts';
import { FixtureError, parseSteps, validateGolden, type GoldenFixture, type ValidGolden } from './fixture.ts';
import { failure, type CheckResult } from './rows.ts';

/** A validated golden folder with its config, trace and weights open (see the module doc). */
export interface GoldenCase extends ValidGolden {
  config: ModelConfig;
  trace: SafetensorsFile;
  weights: ModelWeights;
}

/** Why a case could not be opened: the failed row's `check` (`manifest`, `config`, `read`, `trace`, `weights`) and reason. */
export class CaseError extends Error {
  override name = 'CaseError';
  constructor(readonly check: string, message: string) {
    super(message);
  }
}

/**
 * Opens a golden folder once: manifest checked first (a malformed manifest is reported as such even where
 * the config is unreadable too), then the config, the validation (steps, max_seq_len, tokens), the trace
 * and the weights. Nothing stays open on a throw.
 *
 * @throws CaseError naming the failed row's check and the reason
 * @example
 * ```ts
 * import { readFileSync } from 'node:fs';
 * const dir = 'fixtures/golden/public-fp32';
 * const fx = { name: 'public-fp32', dir, weightsDir: dir, manifest: JSON.parse(readFileSync(`${dir}/manifest.json`, 'utf8')) };
 * const c = openCase(fx);
 * c.weights.layers.length; // => 3
 * closeCase(c);
 * ```
 */
export function openCase(fx: GoldenFixture): GoldenCase {
  if (!fx.steps && fx.manifest.steps !== undefined) {
    try {
      parseSteps(fx.manifest.steps);
    } catch (e) {
      if (e instanceof FixtureError) throw new CaseError('manifest', e.message);
      throw e;
    }
  }
  let config: ModelConfig;
  try {
    config = loadConfig(join(fx.weightsDir, 'config.json'));
  } catch (e) {
    throw new CaseError('config', `cannot load ${join(fx.weightsDir, 'config.json')}: ${(e as Error).message}`);
  }
  let v: ValidGolden;
  try {
    v = validateGolden(fx);
  } catch (e) {
    if (e instanceof FixtureError) throw new CaseError('manifest', e.message);
    throw new CaseError('trace', `cannot read ${join(fx.dir, 'trace.safetensors')}: ${(e as Error).message}`);
  }
  let trace: SafetensorsFile;
  try {
    trace = openSafetensors(join(fx.dir, 'trace.safetensors'));
  } catch (e) {
    throw new CaseError('trace', `cannot open ${join(fx.dir, 'trace.safetensors')}: ${(e as Error).message}`);
  }
  try {
    const ckpt = openCheckpoint(fx.weightsDir);
    try {
      return { ...v, config, trace, weights: loadModelWeights(ckpt, config) };
    } finally {
      ckpt.close();
    }
  } catch (e) {
    trace.close();
    throw new CaseError('weights', `cannot load weights from ${fx.weightsDir}: ${(e as Error).message}`);
  }
}

/** Releases what {@link openCase} opened. */
export function closeCase(c: GoldenCase): void {
  disposeModelWeights(c.weights);
  c.trace.close();
}

/**
 * Runs `fn` on the case opened once ({@link openCase}), or on `fx` itself when it is open already; an
 * opening failure is one failed row.
 */
export function withCase(fx: GoldenFixture | GoldenCase, fn: (c: GoldenCase) => CheckResult[]): CheckResult[] {
  if ('trace' in fx && 'weights' in fx) return fn(fx);
  let c: GoldenCase;
  try {
    c = openCase(fx);
  } catch (e) {
    if (e instanceof CaseError) return [failure(fx.name, e.check, e.message)];
    return [failure(fx.name, 'read', `cannot read ${fx.dir}: ${(e as Error).message}`)];
  }
  try {
    return fn(c);
  } finally {
    closeCase(c);
  }
}

// --- Reading the trace ---

/** A recorded tensor as float32 values. @throws FixtureError when the trace lacks it. */
export function recorded(trace: SafetensorsFile, name: string): Float32Array {
  if (!trace.has(name)) throw new FixtureError(`trace.safetensors has no \`${name}\``);
  const v = trace.read(name);
  return v instanceof Float32Array ? v : Float32Array.from(v as ArrayLike<number | bigint>, Number);
}

/**
 * A recorded module input `[1, n, D]` (or `[n, D]`) as an [n, D] tensor (owned by the caller).
 * @throws FixtureError when the trace lacks it or its shape is not n rows of D.
 */
export function recordedMatrix(trace: SafetensorsFile, name: string, n: number, D: number): tf.Tensor2D {
  const shape = trace.has(name) ? trace.info(name).shape : null;
  if (shape && (shape.reduce((a, b) => a * b, 1) !== n * D || shape[shape.length - 1] !== D)) {
    throw new FixtureError(`\`${name}\` must have shape [1, ${n}, ${D}] but has [${shape.join(', ')}]`);
  }
  return tf.tensor2d(recorded(trace, name), [n, D]);
}

/**
 * Runs one check, turning an exception into a failed row: a malformed trace (FixtureError) with its
 * message, anything else (a bug of ours) as `check threw`.
 */
export function guard(caseName: string, check: string, step: number | null, layer: number | null, fn: () => CheckResult[]): CheckResult[] {
  try {
    return fn();
  } catch (e) {
    const reason = e instanceof FixtureError ? e.message : `check threw: ${(e as Error).message}`;
    return [failure(caseName, check, reason, step, layer)];
  }
}
