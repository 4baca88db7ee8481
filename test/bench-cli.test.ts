/**
 * `dsv32 bench --json` contract (issues #5, #17): the JSON fields and their types. Runs the hidden smoke
 * grid (`--smoke`: L ≤ 512, 2 heads, one run) on wasm only, on 1 and 2 threads, beside a stand-in peer
 * (a fake python that reports a reference BLAS), so it finishes in seconds and needs no torch. No timing
 * assertion: only shapes of the report, the FLOP model and the exponent fit (math identities).
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { mkdtempSync, readFileSync, existsSync, readdirSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fitExponent } from '../src/bench/fit.ts';
import { attentionFlopsPerPair, causalPairs, dsaDecodeFlops, indexerFlopsPerPair, sparsePairs } from '../src/bench/flops.ts';
import { otherCpu, readCpuTicks } from '../src/bench/machine_share.ts';
import { PEER_UNSET_ENV, peerEnv } from '../src/bench/peer.ts';
import type { BenchReport } from '../src/bench/report.ts';
import { targetsAcrossRuns, wasLoaded } from '../src/bench/targets.ts';
import { plotLogLog } from '../bench/svg.ts';

const ROOT = resolve(__dirname, '..');

function cli(args: string[], env: NodeJS.ProcessEnv = process.env) {
  return spawnSync(process.execPath, [join(ROOT, 'bin', 'dsv32.js'), ...args], { encoding: 'utf8', cwd: ROOT, timeout: 300_000, env });
}

/** A stand-in for python3 + torch: answers the version probe, and as the peer prints a reference-BLAS info line and one row. */
function fakePython(dir: string): string {
  const path = join(dir, 'fake-python');
  writeFileSync(
    path,
    `#!/bin/sh
if [ "$1" = "-c" ]; then echo 9.9.9-fake; exit 0; fi
echo '{"info": {"blas": "reference BLAS (/usr/lib/x86_64-linux-gnu/blas/libblas.so.3)", "coretype": "n/a", "fair": false, "torch": "9.9.9-fake", "threads": 1, "matmul_gflops": 5.5}}'
echo '{"op": "sparse", "L": 256, "k": 128, "T": 2, "heads": 2, "threads": 1, "ms_median": 50.0, "cpu_ms_median": 49.0, "runs": 1, "peak_rss_mb": 10}'
echo "OPENBLAS_CORETYPE=\${OPENBLAS_CORETYPE-unset} OPENBLAS_L2_SIZE=\${OPENBLAS_L2_SIZE-unset}" >> "${join(dir, 'peer-env.txt')}"
echo '{"done": true}'
`,
  );
  chmodSync(path, 0o755);
  return path;
}

