/**
 * The targets of issue #17 (and #5) with the values one bench report reached. Benchmarks, not tests:
 * nothing asserts a time; where a target is missed the line says by how much.
 */
import { dsaDecodeFlops } from './flops.ts';
import { seriesRows, type BenchReport } from './report.ts';
import type { BenchResult } from './suite.ts';

/** The paper's decode cost ratio dense V3.1 ÷ V3.2 at 128K (arXiv 2512.02556 Figure 3, H800). */
export const PAPER_DECODE_RATIO_128K = 8.6;

/** The row of (backend, op, L, k?, threads). */
export function findRow(report: BenchReport, backend: string, op: string, L: number, k?: number, threads = 1): BenchResult | undefined {
  return report.results.find((r) => r.backend === backend && r.op === op && r.L === L && (k === undefined || r.k === k) && (r.threads ?? 1) === threads);
}

const f2 = (x: number | null | undefined) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(2));
const mark = (ok: boolean) => (ok ? 'met' : 'MISSED');
const kL = (L: number) => (L >= 1024 ? `${L / 1024}K` : String(L));

/** The thread counts above 1 that appear in the report for a backend. */
function multiThreads(report: BenchReport, backend: string): number[] {
  return [...new Set(report.results.filter((r) => r.backend === backend && (r.threads ?? 1) > 1).map((r) => r.threads))].sort((a, b) => a - b);
}

/** Share of the machine other processes (or other guests, as steal) may use before a run counts as shared. */
export const OTHER_CPU_LIMIT = 0.1;

/**
 * Whether other jobs shared the machine during the run, so that wall times partly measure waiting for a
 * core: other processes' CPU time or the hypervisor's steal time above {@link OTHER_CPU_LIMIT} of the
 * machine (`other_cpu`, from the kernel's CPU accounting). Reports without it fall back to the 1-minute
 * load average above the vCPU count at the start or the end (which also counts the bench's own threads).
 */
export function wasLoaded(report: BenchReport): boolean {
  const o = report.other_cpu;
  if (o) return o.share > OTHER_CPU_LIMIT || o.steal_share > OTHER_CPU_LIMIT;
  const l = report.load_avg;
  return !!l && Math.max(l.start, l.end) > l.cpus;
}

/** How busy the machine was, in words, for the report. */
export function loadText(report: BenchReport): string {
  const o = report.other_cpu;
  const l = report.load_avg;
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const avg = l ? `load average ${l.start.toFixed(1)} → ${l.end.toFixed(1)} on ${l.cpus} vCPUs` : 'load average not recorded';
  return o ? `other processes used ${pct(o.share)} of the machine's CPU time and steal was ${pct(o.steal_share)} (${avg})` : avg;
}

/** The time a one-thread verdict uses: CPU time on a loaded machine, wall time otherwise. */
function oneThreadMs(report: BenchReport, r: BenchResult): number {
  return wasLoaded(report) && Number.isFinite(r.cpu_ms_median) ? r.cpu_ms_median : r.ms_median;
}

/** Sparse speedup over dense at L (one thread) as a percentage of the FLOP ratio, with its parts; null if not measured. */
export function sparseEfficiency(report: BenchReport, L: number): { pct: number; speedup: number; ratio: number; sparse: BenchResult; dense: BenchResult } | null {
  const dense = findRow(report, report.backend, 'dense', L);
  const sparse = findRow(report, report.backend, 'sparse', L, report.grid.k);
  if (!dense || !sparse) return null;
  const speedup = oneThreadMs(report, dense) / oneThreadMs(report, sparse);
  const ratio = dense.flops / sparse.flops;
  return { pct: (100 * speedup) / ratio, speedup, ratio, sparse, dense };
}

/** Wall-time speedup of `op` at L on n threads over one thread, with the two rows; null if not measured. */
export function threadSpeedup(report: BenchReport, op: string, L: number, n: number): { speedup: number; one: BenchResult; all: BenchResult } | null {
  const k = op === 'sparse' ? report.grid.k : undefined;
  const one = findRow(report, report.backend, op, L, k, 1);
  const all = findRow(report, report.backend, op, L, k, n);
  return one && all ? { speedup: one.ms_median / all.ms_median, one, all } : null;
}

