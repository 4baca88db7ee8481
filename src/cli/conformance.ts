/**
 * `dsv32 conformance [DIR ...] [--json FILE] [--verbose] [--backend webgpu|webgl] [--weights DIR [--layers 0,3] [--tokens FILE] [--expect FILE | --steps N]]`
 *
 * Without `--weights`: finds every golden fixture folder and vector file under the given
 * directories (default: the bundled `fixtures/`), runs every check it knows, prints a report and
 * exits 0 only if every check passed. The report groups the rows: one line per case × check with the
 * number of rows, how many failed, the worst errors and how many rows followed or exempted an FP8
 * midpoint; then every failing row in full. `--verbose` prints every row instead. `--json FILE` writes the same rows as a JSON array of
 * `{case, check, step, layer, pass, max_abs_err, max_rel_err, reason?, peak_bytes?}` (a public contract).
 *
 * With `--weights DIR`: runs the chosen layers of a released checkpoint directory one layer at a
 * time, weights resident as stored (docs/weights-streaming.md), on the given token ids, printing
 * activation statistics and the peak bytes each layer held; compares every step of an `--expect`
 * trace (prefill and decode steps), or runs `--steps N` greedy decode steps after the prefill.
 *
 * With `--backend webgpu|webgl`: runs the same checks in headless Chromium on that TensorFlow.js GPU
 * backend (src/browser_host/conformance.ts); same rows and `--json`, the adapter in the summary line.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend } from '../backend.ts';
import { discoverCases, runGoldenCase, runVectorCase, type Case } from '../conformance/run.ts';
import { failure, type CheckResult } from '../conformance/core/rows.ts';
import { readTextFile } from './read.ts';
import { parseCommandArgs, parseTokenIds, runCommand, UsageError, type CommandSpec, type ParsedArgs } from './args.ts';

/** The package root: the nearest folder above this file with a package.json (src/cli/ runs from a clone, dist/cli/ when installed). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

const BUNDLED_FIXTURES = join(packageRoot(), 'fixtures');

/** Parsed command line of `dsv32 conformance`. */
export interface ConformanceArgs {
  dirs: string[];
  json?: string;
  weights?: string;
  layers?: number[];
  tokens?: string;
  expect?: string;
  steps?: number;
  quiet: boolean;
  /** print every row, not the grouped report. */
  verbose: boolean;
  /** a GPU backend of TensorFlow.js, run in Chromium (src/browser_host/conformance.ts). */
  backend?: 'webgpu' | 'webgl';
}

/** The option table of `dsv32 conformance` (src/cli/args.ts). */
export const CONFORMANCE_COMMAND: CommandSpec = {
  name: 'conformance',
  usage: 'usage: dsv32 conformance [DIR ...] [--json FILE] [--quiet | --verbose] [--backend webgpu|webgl] [--weights DIR [--layers 0,3] [--tokens FILE] [--expect FILE | --steps N]]\n',
  options: {
    json: { type: 'string' },
    weights: { type: 'string' },
    layers: { type: 'integer-list' },
    tokens: { type: 'string' },
    expect: { type: 'string' },
    steps: { type: 'integer', min: 0 },
    quiet: { type: 'boolean', short: 'q' },
    verbose: { type: 'boolean', short: 'v' },
    backend: { type: 'choice', choices: ['webgpu', 'webgl'] },
  },
  positionals: { min: 0, max: Infinity, name: 'DIR' },
};

/** Parses argv (src/cli/args.ts); throws a {@link UsageError} naming the bad flag. */
export function parseConformanceArgs(argv: string[]): ConformanceArgs {
  return conformanceArgs(parseCommandArgs(CONFORMANCE_COMMAND, argv));
}

