/**
 * The benchmark report: the JSON contract of issues #5 and #17, exponent fits, the console tables and
 * the target summary. (docs/performance.md and its plot are rendered from a saved report by bench/.)
 *
 * JSON contract (keep these fields): `{machine, backend, results: [{op, L, k, heads, ms_median, gflops,
 * peak_rss_mb, backend, threads}], exponents: {dense, sparse, indexer}, matmul_gflops,
 * peer: {torch, blas, threads, coretype}}`; `backend` and `matmul_gflops` are the primary backend's
 * (wasm when it loads); every result also names its backend and thread count.
 */
import { fitExponent, type PowerFit } from './fit.ts';
import type { BackendRun, BenchResult, Grid, SparseProfile } from './suite.ts';

/** The PyTorch peer as its own process reported it (see src/bench/peer.ts). */
export interface PeerInfo {
  available: boolean;
  /** torch.__version__ */
  torch?: string;
  /** the BLAS library loaded in the peer process, e.g. 'OpenBLAS 0.3.21 (…/openblas-pthread/libopenblasp-r0.3.21.so)'. */
  blas?: string;
  /** the largest thread count the peer ran with (each row carries its own). */
  threads?: number;
  /** OpenBLAS's kernel core ('SkylakeX', 'Haswell', …) and whether it was forced by OPENBLAS_CORETYPE. */
  coretype?: string;
  /** the peer's own 1024³ float32 matmul at one thread, GFLOP/s. */
  matmul_gflops?: number;
  /** false for a reference (unoptimized) BLAS: no speedup is computed against such a peer. */
  fair?: boolean;
  python?: string;
  reason?: string;
}

/** The whole report, as written by `--json`. */
export interface BenchReport {
  machine: string;
  backend: string;
  results: BenchResult[];
  exponents: { dense: number | null; sparse: number | null; indexer: number | null };
  /** the same fits on CPU time per run (one thread: the load-free time of the op). */
  exponents_cpu?: { dense: number | null; sparse: number | null; indexer: number | null };
  matmul_gflops: number;
  mode: Grid['mode'];
  grid: Grid;
  backends: { name: string; threads: number; matmul_gflops: number }[];
  peer: PeerInfo;
  fits: Record<string, PowerFit | null>;
  seconds: number;
  date: string;
  /** where the time of sparse attention goes (primary backend, one thread). */
  sparse_profile?: SparseProfile;
  /** 1-minute load average at the start and the end of the run (the machine may be shared). */
  load_avg?: { start: number; end: number; cpus: number };
  /**
   * What other processes used of the machine during the run (src/bench/machine_share.ts): their CPU time and the
   * hypervisor's steal time, each ÷ (wall time × CPUs). Absent in reports written before it existed.
   */
  other_cpu?: { share: number; steal_share: number };
}

/**
 * Rows of one (backend, op) line against L at one thread count (default 1); `scaled` picks the k = L/8
 * series, else fixed k.
 */
export function seriesRows(results: readonly BenchResult[], backend: string, op: string, grid: Grid, scaled = false, threads = 1): BenchResult[] {
  return results
    .filter((r) => r.backend === backend && r.op === op && (r.threads ?? 1) === threads)
    .filter((r) => (op !== 'sparse' && op !== 'topk' ? true : scaled ? r.k === r.L / 8 : r.k === grid.k))
    .sort((a, b) => a.L - b.L);
}

/**
 * Exponent fits per (backend, op, series). The fixed-k sparse fit uses L ≥ 2k only (below that every
 * query attends all t + 1 ≤ k keys and sparse is dense); the others use every L.
 */
export function fitAll(results: readonly BenchResult[], grid: Grid): Record<string, PowerFit | null> {
  const fits: Record<string, PowerFit | null> = {};
  const backends = [...new Set(results.map((r) => r.backend))];
  for (const b of backends) {
    for (const op of ['dense', 'sparse', 'indexer', 'topk', 'dense_decode', 'dsa_decode']) {
      const fixed = seriesRows(results, b, op, grid).filter((r) => op !== 'sparse' || r.L >= 2 * grid.k);
      const key = `${b}/${op}${op === 'sparse' || op === 'topk' ? `/k=${grid.k}` : ''}`;
      if (fixed.length) {
        fits[key] = fitExponent(fixed.map((r) => [r.L, r.ms_median]));
        fits[`${key} (cpu)`] = fitExponent(fixed.map((r) => [r.L, r.cpu_ms_median]));
      }
      if (op === 'sparse' || op === 'topk') {
        const scaled = seriesRows(results, b, op, grid, true);
        if (scaled.length) {
          fits[`${b}/${op}/k=L/8`] = fitExponent(scaled.map((r) => [r.L, r.ms_median]));
          fits[`${b}/${op}/k=L/8 (cpu)`] = fitExponent(scaled.map((r) => [r.L, r.cpu_ms_median]));
        }
      }
    }
  }
  return fits;
}

