import { it, expect, beforeAll, afterAll, beforeEach } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { tf } from '../src/backend.ts';
import { type WritableTensor, type Dtype } from '../src/safetensors.ts';
import { loadConfig, openCheckpoint, openSafetensors, writeSafetensors } from '../src/node.ts';
import { loadLayerWeights, disposeLayerWeights } from '../src/checkpoint.ts';
import { createIndexerCache, disposeIndexerCache, indexerScores } from '../src/indexer.ts';
import { selectTopK } from '../src/topk.ts';
import { checkGoldenIndexer } from '../src/conformance/checks/golden.ts';
import { openGolden, type GoldenFixture } from '../src/conformance/core/fixture.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';

// long synchronous checks: let the worker answer the runner's messages between tests (vitest RPC timeout)
beforeEach(() => new Promise<void>((resolve) => setImmediate(resolve)));

const GOLDEN = resolve('fixtures/golden');
const fixture = (name: string): GoldenFixture => openGolden({ type: 'golden', name, dir: join(GOLDEN, name) });
const failures = (rows: { pass: boolean }[]): unknown[] => rows.filter((r) => !r.pass);

/** A copy of public-fp32 whose trace is edited by `edit` (weights stay in the original folder). */
function doctored(edit: (t: Record<string, WritableTensor>) => void): GoldenFixture {
  const dir = mkdtempSync(join(tmpdir(), 'dsv32-golden-indexer-'));
  tmpDirs.push(dir);
  const src = openSafetensors(join(GOLDEN, 'public-fp32', 'trace.safetensors'));
  const tensors: Record<string, WritableTensor> = {};
  for (const name of src.names()) {
    const raw = src.readRaw(name);
    tensors[name] = { dtype: raw.dtype as Dtype, shape: raw.shape, data: raw.bytes };
  }
  src.close();
  edit(tensors);
  writeSafetensors(join(dir, 'trace.safetensors'), tensors);
  const manifest = readFileSync(join(GOLDEN, 'public-fp32', 'manifest.json'), 'utf8');
  writeFileSync(join(dir, 'manifest.json'), manifest);
  return { name: 'doctored', dir, manifest: JSON.parse(manifest), weightsDir: join(GOLDEN, 'public-fp32') };
}
const tmpDirs: string[] = [];
afterAll(() => tmpDirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describeEachBackend('golden indexer checks (src/conformance/checks/indexer.ts)', () => {
  it('public-fp32: every step and layer passes (scores and selections)', async () => {
    const rows = await checkGoldenIndexer(fixture('public-fp32'));
    expect(failures(rows)).toEqual([]);
    expect(rows.filter((r) => r.check === 'indexer.score')).toHaveLength(5 * 3);
    expect(rows.filter((r) => r.check === 'indexer.topk')).toHaveLength(5 * 3);
  });

  it('public-fp8: every step and layer passes (ue8m0 scales, FP8 linears)', async () => {
    const rows = await checkGoldenIndexer(fixture('public-fp8'));
    expect(failures(rows)).toEqual([]);
    expect(rows).toHaveLength(2 * 5 * 3);
  });

  it('rope-bug case: the interleaved layout reproduces the bug, the shipped one the base folder', async () => {
    const rows = await checkGoldenIndexer(fixture('public-fp32-indexer-rope-bug'));
    expect(failures(rows)).toEqual([]);
    const checks = rows.map((r) => `${r.check}@${r.layer}`);
    expect(checks).toContain('rope_bug.interleaved_reproduces_bug@0');
    for (const L of [0, 1, 2]) {
      expect(checks).toContain(`rope_bug.shipped_reproduces_base@${L}`);
      expect(checks).toContain(`rope_bug.shipped_differs_from_bug@${L}`);
    }
  });

  it('the pre-fix interleaved layout does NOT reproduce public-fp32’s selections (a regression cannot pass)', () => {
    const dir = join(GOLDEN, 'public-fp32');
    const config = loadConfig(join(dir, 'config.json'));
    const ckpt = openCheckpoint(dir);
    const trace = openSafetensors(join(dir, 'trace.safetensors'));
    for (let L = 0; L < config.num_hidden_layers; L++) {
      const w = loadLayerWeights(ckpt, config, L);
      const cache = createIndexerCache();
      const sel = tf.tidy(() => {
        const x = trace.readTensor(`step0.expected.layer${L}.attn.in`).reshape([40, -1]) as tf.Tensor2D;
        const qr = trace.readTensor(`step0.expected.layer${L}.attn.qr`).reshape([40, -1]) as tf.Tensor2D;
        const I = indexerScores(x, qr, w.attn.indexer, cache, 0, { config, maxSeqLen: 8192, ropeInterleaved: true });
        return selectTopK(I, 0, config.index_topk).arraySync();
      });
      const expected = Array.from(trace.read(`step0.expected.layer${L}.indexer.topk`) as BigInt64Array, Number);
      const rowsDiffer = sel.filter((row, t) => row.join() !== expected.slice(t * 16, (t + 1) * 16).join()).length;
      expect(rowsDiffer).toBeGreaterThan(10);
      disposeIndexerCache(cache);
      disposeLayerWeights(w);
    }
  });

  it('fails a perturbed score, a swapped selection and a missing input with reasons, never throwing', async () => {
    const fx = doctored((t) => {
      const s = t['step1.expected.layer1.indexer.score']!;
      const v = new Float32Array((s.data as Uint8Array).slice().buffer);
      v[7]! += 0.01;
      t['step1.expected.layer1.indexer.score'] = { ...s, data: v };
      const k = t['step0.expected.layer2.indexer.topk']!;
      const idx = new BigInt64Array((k.data as Uint8Array).slice().buffer);
      // row 39 (sparse): replace its first selected position by one it did not select
      const row = Array.from(idx.subarray(39 * 16, 40 * 16), Number);
      const missing = Array.from({ length: 40 }, (_, s) => s).find((s) => !row.includes(s))!;
      idx[39 * 16] = BigInt(missing);
      t['step0.expected.layer2.indexer.topk'] = { ...k, data: idx };
      delete t['step2.expected.layer0.attn.in'];
    });
    const rows = await checkGoldenIndexer(fx);
    const failed = rows.filter((r) => !r.pass).map((r) => `${r.check}@${r.step}/${r.layer}`);
    // layer-major order; step 2 of layer 0 is untraced (the attention side's `trace` row), 3 and 4 are skipped
    expect(failed).toEqual(['indexer.score@3/0', 'indexer.score@4/0', 'indexer.score@1/1', 'indexer.topk@0/2']);
    const topk = rows.find((r) => r.check === 'indexer.topk' && r.step === 0 && r.layer === 2)!;
    expect(topk.reason).toMatch(/position\(s\) differ away from a k-th-score tie \(t=39/);
    const score = rows.find((r) => r.check === 'indexer.score' && r.step === 1 && r.layer === 1)!;
    expect(score.max_abs_err).toBeCloseTo(0.01, 4);
    expect(rows.some((r) => r.step === 2 && r.layer === 0)).toBe(false); // untraced: no indexer row
    const skipped = rows.find((r) => r.step === 3 && r.layer === 0)!;
    expect(skipped.reason).toBe('skipped: an earlier step of layer 0 did not run, so the cache is not teacher-forced');
    const none = await checkGoldenIndexer({ name: 'nowhere', dir: '/nonexistent', manifest: {}, weightsDir: '/nonexistent' });
    expect(none).toHaveLength(1);
    expect(none[0]).toMatchObject({ case: 'nowhere', check: 'config', pass: false }); // the case cannot be opened: one row
  });

  it('leaks no tensor', async () => {
    await expectNoTensorLeak(() => checkGoldenIndexer(fixture('public-fp32-indexer-rope-bug')), 1);
  });
});
