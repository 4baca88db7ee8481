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
import { parseCommandArgs, runCommand, UsageError, type CommandSpec, type ParsedArgs } from './args.ts';

/** Parsed command line of `dsv32 check`. */
export interface CheckArgs {
  trace: string;
  fixture: string;
  precision?: Precision;
  json?: string;
}

/** The option table of `dsv32 check` (src/cli/args.ts). */
export const CHECK_COMMAND: CommandSpec = {
  name: 'check',
  usage: 'usage: dsv32 check TRACE.safetensors --fixture DIR [--precision fp32|bf16] [--json FILE]\n',
  options: {
    fixture: { type: 'string' },
    precision: { type: 'choice', choices: ['fp32', 'bf16'] },
    json: { type: 'string' },
  },
  positionals: { min: 1, max: 1, name: 'TRACE.safetensors' },
};

/**
 * Parses argv with the strict parser of every command (src/cli/args.ts); throws a {@link UsageError}
 * naming the bad argument.
 *
 * @example
 * ```ts
 * parseCheckArgs(['t.safetensors', '--fixture', 'fx', '--precision', 'bf16']); // => { trace: 't.safetensors', fixture: 'fx', precision: 'bf16' }
 * ```
 */
export function parseCheckArgs(argv: string[]): CheckArgs {
  return checkArgs(parseCommandArgs(CHECK_COMMAND, argv));
}

function checkArgs({ values: v, positionals }: ParsedArgs): CheckArgs {
  if (v.fixture === undefined) throw new UsageError('--fixture DIR is required');
  return {
    trace: positionals[0]!,
    fixture: v.fixture as string,
    ...(v.precision !== undefined ? { precision: v.precision as Precision } : {}),
    ...(v.json !== undefined ? { json: v.json as string } : {}),
  };
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
  return runCommand(CHECK_COMMAND, argv, (parsed) => runParsed(checkArgs(parsed)));
}

async function runParsed(args: CheckArgs): Promise<number> {
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
