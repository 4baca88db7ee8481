/**
 * `dsv32 bench --json` contract (issue #5): the JSON fields and their types. Runs the hidden smoke
 * grid (`--smoke`: L ≤ 512, 2 heads, one run) on wasm only so it finishes in seconds. No timing
 * assertion: only shapes of the report, the FLOP model and the exponent fit (math identities).
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fitExponent } from '../bench/fit.ts';
import { attentionFlopsPerPair, causalPairs, indexerFlopsPerPair, sparsePairs } from '../bench/flops.ts';
import { plotLogLog } from '../bench/svg.ts';

const ROOT = resolve(__dirname, '..');

function cli(args: string[]) {
  return spawnSync(process.execPath, [join(ROOT, 'bin', 'dsv32.js'), ...args], { encoding: 'utf8', cwd: ROOT, timeout: 300_000 });
}

describe('dsv32 bench --json (smoke grid)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dsv32-bench-'));
  const file = join(dir, 'bench.json');
  const doc = join(dir, 'perf.md');
  let r: ReturnType<typeof cli>;
  beforeAll(() => {
    r = cli(['bench', '--smoke', '--backends', 'wasm', '--json', file, '--doc', doc]);
  }, 300_000);

  it('exits 0 and prints the table and the targets', () => {
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/\| backend \| op \| series \| L \| k \| heads \|/);
    expect(r.stdout).toMatch(/Targets \(backend wasm/);
  });

  it('writes the contract fields with their types', () => {
    const json = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    expect(typeof json.machine).toBe('string');
    expect(json.backend).toBe('wasm');
    expect(typeof json.matmul_gflops).toBe('number');
    expect(json.matmul_gflops as number).toBeGreaterThan(0);
    const exps = json.exponents as Record<string, unknown>;
    expect(Object.keys(exps).sort()).toEqual(['dense', 'indexer', 'sparse']);
    for (const v of Object.values(exps)) expect(v === null || typeof v === 'number').toBe(true);
    const results = json.results as Record<string, unknown>[];
    expect(results.length).toBeGreaterThan(0);
    for (const row of results) {
      expect(typeof row.op).toBe('string');
      for (const key of ['L', 'k', 'heads', 'ms_median', 'peak_rss_mb']) expect(typeof row[key], key).toBe('number');
      expect(row.gflops === null || typeof row.gflops === 'number').toBe(true);
      expect(row.ms_median as number).toBeGreaterThan(0);
    }
    const ops = new Set(results.map((x) => x.op));
    for (const op of ['dense', 'sparse', 'indexer', 'topk']) expect(ops.has(op), op).toBe(true);
    // gflops is flops / time by the FLOP model of docs/spec-notes.md#flop-model
    const dense = results.find((x) => x.op === 'dense' && x.L === 512)!;
    const T = dense.T as number;
    expect(dense.flops).toBe(causalPairs(512, T) * attentionFlopsPerPair(2));
    expect(dense.gflops as number).toBeCloseTo((dense.flops as number) / (dense.ms_median as number) / 1e6, 6);
  });

  it('writes the markdown report and the SVG plot', () => {
    expect(readFileSync(doc, 'utf8')).toMatch(/# Performance of DeepSeek Sparse Attention/);
    const svg = join(dir, 'perf-time-vs-L.svg');
    expect(existsSync(svg)).toBe(true);
    expect(readFileSync(svg, 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>\n$/);
  });

  it('re-renders the tables and the docs from a saved report (--report)', () => {
    const doc2 = join(dir, 'again.md');
    const again = cli(['bench', '--report', file, '--doc', doc2]);
    expect(again.status).toBe(0);
    expect(again.stdout).toMatch(/\| backend \| op \| series \|/);
    expect(readFileSync(doc2, 'utf8')).toContain(JSON.parse(readFileSync(file, 'utf8')).machine as string);
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
