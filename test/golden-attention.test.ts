import { it, expect, beforeAll, afterAll, beforeEach } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { tf } from '../src/backend.ts';
import type { WritableTensor } from '../src/safetensors.ts';
import { openSafetensors, writeSafetensors } from '../src/node.ts';
import { checkGoldenAttention } from '../src/conformance/checks/golden.ts';
import type { GoldenFixture } from '../src/conformance/core/fixture.ts';
import type { CheckResult } from '../src/conformance/core/rows.ts';
import { describeEachBackend } from './helpers/backends.ts';

// long synchronous checks: let the worker answer the runner's messages between tests (vitest RPC timeout)
beforeEach(() => new Promise<void>((resolve) => setImmediate(resolve)));

const GOLDEN = resolve(import.meta.dirname, '..', 'fixtures', 'golden');

function fixture(name: string, weights = name): GoldenFixture {
  const dir = join(GOLDEN, name);
  return { name, dir, weightsDir: join(GOLDEN, weights), manifest: JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) };
}

const attnRows = (rows: CheckResult[]) => rows.filter((r) => r.check.startsWith('attn.'));

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'dsv32-golden-attn-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describeEachBackend('checkGoldenAttention', () => {
  for (const name of ['public-fp32', 'public-fp8']) {
    it(`${name}: attn.qr and attn.out pass for every step and layer, after the indexer rows`, async () => {
      const before = tf.memory().numTensors;
      const rows = await checkGoldenAttention(fixture(name));
      expect(tf.memory().numTensors).toBe(before);
      const attn = attnRows(rows);
      // 5 steps × 3 layers × (qr, out)
      expect(attn.length).toBe(30);
      expect(attn.filter((r) => !r.pass).map((r) => `${r.check} step ${r.step} layer ${r.layer}: ${r.reason}`)).toEqual([]);
      for (const r of attn) expect(r.max_rel_err).toBeLessThanOrEqual(1e-4);
      expect(rows.some((r) => r.check.startsWith('indexer'))).toBe(true); // the indexer rows come first
      expect(rows.findIndex((r) => r.check.startsWith('attn.'))).toBeGreaterThan(0);
    });
  }

  it('rope-bug case (no steps): only the indexer rows', async () => {
    const rows = await checkGoldenAttention(fixture('public-fp32-indexer-rope-bug', 'public-fp32'));
    expect(rows.length).toBeGreaterThan(0);
    expect(attnRows(rows)).toEqual([]);
  });

  it('fails (without throwing) on a perturbed attn.out, and says that no FP8 midpoint explains it', async () => {
    // a trace with layer 2 of steps 0-1 only, one attn.out element moved by 0.05
    const src = openSafetensors(join(GOLDEN, 'public-fp32', 'trace.safetensors'));
    const tensors: Record<string, WritableTensor> = {};
    for (const n of src.names()) {
      if (!/^step[01]\.expected\.layer2\./.test(n) && n !== 'input.tokens') continue;
      const raw = src.readRaw(n);
      tensors[n] = { dtype: raw.dtype, shape: raw.shape, data: raw.bytes };
    }
    const out = src.read('step1.expected.layer2.attn.out') as Float32Array;
    const moved = out.slice();
    moved[7] = moved[7]! + 0.05;
    tensors['step1.expected.layer2.attn.out'] = { dtype: 'F32', shape: [1, 1, out.length], data: moved };
    src.close();
    const dir = join(tmp, 'perturbed');
    rmSync(dir, { recursive: true, force: true });
    (await import('node:fs')).mkdirSync(dir);
    writeSafetensors(join(dir, 'trace.safetensors'), tensors);
    const base = fixture('public-fp32');
    const manifest = { ...base.manifest, steps: (base.manifest.steps as unknown[]).slice(0, 2) };
    const rows = attnRows(await checkGoldenAttention({ name: 'perturbed', dir, weightsDir: base.weightsDir, manifest }));
    expect(rows.map((r) => [r.check, r.step, r.layer, r.pass])).toEqual([
      ['attn.qr', 0, 2, true], ['attn.out', 0, 2, true], ['attn.qr', 1, 2, true], ['attn.out', 1, 2, false],
    ]);
    expect(rows[3]!.max_abs_err).toBeCloseTo(0.05, 4);
    expect(rows[3]!.reason).toMatch(/rows \[40\]: (no quantizer input of these rows lies on an e4m3 midpoint|\d+ quantizer inputs on an e4m3 midpoint, no flip)/);
  });

  it('a manifest without max_seq_len falls back to max_position_embeddings (8192 here): every row still passes', async () => {
    const base = fixture('public-fp32');
    const { max_seq_len: _dropped, ...manifest } = base.manifest;
    const rows = await checkGoldenAttention({ name: 'no-max-seq-len', dir: base.dir, weightsDir: base.weightsDir, manifest });
    expect(attnRows(rows)).toHaveLength(30);
    expect(rows.filter((r) => !r.pass)).toEqual([]);
  });

  it('a malformed max_seq_len is one failed `manifest` row, and nothing else runs', async () => {
    const base = fixture('public-fp32');
    const rows = await checkGoldenAttention({ ...base, manifest: { ...base.manifest, max_seq_len: 0 } });
    expect(rows).toEqual([
      { case: 'public-fp32', check: 'manifest', step: null, layer: null, pass: false, max_abs_err: null, max_rel_err: null, reason: 'manifest.json max_seq_len must be an integer ≥ 1 but got 0' },
    ]);
  });
});
