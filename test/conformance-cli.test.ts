import { describe, it, expect, beforeAll } from 'vitest';
import { mkdtempSync, writeFileSync, readFileSync, mkdirSync, copyFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import { discoverCases } from '../src/conformance/run.ts';
import { runConformance, parseConformanceArgs, formatGrouped, formatTable } from '../src/cli/conformance.ts';
import { initBackend } from '../src/backend.ts';

const ROOT = resolve(__dirname, '..');
const FIXTURES = join(ROOT, 'fixtures');

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'dsv32.js'), ...args], { encoding: 'utf8', cwd: ROOT, timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('conformance case discovery', () => {
  it('finds the bundled golden folders and every vector file', () => {
    const { cases, errors } = discoverCases([FIXTURES]);
    expect(errors).toEqual([]);
    const golden = cases.filter((c) => c.type === 'golden').map((c) => c.name).sort();
    expect(golden).toEqual(['public-fp32', 'public-fp32-indexer-rope-bug', 'public-fp8', 'public2-fp8']);
    const vectors = cases.filter((c) => c.type === 'vector').map((c) => c.name);
    expect(vectors).toContain('numerics-fp8-codec');
    expect(vectors).toContain('grpo-v32');
    expect(vectors.length).toBe(10);
  });

  it('reports a missing directory as a failed check, not a crash', () => {
    const { cases, errors } = discoverCases(['/nonexistent/dsv32-dir']);
    expect(cases).toEqual([]);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.pass).toBe(false);
    expect(errors[0]!.reason).toMatch(/cannot read \/nonexistent\/dsv32-dir/);
  });

  it('reports a broken JSON file as a failed check and ignores JSON that is not a vector', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dsv32-disc-'));
    writeFileSync(join(dir, 'broken.json'), '{"kind": "grpo", "inputs": [1, 2');
    writeFileSync(join(dir, 'other.json'), '{"name": "not a vector"}');
    const { cases, errors } = discoverCases([dir]);
    expect(cases).toEqual([]);
    expect(errors.map((e) => e.case)).toEqual(['broken']);
    expect(errors[0]!.reason).toMatch(/cannot parse .*broken\.json/);
  });
});

describe('conformance runner', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('turns an unknown vector kind into a failed row naming the kind', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dsv32-kind-'));
    writeFileSync(join(dir, 'mystery.json'), JSON.stringify({ kind: 'mystery', inputs: {} }));
    const rows = await runConformance([dir]);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ case: 'mystery', pass: false });
    expect(rows[0]!.reason).toMatch(/unknown vector kind 'mystery'/);
  });

  it('reports an empty folder as a failure (nothing was checked)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dsv32-empty-'));
    const rows = await runConformance([dir]);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.pass).toBe(false);
    expect(rows[0]!.reason).toMatch(/no golden fixture folder/);
  });

  it('turns a golden folder with a truncated trace and a bad manifest into failed rows', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dsv32-trunc-'));
    const fx = join(dir, 'truncated');
    mkdirSync(fx);
    for (const f of ['manifest.json', 'config.json', 'model.safetensors']) copyFileSync(join(FIXTURES, 'golden', 'public-fp32', f), join(fx, f));
    const trace = readFileSync(join(FIXTURES, 'golden', 'public-fp32', 'trace.safetensors'));
    const fd = openSync(join(fx, 'trace.safetensors'), 'w');
    writeSync(fd, trace.subarray(0, Math.floor(trace.length / 3)));
    closeSync(fd);
    const bad = join(dir, 'badmanifest');
    mkdirSync(bad);
    writeFileSync(join(bad, 'manifest.json'), '{not json');
    writeFileSync(join(bad, 'trace.safetensors'), '');
    const rows = await runConformance([dir]);
    expect(rows.length).toBeGreaterThan(0);
    expect(rows.every((r) => r.pass === false)).toBe(true);
    expect(rows.some((r) => r.case === 'badmanifest' && /manifest\.json/.test(r.reason ?? ''))).toBe(true);
    expect(rows.some((r) => r.case === 'truncated')).toBe(true);
  });
});

