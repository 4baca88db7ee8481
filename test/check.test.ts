/**
 * `dsv32 check` (src/check/): verdicts of the official bf16 traces (fixtures/traces/, DeepSeek's code),
 * diagnosis of every catalogue switch on traces made here with dsv32's bf16 mode, localization of a
 * single wrong tensor, and bad input as failed rows.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../src/backend.ts';
import { writeTrace } from '../src/check/dump.ts';
import { checkTrace, openCheckFixture } from '../src/check/run.ts';
import { DEVIATION_IDS, type DeviationId } from '../src/deviations.ts';
import { closeCase } from '../src/conformance/core/case.ts';
import { openSafetensors, writeSafetensors } from '../src/node.ts';
import type { Precision } from '../src/precision.ts';
import type { WritableTensor } from '../src/safetensors.ts';
import { describeEachBackend, expectNoTensorLeak, TEST_BACKENDS } from './helpers/backends.ts';

const ROOT = resolve(import.meta.dirname, '..');
const FP8 = join(ROOT, 'fixtures/golden/public-fp8');
const FP32 = join(ROOT, 'fixtures/golden/public-fp32');
const FP8_2 = join(ROOT, 'fixtures/golden/public2-fp8');
const TRACES = join(ROOT, 'fixtures/traces');
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'dsv32-check-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
// each judge is synchronous for seconds: give vitest's worker RPC an event-loop turn between tests
afterEach(() => new Promise<void>((r) => setImmediate(r)));

/**
 * The catalogue runs (one trace per switch, each judged and diagnosed) take ~3 s each on wasm and ~15 s on
 * the cpu backend; they run on the first test backend only. Their numerics are the model's bf16 rounding
 * (done in JS, the same on every backend) and the reference forward, which the other blocks and
 * test/model.test.ts run on every backend.
 */
function describeFirstBackend(title: string, body: () => void): void {
  const backend = TEST_BACKENDS[0]!;
  describe(`${title} [${backend}]`, () => {
    beforeAll(async () => {
      await initBackend(backend);
    });
    body();
  });
}

/** A trace of dsv32's own forward on a fixture (written to the temp dir). */
function ownTrace(fixtureDir: string, precision: Precision, deviations: DeviationId[] = []): string {
  const path = join(dir, `${fixtureDir.split('/').pop()}.${precision}.${deviations.join('+') || 'spec'}.${Math.random().toString(36).slice(2)}.safetensors`);
  const fixture = openCheckFixture(fixtureDir);
  try {
    writeTrace(path, fixture, { precision, deviations: new Set(deviations) });
  } finally {
    closeCase(fixture);
  }
  return path;
}

/** Every tensor of a safetensors file, raw, with `edit` applied (name → new tensor, or null to drop). */
function rewrite(src: string, dst: string, edit: (name: string, t: WritableTensor) => WritableTensor | null): void {
  const f = openSafetensors(src);
  const out: Record<string, WritableTensor> = {};
  for (const name of f.names()) {
    const raw = f.readRaw(name);
    const t = edit(name, { dtype: raw.dtype, shape: raw.shape, data: raw.bytes });
    if (t) out[name] = t;
  }
  f.close();
  writeSafetensors(dst, out);
}

/** The fixture trace with tensor `name` multiplied by `factor` (float32). */
function scaledTrace(fixtureDir: string, name: string, factor: number): string {
  const path = join(dir, `scaled.${name}.safetensors`);
  const values = openSafetensors(join(fixtureDir, 'trace.safetensors'));
  rewrite(join(fixtureDir, 'trace.safetensors'), path, (n, t) =>
    n === name ? { dtype: 'F32', shape: t.shape, data: (values.read(n) as Float32Array).map((v) => v * factor) } : t);
  values.close();
  return path;
}

