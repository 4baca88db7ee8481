/**
 * `dsv32 bench [--quick] [--json FILE]`: dense masked vs sparse gather attention, indexer scores and
 * top-k against the context length, on every available tfjs backend, beside a PyTorch peer when
 * `python3 -c 'import torch'` works. The full run also writes docs/performance.md and its plot.
 *
 * Options: `--quick` (small grid, < 3 min), `--json FILE`, `--backends wasm,cpu`, `--no-peer`,
 * `--doc FILE` (markdown report; default docs/performance.md for the full run only), `--no-doc`,
 * `--report FILE.json` (re-render the tables and the docs from a saved `--json` report, measuring nothing).
 * Hidden: `--smoke` or `DSV32_BENCH_SMOKE=1` (tiny grid for the test suite).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BackendName } from '../backend.ts';
import { findTorch, runPeer, type PeerCase } from '../../bench/peer.ts';
import { buildReport, exponentTable, resultsTable, timePlot, type BenchReport } from '../../bench/report.ts';
import { chunkSize, gridFor, machineDescription, runBackend, type BackendRun, type BenchResult } from '../../bench/suite.ts';
import { performanceDoc, targetSummary } from '../../bench/doc.ts';
import { runCommand, UsageError, type CommandSpec, type ParsedArgs } from './args.ts';

const USAGE = `usage: dsv32 bench [--quick] [--json FILE] [--backends wasm,cpu] [--no-peer] [--doc FILE | --no-doc] [--report FILE.json]\n`;

interface Args {
  mode: 'full' | 'quick' | 'smoke';
  json?: string;
  backends: BackendName[];
  peer: boolean;
  doc?: string;
  /** re-render the tables and the docs from a saved --json report instead of measuring. */
  report?: string;
}

/** The option table of `dsv32 bench` (src/cli/args.ts). */
export const BENCH_COMMAND: CommandSpec = {
  name: 'bench',
  usage: USAGE,
  options: {
    quick: { type: 'boolean' },
    smoke: { type: 'boolean' }, // hidden: the test suite's tiny grid
    json: { type: 'string' },
    backends: { type: 'string' },
    peer: { type: 'boolean' },
    'no-peer': { type: 'boolean' },
    doc: { type: 'string' },
    'no-doc': { type: 'boolean' },
    report: { type: 'string' },
  },
  positionals: { min: 0, max: 0, name: 'argument' },
};

function benchArgs({ values: v }: ParsedArgs): Args {
  const smoke = v.smoke === true || process.env.DSV32_BENCH_SMOKE === '1';
  const args: Args = { mode: smoke ? 'smoke' : v.quick === true ? 'quick' : 'full', backends: ['wasm', 'cpu'], peer: !smoke };
  if (v.peer === true && v['no-peer'] === true) throw new UsageError('--peer and --no-peer exclude each other');
  if (v.doc !== undefined && v['no-doc'] === true) throw new UsageError('--doc and --no-doc exclude each other');
  if (v.peer === true) args.peer = true;
  if (v['no-peer'] === true) args.peer = false;
  if (v.json !== undefined) args.json = v.json as string;
  if (v.report !== undefined) args.report = v.report as string;
  if (v.doc !== undefined) args.doc = v.doc as string;
  if (v['no-doc'] === true) args.doc = '';
  if (v.backends !== undefined) {
    const list = (v.backends as string).split(',').map((s) => s.trim());
    list.forEach((b, i) => {
      if (!['wasm', 'cpu', 'tensorflow'].includes(b)) throw new UsageError(`unknown backend '${b}' in --backends (item ${i}; expected wasm, cpu or tensorflow)`);
      if (list.indexOf(b) !== i) throw new UsageError(`backend '${b}' is repeated in --backends`);
    });
    args.backends = list as BackendName[];
  }
  if (args.doc === undefined && args.mode === 'full') args.doc = 'docs/performance.md';
  return args;
}

