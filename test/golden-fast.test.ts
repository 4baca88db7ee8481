import { it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { initBackend, tf } from '../src/backend.ts';
import { checkGoldenAttention } from '../src/conformance/checks/golden.ts';
import type { GoldenFixture } from '../src/conformance/core/fixture.ts';

// The golden attention checks (teacher forcing on the recorded attn.in of every step and layer, tolerance
// 1e-4 · max(1, max|b|)) with mlaForward's `attention: 'fast'` (src/sparse_fast.ts kernels, absorbed form in
// prefill too). wasm only: the fast kernels are tuned for it, and test/sparse-fast.test.ts covers cpu.

const GOLDEN = resolve(import.meta.dirname, '..', 'fixtures', 'golden');

function fixture(name: string): GoldenFixture {
  const dir = join(GOLDEN, name);
  return { name, dir, weightsDir: dir, manifest: JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) };
}

beforeAll(async () => {
  await initBackend('wasm');
});

for (const name of ['public-fp32', 'public-fp8']) {
  it(`${name} [wasm only]: attention 'fast' passes attn.qr and attn.out for every step and layer`, async () => {
    const before = tf.memory().numTensors;
    const rows = (await checkGoldenAttention(fixture(name), { attention: 'fast' })).filter((r) => r.check.startsWith('attn.'));
    expect(tf.memory().numTensors).toBe(before);
    expect(rows.length).toBe(30); // 5 steps × 3 layers × (qr, out)
    expect(rows.filter((r) => !r.pass).map((r) => `${r.check} step ${r.step} layer ${r.layer}: ${r.reason}`)).toEqual([]);
    for (const r of rows) expect(r.max_rel_err).toBeLessThanOrEqual(1e-4);
  });
}