describeEachBackend('dsv32 check: the official bf16 traces (fixtures/traces)', () => {
  it('the official run passes at bf16 precision (every row)', () => {
    const report = checkTrace(join(TRACES, 'public-fp8.bf16.official.safetensors'), FP8);
    expect(report.precision).toBe('bf16');
    expect(report.rows.filter((r) => !r.pass)).toEqual([]);
    expect(report.rows.length).toBe(130);
    expect(report.verdict).toBe('pass');
    expect(report.first_failure).toBeNull();
  });

  it('indexer-rope-interleaved: fails first at step 0 layer 0 indexer.score, diagnosed in every layer', () => {
    const report = checkTrace(join(TRACES, 'public-fp8.bf16.indexer-rope-interleaved.safetensors'), FP8);
    expect(report.verdict).toBe('fail');
    expect(report.first_failure).toEqual({ check: 'indexer.score', step: 0, layer: 0 });
    expect(report.diagnosis.map((d) => d.id)).toEqual(['indexer-rope-interleaved']);
    expect(report.diagnosis[0]!.layers).toEqual([0, 1, 2]);
    // localized: only the indexer's own rows fail; attention is judged on the trace's own selections
    expect(new Set(report.rows.filter((r) => !r.pass).map((r) => r.check))).toEqual(new Set(['indexer.score', 'indexer.topk']));
  });

  it('softmax-no-mscale: fails first at step 0 layer 0 attn.out, only attn.out rows fail', () => {
    const report = checkTrace(join(TRACES, 'public-fp8.bf16.softmax-no-mscale.safetensors'), FP8);
    expect(report.first_failure).toEqual({ check: 'attn.out', step: 0, layer: 0 });
    expect(report.diagnosis.map((d) => d.id)).toEqual(['softmax-no-mscale']);
    expect(new Set(report.rows.filter((r) => !r.pass).map((r) => r.check))).toEqual(new Set(['attn.out']));
  });
});

describeEachBackend('dsv32 check: float32 traces', () => {
  it('the fixtures\' own float32 traces pass at fp32 precision', () => {
    for (const fx of [FP32, FP8, FP8_2]) {
      const report = checkTrace(join(fx, 'trace.safetensors'), fx);
      expect(report.precision).toBe('fp32');
      expect(report.rows.filter((r) => !r.pass)).toEqual([]);
    }
  });

  it.each([
    ['step0.expected.layer0.attn.in', 'attn.in', 0, 0],
    ['step2.expected.layer1.attn.out', 'attn.out', 2, 1],
    ['step3.expected.layer2.gate.weights', 'gate.weights', 3, 2],
    ['step4.expected.logits', 'logits', 4, null],
  ])('%s × 1.01 fails exactly there', (name, check, step, layer) => {
    const report = checkTrace(scaledTrace(FP32, name, 1.01), FP32, { noDiagnosis: true });
    expect(report.verdict).toBe('fail');
    expect(report.first_failure).toEqual({ check, step, layer });
    expect(report.rows.filter((r) => !r.pass).map((r) => `${r.step}/${r.layer}/${r.check}`)).toEqual([`${step}/${layer}/${check}`]);
  });

});

describeFirstBackend('dsv32 check: one tensor × 1.01 (every other float check)', () => {
  it.each([
    ['step1.expected.layer1.attn.qr', 'attn.qr', 1, 1],
    ['step0.expected.layer2.indexer.score', 'indexer.score', 0, 2],
    ['step0.expected.layer1.ffn.in', 'ffn.in', 0, 1],
    ['step0.expected.layer0.ffn.out', 'ffn.out', 0, 0],
  ])('%s × 1.01 fails exactly there', (name, check, step, layer) => {
    const report = checkTrace(scaledTrace(FP32, name, 1.01), FP32, { noDiagnosis: true });
    expect(report.first_failure).toEqual({ check, step, layer });
    expect(report.rows.filter((r) => !r.pass).map((r) => `${r.step}/${r.layer}/${r.check}`)).toEqual([`${step}/${layer}/${check}`]);
  });
});

