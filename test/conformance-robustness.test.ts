/**
 * Robustness of the golden checks (attention + indexer side) and of the runner against malformed or
 * partial fixture folders: small perturbed copies of fixtures/golden/public-fp32 (2 steps: the 40-token
 * prefill and one decode step), written to a temp folder. The model side (checks/model.ts, checks/e2e.ts) has its own
 * file, test/conformance-robustness-model.test.ts.
 */
import { it, expect, beforeAll, afterAll, beforeEach } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { tf } from '../src/backend.ts';
import { actQuant } from '../src/fp8.ts';
import type { WritableTensor } from '../src/safetensors.ts';
import { openSafetensors, writeSafetensors } from '../src/node.ts';
import { checkGoldenAttention } from '../src/conformance/checks/golden.ts';
import { checkGoldenIndexer } from '../src/conformance/checks/golden.ts';
import { midpointRows } from '../src/conformance/fp8/midpoints.ts';
import { discoverCases, runGoldenCase } from '../src/conformance/run.ts';
import { openGolden, type GoldenFixture } from '../src/conformance/core/fixture.ts';
import type { CheckResult } from '../src/conformance/core/rows.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';

// long synchronous checks: let the worker answer the runner's messages between tests (vitest RPC timeout)
beforeEach(() => new Promise<void>((resolve) => setImmediate(resolve)));

const BASE = resolve(import.meta.dirname, '..', 'fixtures', 'golden', 'public-fp32');
const TWO_STEPS = [
  { step: 0, start_pos: 0, length: 40 },
  { step: 1, start_pos: 40, length: 1 },
];
/** Messages of tfjs / our kernels that must never reach a row: the checks say what is wrong with the folder. */
const RAW = /slice\(\)|broadcast|indexerScores\(\)|modelForward\(\)|mlaForward\(\)|Cannot read|undefined/;

