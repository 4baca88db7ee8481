/**
 * `dsv32 conformance --backend webgpu|webgl` in CI. GPU backends under SwiftShader are slow on a
 * shared 2-core machine (the whole bundled suite: about 2.5 min on webgl, 4.5 min on webgpu), so the
 * test runs a NAMED SUBSET: every vector file (fixtures/vectors) and the RoPE-bug golden case
 * (fixtures/golden/public-fp32-indexer-rope-bug, which runs the indexer of every layer on public-fp32's
 * weights). The CLI itself runs everything; docs/backends.md has the full runs.
 * Plus, on WebGPU, the teacher-forced model rows of public-fp8, whose `ffn.out` at step 0, layer 2 is
 * decided by a SwiGLU product 7e-7 from an e4m3 midpoint (docs/deviations.md).
 */
import { it, expect, describe, beforeAll } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { initBackend } from '../src/backend.ts';
import { runConformance } from '../src/cli/conformance.ts';
import type { CheckResult } from '../src/conformance/core/rows.ts';
import { runGoldenCase } from '../src/conformance/run.ts';
import { MIDPOINT_TOL } from '../src/conformance/fp8/midpoints.ts';
import { GOLDEN_RTOL } from '../src/conformance/core/fixture.ts';
import { runConformanceInBrowser } from '../src/browser_host/conformance.ts';

const ROOT = resolve('.');
const OUT = resolve('test/.out');
const SUBSET = ['fixtures/vectors', 'fixtures/golden/public-fp32-indexer-rope-bug'];

function cli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((ok) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'dsv32.js'), ...args], { cwd: ROOT, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('close', (status) => ok({ status, stdout, stderr }));
  });
}

const key = (r: CheckResult) => `${r.case}|${r.check}|${r.step}|${r.layer}`;
let reference: CheckResult[];
beforeAll(async () => {
  mkdirSync(OUT, { recursive: true });
  await initBackend('wasm');
  reference = await runConformance(SUBSET.map((d) => join(ROOT, d)));
}, 300_000);

for (const backend of ['webgl', 'webgpu']) {
  describe(`dsv32 conformance --backend ${backend} (named subset: ${SUBSET.join(', ')})`, () => {
    it('every row passes, the same rows as on wasm, and the summary names the adapter', async () => {
      const json = join(OUT, `conformance-${backend}.json`);
      const r = await cli(['conformance', '--backend', backend, '--quiet', '--json', json, ...SUBSET]);
      expect(r.stderr).toBe('');
      const rows = JSON.parse(readFileSync(json, 'utf8')) as CheckResult[];
      expect(rows.filter((x) => !x.pass)).toEqual([]);
      expect(rows.map(key).sort()).toEqual(reference.map(key).sort());
      expect(rows.length).toBeGreaterThan(60);
      const adapter = backend === 'webgpu' ? /backend webgpu \(WebGPU adapter: \S.*\): \d+ passed, 0 failed/ : /backend webgl \(WebGL 2: \S.*\): \d+ passed, 0 failed/;
      expect(r.stdout).toMatch(adapter);
      expect(r.status).toBe(0);
    }, 600_000);
  });
}

/** `ffn.act of expert E (…) token T element I, |x/s − midpoint| = D` in a flip row's reason. */
const FLIP = /ffn\.act of (expert \d+) \(quantized before expert \d+\.w2\) token (\d+) element (\d+), \|x\/s − midpoint\| = (\d\.\de-\d+)/;

describe('WebGPU: the public-fp8 FFN row whose SwiGLU product sits on an e4m3 midpoint (docs/deviations.md)', () => {
  it('teacher-forced ffn.out of step 0, layer 2 passes by the same flip as on wasm, within the standard midpoint window', async () => {
    const dir = join(ROOT, 'fixtures/golden/public-fp8');
    const onWasm = (await runGoldenCase({ type: 'golden', name: 'public-fp8', dir }, ['model'])).find((r) => r.check === 'ffn.out' && r.step === 0 && r.layer === 2)!;
    const { rows, backend } = await runConformanceInBrowser('webgpu', [dir], undefined, { families: ['model'] });
    expect(backend).toBe('webgpu');
    expect(rows.filter((r) => !r.pass)).toEqual([]);
    const onGpu = rows.find((r) => r.check === 'ffn.out' && r.step === 0 && r.layer === 2)!;
    // both backends miss the recorded row before the flip, and explain it by the same quantizer input
    const wasmFlip = FLIP.exec(onWasm.reason ?? '');
    const gpuFlip = FLIP.exec(onGpu.reason ?? '');
    expect(wasmFlip, onWasm.reason).not.toBeNull();
    expect(gpuFlip, onGpu.reason).not.toBeNull();
    expect(gpuFlip!.slice(1, 4)).toEqual(wasmFlip!.slice(1, 4));
    // found inside the one detection window of every backend (no GPU-specific loosening)
    expect(Number(gpuFlip![4])).toBeLessThanOrEqual(MIDPOINT_TOL);
    expect(onGpu.max_rel_err!).toBeLessThanOrEqual(GOLDEN_RTOL);
  }, 600_000);
});

describe('dsv32 conformance --backend errors', () => {
  it('names the accepted backends', async () => {
    const r = await cli(['conformance', '--backend', 'cuda']);
    expect(r.status).toBe(2);
    // the strict parser's one message (src/cli/args.ts), then the usage line
    expect(r.stderr.split('\n')[0]).toBe("dsv32 conformance: --backend must be 'webgpu' or 'webgl' but got 'cuda'");
    expect(r.stderr.split('\n')[1]).toMatch(/^usage: dsv32 conformance .*\[--backend webgpu\|webgl\]/);
  });

  it('without Chromium: one line naming apt-get install chromium, exit 2', async () => {
    const r = await cli(['conformance', '--backend', 'webgl', 'fixtures/vectors/numerics-rope.json'], { ...process.env, PATH: '/nonexistent', CHROMIUM_PATH: '' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^dsv32 conformance: no Chromium found .*install it with `apt-get install chromium`.*\n$/);
    expect(r.stderr.split('\n')).toHaveLength(2);
  });
});
