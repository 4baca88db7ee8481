/**
 * `dsv32 check TRACE.safetensors --fixture DIR [--precision fp32|bf16] [--json FILE]`
 *
 * Judges a trace that another implementation computed on a fixture's checkpoint, tokens and steps
 * (docs/check-your-implementation.md): module by module on the trace's own inputs, with thresholds
 * measured for its precision, and names the known deviation when a catalogue switch explains the
 * failures. Exit 0 iff the verdict is `pass` (1 = fail, 2 = usage or fixture error). `--json FILE`
 * writes the report `{verdict, precision, first_failure, diagnosis, rows}` (a public contract).
 */
import { writeFileSync } from 'node:fs';
import { initBackend } from '../backend.ts';
import { fmt } from '../check/metrics.ts';
import type { CheckReport, CheckRow } from '../check/report.ts';
import { CheckFixtureError, checkTrace } from '../check/run.ts';
import type { Precision } from '../precision.ts';

const USAGE = 'usage: dsv32 check TRACE.safetensors --fixture DIR [--precision fp32|bf16] [--json FILE]\n';

/** Parsed command line of `dsv32 check`. */
export interface CheckArgs {
  trace: string;
  fixture: string;
  precision?: Precision;
  json?: string;
}

/**
 * Parses argv; returns a one-line usage error as a string.
 *
 * @example
 * ```ts
 * parseCheckArgs(['t.safetensors', '--fixture', 'fx', '--precision', 'bf16']); // => { trace: 't.safetensors', fixture: 'fx', precision: 'bf16' }
 * parseCheckArgs(['t.safetensors']); // => 'check: --fixture DIR is required'
 * ```
 */
export function parseCheckArgs(argv: string[]): CheckArgs | string {
  const positional: string[] = [];
  const args: Partial<CheckArgs> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string | null => {
      const v = argv[++i];
      return v === undefined || v.startsWith('--') ? null : v;
    };
    if (a === '--fixture' || a === '--json' || a === '--precision') {
      const v = value();
      if (v === null) return `check: ${a} needs a value`;
      if (a === '--fixture') args.fixture = v;
      else if (a === '--json') args.json = v;
      else if (v === 'fp32' || v === 'bf16') args.precision = v;
      else return `check: --precision must be fp32 or bf16 but got '${v}'`;
    } else if (a.startsWith('--')) return `check: unknown option '${a}'`;
    else positional.push(a);
  }
  if (positional.length !== 1) return `check: expected one TRACE.safetensors but got ${positional.length}`;
  if (!args.fixture) return 'check: --fixture DIR is required';
  return { trace: positional[0]!, ...args } as CheckArgs;
}

function num(x: number | null): string {
  return x === null ? '-' : fmt(x);
}

/** Human report: verdict, first failure, diagnosis, then every failing row and a count per check. */
export function formatReport(report: CheckReport): string {
  const lines: string[] = [];
  const where = (r: { check: string; step: number | null; layer: number | null }) =>
    `${r.check}${r.step === null ? '' : ` step ${r.step}`}${r.layer === null ? '' : ` layer ${r.layer}`}`;
  lines.push(`verdict: ${report.verdict}   precision: ${report.precision}   rows: ${report.rows.length}`);
  if (report.first_failure) lines.push(`first failure: ${where(report.first_failure)}`);
  for (const d of report.diagnosis) lines.push(`diagnosis: ${d.id} (layers ${d.layers.join(', ')}): ${d.evidence}`);
  if (report.verdict === 'fail' && report.diagnosis.length === 0) lines.push('diagnosis: none of the known deviations explains the failures');
  const failing = report.rows.filter((r) => !r.pass);
  if (failing.length) {
    lines.push('', 'failing rows:');
    for (const r of failing.slice(0, 40)) lines.push(`  ${row(r)}`);
    if (failing.length > 40) lines.push(`  ... and ${failing.length - 40} more (see --json)`);
  }
  lines.push('', 'per check: passed / judged');
  const checks = [...new Set(report.rows.map((r) => r.check))];
  for (const c of checks) {
    const rs = report.rows.filter((r) => r.check === c);
    lines.push(`  ${c.padEnd(14)} ${rs.filter((r) => r.pass).length} / ${rs.length}`);
  }
  return lines.join('\n') + '\n';
}

function row(r: CheckRow): string {
  const at = `${r.check}${r.step === null ? '' : ` step ${r.step}`}${r.layer === null ? '' : ` layer ${r.layer}`}`;
  const nums = r.recall !== null ? `recall ${num(r.recall)}` : r.cos_diff !== null ? `max_rel_err ${num(r.max_rel_err)} cos_diff ${num(r.cos_diff)}` : '';
  return `${at}: ${nums}${nums ? ' — ' : ''}${r.reason}`;
}

export async function run(argv: string[]): Promise<number> {
  const args = parseCheckArgs(argv);
  if (typeof args === 'string') {
    process.stderr.write(`dsv32 ${args}\n${USAGE}`);
    return 2;
  }
  await initBackend();
  let report: CheckReport;
  try {
    report = checkTrace(args.trace, args.fixture, args.precision ? { precision: args.precision } : {});
  } catch (e) {
    if (e instanceof CheckFixtureError) {
      process.stderr.write(`dsv32 check: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  process.stdout.write(formatReport(report));
  if (args.json) writeFileSync(args.json, JSON.stringify(report, null, 2) + '\n');
  return report.verdict === 'pass' ? 0 : 1;
}
