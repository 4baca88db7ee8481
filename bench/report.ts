/**
 * The benchmark report: the JSON contract of issue #5, exponent fits, the console table, the SVG plot
 * and docs/performance.md.
 *
 * JSON contract (keep these fields): `{machine, backend, results: [{op, L, k, heads, ms_median, gflops,
 * peak_rss_mb}], exponents: {dense, sparse, indexer}, matmul_gflops}`; `backend` and `matmul_gflops`
 * are the primary backend's (wasm when it loads); every result also names its backend.
 */
import { fitExponent, type PowerFit } from './fit.ts';
import { plotLogLog, type PlotSeries } from './svg.ts';
import type { BackendRun, BenchResult, Grid } from './suite.ts';

/** The whole report, as written by `--json`. */
export interface BenchReport {
  machine: string;
  backend: string;
  results: BenchResult[];
  exponents: { dense: number | null; sparse: number | null; indexer: number | null };
  matmul_gflops: number;
  mode: Grid['mode'];
  grid: Grid;
  backends: { name: string; threads: number; matmul_gflops: number }[];
  peer: { available: boolean; python?: string; torch?: string; reason?: string };
  fits: Record<string, PowerFit | null>;
  seconds: number;
  date: string;
  /** 1-minute load average at the start and the end of the run (the machine may be shared). */
  load_avg?: { start: number; end: number; cpus: number };
}

/** Rows of one (backend, op) line against L; `scaled` picks the k = L/8 series, else fixed k. */
export function seriesRows(results: readonly BenchResult[], backend: string, op: string, grid: Grid, scaled = false): BenchResult[] {
  return results
    .filter((r) => r.backend === backend && r.op === op && (op !== 'sparse' && op !== 'topk' ? true : scaled ? r.k === r.L / 8 : r.k === grid.k))
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
    for (const op of ['dense', 'sparse', 'indexer', 'topk']) {
      const fixed = seriesRows(results, b, op, grid).filter((r) => op !== 'sparse' || r.L >= 2 * grid.k);
      if (fixed.length) fits[`${b}/${op}${op === 'sparse' || op === 'topk' ? `/k=${grid.k}` : ''}`] = fitExponent(fixed.map((r) => [r.L, r.ms_median]));
      if (op === 'sparse' || op === 'topk') {
        const scaled = seriesRows(results, b, op, grid, true);
        if (scaled.length) fits[`${b}/${op}/k=L/8`] = fitExponent(scaled.map((r) => [r.L, r.ms_median]));
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
  peer: BenchReport['peer'],
  seconds: number,
  loadAvg?: BenchReport['load_avg'],
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
    matmul_gflops: primary.matmul_gflops,
    mode: grid.mode,
    grid,
    backends: runs.map((r) => ({ name: r.backend, threads: r.threads, matmul_gflops: r.matmul_gflops })),
    peer,
    fits,
    seconds,
    date: new Date().toISOString(),
    load_avg: loadAvg,
  };
}

// --- Text table ---

function fmt(x: number | null, digits = 2): string {
  return x === null || !Number.isFinite(x) ? '–' : x.toFixed(digits);
}

/** Markdown table of every result (also printed to the console). */
export function resultsTable(report: BenchReport): string {
  const lines = [
    '| backend | op | series | L | k | heads | T | median ms | GFLOP/s | % of matmul | runs | peak RSS MB | peak tfjs MB |',
    '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  const mm = new Map(report.backends.map((b) => [b.name, b.matmul_gflops]));
  for (const r of report.results) {
    const m = mm.get(r.backend);
    const pct = r.gflops !== null && m ? `${((100 * r.gflops) / m).toFixed(0)}%` : '–';
    lines.push(
      `| ${r.backend} | ${r.op} | ${r.series} | ${r.L} | ${r.k} | ${r.heads} | ${r.T} | ${fmt(r.ms_median, 1)} | ${fmt(r.gflops)} | ${pct} | ${r.runs} | ${fmt(r.peak_rss_mb, 0)} | ${r.backend === 'torch' ? '–' : fmt(r.peak_tfjs_mb, 0)} |`,
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

// --- Plot ---

/** The log-log plot of time against L: dense vs sparse vs indexer (primary backend and the peer). */
export function timePlot(report: BenchReport): string {
  const g = report.grid;
  const b = report.backend;
  const pts = (rows: BenchResult[]) => rows.map((r) => [r.L, r.ms_median] as const);
  const series: PlotSeries[] = [
    { label: `dense masked (${b})`, color: '#d62728', points: pts(seriesRows(report.results, b, 'dense', g)) },
    { label: `sparse k=${g.k} (${b})`, color: '#1f77b4', points: pts(seriesRows(report.results, b, 'sparse', g)) },
    { label: `sparse k=L/8 (${b})`, color: '#17becf', points: pts(seriesRows(report.results, b, 'sparse', g, true)) },
    { label: `indexer (${b})`, color: '#2ca02c', points: pts(seriesRows(report.results, b, 'indexer', g)) },
    { label: `top-k k=${g.k} (${b})`, color: '#9467bd', points: pts(seriesRows(report.results, b, 'topk', g)) },
    { label: 'dense masked (torch)', color: '#d62728', dashed: true, points: pts(seriesRows(report.results, 'torch', 'dense', g)) },
    { label: `sparse k=${g.k} (torch)`, color: '#1f77b4', dashed: true, points: pts(seriesRows(report.results, 'torch', 'sparse', g)) },
  ].filter((s) => s.points.length > 0);
  return plotLogLog(
    `Time of the last L/${g.chunkDivisor} queries of a prefill of length L (H = ${g.heads}, HI = ${g.indexHeads})`,
    'context length L (log₂)',
    'median time (log₁₀)',
    series,
  );
}