/** dense_decode ÷ dsa_decode at L on n threads (one thread: CPU time on a shared machine), with the two rows; null if not measured. */
export function decodeRatio(report: BenchReport, L: number, n: number): { ratio: number; dense: BenchResult; dsa: BenchResult } | null {
  const dense = findRow(report, report.backend, 'dense_decode', L, undefined, n);
  const dsa = findRow(report, report.backend, 'dsa_decode', L, undefined, n);
  if (!dense || !dsa) return null;
  return { ratio: n === 1 ? oneThreadMs(report, dense) / oneThreadMs(report, dsa) : dense.ms_median / dsa.ms_median, dense, dsa };
}

/**
 * The issue #17 targets over several runs: for each, the range of values and how many runs met it (thread
 * targets count only quiet runs). A markdown table.
 */
export function targetsAcrossRuns(reports: BenchReport[]): string {
  const rows: [string, string, (r: BenchReport) => number | null, (x: number) => boolean, boolean][] = [];
  const n = (r: BenchReport) => Math.max(1, ...multiThreads(r, r.backend));
  rows.push(['sparse exponent (k = 2048)', '≤ 1.10', (r) => (wasLoaded(r) ? r.exponents_cpu?.sparse ?? null : r.exponents.sparse), (x) => x <= 1.1, false]);
  for (const L of [16384, 32768]) rows.push([`sparse ÷ dense speedup at ${kL(L)}, % of the FLOP ratio`, '≥ 80%', (r) => sparseEfficiency(r, L)?.pct ?? null, (x) => x >= 80, false]);
  for (const op of ['dense', 'sparse']) rows.push([`${op} at 16K, all cores ÷ one thread`, '≥ 1.7×', (r) => (n(r) > 1 ? threadSpeedup(r, op, 16384, n(r))?.speedup ?? null : null), (x) => x >= 1.7, true]);
  rows.push(['dense_decode ÷ dsa_decode at 128K, one thread', `≥ ${PAPER_DECODE_RATIO_128K}×`, (r) => decodeRatio(r, 131072, 1)?.ratio ?? null, (x) => x >= PAPER_DECODE_RATIO_128K, false]);
  rows.push(['dense_decode ÷ dsa_decode at 128K, all cores', `≥ ${PAPER_DECODE_RATIO_128K}×`, (r) => (n(r) > 1 ? decodeRatio(r, 131072, n(r))?.ratio ?? null : null), (x) => x >= PAPER_DECODE_RATIO_128K, true]);
  const lines = ['| target | goal | range over the runs | runs that met it |', '|---|---|---|---|'];
  for (const [name, goal, value, ok, needsQuiet] of rows) {
    const judged = reports.filter((r) => !(needsQuiet && wasLoaded(r)));
    const xs = judged.map(value).filter((x): x is number => x !== null && Number.isFinite(x));
    if (xs.length === 0) continue;
    const unit = goal.endsWith('%') ? '%' : goal.endsWith('×') ? '×' : '';
    const fmt = (x: number) => (unit === '%' ? x.toFixed(0) : f2(x)) + unit;
    lines.push(`| ${name} | ${goal} | ${fmt(Math.min(...xs))} – ${fmt(Math.max(...xs))} | ${xs.filter(ok).length} of ${xs.length} |`);
  }
  return lines.join('\n');
}

