/**
 * `dsv32 check`: judges another implementation's trace against a fixture (docs/check-your-implementation.md).
 * Opens the fixture once, validates the trace against it (src/check/trace.ts), judges it module by module
 * (src/check/judge.ts) with the thresholds of its precision (src/check/thresholds.ts), and when rows fail
 * re-runs the reference with each catalogue switch (src/check/diagnosis.ts).
 *
 * @module
 */
import { basename } from 'node:path';
import { closeCase, openCase, type GoldenCase } from '../conformance/core/case.ts';
import { readGolden } from '../conformance/core/fixture.ts';
import type { Precision } from '../precision.ts';
import { diagnose } from './diagnosis.ts';
import { judgeTrace } from './judge.ts';
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
 * Opens a fixture folder once for judging (src/conformance/core/case.ts `openCase`): config.json,
 * manifest.json (`steps`, `max_seq_len`), the weights and trace.safetensors (names, shapes and tokens of
 * the expected trace). Release it with `closeCase`.
 *
 * @throws CheckFixtureError naming the folder and the problem
 */
export function openCheckFixture(dir: string): GoldenCase {
  let c: GoldenCase;
  try {
    c = openCase(readGolden({ name: basename(dir), dir }));
  } catch (e) {
    throw new CheckFixtureError(`--fixture ${dir}: ${(e as Error).message}`);
  }
  if (c.steps.length === 0) {
    closeCase(c);
    throw new CheckFixtureError(`--fixture ${dir}: manifest.json has no \`steps\` (not a fixture with a trace of its own)`);
  }
  return c;
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
  const fixture = openCheckFixture(fixtureDir);
  try {
    const trace = openTrace(tracePath, fixture.trace, caseName);
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
    closeCase(fixture);
  }
}
