/**
 * The numerics conformance checks on every `fixtures/vectors/numerics-*.json`, on every backend: all rows
 * pass; a copy with one expected value changed fails (so each check can fail); malformed data gives failed
 * rows with a reason instead of an exception.
 */
import { it, expect } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tf } from '../src/backend.ts';
import { checkNumericsVector } from '../src/conformance/vectors_numerics.ts';
import { describeEachBackend } from './helpers/backends.ts';

const DIR = join(import.meta.dirname, '..', 'fixtures', 'vectors');
const FILES = readdirSync(DIR).filter((f) => /^numerics-.*\.json$/.test(f)).sort();
const load = (f: string): any => JSON.parse(readFileSync(join(DIR, f), 'utf8'));

/** One expected value changed per kind, and the check that must then fail. */
const CORRUPTIONS: Record<string, { mutate: (j: any) => void; check: RegExp }[]> = {
  fp8_codec: [
    { mutate: (j) => { j.expected.decode[57] = 1.25; }, check: /^fp8_codec\.decode(_bytes)?$/ },
    { mutate: (j) => { j.expected.codes[300] = (j.expected.codes[300] + 1) % 126; }, check: /^fp8_codec\.(encode|round_tensor)$/ },
  ],
  act_quant: [
    { mutate: (j) => { j.expected.ue8m0.scales[0][1] *= 2; }, check: /^act_quant\.ue8m0\.scales$/ },
    { mutate: (j) => { j.expected.none.codes[1][5] ^= 1; }, check: /^act_quant\.none\.codes$/ },
  ],
  weight_dequant: [{ mutate: (j) => { j.expected.weight[199][299] *= 1 + 2 ** -20; }, check: /^weight_dequant\.weight$/ }],
  hadamard: [{ mutate: (j) => { j.expected.y[2][100] += 1e-4; }, check: /^hadamard\.y$/ }],
  rope: [
    { mutate: (j) => { j.cases[0].freqs[20] *= 1 + 2 ** -20; }, check: /^rope\[0\]\.freqs$/ },
    { mutate: (j) => { j.cases[1].softmax_scale *= 1 + 1e-9; }, check: /^rope\[1\]\.softmax_scale$/ },
    { mutate: (j) => { j.cases[2].rope_interleaved[1][3] += 1e-3; }, check: /^rope\[2\]\.rope_interleaved$/ },
    { mutate: (j) => { j.cases[0].rope_non_interleaved[5][40] += 0.5; /* t = 163839: tolerance ≈ 0.1 */ }, check: /^rope\[0\]\.rope_non_interleaved$/ },
  ],
};

describeEachBackend('numerics vectors', () => {
  it('finds the five numerics vector kinds', () => {
    expect(new Set(FILES.map((f) => load(f).kind))).toEqual(new Set(Object.keys(CORRUPTIONS)));
  });

  for (const f of FILES) {
    it(`${f}: every check passes, without leaking tensors`, async () => {
      const before = tf.memory().numTensors;
      const rows = await checkNumericsVector(f.replace(/\.json$/, ''), load(f));
      expect(tf.memory().numTensors).toBe(before);
      expect(rows.length).toBeGreaterThan(0);
      expect(rows.filter((r) => !r.pass).map((r) => `${r.check}: ${r.reason}`)).toEqual([]);
      for (const r of rows) {
        expect(r.case).toBe(f.replace(/\.json$/, ''));
        expect(r.step).toBeNull();
        expect(r.layer).toBeNull();
      }
    });

    it(`${f}: a corrupted copy fails the matching check`, async () => {
      const original = load(f);
      for (const { mutate, check } of CORRUPTIONS[original.kind]!) {
        const json = structuredClone(original);
        mutate(json);
        const rows = await checkNumericsVector('corrupt', json);
        const failed = rows.filter((r) => !r.pass).map((r) => r.check);
        expect(failed.length).toBeGreaterThan(0);
        for (const name of failed) expect(name).toMatch(check);
      }
    });
  }

  it('malformed data gives failed rows with a reason, never an exception', async () => {
    const cases: [any, RegExp][] = [
      [null, /not a numerics vector kind/],
      [{ kind: 'nope' }, /not a numerics vector kind: "nope"/],
      [{ kind: 'fp8_codec', inputs: { values: [1] }, expected: { decode: [1, 2], codes: [0] } }, /256 entries/],
      [{ kind: 'act_quant', inputs: { x: [[1, 2]], block: 128 }, expected: { none: { codes: [[0, 0]], scales: [[1]] } } }, /N a multiple of blockSize 128/],
      [{ kind: 'weight_dequant', inputs: { codes: [[1, 2]], weight_scale_inv: [[1], [1]] }, expected: { weight: [[0, 0]] } }, /weightDequant\(\): scaleInv must be \[⌈O\/B⌉, ⌈I\/B⌉\]/],
      [{ kind: 'hadamard', inputs: { x: [[1, 2], [3]] }, expected: { y: [] } }, /inputs\.x\[1\] has length 1 but the other rows of inputs\.x have length 2 \(a ragged array\)/],
      [{ kind: 'hadamard', inputs: { x: [[1], [2, 3], [4, 5]] }, expected: { y: [] } }, /inputs\.x\[0\] has length 1 but the other rows of inputs\.x have length 2/],
      [{ kind: 'rope', cases: [{ config: { R: 64 } }] }, /missing 'cases\.0\.config\.theta'/],
      [{ kind: 'rope', cases: 'x' }, /'cases' must be a non-empty array/],
    ];
    for (const [json, reason] of cases) {
      const rows = await checkNumericsVector('bad', json);
      expect(rows.length).toBeGreaterThan(0);
      expect(rows.every((r) => !r.pass)).toBe(true);
      expect(rows.map((r) => r.reason).join(' | ')).toMatch(reason);
    }
  });
});
