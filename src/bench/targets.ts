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

/** One line per target with the value reached in this report. */
export function targetSummary(report: BenchReport): string {
  const b = report.backend;
  const g = report.grid;
  const lines: string[] = [`Targets (backend ${b}, 1024³ matmul ${f2(report.matmul_gflops)} GFLOP/s on one thread):`];
  lines.push(`  (× ratios on wall time; "cpu" = the same on CPU time per run, which a loaded machine disturbs less on one thread)`);
  const e = report.exponents.sparse;
  const ec = report.exponents_cpu?.sparse ?? null;
  lines.push(
    e === null
      ? '- sparse exponent: not measured in this mode'
      : `- sparse exponent of time vs L (k=${g.k}, L ≥ ${2 * g.k}): ${f2(e)} (target ≤ 1.10: ${mark(e <= 1.1)}${e > 1.1 ? `, over by ${f2(e - 1.1)}` : ''}; cpu ${f2(ec)}); ` +
          `dense ${f2(report.exponents.dense)} (≈ 2); indexer ${f2(report.exponents.indexer)}`,
  );
  for (const L of [16384, 32768]) {
    const d = findRow(report, b, 'dense', L);
    const s = findRow(report, b, 'sparse', L, g.k);
    if (!d || !s) {
      lines.push(`- ${kL(L)}: sparse speedup over dense not measured in this mode`);
      continue;
    }
    const speedup = d.ms_median / s.ms_median;
    const ratio = d.flops / s.flops;
    const pct = (100 * speedup) / ratio;
    const pctCpu = (100 * (d.cpu_ms_median / s.cpu_ms_median)) / ratio;
    lines.push(
      `- ${kL(L)}: sparse ${f2(speedup)}× faster than dense for ${f2(ratio)}× fewer FLOPs → ${pct.toFixed(0)}% of the FLOP ratio (target ≥ 80%: ${mark(pct >= 80)}${pct < 80 ? `, short by ${(80 - pct).toFixed(0)} points` : ''}; ` +
        `cpu ${f2(d.cpu_ms_median / s.cpu_ms_median)}× → ${pctCpu.toFixed(0)}%); sparse ${f2(s.gflops)} vs dense ${f2(d.gflops)} GFLOP/s`,
    );
  }
  const prof = report.sparse_profile;
  if (prof) {
    const ms = prof.ms_per_query;
    const total = Object.values(ms).reduce((x, y) => x + y, 0);
    const gemm = (ms.gemm1 ?? 0) + (ms.gemm2 ?? 0);
    lines.push(
      `- where sparse time goes at ${kL(prof.L)} (one instrumented run, ms per query): ` +
        Object.entries(ms).map(([k, v]) => `${k} ${f2(v)}`).join(', ') +
        ` → GEMMs ${((100 * gemm) / total).toFixed(0)}% (at ${f2(prof.gemm1_gflops)} and ${f2(prof.gemm2_gflops)} GFLOP/s), the rest ${((100 * (total - gemm)) / total).toFixed(0)}%`,
    );
  }
  for (const n of multiThreads(report, b)) {
    for (const op of ['dense', 'sparse', 'indexer']) {
      const L = 16384;
      const one = findRow(report, b, op, L, op === 'sparse' ? g.k : undefined, 1);
      const all = findRow(report, b, op, L, op === 'sparse' ? g.k : undefined, n);
      if (!one || !all) continue;
      const x = one.ms_median / all.ms_median;
      lines.push(`- ${op} at ${kL(L)} on ${n} threads: ${f2(x)}× one thread${op === 'indexer' ? '' : ` (target ≥ 1.7: ${mark(x >= 1.7)})`}`);
    }
  }
  const decodeL = [...new Set(report.results.filter((r) => r.backend === b && r.op === 'dsa_decode').map((r) => r.L))].sort((x, y) => x - y);
  for (const L of decodeL) {
    for (const n of [1, ...multiThreads(report, b)]) {
      const d = findRow(report, b, 'dense_decode', L, undefined, n);
      const s = findRow(report, b, 'dsa_decode', L, undefined, n);
      if (!d || !s) continue;
      const x = d.ms_median / s.ms_median;
      const xc = d.cpu_ms_median / s.cpu_ms_median;
      const model = d.flops / dsaDecodeFlops(L, s.k, d.heads, g.indexHeads);
      const paper = L === 131072 ? `; paper (Figure 3, 128K): ${PAPER_DECODE_RATIO_128K}× (target ≥ ${PAPER_DECODE_RATIO_128K}: ${mark(x >= PAPER_DECODE_RATIO_128K)})` : '';
      lines.push(
        `- decode at ${kL(L)}${n > 1 ? ` on ${n} threads` : ''}: dense_decode ${f2(d.ms_median)} ms, dsa_decode ${f2(s.ms_median)} ms → ${f2(x)}×${n === 1 ? ` (cpu ${f2(xc)}×)` : ''} (FLOP model ${f2(model)}×)${paper}; peak RSS ${s.peak_rss_mb.toFixed(0)} MB`,
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
      const xs = peerRows
        .filter((r) => r.op === op && r.threads === n)
        .map((r) => ({ L: r.L, ours: findRow(report, report.backend, op, r.L, r.k, n), peer: r }))
        .filter((x) => x.ours)
        .map((x) => `${kL(x.L)} ${f2(x.peer.ms_median / x.ours!.ms_median)}×${n === 1 ? ` (cpu ${f2(x.peer.cpu_ms_median / x.ours!.cpu_ms_median)}×)` : ''}`);
      if (xs.length) lines.push(`  - ${op}, ${n} thread${n > 1 ? 's' : ''} (peer ms ÷ ${report.backend} ms; target ≥ ${target}×): ${xs.join(', ')}`);
    }
  }
  return lines;
}