describe('conformance CLI arguments', () => {
  it('parses directories, --json and --weights options', () => {
    expect(parseConformanceArgs(['a', 'b', '--json', 'out.json'])).toMatchObject({ dirs: ['a', 'b'], json: 'out.json' });
    expect(parseConformanceArgs(['--weights', 'w', '--layers', '0,3'])).toMatchObject({ weights: 'w', layers: [0, 3] });
  });

  it('rejects bad options with messages naming them', () => {
    expect(() => parseConformanceArgs(['--json'])).toThrow(/--json needs a value/);
    expect(() => parseConformanceArgs(['--layers', '0,x', '--weights', 'w'])).toThrow(/--layers expects .* but got '0,x'/);
    expect(() => parseConformanceArgs(['--frobnicate'])).toThrow(/unknown option '--frobnicate'/);
    expect(() => parseConformanceArgs(['--layers', '1'])).toThrow(/need --weights/);
  });

  it('the default report groups rows per case × check (count, failures, worst errors, FP8-midpoint rows) and lists failing rows in full', () => {
    const row = { case: 'c', check: 'e2e.attn.out', step: 0, layer: 0, pass: true, max_abs_err: 1e-7, max_rel_err: 1e-7 };
    const rows = [
      row,
      { ...row, layer: 1, max_abs_err: 3e-7, reason: 'steered at an FP8 midpoint: kv.latent … token 3 element 5, |x/s − midpoint| = 1.0e-6: …' },
      { ...row, layer: 2, pass: false, max_abs_err: 0.5, max_rel_err: 0.25, reason: 'max|a−b| = 5.000e-1 > 0.0001 · max(1, max|b|)' },
      { ...row, check: 'e2e.logits', layer: null },
    ];
    const lines = formatGrouped(rows).split('\n');
    expect(lines[0]!.split(/\s+/)).toEqual(['case', 'check', 'rows', 'failed', 'max_abs_err', 'max_rel_err', 'fp8_midpoint']);
    expect(lines[2]!.split(/\s+/)).toEqual(['c', 'e2e.attn.out', '3', '1', '5.00e-1', '2.50e-1', '1']);
    expect(lines[3]!.split(/\s+/)).toEqual(['c', 'e2e.logits', '1', '0', '1.00e-7', '1.00e-7', '0']);
    expect(lines[5]).toBe('failing rows (1):');
    expect(lines.slice(6).join('\n')).toBe(formatTable([rows[2]!]));
    expect(formatGrouped([row]).split('\n')).toHaveLength(3); // nothing failing: no failing section
  });

  it('--verbose prints every row; the default prints the grouped report', () => {
    expect(parseConformanceArgs(['--verbose'])).toMatchObject({ verbose: true });
    expect(parseConformanceArgs([])).toMatchObject({ verbose: false });
    const file = join(FIXTURES, 'vectors', 'numerics-hadamard.json');
    expect(cli(['conformance', file]).stdout).toMatch(/^case\s+check\s+rows\s+failed/);
    expect(cli(['conformance', file, '--verbose']).stdout).toMatch(/^case\s+check\s+step\s+layer/);
  });

  it('formats failed rows with their reason', () => {
    const table = formatTable([{ case: 'c', check: 'k', step: 0, layer: 2, pass: false, max_abs_err: 0.5, max_rel_err: null, reason: 'why' }]);
    expect(table).toMatch(/c\s+k\s+0\s+2\s+5\.00e-1\s+-\s+FAIL \(why\)/);
  });
});