/** Runs the benchmark; returns the exit code. */
export async function run(argv: string[]): Promise<number> {
  return runCommand(BENCH_COMMAND, argv, (parsed) => runParsed(benchArgs(parsed)));
}

async function runParsed(args: Args): Promise<number> {
  const log = (s: string) => process.stdout.write(s + '\n');
  if (args.report) return output(JSON.parse(fs.readFileSync(args.report, 'utf8')) as BenchReport, { ...args, json: undefined }, log);
  const grid = gridFor(args.mode);
  const t0 = performance.now();
  const loadStart = os.loadavg()[0]!;
  log(`dsv32 bench (${args.mode}): C=512 R=64 value=512 (MQA), DI=128; H=${grid.heads}, HI=${grid.indexHeads}; T = L/${grid.chunkDivisor} queries at the end of a length-L context`);

  const runs: BackendRun[] = [];
  for (const backend of args.backends) {
    try {
      runs.push(await runBackend(backend, grid, runs.length === 0, log));
    } catch (e) {
      log(`[${backend}] skipped: ${(e as Error).message}`);
    }
  }
  if (runs.length === 0) {
    process.stderr.write('bench: no backend could run\n');
    return 1;
  }

  let peerRows: BenchResult[] = [];
  let peer: BenchReport['peer'] = { available: false, reason: 'disabled (--no-peer)' };
  if (args.peer) {
    const torch = findTorch();
    if (!torch) peer = { available: false, reason: "python3 -c 'import torch' failed (Debian: apt-get install python3-torch)" };
    else {
      const cases: PeerCase[] = [
        ...grid.peerDenseL.map((L) => ({ op: 'dense' as const, L, k: grid.k, T: chunkSize(grid, L), H: grid.heads })),
        ...grid.peerSparseL.map((L) => ({ op: 'sparse' as const, L, k: grid.k, T: chunkSize(grid, L), H: grid.heads })),
      ];
      log(`[torch] PyTorch ${torch.version} peer (${torch.python}, 1 thread, ${grid.peerRuns} runs after a warm-up): ${cases.length} cases`);
      try {
        peerRows = runPeer(torch.python, cases, grid.peerRuns, 30 * 60_000, grid.k);
        peer = { available: true, python: torch.python, torch: torch.version };
        for (const r of peerRows) log(`[torch] ${r.op.padEnd(13)} L=${String(r.L).padStart(6)} ${r.ms_median.toFixed(1).padStart(9)} ms ${r.gflops?.toFixed(2)} GFLOP/s`);
      } catch (e) {
        peer = { available: false, python: torch.python, torch: torch.version, reason: (e as Error).message };
        log(`[torch] failed: ${(e as Error).message}`);
      }
    }
  }

  const loadAvg = { start: loadStart, end: os.loadavg()[0]!, cpus: os.cpus().length };
  const report = buildReport(machineDescription(), grid, runs, peerRows, peer, (performance.now() - t0) / 1000, loadAvg);
  return output(report, args, log);
}

/** Prints the tables and targets and writes the JSON and the markdown report. */
function output(report: BenchReport, args: Args, log: (s: string) => void): number {
  log('');
  log(resultsTable(report));
  log('');
  log(exponentTable(report));
  log('');
  log(targetSummary(report));
  if (args.json) {
    fs.mkdirSync(path.dirname(path.resolve(args.json)), { recursive: true });
    fs.writeFileSync(args.json, JSON.stringify(report, null, 2) + '\n');
    log(`wrote ${args.json}`);
  }
  if (args.doc) {
    const svgPath = args.doc.replace(/\.md$/, '') + '-time-vs-L.svg';
    fs.mkdirSync(path.dirname(path.resolve(args.doc)), { recursive: true });
    fs.writeFileSync(svgPath, timePlot(report));
    fs.writeFileSync(args.doc, performanceDoc(report, path.basename(svgPath)));
    log(`wrote ${args.doc} and ${svgPath}`);
  }
  log(`bench finished in ${report.seconds.toFixed(0)} s`);
  return 0;
}