/** One line per target with the value reached in this report. */
export function targetSummary(report: BenchReport): string {
  const b = report.backend;
  const g = report.grid;
  const loaded = wasLoaded(report);
  const lines: string[] = [`Targets (backend ${b}, 1024³ matmul ${f2(report.matmul_gflops)} GFLOP/s on one thread):`];
  lines.push(
    loaded
      ? `- the machine was shared (${loadText(report)}): one-thread verdicts use CPU time per run ("cpu"), ` +
          'wall-time ratios are shown beside them; thread speedups need free cores and are not measurable in this run'
      : `- the machine was quiet (${loadText(report)}): verdicts use wall time; "cpu" gives the same ratio on CPU time per run`,
  );
  const pick = (wall: number | null, cpu: number | null) => (loaded ? cpu : wall);
  const e = report.exponents.sparse;
  const ec = report.exponents_cpu?.sparse ?? null;
  const ev = pick(e, ec);
  lines.push(
    ev === null
      ? '- sparse exponent: not measured in this mode'
      : `- sparse exponent of time vs L (k=${g.k}, L ≥ ${2 * g.k}): ${f2(ev)}${loaded ? ' (cpu)' : ''} (target ≤ 1.10: ${mark(ev <= 1.1)}${ev > 1.1 ? `, over by ${f2(ev - 1.1)}` : ''}; ` +
          `wall ${f2(e)}, cpu ${f2(ec)}); dense ${f2(pick(report.exponents.dense, report.exponents_cpu?.dense ?? null))} (≈ 2); indexer ${f2(pick(report.exponents.indexer, report.exponents_cpu?.indexer ?? null))}`,
  );
  for (const L of [16384, 32768]) {
    const eff = sparseEfficiency(report, L);
    if (!eff) {
      lines.push(`- ${kL(L)}: sparse speedup over dense not measured in this mode`);
      continue;
    }
    const { pct, speedup, ratio, sparse: s, dense: d } = eff;
    const wallPct = (100 * (d.ms_median / s.ms_median)) / ratio;
    lines.push(
      `- ${kL(L)}: sparse ${f2(speedup)}× faster than dense${loaded ? ' (cpu)' : ''} for ${f2(ratio)}× fewer FLOPs → ${pct.toFixed(0)}% of the FLOP ratio ` +
        `(target ≥ 80%: ${mark(pct >= 80)}${pct < 80 ? `, short by ${(80 - pct).toFixed(0)} points` : ''}; wall ${wallPct.toFixed(0)}%, cpu ${((100 * (d.cpu_ms_median / s.cpu_ms_median)) / ratio).toFixed(0)}%); ` +
        `sparse ${f2(s.flops / oneThreadMs(report, s) / 1e6)} vs dense ${f2(d.flops / oneThreadMs(report, d) / 1e6)} GFLOP/s${loaded ? ' of CPU time' : ''}`,
    );
  }
  const prof = report.sparse_profile;
  if (prof) {
    const ms = prof.ms_per_query;
    const total = Object.values(ms).reduce((x, y) => x + y, 0);
    const gemm = (ms.gemm1 ?? 0) + (ms.gemm2 ?? 0);
    lines.push(
      `- where sparse time goes at ${kL(prof.L)} (one instrumented run, wall ms per query): ` +
        Object.entries(ms).map(([k, v]) => `${k} ${f2(v)}`).join(', ') +
        ` → GEMMs ${((100 * gemm) / total).toFixed(0)}%, the rest (operands, softmax, transpose, output) ${((100 * (total - gemm)) / total).toFixed(0)}%`,
    );
  }
  for (const n of multiThreads(report, b)) {
    for (const op of ['dense', 'sparse', 'indexer']) {
      const L = 16384;
      const t = threadSpeedup(report, op, L, n);
      if (!t) continue;
      const { speedup: x, one, all } = t;
      const verdict = op === 'indexer' ? '' : loaded ? ' (target ≥ 1.7: not measurable under this load)' : ` (target ≥ 1.7: ${mark(x >= 1.7)})`;
      lines.push(`- ${op} at ${kL(L)} on ${n} threads: ${f2(x)}× one thread (wall)${verdict}; CPU time of all threads ${f2(all.cpu_ms_median / one.cpu_ms_median)}× one thread's`);
    }
  }
  const decodeL = [...new Set(report.results.filter((r) => r.backend === b && r.op === 'dsa_decode').map((r) => r.L))].sort((x, y) => x - y);
  for (const L of decodeL) {
    for (const n of [1, ...multiThreads(report, b)]) {
      const r = decodeRatio(report, L, n);
      if (!r) continue;
      const { ratio: x, dense: d, dsa: s } = r;
      const model = d.flops / dsaDecodeFlops(L, s.k, d.heads, g.indexHeads);
      const judged = n === 1 || !loaded;
      const paper =
        L === 131072
          ? `; paper (Figure 3, 128K): ${PAPER_DECODE_RATIO_128K}× (target ≥ ${PAPER_DECODE_RATIO_128K}: ${judged ? mark(x >= PAPER_DECODE_RATIO_128K) : 'not measurable under this load'})`
          : '';
      const times = n === 1 && loaded ? `CPU ${f2(d.cpu_ms_median)} vs ${f2(s.cpu_ms_median)} ms, wall ${f2(d.ms_median)} vs ${f2(s.ms_median)} ms` : `${f2(d.ms_median)} vs ${f2(s.ms_median)} ms`;
      lines.push(
        `- decode at ${kL(L)}${n > 1 ? ` on ${n} threads` : ''}: dense_decode ÷ dsa_decode = ${f2(x)}×${n === 1 && loaded ? ' (cpu)' : ''} (${times}; FLOP model ${f2(model)}×)${paper}; peak RSS ${s.peak_rss_mb.toFixed(0)} MB`,
      );
    }
  }
  lines.push(...peerLines(report));
  return lines.join('\n');
}

