/**
 * `dsv32 check`: judges another implementation's trace against a fixture (docs/check-your-implementation.md).
 * Opens the fixture once, validates the trace against it (src/check/trace.ts), judges it module by module
 * (src/check/judge.ts) with the thresholds of its precision (src/check/thresholds.ts), and when rows fail
 * re-runs the reference with each catalogue switch (src/check/diagnosis.ts).
 *
 * @module
 */
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { maxSeqLenOf, parseSteps, readTokens } from '../conformance/fixture.ts';
import { disposeModelWeights, loadModelWeights } from '../model.ts';
import type { Precision } from '../precision.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../node.ts';
import type { SafetensorsFile } from '../safetensors.ts';
import { diagnose } from './diagnosis.ts';
import { judgeTrace, type JudgeFixture } from './judge.ts';
import { firstFailure, sortRows, type CheckReport } from './report.ts';
import { THRESHOLDS } from './thresholds.ts';
import { openTrace } from './trace.ts';

/** A fixture folder that cannot be used (the message names the file and what is wrong). */
export class CheckFixtureError extends Error {
  override name = 'CheckFixtureError';
}

/** Options of {@link checkTrace}. */
export interface CheckOptions {
  /** thresholds to use; default what the trace's float dtypes say (BF16/F16 → 'bf16'). */
  precision?: Precision;
  /** skip the diagnosis re-runs (default false). */
  noDiagnosis?: boolean;
}

/**
 * Opens a fixture folder for judging: config.json, manifest.json (`steps`, `max_seq_len`),
 * model.safetensors and trace.safetensors (names, shapes and tokens of the expected trace).
 * The caller closes `expected` and disposes `fixture.weights`.
 *
 * @throws CheckFixtureError naming the folder and the problem
 */
export function openCheckFixture(dir: string): { fixture: JudgeFixture; expected: SafetensorsFile } {
  let expected: SafetensorsFile | undefined;
  try {
    const config = loadConfig(join(dir, 'config.json'));
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Record<string, unknown>;
    const steps = parseSteps(manifest.steps);
    const maxSeqLen = maxSeqLenOf(manifest, config, steps);
    expected = openSafetensors(join(dir, 'trace.safetensors'));
    const tokens = readTokens(expected, steps, config);
    const ckpt = openCheckpoint(dir);
    try {
      return { fixture: { config, maxSeqLen, steps, tokens, weights: loadModelWeights(ckpt, config) }, expected };
    } finally {
      ckpt.close();
    }
  } catch (e) {
    expected?.close();
    throw new CheckFixtureError(`--fixture ${dir}: ${(e as Error).message}`);
  }
}

/**
 * Judges the trace at `tracePath` against the fixture folder `fixtureDir` and diagnoses its failures.
 * A trace that cannot be read, is mis-shaped or belongs to another fixture gives failed rows, not an exception.
 *
 * @throws CheckFixtureError when the FIXTURE folder cannot be used
 * @example
 * ```ts
 * const report = checkTrace('fixtures/golden/public-fp32/trace.safetensors', 'fixtures/golden/public-fp32');
 * report.verdict; // => 'pass'
 * report.precision; // => 'fp32'
 * ```
 */
export function checkTrace(tracePath: string, fixtureDir: string, opts: CheckOptions = {}): CheckReport {
  const caseName = basename(tracePath).replace(/\.safetensors$/, '');
  const { fixture, expected } = openCheckFixture(fixtureDir);
  try {
    const trace = openTrace(tracePath, expected, caseName);
    const precision = opts.precision ?? trace.precision;
    const thresholds = THRESHOLDS[precision];
    if (trace.fatal) return { verdict: 'fail', precision, first_failure: firstFailure(trace.problems), diagnosis: [], rows: trace.problems };
    const judged = judgeTrace(fixture, trace, { caseName, thresholds });
    const rows = sortRows([...trace.problems, ...judged]);
    const failing = judged.filter((r) => !r.pass && r.layer !== null);
    const lastLayer = Math.max(...failing.map((r) => r.layer!));
    const diagnosis = opts.noDiagnosis || failing.length === 0
      ? []
      : diagnose(judged, (id) => judgeTrace(fixture, trace, { caseName, thresholds, deviations: new Set([id]), lastLayer }));
    const pass = rows.every((r) => r.pass);
    return { verdict: pass ? 'pass' : 'fail', precision, first_failure: firstFailure(rows), diagnosis, rows };
  } finally {
    expected.close();
    disposeModelWeights(fixture.weights);
  }
}
