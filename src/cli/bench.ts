/**
 * `dsv32 bench [--quick] [--json FILE]`: dense masked vs sparse gather attention, indexer scores, top-k and
 * whole decode steps (dense vs DSA) against the context length, on every available tfjs backend, on one
 * thread and on every core, beside a PyTorch peer when `python3 -c 'import torch'` works.
 *
 * Writes nothing but the `--json` file. docs/performance.md and its plot are rendered from a saved
 * report by `npm run bench:doc -- FILE.json` (bench/render.ts).
 *
 * Options: `--quick` (small grid, a few minutes), `--targets` (only the rows the targets read, 8K–128K, few runs),
 * `--json FILE`, `--backends wasm,cpu`, `--no-peer`,
 * `--threads N` (worker threads for the all-core rows; default `DSV32_THREADS`, else every core; 1 = none),
 * `--report FILE.json` (print the tables and targets of a saved report, measuring nothing).
 * Hidden: `--smoke` or `DSV32_BENCH_SMOKE=1` (tiny grid for the test suite).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BackendName } from '../backend.ts';
import { otherCpu, readCpuTicks } from '../bench/machine_share.ts';
import { findTorch, PEER_UNSET_ENV, runPeer, type PeerCase } from '../bench/peer.ts';
import { buildReport, exponentTable, resultsTable, type BenchReport, type PeerInfo } from '../bench/report.ts';
import { chunkSize, gridFor, machineDescription, runBackend, type BackendRun, type BenchResult } from '../bench/suite.ts';
import { targetSummary } from '../bench/targets.ts';
import { createKernelPool, defaultThreads, type NodeKernelPool } from '../threads.ts';
import { runCommand, UsageError, type CommandSpec, type ParsedArgs } from './args.ts';

const USAGE = `usage: dsv32 bench [--quick | --targets] [--json FILE] [--backends wasm,cpu] [--no-peer] [--threads N] [--report FILE.json]\n`;

interface Args {
  mode: 'full' | 'quick' | 'targets' | 'smoke';
  json?: string;
  backends: BackendName[];
  peer: boolean;
  threads: number;
  /** print the tables of a saved --json report instead of measuring. */
  report?: string;
}

/** The option table of `dsv32 bench` (src/cli/args.ts). */
export const BENCH_COMMAND: CommandSpec = {
  name: 'bench',
  usage: USAGE,
  options: {
    quick: { type: 'boolean' },
    targets: { type: 'boolean' },
    smoke: { type: 'boolean' }, // hidden: the test suite's tiny grid
    json: { type: 'string' },
    backends: { type: 'string' },
    peer: { type: 'boolean' },
    'no-peer': { type: 'boolean' },
    threads: { type: 'integer', min: 1 },
    report: { type: 'string' },
    doc: { type: 'string' }, // removed: refused with a pointer to bench:doc
    'no-doc': { type: 'boolean' },
  },
  positionals: { min: 0, max: 0, name: 'argument' },
};

function benchArgs({ values: v }: ParsedArgs): Args {
  for (const removed of ['doc', 'no-doc']) {
    if (v[removed] !== undefined) throw new UsageError(`--${removed} was removed: bench writes only its --json file; render docs with 'npm run bench:doc -- FILE.json'`);
  }
  const smoke = v.smoke === true || process.env.DSV32_BENCH_SMOKE === '1';
  const mode = smoke ? 'smoke' : v.quick === true ? 'quick' : v.targets === true ? 'targets' : 'full';
  const args: Args = { mode, backends: ['wasm', 'cpu'], peer: !smoke, threads: (v.threads as number | undefined) ?? 0 };
  if (v.peer === true && v['no-peer'] === true) throw new UsageError('--peer and --no-peer exclude each other');
  if (v.peer === true) args.peer = true;
  if (v['no-peer'] === true) args.peer = false;
  if (v.json !== undefined) args.json = v.json as string;
  if (v.report !== undefined) args.report = v.report as string;
  if (v.backends !== undefined) {
    const list = (v.backends as string).split(',').map((s) => s.trim());
    list.forEach((b, i) => {
      if (!['wasm', 'cpu', 'tensorflow'].includes(b)) throw new UsageError(`unknown backend '${b}' in --backends (item ${i}; expected wasm, cpu or tensorflow)`);
      if (list.indexOf(b) !== i) throw new UsageError(`backend '${b}' is repeated in --backends`);
    });
    args.backends = list as BackendName[];
  }
  return args;
}

/** Runs the benchmark; returns the exit code. */
export async function run(argv: string[]): Promise<number> {
  return runCommand(BENCH_COMMAND, argv, (parsed) => runParsed(benchArgs(parsed)));
}