function conformanceArgs({ values: v, positionals }: ParsedArgs): ConformanceArgs {
  const args: ConformanceArgs = {
    dirs: positionals,
    quiet: v.quiet === true,
    verbose: v.verbose === true,
    ...(v.json !== undefined ? { json: v.json as string } : {}),
    ...(v.weights !== undefined ? { weights: v.weights as string } : {}),
    ...(v.layers !== undefined ? { layers: v.layers as number[] } : {}),
    ...(v.tokens !== undefined ? { tokens: v.tokens as string } : {}),
    ...(v.expect !== undefined ? { expect: v.expect as string } : {}),
    ...(v.steps !== undefined ? { steps: v.steps as number } : {}),
    ...(v.backend !== undefined ? { backend: v.backend as 'webgpu' | 'webgl' } : {}),
  };
  if (!args.weights && (args.layers || args.tokens || args.expect || args.steps !== undefined)) {
    throw new UsageError('--layers, --tokens, --expect and --steps need --weights DIR');
  }
  if (args.backend && args.weights) throw new UsageError('--backend runs the fixture checks in Chromium; it does not take --weights');
  if (args.expect && args.steps !== undefined) throw new UsageError('--steps and --expect exclude each other (the trace gives the steps)');
  return args;
}

function fmt(x: number | null): string {
  if (x === null) return '-';
  if (x === 0) return '0';
  if (!Number.isFinite(x)) return String(x);
  return x.toExponential(2);
}

/** Renders rows as an aligned text table. */
export function formatTable(rows: CheckResult[]): string {
  const header = ['case', 'check', 'step', 'layer', 'max_abs_err', 'max_rel_err', 'pass'];
  const body = rows.map((r) => [
    r.case,
    r.check,
    r.step === null ? '-' : String(r.step),
    r.layer === null ? '-' : String(r.layer),
    fmt(r.max_abs_err),
    fmt(r.max_rel_err),
    r.pass ? 'ok' : `FAIL${r.reason ? ` (${r.reason})` : ''}`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => (i === 6 ? 4 : b[i]!.length))));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 6 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