describe('dsv32 bench --json (smoke grid)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dsv32-bench-'));
  const file = join(dir, 'bench.json');
  const docsBefore = statSync(join(ROOT, 'docs', 'performance.md')).mtimeMs;
  let r: ReturnType<typeof cli>;
  beforeAll(() => {
    const env = { ...process.env, DSV32_PYTHON: fakePython(dir), OPENBLAS_CORETYPE: 'Haswell', OPENBLAS_L2_SIZE: '512' };
    r = cli(['bench', '--smoke', '--backends', 'wasm', '--threads', '2', '--peer', '--json', file], env);
  }, 300_000);

  it('exits 0 and prints the table and the targets', () => {
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/\| backend \| threads \| op \| series \| L \| k \| heads \|/);
    expect(r.stdout).toMatch(/Targets \(backend wasm/);
  });

  it('writes only its --json file (no docs, no plot)', () => {
    expect(readdirSync(dir).sort()).toEqual(['bench.json', 'fake-python', 'peer-env.txt']);
    expect(statSync(join(ROOT, 'docs', 'performance.md')).mtimeMs).toBe(docsBefore);
  });

  it('labels a reference-BLAS peer as not fair, computes no speedup against it, and unsets OPENBLAS_* for it only', () => {
    const json = JSON.parse(readFileSync(file, 'utf8')) as { peer: Record<string, unknown>; results: Record<string, unknown>[] };
    expect(json.peer).toMatchObject({ available: true, torch: '9.9.9-fake', fair: false, threads: 1, coretype: 'n/a' });
    expect(json.peer.blas).toMatch(/^reference BLAS/);
    expect(json.results.some((x) => x.backend === 'torch' && x.op === 'sparse' && x.threads === 1)).toBe(true);
    expect(r.stdout).toMatch(/reference BLAS — not a fair peer; no speedup computed/);
    expect(r.stdout).not.toMatch(/peer ms ÷/);
    // one peer process per thread count (1 and 2), each without the machine's OPENBLAS_CORETYPE / L2 size
    expect(readFileSync(join(dir, 'peer-env.txt'), 'utf8')).toBe('OPENBLAS_CORETYPE=unset OPENBLAS_L2_SIZE=unset\n'.repeat(2));
  });

  it('writes the contract fields with their types', () => {
    const json = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    expect(typeof json.machine).toBe('string');
    expect(json.backend).toBe('wasm');
    expect(typeof json.matmul_gflops).toBe('number');
    expect(json.matmul_gflops as number).toBeGreaterThan(0);
    const other = json.other_cpu as Record<string, number>; // Linux: what other processes used during the run
    for (const key of ['share', 'steal_share']) expect(other[key], key).toBeGreaterThanOrEqual(0);
    for (const key of ['share', 'steal_share']) expect(other[key], key).toBeLessThanOrEqual(1);
    const exps = json.exponents as Record<string, unknown>;
    expect(Object.keys(exps).sort()).toEqual(['dense', 'indexer', 'sparse']);
    for (const v of Object.values(exps)) expect(v === null || typeof v === 'number').toBe(true);
    const results = json.results as Record<string, unknown>[];
    expect(results.length).toBeGreaterThan(0);
    for (const row of results) {
      expect(typeof row.op).toBe('string');
      expect(typeof row.backend).toBe('string');
      for (const key of ['L', 'k', 'heads', 'ms_median', 'cpu_ms_median', 'peak_rss_mb', 'threads']) expect(typeof row[key], key).toBe('number');
      expect(row.gflops === null || typeof row.gflops === 'number').toBe(true);
      expect(row.ms_median as number).toBeGreaterThan(0);
    }
    const ops = new Set(results.map((x) => x.op));
    for (const op of ['dense', 'sparse', 'indexer', 'topk', 'dense_decode', 'dsa_decode']) expect(ops.has(op), op).toBe(true);
    // 1-thread and 2-thread rows of the fast kernels
    for (const op of ['dense', 'sparse', 'indexer', 'dense_decode', 'dsa_decode']) {
      const threads = new Set(results.filter((x) => x.backend === 'wasm' && x.op === op).map((x) => x.threads));
      expect([...threads].sort(), op).toEqual([1, 2]);
    }
    const dsa = results.find((x) => x.op === 'dsa_decode' && x.L === 512)!;
    expect(dsa.flops).toBe(dsaDecodeFlops(512, 128, 2, 2));
    // gflops is flops / time by the FLOP model of docs/spec-notes.md#flop-model
    const dense = results.find((x) => x.op === 'dense' && x.L === 512)!;
    const T = dense.T as number;
    expect(dense.flops).toBe(causalPairs(512, T) * attentionFlopsPerPair(2));
    expect(dense.gflops as number).toBeCloseTo((dense.flops as number) / (dense.ms_median as number) / 1e6, 6);
  });

  it('renders the markdown report and the SVG plot from the saved report (npm run bench:doc)', () => {
    const out = mkdtempSync(join(tmpdir(), 'dsv32-benchdoc-'));
    const doc = join(out, 'perf.md');
    const tsx = join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs');
    const layouts = join(out, 'layouts.json'); // a stand-in for a bench/sparse-layouts.ts run
    writeFileSync(layouts, JSON.stringify({
      started: '2026-01-01T00:00:00.000Z', load_average: [0.1, 0.2], other_cpu: { share: 0.01, steal_share: 0 }, cpus: 2, L: 16384, k: 2048, heads: 32, queries: 128, repeats: 3,
      dense_gflops: 30, rows: [{ variant: 'shipped', ms_per_query: 6, gflops: 23.77, pct_of_flop_ratio: 79.2 }, { variant: 'softmax: exp in TypeScript', ms_per_query: 0.5, gflops: null, pct_of_flop_ratio: null }],
      shipped_phases: [{ phase: 'gather', ms_per_query: 1 }],
    }));
    const rr = spawnSync(process.execPath, [tsx, join(ROOT, 'bench', 'render.ts'), file, file, layouts, '--doc', doc], { encoding: 'utf8', cwd: ROOT, timeout: 120_000 });
    expect(rr.stderr).toBe('');
    expect(rr.status).toBe(0);
    const text = readFileSync(doc, 'utf8');
    expect(text).toMatch(/Over the 2 runs of this page/);
    expect(text).toContain('## Sparse prefill: the arrangements tried');
    expect(text).toContain('| shipped | 6.00 | 23.77 | 79% |');
    expect(text).toContain('| softmax: exp in TypeScript | 0.50 | – | – |');
    expect(text).toMatch(/# Performance of DeepSeek Sparse Attention/);
    expect(text).toContain(JSON.parse(readFileSync(file, 'utf8')).machine as string);
    expect(text).toMatch(/reference BLAS — not a fair peer/);
    const svg = join(out, 'perf-time-vs-L.svg');
    expect(existsSync(svg)).toBe(true);
    expect(readFileSync(svg, 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>\n$/);
  });

  it('prints the tables of a saved report (--report) and writes nothing', () => {
    const again = cli(['bench', '--report', file]);
    expect(again.status).toBe(0);
    expect(again.stdout).toMatch(/\| backend \| threads \| op \| series \|/);
    expect(readdirSync(dir).sort()).toEqual(['bench.json', 'fake-python', 'peer-env.txt']);
  });

  it('refuses the removed --doc option and a bad --threads with exit code 2', () => {
    const d = cli(['bench', '--smoke', '--doc', 'x.md']);
    expect(d.status).toBe(2);
    expect(d.stderr).toMatch(/bench: --doc was removed: .*npm run bench:doc/);
    const t = cli(['bench', '--smoke', '--threads', '0']);
    expect(t.status).toBe(2);
    expect(t.stderr).toMatch(/bench: --threads must be an integer ≥ 1 but got '0'/);
  });

  it('rejects an unknown option and an unknown backend with exit code 2', () => {
    const bad = cli(['bench', '--smoke', '--frobnicate']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/bench: unknown option '--frobnicate'/);
    const badB = cli(['bench', '--smoke', '--backends', 'gpu']);
    expect(badB.status).toBe(2);
    expect(badB.stderr).toMatch(/bench: unknown backend 'gpu'/);
  });
});