/** Our time against the peer's at equal threads (dense ≥ 1×, sparse ≥ 2×), only against an optimized BLAS. */
function peerLines(report: BenchReport): string[] {
  const p = report.peer;
  if (!p.available) return [`- PyTorch peer: not run (${p.reason ?? 'unavailable'})`];
  const head = `- PyTorch peer: torch ${p.torch}, BLAS ${p.blas ?? 'unknown'}, core ${p.coretype ?? 'unknown'}`;
  if (!p.fair) return [`${head}: reference BLAS — not a fair peer; no speedup computed`];
  const lines = [`${head}:`];
  const peerRows = report.results.filter((r) => r.backend === 'torch');
  for (const op of ['dense', 'sparse']) {
    const target = op === 'dense' ? 1 : 2;
    for (const n of [...new Set(peerRows.map((r) => r.threads))].sort((a, c) => a - c)) {
      const pairs = peerRows
        .filter((r) => r.op === op && r.threads === n)
        .map((r) => ({ L: r.L, ours: findRow(report, report.backend, op, r.L, r.k, n), peer: r }))
        .filter((x) => x.ours);
      const ratios = pairs.map((x) => (n === 1 ? oneThreadMs(report, x.peer) / oneThreadMs(report, x.ours!) : x.peer.ms_median / x.ours!.ms_median));
      const xs = pairs
        .map((x) =>
          n === 1
            ? `${kL(x.L)} ${f2(oneThreadMs(report, x.peer) / oneThreadMs(report, x.ours!))}×${wasLoaded(report) ? ` (wall ${f2(x.peer.ms_median / x.ours!.ms_median)}×)` : ` (cpu ${f2(x.peer.cpu_ms_median / x.ours!.cpu_ms_median)}×)`}`
            : `${kL(x.L)} ${f2(x.peer.ms_median / x.ours!.ms_median)}×`,
        );
      const how = n === 1 && wasLoaded(report) ? 'peer CPU ms ÷ ours' : `peer ms ÷ ${report.backend} ms`;
      const caveat = n > 1 && wasLoaded(report) ? ' — not measurable under this load' : '';
      const verdict = caveat ? '' : ratios.every((x) => x >= target) ? ' → met' : ` → MISSED (best ${f2(Math.max(...ratios))}×)`;
      if (xs.length) lines.push(`  - ${op}, ${n} thread${n > 1 ? 's' : ''} (${how}; target ≥ ${target}×${caveat}): ${xs.join(', ')}${verdict}`);
    }
  }
  return lines;
}