/** A row that followed (e2e) or exempted (teacher-forced) an FP8 rounding midpoint, or counted elements at one. */
const MIDPOINT_NOTE = /^steered at an FP8 midpoint|FP8 midpoint \(rows|FP8-midpoint elements counted/;

/**
 * The grouped report: one line per case × check (in first-seen order) with the row count, failures, the
 * worst errors, and the rows at an FP8 midpoint (steered, exempted by a verified flip, or counted); then
 * every failing row in full ({@link formatTable}).
 *
 * @example
 * ```ts
 * const row = { case: 'c', check: 'attn.out', step: 0, layer: 1, pass: true, max_abs_err: 2e-7, max_rel_err: 1e-7 };
 * const report = formatGrouped([row, { ...row, layer: 2, max_rel_err: 3e-7, reason: 'steered at an FP8 midpoint: …' }]);
 * report.split('\n')[2]!.split(/\s+/); // => ['c', 'attn.out', '2', '0', '2.00e-7', '3.00e-7', '1']
 * ```
 */
export function formatGrouped(rows: CheckResult[]): string {
  const groups = new Map<string, CheckResult[]>();
  for (const r of rows) {
    const key = `${r.case}\u0000${r.check}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  const worst = (g: CheckResult[], k: 'max_abs_err' | 'max_rel_err') => {
    const v = g.map((r) => r[k]).filter((x): x is number => x !== null);
    return v.length ? Math.max(...v) : null;
  };
  const header = ['case', 'check', 'rows', 'failed', 'max_abs_err', 'max_rel_err', 'fp8_midpoint'];
  const body = [...groups.values()].map((g) => [
    g[0]!.case, g[0]!.check, String(g.length), String(g.filter((r) => !r.pass).length),
    fmt(worst(g, 'max_abs_err')), fmt(worst(g, 'max_rel_err')), String(g.filter((r) => MIDPOINT_NOTE.test(r.reason ?? '')).length),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const out = [line(header), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)];
  const failing = rows.filter((r) => !r.pass);
  if (failing.length) out.push('', `failing rows (${failing.length}):`, formatTable(failing));
  return out.join('\n');
}

function progress(enabled: boolean, done: number, total: number, label: string): void {
  if (!enabled) return;
  const width = 24;
  const filled = Math.round((done / Math.max(1, total)) * width);
  process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} ${label.slice(0, 40).padEnd(40)}`);
  if (done === total) process.stderr.write('\r' + ' '.repeat(width + 52) + '\r');
}

/** Runs every case under `dirs`; the rows in discovery order. */
export async function runConformance(dirs: string[], onProgress?: (done: number, total: number, label: string) => void): Promise<CheckResult[]> {
  const { cases, errors } = discoverCases(dirs);
  const rows: CheckResult[] = [...errors];
  if (cases.length === 0 && errors.length === 0) {
    rows.push(failure(dirs.join(','), 'discover', 'no golden fixture folder (manifest.json + trace.safetensors) or vector file (*.json with "kind") found'));
  }
  let done = 0;
  for (const c of cases) {
    onProgress?.(done, cases.length, c.name);
    rows.push(...(await runCase(c)));
    onProgress?.(++done, cases.length, c.name);
  }
  return rows;
}

async function runCase(c: Case): Promise<CheckResult[]> {
  const rows = c.type === 'golden' ? await runGoldenCase(c) : await runVectorCase(c);
  return rows.length > 0 ? rows : [failure(c.name, 'run', 'no check applies to this case')];
}

async function runWeights(args: ConformanceArgs): Promise<CheckResult[]> {
  const { runWeightsConformance } = await import('../conformance/weights.ts');
  let tokens: number[] | undefined;
  if (args.tokens) {
    let text: string;
    try {
      text = readTextFile(args.tokens);
    } catch (e) {
      throw new UsageError(`--tokens file ${args.tokens}: ${(e as Error).message}`);
    }
    tokens = parseTokenIds(text, args.tokens);
  }
  return runWeightsConformance({
    weightsDir: args.weights!,
    ...(args.layers ? { layers: args.layers } : {}),
    ...(tokens ? { tokens } : {}),
    ...(args.expect ? { expectFile: args.expect } : {}),
    ...(args.steps !== undefined ? { steps: args.steps } : {}),
    log: (line: string) => process.stdout.write(line + '\n'),
  });
}

export async function run(argv: string[]): Promise<number> {
  return runCommand(CONFORMANCE_COMMAND, argv, (parsed) => runParsed(conformanceArgs(parsed)));
}

async function runParsed(args: ConformanceArgs): Promise<number> {
  const tty = process.stderr.isTTY === true && !args.quiet;
  const dirs = args.dirs.length > 0 ? args.dirs : [BUNDLED_FIXTURES];
  let backendName: string = args.backend ?? (await initBackend()).name;
  let rows: CheckResult[];
  try {
    if (args.backend) {
      const { runConformanceInBrowser } = await import('../browser_host/conformance.ts');
      const inBrowser = await runConformanceInBrowser(args.backend, dirs, (d, t, l) => progress(tty, d, t, l));
      backendName = `${inBrowser.backend} (${inBrowser.adapter})`;
      rows = inBrowser.rows;
    } else {
      rows = args.weights ? await runWeights(args) : await runConformance(dirs, (d, t, l) => progress(tty, d, t, l));
    }
  } catch (e) {
    if ((e as Error).name === 'ChromiumError') {
      process.stderr.write(`dsv32 conformance: ${(e as Error).message}\n`);
      return 2;
    }
    if (e instanceof UsageError) throw e;
    rows = [failure(args.weights ?? args.dirs.join(','), 'run', `conformance run failed: ${(e as Error).message}`)];
  }
  if (!args.quiet) process.stdout.write((args.verbose ? formatTable(rows) : formatGrouped(rows)) + '\n');
  const failed = rows.filter((r) => !r.pass).length;
  process.stdout.write(`\nbackend ${backendName}: ${rows.length - failed} passed, ${failed} failed\n`);
  if (args.json) {
    const out = rows.map((r) => ({
      case: r.case,
      check: r.check,
      step: r.step,
      layer: r.layer,
      pass: r.pass,
      max_abs_err: r.max_abs_err === null || Number.isFinite(r.max_abs_err) ? r.max_abs_err : null,
      max_rel_err: r.max_rel_err === null || Number.isFinite(r.max_rel_err) ? r.max_rel_err : null,
      ...(r.reason ? { reason: r.reason } : {}),
      ...(r.peak_bytes !== undefined ? { peak_bytes: r.peak_bytes } : {}),
    }));
    writeFileSync(args.json, JSON.stringify(out, null, 2) + '\n');
  }
  return failed === 0 ? 0 : 1;
}