/** Builds the report from the backend runs (primary first) and the peer's rows. */
export function buildReport(
  machine: string,
  grid: Grid,
  runs: BackendRun[],
  peerRows: BenchResult[],
  peer: PeerInfo,
  seconds: number,
  loadAvg?: BenchReport['load_avg'],
  otherCpu?: BenchReport['other_cpu'],
): BenchReport {
  const results = [...runs.flatMap((r) => r.results), ...peerRows];
  const fits = fitAll(results, grid);
  const primary = runs[0]!;
  const e = (key: string) => fits[key]?.exponent ?? null;
  return {
    machine,
    backend: primary.backend,
    results,
    exponents: { dense: e(`${primary.backend}/dense`), sparse: e(`${primary.backend}/sparse/k=${grid.k}`), indexer: e(`${primary.backend}/indexer`) },
    exponents_cpu: {
      dense: e(`${primary.backend}/dense (cpu)`), sparse: e(`${primary.backend}/sparse/k=${grid.k} (cpu)`), indexer: e(`${primary.backend}/indexer (cpu)`),
    },
    matmul_gflops: primary.matmul_gflops,
    mode: grid.mode,
    grid,
    backends: runs.map((r) => ({ name: r.backend, threads: r.threads, matmul_gflops: r.matmul_gflops })),
    peer,
    fits,
    seconds,
    date: new Date().toISOString(),
    sparse_profile: primary.sparse_profile,
    load_avg: loadAvg,
    other_cpu: otherCpu,
  };
}

// --- Text table ---

function fmt(x: number | null, digits = 2): string {
  return x === null || !Number.isFinite(x) ? '–' : x.toFixed(digits);
}

/**
 * Markdown table of every result (also printed to the console). GFLOP/s is on wall time, "of CPU time" on the
 * process's CPU time per run (all threads: on n threads, n × the per-thread rate); % of matmul is wall GFLOP/s
 * per thread (÷ threads) over the one-thread 1024³ matmul.
 */
export function resultsTable(report: BenchReport): string {
  const lines = [
    '| backend | threads | op | series | L | k | heads | T | median ms | CPU ms | GFLOP/s | GFLOP/s of CPU time | % of matmul | runs | peak RSS MB | peak tfjs MB |',
    '|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  const mm = new Map(report.backends.map((b) => [b.name, b.matmul_gflops]));
  for (const r of report.results) {
    const m = r.backend === 'torch' ? report.peer.matmul_gflops : mm.get(r.backend);
    const pct = r.gflops !== null && m ? `${((100 * r.gflops) / (m * (r.threads ?? 1))).toFixed(0)}%` : '–';
    lines.push(
      `| ${r.backend} | ${r.threads ?? 1} | ${r.op} | ${r.series} | ${r.L} | ${r.k} | ${r.heads} | ${r.T} | ${fmt(r.ms_median, 1)} | ${fmt(r.cpu_ms_median ?? null, 1)} | ${fmt(r.gflops)} | ${r.gflops === null || !r.cpu_ms_median ? '–' : fmt(r.flops / r.cpu_ms_median / 1e6)} | ${pct} | ${r.runs} | ${fmt(r.peak_rss_mb, 0)} | ${r.backend === 'torch' ? '–' : fmt(r.peak_tfjs_mb, 0)} |`,
    );
  }
  return lines.join('\n');
}

/** Markdown table of the exponent fits. */
export function exponentTable(report: BenchReport): string {
  const lines = ['| backend / op / series | exponent of time vs L | R² | points |', '|---|---:|---:|---:|'];
  for (const [key, f] of Object.entries(report.fits)) lines.push(`| ${key} | ${fmt(f?.exponent ?? null)} | ${fmt(f?.r2 ?? null, 3)} | ${f?.points ?? 0} |`);
  return lines.join('\n');
}
