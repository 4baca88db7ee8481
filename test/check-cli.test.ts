/**
 * The `dsv32 check` command line (a public contract): arguments, exit codes, the `--json` report's
 * fields, and one-line errors for a bad command line or fixture folder.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { formatReport, parseCheckArgs } from '../src/cli/check.ts';

const ROOT = resolve(import.meta.dirname, '..');
const dir = mkdtempSync(join(tmpdir(), 'dsv32-check-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs `dsv32 check ARGS` in a child process (asynchronously: the worker's event loop stays free). */
function cli(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, [join(ROOT, 'bin', 'dsv32.js'), 'check', ...args], { encoding: 'utf8', cwd: ROOT, timeout: 180_000 }, (err, stdout, stderr) => {
      const status = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      done({ status, stdout, stderr });
    });
  });
}

describe('dsv32 check command line', () => {
  it('parses the contract and rejects what it does not know with one line', () => {
    expect(parseCheckArgs(['t.safetensors', '--fixture', 'fx', '--json', 'out.json'])).toEqual({ trace: 't.safetensors', fixture: 'fx', json: 'out.json' });
    // the strict parser of every command (src/cli/args.ts): one UsageError naming the argument
    expect(() => parseCheckArgs(['t.safetensors', '--fixture', 'fx', '--precision', 'fp16'])).toThrow(/^--precision must be 'fp32' or 'bf16' but got 'fp16'$/);
    expect(() => parseCheckArgs(['--fixture', 'fx'])).toThrow(/^missing TRACE\.safetensors$/);
    expect(() => parseCheckArgs(['a.safetensors', 'b.safetensors', '--fixture', 'fx'])).toThrow(/^expected at most 1 TRACE\.safetensors but got 'a\.safetensors' and 'b\.safetensors'$/);
    expect(() => parseCheckArgs(['t.safetensors', '--fixture'])).toThrow(/^--fixture needs a value$/);
    expect(() => parseCheckArgs(['t.safetensors', '--fixture', 'fx', '--verbose'])).toThrow(/^unknown option '--verbose'$/);
    expect(() => parseCheckArgs(['t.safetensors', '--fixture', 'a', '--fixture', 'b'])).toThrow(/^option --fixture is given more than once$/);
    expect(() => parseCheckArgs(['t.safetensors'])).toThrow(/^--fixture DIR is required$/);
    expect(() => parseCheckArgs(['t.safetensors', '--fixture', ''])).toThrow(/^--fixture needs a non-empty value$/);
  });

  it('exit 0 and the JSON report for the official bf16 run', async () => {
    const out = join(dir, 'official.json');
    const r = await cli(['fixtures/traces/public-fp8.bf16.official.safetensors', '--fixture', 'fixtures/golden/public-fp8', '--json', out]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^verdict: pass {3}precision: bf16 {3}rows: 130\n/);
    const report = JSON.parse(readFileSync(out, 'utf8'));
    expect(Object.keys(report)).toEqual(['verdict', 'precision', 'first_failure', 'diagnosis', 'rows']);
    expect(report).toMatchObject({ verdict: 'pass', precision: 'bf16', first_failure: null, diagnosis: [] });
    expect(Object.keys(report.rows[0]).sort()).toEqual(
      ['case', 'check', 'step', 'layer', 'pass', 'max_abs_err', 'max_rel_err', 'cos_diff', 'recall', 'reason'].sort(),
    );
    expect(report.rows[0]).toMatchObject({ case: 'public-fp8.bf16.official', check: 'attn.in', step: 0, layer: 0, pass: true, recall: null });
    const topk = report.rows.find((r: { check: string }) => r.check === 'indexer.topk');
    expect(topk.cos_diff).toBeNull();
    expect(topk.recall).toBeGreaterThan(0.9);
  });

  it('exit 1 with the first failure and the diagnosis for a deviation; --precision overrides the dtype', async () => {
    const out = join(dir, 'rope.json');
    const r = await cli(['fixtures/traces/public-fp8.bf16.indexer-rope-interleaved.safetensors', '--fixture', 'fixtures/golden/public-fp8', '--json', out]);
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('first failure: indexer.score step 0 layer 0');
    expect(r.stdout).toContain('diagnosis: indexer-rope-interleaved (layers 0, 1, 2)');
    const report = JSON.parse(readFileSync(out, 'utf8'));
    expect(report.first_failure).toEqual({ check: 'indexer.score', step: 0, layer: 0 });
    expect(report.diagnosis[0].id).toBe('indexer-rope-interleaved');
    // the official run judged with float32 thresholds fails (bf16 noise is not float32 noise)
    const strict = await cli(['fixtures/traces/public-fp8.bf16.official.safetensors', '--fixture', 'fixtures/golden/public-fp8', '--precision', 'fp32']);
    expect(strict.status).toBe(1);
    expect(strict.stdout).toMatch(/^verdict: fail {3}precision: fp32/);
  });

  it('exit 2 with one line for a bad command line or an unusable fixture folder; a broken trace is a failed row', async () => {
    const usage = await cli(['fixtures/traces/public-fp8.bf16.official.safetensors']);
    expect(usage.status).toBe(2);
    expect(usage.stderr.split('\n')[0]).toBe('dsv32 check: --fixture DIR is required');
    const noFixture = await cli(['fixtures/traces/public-fp8.bf16.official.safetensors', '--fixture', '/nonexistent/dsv32-fx']);
    expect(noFixture.status).toBe(2);
    expect(noFixture.stderr).toMatch(/^dsv32 check: --fixture \/nonexistent\/dsv32-fx: .*\n$/);
    const garbage = join(dir, 'garbage.safetensors');
    writeFileSync(garbage, 'not a safetensors file');
    const broken = await cli([garbage, '--fixture', 'fixtures/golden/public-fp32']);
    expect(broken.status).toBe(1);
    expect(broken.stderr).toBe('');
    expect(broken.stdout).toContain('first failure: trace');
  });

  it('formats a report: verdict line, first failure, failing rows, counts', () => {
    const text = formatReport({
      verdict: 'fail', precision: 'fp32', first_failure: { check: 'attn.out', step: 1, layer: 2 }, diagnosis: [],
      rows: [
        { case: 'c', check: 'attn.in', step: 1, layer: 2, pass: true, max_abs_err: 0, max_rel_err: 0, cos_diff: 0, recall: null, reason: 'ok' },
        { case: 'c', check: 'attn.out', step: 1, layer: 2, pass: false, max_abs_err: 0.1, max_rel_err: 0.01, cos_diff: 5e-5, recall: null, reason: 'outside' },
      ],
    });
    expect(text.split('\n').slice(0, 6)).toEqual([
      'verdict: fail   precision: fp32   rows: 2',
      'first failure: attn.out step 1 layer 2',
      'diagnosis: none of the known deviations explains the failures',
      '',
      'failing rows:',
      '  attn.out step 1 layer 2: max_rel_err 0.01 cos_diff 0.00005 — outside',
    ]);
  });
});