describeFirstBackend('dsv32 check: the catalogue on traces of dsv32\'s own forward', () => {
  it('judging and diagnosing leave no tensor behind', async () => {
    await expectNoTensorLeak(() => checkTrace(join(TRACES, 'public-fp8.bf16.softmax-no-mscale.safetensors'), FP8), 1);
  });

  it('kv-latent-no-fp8-roundtrip is diagnosed on a float32 trace of float32 weights', () => {
    const report = checkTrace(ownTrace(FP32, 'fp32', ['kv-latent-no-fp8-roundtrip']), FP32);
    expect(report.verdict).toBe('fail');
    expect(report.diagnosis.map((d) => d.id)).toEqual(['kv-latent-no-fp8-roundtrip']);
  });

  it('the spec in bf16 passes on every bundled fixture', () => {
    for (const fx of [FP8, FP32, FP8_2]) {
      const report = checkTrace(ownTrace(fx, 'bf16'), fx);
      expect(report.precision).toBe('bf16');
      expect(report.rows.filter((r) => !r.pass)).toEqual([]);
    }
  });

  const visibleInBf16 = DEVIATION_IDS.filter((id) => id !== 'kv-latent-no-fp8-roundtrip' && id !== 'moe-group-fill-zero');
  it.each(visibleInBf16)('%s is diagnosed (public-fp8, bf16)', (id) => {
    const report = checkTrace(ownTrace(FP8, 'bf16', [id]), FP8);
    expect(report.verdict).toBe('fail');
    expect(report.diagnosis.map((d) => d.id)).toEqual([id]);
  });

  it('moe-group-fill-zero is diagnosed on a fixture whose correction biases are strongly negative', () => {
    // public-fp32 with every e_score_correction_bias = −2: σ + b < 0 for every expert, so the official −∞
    // fill and the 0.0 fill choose different experts (0.0 beats every allowed expert)
    const fx = join(dir, 'negative-bias');
    rmSync(fx, { recursive: true, force: true });
    mkdirSync(fx);
    for (const f of ['config.json', 'manifest.json', 'trace.safetensors']) copyFileSync(join(FP32, f), join(fx, f));
    rewrite(join(FP32, 'model.safetensors'), join(fx, 'model.safetensors'), (n, t) =>
      n.endsWith('e_score_correction_bias') ? { dtype: 'F32', shape: t.shape, data: new Float32Array(t.shape[0]!).fill(-2) } : t);
    const spec = checkTrace(ownTrace(fx, 'bf16'), fx);
    expect(spec.rows.filter((r) => !r.pass)).toEqual([]);
    const report = checkTrace(ownTrace(fx, 'bf16', ['moe-group-fill-zero']), fx);
    expect(report.first_failure?.check).toBe('gate.indices');
    expect(report.diagnosis.map((d) => d.id)).toEqual(['moe-group-fill-zero']);
  });
});