describe('bench FLOP model and exponent fit', () => {
  it('counts causal and sparse pairs of the last T queries', () => {
    // positions t = 2, 3 of L = 4: 3 + 4 causal pairs; with k = 3: 3 + 3
    expect(causalPairs(4, 2)).toBe(7);
    expect(sparsePairs(4, 2, 3)).toBe(6);
    expect(sparsePairs(4, 2, 100)).toBe(causalPairs(4, 2));
  });

  it('uses the per-pair constants of docs/spec-notes.md#flop-model at the 671B head counts', () => {
    expect(attentionFlopsPerPair(128)).toBe(278_528);
    expect(indexerFlopsPerPair(64)).toBe(16_512);
  });

  it('counts a DSA decode step as indexer over all L keys plus attention over min(k, L)', () => {
    // 128K, 671B heads: 131072·16512 + 2048·278528 and the dense step 131072·278528: ratio ≈ 13.3
    expect(dsaDecodeFlops(131072, 2048, 128, 64)).toBe(131072 * 16512 + 2048 * 278528);
    expect((131072 * 278528) / dsaDecodeFlops(131072, 2048, 128, 64)).toBeCloseTo(13.35, 2);
    expect(dsaDecodeFlops(1000, 2048, 1, 1)).toBe(1000 * indexerFlopsPerPair(1) + 1000 * attentionFlopsPerPair(1));
  });

  it('gives the peer the caller environment without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, at the thread count asked', () => {
    const env = peerEnv(2, { PATH: '/bin', OPENBLAS_CORETYPE: 'Haswell', OPENBLAS_L2_SIZE: '512', OTHER: 'x' });
    for (const name of PEER_UNSET_ENV) expect(env[name]).toBeUndefined();
    expect(env).toMatchObject({ PATH: '/bin', OTHER: 'x', OPENBLAS_NUM_THREADS: '2', OMP_NUM_THREADS: '2' });
  });

  it('counts other processes\' CPU time as busy ticks minus steal minus our own and our children\'s', () => {
    const start = { busy: 1000, total: 5000, steal: 10, own: 300 };
    // 400 ticks elapsed over all CPUs: 300 busy, of which 20 steal and 200 ours → 80 by other processes
    const got = otherCpu(start, { busy: 1300, total: 5400, steal: 30, own: 500 })!;
    expect(got.share).toBeCloseTo(80 / 400, 12);
    expect(got.steal_share).toBeCloseTo(20 / 400, 12);
    expect(otherCpu(start, { busy: 1100, total: 5100, steal: 10, own: 450 })!.share).toBe(0); // never negative
    expect(otherCpu(null, start)).toBeNull();
    expect(otherCpu(start, start)).toBeNull();
    const now = readCpuTicks(); // this machine is Linux: the counters are there and consistent
    expect(now).not.toBeNull();
    expect(now!.busy).toBeLessThanOrEqual(now!.total);
    expect(now!.own).toBeGreaterThan(0);
  });

  it('calls a run shared when other processes or steal used over 10% of the machine, else by the load average', () => {
    const report = (extra: Partial<BenchReport>) => ({ load_avg: { start: 0.1, end: 0.2, cpus: 2 }, ...extra }) as BenchReport;
    expect(wasLoaded(report({ other_cpu: { share: 0.05, steal_share: 0.01 } }))).toBe(false);
    expect(wasLoaded(report({ other_cpu: { share: 0.15, steal_share: 0 } }))).toBe(true);
    expect(wasLoaded(report({ other_cpu: { share: 0, steal_share: 0.2 } }))).toBe(true);
    // the bench's own two threads push the load average to 2: with other_cpu that is no longer a shared machine
    expect(wasLoaded(report({ load_avg: { start: 2.1, end: 2.4, cpus: 2 }, other_cpu: { share: 0.02, steal_share: 0 } }))).toBe(false);
    expect(wasLoaded(report({ load_avg: { start: 2.1, end: 2.4, cpus: 2 } }))).toBe(true); // older reports
    expect(wasLoaded(report({}))).toBe(false);
  });

  it('sums the targets over several runs: ranges, runs that met each, thread targets from quiet runs only', () => {
    const row = (op: string, L: number, k: number, ms: number, flops: number, threads = 1) =>
      ({ backend: 'wasm', op, L, k, heads: 32, T: L / 128, threads, ms_median: ms, cpu_ms_median: ms, flops, gflops: null, runs: 1, peak_rss_mb: 1, series: `k=${k}` });
    const F = 8e9;
    const report = (sparseMs: number, denseTwoThreadsMs: number, share: number) =>
      ({
        backend: 'wasm', grid: { k: 2048 }, exponents: { sparse: 1.05, dense: 2, indexer: 2 }, exponents_cpu: { sparse: 1.2, dense: 2, indexer: 2 },
        other_cpu: { share, steal_share: 0 }, load_avg: { start: 0, end: 0, cpus: 2 },
        results: [row('dense', 16384, 2048, 800, F), row('sparse', 16384, 2048, sparseMs, F / 8), row('dense', 16384, 2048, denseTwoThreadsMs, F, 2)],
      }) as unknown as BenchReport;
    // quiet: 800 / 125 = 6.4× for 8× fewer FLOPs → 80%, met; dense on 2 threads 800 / 400 = 2×
    // shared: 800 / 200 = 4× → 50% (CPU time = wall here); its thread row is not judged; its exponent is the cpu one, 1.2
    const table = targetsAcrossRuns([report(125, 400, 0), report(200, 1600, 0.5)]);
    expect(table).toContain('| sparse exponent (k = 2048) | ≤ 1.10 | 1.05 – 1.20 | 1 of 2 |');
    expect(table).toContain('| sparse ÷ dense speedup at 16K, % of the FLOP ratio | ≥ 80% | 50% – 80% | 1 of 2 |');
    expect(table).toContain('| dense at 16K, all cores ÷ one thread | ≥ 1.7× | 2.00× – 2.00× | 1 of 1 |');
    expect(table).not.toContain('32K'); // not measured: no line
  });

  it('fits the exponent of an exact power law and refuses a single L', () => {
    const f = fitExponent([1024, 2048, 4096, 8192].map((L) => [L, 3e-6 * L ** 1.5] as const))!;
    expect(f.exponent).toBeCloseTo(1.5, 10);
    expect(f.prefactor).toBeCloseTo(3e-6, 12);
    expect(f.r2).toBeCloseTo(1, 10);
    expect(fitExponent([[1024, 1], [1024, 2]])).toBeNull();
  });

  it('plots an SVG with one path per series of two or more points', () => {
    const svg = plotLogLog('t', 'L', 'ms', [
      { label: 'a', color: '#f00', points: [[1024, 1], [2048, 4]] },
      { label: 'b & c', color: '#00f', dashed: true, points: [[1024, 2], [4096, 2]] },
    ]);
    expect(svg.match(/<path /g)).toHaveLength(2);
    expect(svg).toContain('b &amp; c');
  });
});