describe('dsv32 conformance (process)', () => {
  it('writes the JSON contract and exits 0 when every check passes', () => {
    const out = join(mkdtempSync(join(tmpdir(), 'dsv32-json-')), 'r.json');
    const r = cli(['conformance', join(FIXTURES, 'vectors', 'numerics-hadamard.json'), '--json', out]);
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.status).toBe(0);
    const rows = JSON.parse(readFileSync(out, 'utf8')) as Array<Record<string, unknown>>;
    expect(rows.length).toBeGreaterThan(0);
    for (const row of rows) {
      expect(Object.keys(row).filter((k) => k !== 'reason').sort()).toEqual(['case', 'check', 'layer', 'max_abs_err', 'max_rel_err', 'pass', 'step']);
      expect(row.pass).toBe(true);
    }
  });

  it('exits 1 and reports the failing row when an expected value is wrong', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dsv32-bad-'));
    const v = JSON.parse(readFileSync(join(FIXTURES, 'vectors', 'numerics-hadamard.json'), 'utf8'));
    const y = v.expected.y as number[][];
    y[0]![0] = y[0]![0]! + 0.5;
    writeFileSync(join(dir, 'hadamard-corrupted.json'), JSON.stringify(v));
    const out = join(dir, 'r.json');
    const r = cli(['conformance', dir, '--json', out]);
    expect(r.status).toBe(1);
    const rows = JSON.parse(readFileSync(out, 'utf8')) as Array<{ pass: boolean; case: string }>;
    expect(rows.some((row) => !row.pass && row.case === 'hadamard-corrupted')).toBe(true);
  });

  it('--weights runs a checkpoint folder layer by layer and compares with --expect', () => {
    const out = join(mkdtempSync(join(tmpdir(), 'dsv32-w-')), 'r.json');
    const dir = join(FIXTURES, 'golden', 'public-fp32');
    const r = cli(['conformance', '--weights', dir, '--layers', '0,2', '--expect', join(dir, 'trace.safetensors'), '--json', out]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/layer 0 \[dense\]/); // activation statistics per layer
    const rows = JSON.parse(readFileSync(out, 'utf8')) as Array<{ check: string; layer: number | null; pass: boolean }>;
    expect(rows.every((row) => row.pass)).toBe(true);
    expect(rows.some((row) => row.check === 'attn.out' && row.layer === 2)).toBe(true);
    // every step of the trace: the prefill and its 4 decode steps, each compared
    for (let step = 0; step <= 4; step++) {
      expect(rows.some((row) => row.check === 'stream.logits' && (row as { step?: number }).step === step)).toBe(true);
      expect(rows.some((row) => row.check === 'attn.out' && row.layer === 2 && (row as { step?: number }).step === step)).toBe(true);
    }
    const finite = rows.filter((row) => row.check === 'weights.finite') as Array<{ peak_bytes?: number }>;
    expect(finite).toHaveLength(2 * 5);
    expect(finite.every((row) => Number.isInteger(row.peak_bytes) && row.peak_bytes! > 0)).toBe(true);
  });

  it('--weights --steps N runs N greedy decode steps after the prefill, through every layer', () => {
    const out = join(mkdtempSync(join(tmpdir(), 'dsv32-w-')), 'r.json');
    const dir = join(FIXTURES, 'golden', 'public-fp8');
    const tokens = join(dirname(out), 't.json');
    writeFileSync(tokens, '[3, 1, 4, 1, 5]');
    const r = cli(['conformance', '--weights', dir, '--layers', '1', '--tokens', tokens, '--steps', '2', '--json', out]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^step 2: layer 2 \(on the way\) \[moe\] T=1:/m);
    expect(r.stdout.match(/greedy next token \d+/g)).toHaveLength(2);
    const rows = JSON.parse(readFileSync(out, 'utf8')) as Array<{ check: string; step: number; layer: number }>;
    expect(rows.map((row) => `${row.check}:${row.step}:${row.layer}`)).toEqual(['weights.finite:0:1', 'weights.finite:1:1', 'weights.finite:2:1']);
    expect(() => parseConformanceArgs(['--weights', 'w', '--steps=-1'])).toThrow(/--steps must be an integer ≥ 0 but got '-1'/);
    expect(() => parseConformanceArgs(['--weights', 'w', '--steps', '1', '--expect', 'e'])).toThrow(/--steps and --expect exclude each other/);
  });

  it('--weights on a folder without a checkpoint is a failed row with the reason, exit 1', () => {
    const out = join(mkdtempSync(join(tmpdir(), 'dsv32-w-')), 'r.json');
    const r = cli(['conformance', '--weights', '/nonexistent/dsv32-ckpt', '--json', out]);
    expect(r.status).toBe(1);
    const rows = JSON.parse(readFileSync(out, 'utf8')) as Array<{ pass: boolean; reason?: string }>;
    expect(rows).toHaveLength(1);
    expect(rows[0]!.pass).toBe(false);
    expect(rows[0]!.reason).toMatch(/config\.json/);
  });

  it('exits 2 on a usage error', () => {
    const r = cli(['conformance', '--layers', '1']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/need --weights/);
  });
});