describeEachBackend('dsv32 check: bad input is a failed row, never a crash', () => {
  it('a truncated file', () => {
    const path = join(dir, 'truncated.safetensors');
    const bytes = readFileSync(join(TRACES, 'public-fp8.bf16.official.safetensors'));
    writeFileSync(path, bytes.subarray(0, bytes.length - 1000));
    const report = checkTrace(path, FP8);
    expect(report.verdict).toBe('fail');
    expect(report.rows).toHaveLength(1);
    expect(report.rows[0]).toMatchObject({ check: 'trace', pass: false });
    expect(report.rows[0]!.reason).toMatch(/cannot read the trace/);
  });

  it('a mis-shaped tensor: one row naming it and both shapes, the rest judged', () => {
    const path = join(dir, 'misshaped.safetensors');
    rewrite(join(FP32, 'trace.safetensors'), path, (n, t) =>
      n === 'step1.expected.layer2.attn.out' ? { dtype: 'F32', shape: [1, 1, 128], data: new Float32Array(128) } : t);
    const report = checkTrace(path, FP32);
    const failed = report.rows.filter((r) => !r.pass);
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ check: 'attn.out', step: 1, layer: 2 });
    expect(failed[0]!.reason).toBe('tensor step1.expected.layer2.attn.out has shape [1, 1, 128] but the fixture\'s is [1, 1, 256]');
    expect(report.rows.length).toBe(130);
  });

  it('a leading batch dimension of 1 may be left out', () => {
    const path = join(dir, 'no-batch.safetensors');
    rewrite(join(FP32, 'trace.safetensors'), path, (n, t) => (t.shape[0] === 1 && t.shape.length === 3 ? { ...t, shape: t.shape.slice(1) } : t));
    const report = checkTrace(path, FP32, { noDiagnosis: true });
    expect(report.rows.filter((r) => !r.pass)).toEqual([]);
    expect(report.rows.length).toBe(130);
  });

  it('a trace of another fixture (other tokens)', () => {
    const report = checkTrace(join(TRACES, 'public-fp8.bf16.official.safetensors'), FP32);
    expect(report.rows).toHaveLength(1);
    expect(report.rows[0]).toMatchObject({ check: 'input.tokens', pass: false });
    expect(report.rows[0]!.reason).toMatch(/input\.tokens differ from the fixture's/);
  });

  it('a trace of another configuration (no tokens, no tensor of the fixture\'s shapes): one row', () => {
    const path = join(dir, 'other-config.safetensors');
    writeSafetensors(path, {
      'step0.expected.layer0.attn.in': { dtype: 'BF16', shape: [1, 40, 512], data: new Float32Array(40 * 512) },
      'step0.expected.layer0.attn.out': { dtype: 'BF16', shape: [1, 40, 512], data: new Float32Array(40 * 512) },
    });
    const report = checkTrace(path, FP32);
    expect(report.rows).toHaveLength(1);
    expect(report.rows[0]).toMatchObject({ check: 'trace', step: null, layer: null, pass: false });
    expect(report.rows[0]!.reason).toBe(
      'no tensor of the trace fits the fixture (another fixture?): 2 misfit(s), first: tensor step0.expected.layer0.attn.in has shape [1, 40, 512] but the fixture\'s is [1, 40, 256]',
    );
    expect(report.first_failure).toEqual({ check: 'trace', step: null, layer: null });
  });

  it('indices out of range and a float dtype for indices are failed rows', () => {
    const path = join(dir, 'bad-ids.safetensors');
    rewrite(join(FP32, 'trace.safetensors'), path, (n, t) => {
      if (n === 'step0.expected.layer1.gate.indices') return { dtype: 'I32', shape: t.shape, data: new Int32Array(t.shape[0]! * t.shape[1]!).fill(99) };
      if (n === 'step0.expected.layer2.indexer.topk') return { dtype: 'F32', shape: t.shape, data: new Float32Array(t.shape[0]! * t.shape[1]!) };
      return t;
    });
    const report = checkTrace(path, FP32, { noDiagnosis: true });
    const failed = report.rows.filter((r) => !r.pass);
    expect(failed.map((r) => `${r.step}/${r.layer}/${r.check}`)).toEqual(['0/1/gate.indices', '0/2/indexer.topk']);
    expect(failed[0]!.reason).toMatch(/expert id 99 .* is not in \[0, 8\)/);
    expect(failed[1]!.reason).toMatch(/has dtype F32 but must be I64 or I32/);
  });
});

it('roundToBf16 agrees with the safetensors BF16 writer (round to nearest even)', async () => {
  const { roundToBf16 } = await import('../src/precision.ts');
  const x = Float32Array.from({ length: 2000 }, (_, i) => Math.sinh((i - 1000) / 37) * (1 + 2 ** -9 * (i % 5)));
  const path = join(dir, 'bf16.safetensors');
  writeSafetensors(path, { x: { dtype: 'BF16', shape: [x.length], data: x } });
  const f = openSafetensors(path);
  const input = tf.tensor1d(x);
  const rounded = roundToBf16(input);
  expect(Array.from(rounded.dataSync())).toEqual(Array.from(f.read('x') as Float32Array));
  tf.dispose([input, rounded]);
  f.close();
});
