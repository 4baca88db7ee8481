/**
 * The explorer's view model (src/browser/compute.ts) in Node, on wasm and cpu: what the page shows
 * for a layer and step equals what the official code recorded (fixtures/golden/public-fp32 and its
 * RoPE-bug trace), and a recorded value that differs is shown as a mismatch.
 */
import { it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { ModelConfig } from '../src/config.ts';
import type { SafetensorsFile } from '../src/safetensors.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../src/node.ts';
import { loadLayerWeights, type LayerWeights } from '../src/checkpoint.ts';
import { computeView, type OpenFixture } from '../src/browser/compute.ts';
import { asSet, expectLayer0Step0Official, rowsOf } from './helpers/explorer-golden.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';

const DIR = resolve('fixtures/golden/public-fp32');
const BUG = resolve('fixtures/golden/public-fp32-indexer-rope-bug/trace.safetensors');

let config: ModelConfig;
let trace: SafetensorsFile;
let bugTrace: SafetensorsFile;
const layers = new Map<number, LayerWeights>();
beforeAll(() => {
  config = loadConfig(join(DIR, 'config.json'));
  trace = openSafetensors(join(DIR, 'trace.safetensors'));
  bugTrace = openSafetensors(BUG);
});

function fixture(overrides: Partial<OpenFixture> = {}): OpenFixture {
  const ckpt = openCheckpoint(DIR);
  return {
    name: 'public-fp32',
    config,
    manifest: JSON.parse(readFileSync(join(DIR, 'manifest.json'), 'utf8')),
    trace,
    bugTrace,
    layer: (L) => layers.get(L) ?? (layers.set(L, loadLayerWeights(ckpt, config, L)), layers.get(L)!),
    ...overrides,
  };
}


describeEachBackend('explorer view model (src/browser/compute.ts)', () => {
  it('layer 0, step 0: scores, selections and the RoPE-bug selections equal the official ones', async () => {
    const v = await computeView(fixture(), 0, 0, 0);
    expect([v.T, v.S, v.startPos]).toEqual([40, 40, 0]);
    expectLayer0Step0Official(v, trace, bugTrace);
    expect(v.topkMatch.every(Boolean)).toBe(true);
    expect(v.bugDiffers.some(Boolean)).toBe(true); // the bug changes some selections
    expect(v.officialBugTopk).not.toBeNull();
    expect(v.routing).toBeNull(); // layer 0 is dense (first_k_dense_replace = 1)
    for (const a of v.attention) expect(a.weights.reduce((x, y) => x + y, 0)).toBeCloseTo(1, 5);
  });

  it('layer 1, decode step 2: selections, routing (experts and combine weights) equal the official ones', async () => {
    const v = await computeView(fixture(), 2, 1, 3);
    expect([v.T, v.S, v.startPos, v.head]).toEqual([1, 42, 41, 3]);
    expect(v.topk.map(asSet)).toEqual(rowsOf(trace, 'step2.expected.layer1.indexer.topk').map(asSet));
    expect(v.officialBugTopk).toBeNull(); // not teacher-forcible beyond layer 0, step 0
    const ids = rowsOf(trace, 'step2.expected.layer1.gate.indices');
    const weights = rowsOf(trace, 'step2.expected.layer1.gate.weights');
    expect(v.routing!.map((r) => r.experts)).toEqual(ids);
    v.routing!.forEach((r, t) => r.weights.forEach((w, j) => expect(Math.abs(w - weights[t]![j]!)).toBeLessThanOrEqual(1e-4)));
    expect(v.routing![0]!.keptGroups).toHaveLength(config.topk_group);
    // the chosen experts lie in kept groups
    const per = config.n_routed_experts / config.n_group;
    for (const e of v.routing![0]!.experts) expect(v.routing![0]!.keptGroups).toContain(Math.floor(e / per));
    expect(v.attnOutRelErr).toBeLessThanOrEqual(1e-4);
  });

  it('a recorded selection that differs is shown as a mismatch', async () => {
    const name = 'step0.expected.layer0.indexer.topk';
    const doctored: SafetensorsFile = {
      ...trace,
      read: (n: string) => {
        const v = trace.read(n);
        if (n !== name) return v;
        const copy = v.slice() as typeof v;
        const w = trace.info(n).shape[1]!;
        (copy as unknown as (number | bigint)[])[39 * w] = typeof copy[0] === 'bigint' ? 38n : 38; // row t = 39: position 38 is selected twice
        return copy;
      },
    };
    const v = await computeView(fixture({ trace: doctored }), 0, 0, 0);
    expect(v.topkMatch[39]).toBe(false);
    expect(v.topkMatch.slice(0, 39).every(Boolean)).toBe(true);
  });

  it('names the argument out of range', async () => {
    await expect(computeView(fixture(), 9, 0, 0)).rejects.toThrow('computeView(): step must be one of 0, 1, 2, 3, 4 but got 9');
    await expect(computeView(fixture(), 0, 3, 0)).rejects.toThrow('computeView(): layer must be an integer in [0, 3) but got 3');
    await expect(computeView(fixture(), 0, 0, 4)).rejects.toThrow('computeView(): head must be an integer in [0, 4) but got 4');
  });

  it('does not leak tensors', async () => {
    const fx = fixture();
    await expectNoTensorLeak(() => computeView(fx, 1, 1, 0), 2);
  });
});
