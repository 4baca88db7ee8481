/**
 * Robustness of the model-side golden checks (src/conformance/checks/model.ts, checks/e2e.ts), the --weights/--expect
 * run (weights.ts) and the midpoint flags (fp8/midpoints.ts) on malformed or partial fixtures: a missing
 * or misshapen tensor is a failed row naming it, never a lost run, a raw exception or a leaked tensor.
 *
 * The folders are small perturbed copies of fixtures/golden/public-fp32 (2 steps: the 40-token prefill
 * and one decode step), written to a temp dir. These check the checker, so they run on wasm only.
 */
import { describe, it, expect, beforeAll, afterAll, beforeEach } from 'vitest';
import { mkdtempSync, mkdirSync, rmSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { initBackend, tf } from '../src/backend.ts';
import type { WritableTensor } from '../src/safetensors.ts';
import { openSafetensors, writeSafetensors } from '../src/node.ts';
import { checkGoldenModel } from '../src/conformance/checks/golden.ts';
import { runWeightsConformance } from '../src/conformance/weights.ts';
import { midpointRows, scaleAtPow2Step } from '../src/conformance/fp8/midpoints.ts';
import type { CheckResult } from '../src/conformance/core/rows.ts';

// long synchronous checks: let the worker answer the runner's messages between tests (vitest RPC timeout)
beforeEach(() => new Promise<void>((resolve) => setImmediate(resolve)));

const BASE = resolve('fixtures/golden/public-fp32');
const LAYERS = 3;
let tmp: string;

/**
 * A copy of public-fp32 cut to its first `steps` steps, without the trace tensors `drop` names; the
 * manifest's `weights` points at the base folder. `manifest` edits the copied manifest.
 */
function fixture(
  name: string,
  opts: { steps?: number; drop?: (n: string) => boolean; manifest?: (m: Record<string, unknown>) => void; reshape?: (n: string, shape: number[]) => number[] } = {},
): string {
  const steps = opts.steps ?? 2;
  const dir = join(tmp, name);
  mkdirSync(dir);
  const manifest = JSON.parse(readFileSync(join(BASE, 'manifest.json'), 'utf8')) as Record<string, unknown>;
  manifest.steps = (manifest.steps as unknown[]).slice(0, steps);
  manifest.weights = BASE;
  opts.manifest?.(manifest);
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
  const tr = openSafetensors(join(BASE, 'trace.safetensors'));
  const out: Record<string, WritableTensor> = {};
  for (const n of tr.names()) {
    const s = /^step(\d+)\./.exec(n);
    if ((s && Number(s[1]) >= steps) || opts.drop?.(n)) continue;
    const raw = tr.readRaw(n);
    out[n] = { dtype: raw.dtype, shape: opts.reshape ? opts.reshape(n, raw.shape) : raw.shape, data: raw.bytes };
  }
  tr.close();
  writeSafetensors(join(dir, 'trace.safetensors'), out);
  return dir;
}

/** checkGoldenModel on a folder, as the runner gives it (manifest read, weights resolved), with the tensor count. */
async function model(dir: string): Promise<{ rows: CheckResult[]; leaked: number }> {
  const before = tf.memory().numTensors;
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Record<string, unknown>;
  const rows = await checkGoldenModel({ name: 'case', dir, manifest, weightsDir: BASE });
  return { rows, leaked: tf.memory().numTensors - before };
}

const at = (rows: CheckResult[], check: string, step: number | null, layer: number | null) =>
  rows.filter((r) => r.check === check && r.step === step && r.layer === layer);
const failed = (rows: CheckResult[]) => rows.filter((r) => !r.pass).map((r) => `${r.check}:${r.step}:${r.layer}: ${r.reason}`);

describe('golden model checks on partial and malformed traces [wasm]', () => {
  beforeAll(async () => {
    await initBackend('wasm');
    tmp = mkdtempSync(join(tmpdir(), 'dsv32-robust-model-'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('[wasm] the 2-step copy passes every row (the baseline of the perturbations below)', async () => {
    const { rows, leaked } = await model(fixture('intact'));
    expect(failed(rows)).toEqual([]);
    expect(at(rows, 'e2e.logits', 1, null)).toHaveLength(1);
    expect(leaked).toBe(0);
  });

  it('[wasm] one attn.qr removed: every other e2e row of every layer and step is still made and passes; no throw, no leak', async () => {
    const { rows, leaked } = await model(fixture('no-qr', { drop: (n) => n === 'step0.expected.layer1.attn.qr' }));
    expect(rows.filter((r) => /threw/.test(r.reason ?? ''))).toEqual([]);
    expect(failed(rows)).toEqual([]);
    for (let step = 0; step < 2; step++) {
      for (let l = 0; l < LAYERS; l++) {
        for (const check of ['e2e.attn.in', 'e2e.attn.out', 'e2e.ffn.out', 'e2e.indexer.score', 'e2e.indexer.topk']) {
          expect(at(rows, check, step, l), `${check} step ${step} layer ${l}`).toHaveLength(1);
        }
        expect(at(rows, 'e2e.attn.qr', step, l)).toHaveLength(step === 0 && l === 1 ? 0 : 1);
      }
      expect(at(rows, 'e2e.logits', step, null)).toHaveLength(1);
      expect(at(rows, 'logits', step, null)).toHaveLength(1);
    }
    expect(leaked).toBe(0);
  });

  it('[wasm] layer 2 not traced: rows of layers 0–1 and the e2e logits are still made and pass; no layer-2 row, no throw', async () => {
    const { rows, leaked } = await model(fixture('no-layer2', { drop: (n) => /\.layer2\./.test(n) }));
    expect(rows.filter((r) => /threw/.test(r.reason ?? ''))).toEqual([]);
    expect(failed(rows)).toEqual([]);
    expect(rows.filter((r) => r.layer === 2)).toEqual([]);
    for (let step = 0; step < 2; step++) {
      for (let l = 0; l < 2; l++) {
        for (const check of ['block.attn_in', 'block.ffn_in', 'ffn.out', 'e2e.attn.in', 'e2e.attn.qr', 'e2e.attn.out', 'e2e.ffn.out', 'e2e.indexer.topk']) {
          expect(at(rows, check, step, l), `${check} step ${step} layer ${l}`).toHaveLength(1);
        }
      }
      expect(at(rows, 'e2e.logits', step, null)).toHaveLength(1);
      // the residual stream cannot be rebuilt past layer 2 without its recorded outputs
      expect(at(rows, 'logits', step, null)).toHaveLength(0);
    }
    expect(leaked).toBe(0);
  });

  it('[wasm] a missing gate.indices fails the gate rows naming the tensor; ffn.out of that layer is still made and passes', async () => {
    const { rows, leaked } = await model(fixture('no-gate-idx', { drop: (n) => n === 'step1.expected.layer2.gate.indices' }));
    for (const prefix of ['', 'e2e.']) {
      const ffn = at(rows, `${prefix}ffn.out`, 1, 2);
      expect(ffn).toHaveLength(1);
      expect(ffn[0]!.pass).toBe(true);
      const gi = at(rows, `${prefix}gate.indices`, 1, 2);
      expect(gi).toEqual([expect.objectContaining({ pass: false, reason: 'trace.safetensors has no `step1.expected.layer2.gate.indices`' })]);
      expect(at(rows, `${prefix}gate.weights`, 1, 2)).toEqual([expect.objectContaining({ pass: false })]);
    }
    expect(failed(rows)).toHaveLength(4);
    expect(leaked).toBe(0);
  });

  it('[wasm] a misshapen recorded attn.out is a failed block.residual row naming the shape; later blocks skipped, other rows kept', async () => {
    const dir = fixture('bad-attn-out', {
      drop: (n) => n === 'step0.expected.layer0.attn.out',
    });
    // put back attn.out of step 0 layer 0 with 39 rows instead of 40
    const tr = openSafetensors(join(dir, 'trace.safetensors'));
    const out: Record<string, WritableTensor> = {};
    for (const n of tr.names()) {
      const raw = tr.readRaw(n);
      out[n] = { dtype: raw.dtype, shape: raw.shape, data: raw.bytes.slice() };
    }
    tr.close();
    const base = openSafetensors(join(BASE, 'trace.safetensors'));
    const ao = base.read('step0.expected.layer0.attn.out') as Float32Array;
    base.close();
    out['step0.expected.layer0.attn.out'] = { dtype: 'F32', shape: [1, 39, 256], data: ao.slice(0, 39 * 256) };
    writeSafetensors(join(dir, 'trace.safetensors'), out);
    const { rows, leaked } = await model(dir);
    expect(rows.filter((r) => /threw|broadcast/.test(r.reason ?? ''))).toEqual([]);
    expect(at(rows, 'block.residual', 0, 0)).toEqual([
      expect.objectContaining({ pass: false, reason: expect.stringMatching(/`step0\.expected\.layer0\.attn\.out` must have shape \[1, 40, 256\] but has \[1, 39, 256\]/) }),
    ]);
    expect(at(rows, 'block.ffn_in', 0, 0)).toHaveLength(0);
    expect(at(rows, 'logits', 0, null)).toHaveLength(0);
    expect(at(rows, 'logits', 1, null)).toEqual([expect.objectContaining({ pass: true })]);
    expect(at(rows, 'e2e.attn.out', 0, 0)).toEqual([expect.objectContaining({ pass: false, reason: 'length 10240 ≠ expected 9984' })]);
    // still made; it fails: following the official KV-latent rounding at layer 0 of step 0 needs that record
    expect(at(rows, 'e2e.logits', 1, null)).toHaveLength(1);
    expect(at(rows, 'e2e.attn.in', 1, 2)).toHaveLength(1);
    expect(leaked).toBe(0);
  });

  it('[wasm] a gap in the steps or too few input.tokens is one failed manifest row, nothing run', async () => {
    const gap = await model(fixture('gap', { manifest: (m) => ((m.steps as Array<{ start_pos: number }>)[1]!.start_pos = 41) }));
    expect(gap.rows).toEqual([
      expect.objectContaining({ check: 'manifest', pass: false, reason: 'manifest.json steps[1].start_pos must be 40 (steps are one contiguous run from position 0) but got 41' }),
    ]);
    const short = fixture('short-tokens', { steps: 5, drop: (n) => n === 'input.tokens' });
    const tr = openSafetensors(join(short, 'trace.safetensors'));
    const out: Record<string, WritableTensor> = {};
    for (const n of tr.names()) {
      const raw = tr.readRaw(n);
      out[n] = { dtype: raw.dtype, shape: raw.shape, data: raw.bytes.slice() };
    }
    tr.close();
    out['input.tokens'] = { dtype: 'I64', shape: [42], data: new Int32Array(42).fill(1) };
    writeSafetensors(join(short, 'trace.safetensors'), out);
    const r = await model(short);
    expect(r.rows).toEqual([expect.objectContaining({ check: 'manifest', pass: false, reason: 'input.tokens must hold at least 44 ids (the steps\' positions) but holds 42' })]);
    expect(gap.leaked + r.leaked).toBe(0);
  });

  it('[wasm] RoPE-bug record at step 1 (a decode step of one query row) holding 40 rows: a failed row naming the shape', async () => {
    const dir = join(tmp, 'bug-step1');
    mkdirSync(dir);
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ weights: BASE }));
    const bug = openSafetensors(resolve('fixtures/golden/public-fp32-indexer-rope-bug/trace.safetensors'));
    const out: Record<string, WritableTensor> = {};
    for (const n of bug.names()) {
      const raw = bug.readRaw(n);
      out[n.replace(/^step0\./, 'step1.')] = { dtype: raw.dtype, shape: raw.shape, data: raw.bytes.slice() };
    }
    bug.close();
    writeSafetensors(join(dir, 'trace.safetensors'), out);
    const { rows, leaked } = await model(dir);
    expect(rows).toHaveLength(LAYERS + 1);
    for (const [l, r] of rows.slice(0, LAYERS).entries()) {
      expect(r).toMatchObject({ check: 'e2e.rope_bug.interleaved_reproduces_bug', step: 1, layer: l, pass: false });
      expect(r.reason).toMatch(new RegExp(`step1\\.interleaved_bug\\.layer${l}\\.indexer\\.topk must have shape \\[1, k\\] \\(step 1 has 1 query rows\\) but has \\[40, `));
    }
    // and its 40 tokens do not reach step 1 (position 40)
    expect(rows[LAYERS]).toMatchObject({ pass: false, reason: "input.tokens must hold at least 41 ids (the steps' positions) but holds 40" });
    expect(leaked).toBe(0);
  });
});

describe('--weights with --expect [wasm]', () => {
  beforeAll(async () => {
    await initBackend('wasm');
    tmp = mkdtempSync(join(tmpdir(), 'dsv32-robust-weights-'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('[wasm] a chosen layer the expect trace does not record is a failed row; case is the folder name', async () => {
    const dir = fixture('layer0-only', { steps: 1, drop: (n) => /\.layer[12]\./.test(n) });
    const rows = await runWeightsConformance({ weightsDir: BASE, layers: [0, 1], expectFile: join(dir, 'trace.safetensors') });
    expect(new Set(rows.map((r) => r.case))).toEqual(new Set(['public-fp32']));
    expect(failed(rows)).toEqual([`weights.expect:0:1: ${join(dir, 'trace.safetensors')} has no step0.expected.layer1.* tensors: layer 1 is not compared`]);
    // layer 0 is still compared
    expect(rows.filter((r) => r.layer === 0 && r.check === 'attn.out')).toEqual([expect.objectContaining({ pass: true })]);
  });
});

describe('runWeightsConformance --expect with a misshapen recorded input', () => {
  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'dsv32-robust-w-'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('[wasm] an attn.in of the wrong width is a failed row naming the tensor and both shapes, no raw tfjs message', async () => {
    const target = 'step0.expected.layer0.attn.in';
    const dir = fixture('bad-width', { steps: 1, reshape: (n, shape) => (n === target ? [1, shape[1]! * 2, shape[2]! / 2] : shape) });
    const rows = await runWeightsConformance({ weightsDir: BASE, layers: [0], expectFile: join(dir, 'trace.safetensors') });
    const bad = rows.filter((r) => !r.pass);
    expect(bad.length).toBeGreaterThan(0);
    expect(bad.some((r) => r.reason === `${target} must be [1, T, 256] (hidden_size 256) but is [1, 80, 128]`)).toBe(true);
    expect(bad.every((r) => !/Based on the provided shape|tensor2d/.test(r.reason ?? ''))).toBe(true);
  });
});

// --- ue8m0 scales at a power-of-two step ---

describe('midpointRows: the ue8m0 power-of-two test is on the raw scale amax · fround(1/448)', () => {
  it('fires for a block whose amax puts the raw scale at a power of two, whatever the rounded scale', () => {
    // amax 56: raw scale 56 · fround(1/448) = 2⁻³ up to float32 rounding; ue8m0 rounds it up to 2⁻³ or,
    // with a raw scale a hair above, to 2⁻²: the block's quantization is then off by a factor of two
    expect(Math.abs(Math.log2(Math.fround(56 * Math.fround(1 / 448))) + 3)).toBeLessThan(1e-6);
    const values = Float32Array.of(56, 3, 57, 3); // two rows, one block each; no element at an e4m3 midpoint
    for (const scales of [Float32Array.of(0.125, 0.25), Float32Array.of(0.25, 0.25)]) {
      expect(midpointRows(values, scales, 2, true)).toEqual([true, false]);
      expect(midpointRows(values, scales, 2, false)).toEqual([false, false]);
    }
    // the rounded scale alone (a power of two by construction) must not decide: amax 57 has scale 2⁻² too
    expect(scaleAtPow2Step(57)).toBe(false);
    expect(scaleAtPow2Step(448)).toBe(true);
    expect(scaleAtPow2Step(448 * 2 ** -20)).toBe(true);
    expect(scaleAtPow2Step(0)).toBe(false); // amax floored at 1e-4: raw scale 1e-4/448, not a power of two
  });

  it('flags only the row of the block (blocks narrower than a row)', () => {
    // rows of 4 in blocks of 2: row 0 = blocks 0, 1; row 1 = blocks 2, 3; block 3 has amax 112 (raw 2⁻²)
    const values = Float32Array.of(3, 5, 7, 9, 10, 11, 112, 1);
    const scales = Float32Array.of(0.0625, 0.0625, 0.0625, 0.25);
    expect(midpointRows(values, scales, 2, true)).toEqual([false, true]);
  });
});