async function runParsed(args: Args): Promise<number> {
  const log = (s: string) => process.stdout.write(s + '\n');
  if (args.report) {
    let saved: BenchReport;
    try {
      saved = JSON.parse(fs.readFileSync(args.report, 'utf8')) as BenchReport;
      if (!Array.isArray(saved.results) || !saved.grid) throw new Error('not a dsv32 bench report (no results / grid)');
    } catch (e) {
      process.stderr.write(`bench: --report ${args.report}: ${(e as Error).message}\n`);
      return 2;
    }
    return output(saved, undefined, log);
  }
  let threads: number;
  try {
    threads = args.threads || defaultThreads();
  } catch (e) {
    process.stderr.write(`bench: ${(e as Error).message}\n`);
    return 2;
  }
  const grid = gridFor(args.mode);
  const t0 = performance.now();
  const loadStart = os.loadavg()[0]!;
  const ticksStart = readCpuTicks();
  log(`dsv32 bench (${args.mode}): C=512 R=64 value=512 (MQA), DI=128; H=${grid.heads}, HI=${grid.indexHeads}; T = L/${grid.chunkDivisor} queries at the end of a length-L context; 1 and ${threads} threads`);

  const runs: BackendRun[] = [];
  for (const backend of args.backends) {
    let pool: NodeKernelPool | undefined;
    try {
      if (threads > 1 && runs.length === 0) {
        try {
          pool = await createKernelPool({ threads, backend });
        } catch (e) {
          log(`[${backend}] one thread only: ${(e as Error).message}`);
        }
      }
      runs.push(await runBackend(backend, grid, runs.length === 0, log, pool));
    } catch (e) {
      log(`[${backend}] skipped: ${(e as Error).message}`);
    } finally {
      await pool?.close();
    }
  }
  if (runs.length === 0) {
    process.stderr.write('bench: no backend could run\n');
    return 1;
  }

  let peerRows: BenchResult[] = [];
  let peer: PeerInfo = { available: false, reason: 'disabled (--no-peer)' };
  if (args.peer) {
    const torch = findTorch();
    if (!torch) peer = { available: false, reason: "python3 -c 'import torch' failed (Debian: apt-get install python3-torch libopenblas0-pthread)" };
    else {
      const cases: PeerCase[] = [
        ...grid.peerDenseL.map((L) => ({ op: 'dense' as const, L, k: grid.k, T: chunkSize(grid, L), H: grid.heads })),
        ...grid.peerSparseL.map((L) => ({ op: 'sparse' as const, L, k: grid.k, T: chunkSize(grid, L), H: grid.heads })),
      ];
      const counts = threads > 1 ? [1, threads] : [1];
      log(`[torch] PyTorch ${torch.version} peer (${torch.python}, ${counts.join(' and ')} threads, ${PEER_UNSET_ENV.join(' and ')} unset for it, ${grid.peerRuns} runs after a warm-up): ${cases.length} cases`);
      try {
        const got = runPeer(torch.python, cases, grid.peerRuns, counts, 60 * 60_000, grid.k);
        peerRows = got.rows;
        peer = got.info;
        log(`[torch] BLAS: ${peer.blas}; core ${peer.coretype}; 1024³ matmul ${peer.matmul_gflops?.toFixed(1)} GFLOP/s${peer.fair ? '' : ' — reference BLAS, not a fair peer'}`);
        for (const r of peerRows) log(`[torch ×${r.threads}] ${r.op.padEnd(13)} L=${String(r.L).padStart(6)} ${r.ms_median.toFixed(1).padStart(9)} ms ${r.gflops?.toFixed(2)} GFLOP/s`);
      } catch (e) {
        peer = { available: false, python: torch.python, torch: torch.version, reason: (e as Error).message };
        log(`[torch] failed: ${(e as Error).message}`);
      }
    }
  }

  const loadAvg = { start: loadStart, end: os.loadavg()[0]!, cpus: os.cpus().length };
  const others = otherCpu(ticksStart, readCpuTicks());
  const report = buildReport(machineDescription(), grid, runs, peerRows, peer, (performance.now() - t0) / 1000, loadAvg, others ?? undefined);
  return output(report, args.json, log);
}

/** Prints the tables and targets and writes the JSON report (and nothing else). */
function output(report: BenchReport, json: string | undefined, log: (s: string) => void): number {
  log('');
  log(resultsTable(report));
  log('');
  log(exponentTable(report));
  log('');
  log(targetSummary(report));
  if (json) {
    fs.mkdirSync(path.dirname(path.resolve(json)), { recursive: true });
    fs.writeFileSync(json, JSON.stringify(report, null, 2) + '\n');
    log(`wrote ${json}`);
  }
  log(`bench finished in ${report.seconds.toFixed(0)} s`);
  return 0;
}