let tmp: string;
let baseTensors: Record<string, WritableTensor>;
let baseManifest: Record<string, unknown>;

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'dsv32-robust-'));
  baseManifest = JSON.parse(readFileSync(join(BASE, 'manifest.json'), 'utf8'));
  const src = openSafetensors(join(BASE, 'trace.safetensors'));
  baseTensors = {};
  for (const n of src.names()) {
    if (/^step[2-9]\./.test(n)) continue; // two steps keep the checks fast
    const raw = src.readRaw(n);
    baseTensors[n] = { dtype: raw.dtype as WritableTensor['dtype'], shape: raw.shape, data: raw.bytes.slice() };
  }
  src.close();
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A fixture folder `name` in tmp: the 2-step public-fp32 trace, edited; weights from public-fp32. */
function folder(name: string, edit: { manifest?: (m: Record<string, unknown>) => Record<string, unknown>; tensors?: (t: Record<string, WritableTensor>) => void } = {}): GoldenFixture {
  const dir = join(tmp, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  const manifest = (edit.manifest ?? ((m) => m))({ ...baseManifest, steps: TWO_STEPS, weights: BASE });
  const tensors = { ...baseTensors };
  edit.tensors?.(tensors);
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
  writeSafetensors(join(dir, 'trace.safetensors'), tensors);
  return { name, dir, manifest, weightsDir: BASE };
}

const label = (r: CheckResult) => `${r.check}@${r.step}/${r.layer}`;
const failed = (rows: CheckResult[]) => rows.filter((r) => !r.pass);

describeEachBackend('golden checks on malformed folders', () => {
  it('manifest without max_seq_len: falls back to max_position_embeddings, every attention/indexer row passes', async () => {
    const fx = folder('no-max-seq-len', { manifest: ({ max_seq_len: _dropped, ...m }) => m });
    const rows = await checkGoldenAttention(fx);
    // 2 steps × 3 layers × (indexer.score, indexer.topk, attn.qr, attn.out)
    expect(rows).toHaveLength(24);
    expect(failed(rows).map((r) => `${label(r)}: ${r.reason}`)).toEqual([]);
  });

  const malformed: Array<[string, Parameters<typeof folder>[1], RegExp]> = [
    ['gap in steps', { manifest: (m) => ({ ...m, steps: [TWO_STEPS[0], { step: 1, start_pos: 41, length: 1 }] }) }, /^manifest\.json steps\[1\]\.start_pos must be 40 \(steps are one contiguous run from position 0\) but got 41$/],
    ['length-0 step', { manifest: (m) => ({ ...m, steps: [TWO_STEPS[0], { step: 1, start_pos: 40, length: 0 }] }) }, /^manifest\.json steps\[1\]\.length must be ≥ 1 but got 0$/],
    ['steps not an array', { manifest: (m) => ({ ...m, steps: { step: 0 } }) }, /^manifest\.json `steps` must be a non-empty array/],
    [
      'input.tokens shorter than the steps',
      { tensors: (t) => void (t['input.tokens'] = { dtype: 'I64', shape: [30], data: new BigInt64Array(30).fill(1n) }) },
      /^input\.tokens must hold at least 41 ids \(the steps' positions\) but holds 30$/,
    ],
  ];
  for (const [what, edit, reason] of malformed) {
    it(`${what}: exactly one failed 'manifest' row with a clear reason, from every entry point`, async () => {
      const fx = folder(what.replace(/\W+/g, '-'), edit);
      const viaRunner = await runGoldenCase({ type: 'golden', name: fx.name, dir: fx.dir });
      expect(viaRunner).toHaveLength(1);
      expect(viaRunner[0]).toMatchObject({ case: fx.name, check: 'manifest', step: null, layer: null, pass: false });
      expect(viaRunner[0]!.reason).toMatch(reason);
      expect(viaRunner[0]!.reason).not.toMatch(RAW);
      // called directly, each entry point opens (and validates) the case once and reports it once
      expect(await checkGoldenAttention(fx)).toEqual(viaRunner);
      expect(await checkGoldenIndexer(fx)).toEqual(viaRunner);
      expect(() => openGolden({ type: 'golden', name: fx.name, dir: fx.dir })).toThrow(reason);
    });
  }

  it('layer 2 not traced: one failed `trace` row per step, from the attention side only; the other layers pass', async () => {
    const fx = folder('layer2-untraced', { tensors: (t) => Object.keys(t).filter((n) => n.includes('.layer2.')).forEach((n) => delete t[n]) });
    const rows = await checkGoldenAttention(fx);
    expect(failed(rows)).toEqual([
      { case: fx.name, check: 'trace', step: 0, layer: 2, pass: false, max_abs_err: null, max_rel_err: null, reason: 'layer 2 not traced at step 0' },
      { case: fx.name, check: 'trace', step: 1, layer: 2, pass: false, max_abs_err: null, max_rel_err: null, reason: 'layer 2 not traced at step 1' },
    ]);
    expect(rows.filter((r) => r.layer === 2)).toHaveLength(2);
    expect(rows.filter((r) => r.pass)).toHaveLength(16); // layers 0, 1 × 2 steps × 4 checks
    expect((await checkGoldenIndexer(fx)).filter((r) => r.layer === 2)).toEqual([]);
  });

  it('a layer untraced at step 0 only: the `trace` row, then `skipped` rows for the later step (cache not teacher-forced)', async () => {
    const fx = folder('layer1-step0-untraced', { tensors: (t) => delete t['step0.expected.layer1.attn.in'] });
    const rows = (await checkGoldenAttention(fx)).filter((r) => r.layer === 1);
    expect(rows.map((r) => [label(r), r.pass, r.reason])).toEqual([
      ['indexer.score@1/1', false, 'skipped: an earlier step of layer 1 did not run, so the cache is not teacher-forced'],
      ['trace@0/1', false, 'layer 1 not traced at step 0'],
      ['attn.out@1/1', false, 'skipped: an earlier step of layer 1 did not run, so the cache is not teacher-forced'],
    ]);
  });

  it('attn.out with a wrong shape: a shape reason, no FP8-midpoint search; the rest passes', async () => {
    const fx = folder('attn-out-shape', {
      tensors: (t) => {
        const out = t['step0.expected.layer0.attn.out']!;
        t['step0.expected.layer0.attn.out'] = { ...out, shape: [1, 39, 256], data: (out.data as Uint8Array).slice(0, 39 * 256 * 4) };
      },
    });
    const rows = await checkGoldenAttention(fx);
    expect(failed(rows).map(label)).toEqual(['attn.out@0/0']);
    const row = failed(rows)[0]!;
    expect(row.reason).toBe('shape [1, 39, 256] ≠ expected [1, 40, 256] (step0.expected.layer0.attn.out)');
    expect(row.reason).not.toMatch(/midpoint|rows t =/);
    expect(rows).toHaveLength(24);
  });

  it('a missing attn.qr fails the indexer step with the tensor named, keeps the attention rows, and skips the later step', async () => {
    const fx = folder('no-qr', { tensors: (t) => delete t['step0.expected.layer0.attn.qr'] });
    const rows = (await checkGoldenAttention(fx)).filter((r) => r.layer === 0);
    expect(rows.map((r) => [label(r), r.pass])).toEqual([
      ['indexer.score@0/0', false], ['indexer.score@1/0', false],
      ['attn.qr@0/0', false], ['attn.out@0/0', true], ['attn.qr@1/0', true], ['attn.out@1/0', true],
    ]);
    expect(rows[0]!.reason).toMatch(/step0\.expected\.layer0\.attn\.qr/);
    expect(rows[1]!.reason).toMatch(/^skipped: /);
    expect(rows[2]!.reason).toBe('trace has no step0.expected.layer0.attn.qr');
  });

  it('leaks no tensor on the failing folders', async () => {
    const shape = openGolden({ type: 'golden', name: 'attn-out-shape', dir: join(tmp, 'attn-out-shape') });
    const partial = openGolden({ type: 'golden', name: 'layer1-step0-untraced', dir: join(tmp, 'layer1-step0-untraced') });
    await expectNoTensorLeak(async () => {
      await checkGoldenAttention(shape);
      await checkGoldenAttention(partial);
    }, 1);
  });
});

it("runner: a *.json whose `kind` is not a string is a failed row, not silently ignored", () => {
  const dir = mkdtempSync(join(tmpdir(), 'dsv32-kind-'));
  try {
    writeFileSync(join(dir, 'odd.json'), JSON.stringify({ kind: 3 }));
    writeFileSync(join(dir, 'other.json'), JSON.stringify({ name: 'not a vector' }));
    const { cases, errors } = discoverCases([dir]);
    expect(cases).toEqual([]);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ case: 'odd', check: 'read', pass: false });
    expect(errors[0]!.reason).toMatch(/`kind` must be a string naming the vector kind but got 3$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describeEachBackend('midpointRows (ue8m0 power-of-two scale flag)', () => {
  it('flags a block whose amax·float32(1/448) sits just below a power of two, whatever the rounded scale', () => {
    // block 1: amax = 112·(1 − 2⁻²²), amax/448 = 0.25·(1 − 2⁻²²): ue8m0 rounds it up to 0.25 = 2⁻², but
    // noise of one ulp in amax could leave it at 0.25 or not. Its x/s are far from e4m3 midpoints.
    // block 2: amax = 104, amax/448 ≈ 0.232 (not near 2^k); x/s = 416, 4, 8, 12 are e4m3 values exactly.
    const amax = Math.fround(112 * (1 - 2 ** -22));
    expect(Math.log2(amax / 448)).toBeLessThan(-2);
    expect(Math.abs(Math.log2(amax / 448) + 2)).toBeLessThan(1e-6);
    const x = tf.tensor2d([[amax, 1, 2, 3], [104, 1, 2, 3]]);
    const { q, scale } = actQuant(x, 'ue8m0', 4);
    expect(Array.from(scale.dataSync())).toEqual([0.25, 0.25]); // both rounded scales are powers of two
    expect(midpointRows(x.dataSync(), scale.dataSync(), 2, true)).toEqual([true, false]);
    expect(midpointRows(x.dataSync(), scale.dataSync(), 2, false)).toEqual([false, false]); // plain scales: no such rounding
    tf.dispose([x, q, scale]);
  });

  it('flags a token with an element at an e4m3 rounding midpoint (x/s = 4.25 + 1e-6)', () => {
    // scale = 448/448 = 1 with amax 448 → element 4.25 sits between e4m3 values 4 and 4.5
    const x = tf.tensor2d([[448, 4.25 + 1e-6, 1, 2], [448, 4.5, 1, 2]]);
    const { q, scale } = actQuant(x, null, 4);
    expect(midpointRows(x.dataSync(), scale.dataSync(), 2, false)).toEqual([true, false]);
    tf.dispose([x, q, scale]);
  });
});
