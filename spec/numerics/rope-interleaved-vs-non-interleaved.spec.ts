/*---
id: numerics.rope.layouts
title: MLA rotates interleaved pairs (2i, 2i+1); the indexer rotates halves (i, i + R/2); the two differ
official: inference/model.py apply_rotary_emb (interleaved flag)
description: interleaved (MLA) and non-interleaved rotate-half (indexer) rotations match the vector at positions up to 163839; the layouts differ
see: docs/spec-notes.md#rope-layouts (the 2025-11 indexer fix); fixtures/vectors/numerics-rope.json
---*/
import { beforeAll, it, expect } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { applyRope, ropeAngles, yarnFrequencies } from '../../src/rope.ts';
import { assertClose, assertThrows, loadVector } from '../harness/index.ts';

const v = loadVector('numerics-rope');

beforeAll(async () => {
  await initBackend();
});

for (const [k, c] of (v.cases as any[]).entries()) {
  const freqs = yarnFrequencies({
    dim: c.config.R, theta: c.config.theta, factor: c.config.factor, originalMaxPos: c.config.L0,
    betaFast: c.config.bf, betaSlow: c.config.bs, maxSeqLen: c.config.max_seq_len,
  });
  for (const [layout, interleaved] of [['rope_interleaved', true], ['rope_non_interleaved', false]] as const) {
    it(`case ${k}: ${layout} at positions ${c.positions.join(', ')}`, () => {
      (c.positions as number[]).forEach((t, r) => {
        const x = tf.tensor2d([c.x[r]]);
        const { cos, sin } = ropeAngles(freqs, t, 1);
        const y = applyRope(x, cos, sin, interleaved);
        const atol = 1e-6 + 4 * t * 2 ** -24 * Math.max(...(c.x[r] as number[]).map(Math.abs));
        assertClose(y, [c[layout][r]], { atol });
        tf.dispose([x, cos, sin, y]);
      });
    });
  }
  it(`case ${k}: the two layouts give different results away from position 0`, () => {
    const r = 1;
    expect(c.rope_interleaved[r]).not.toEqual(c.rope_non_interleaved[r]);
    const x = tf.tensor2d([c.x[r]]);
    const { cos, sin } = ropeAngles(freqs, c.positions[r], 1);
    const ya = applyRope(x, cos, sin, true);
    const yb = applyRope(x, cos, sin, false);
    const a = ya.dataSync();
    const b = yb.dataSync();
    tf.dispose([x, cos, sin, ya, yb]);
    expect(Math.max(...Array.from(a, (ai, i) => Math.abs(ai - b[i]!)))).toBeGreaterThan(1e-3);
  });
}

it('an odd rotary dim is rejected', () => {
  const { cos, sin } = ropeAngles(new Float32Array(2), 0, 1);
  assertThrows(RangeError, () => applyRope(tf.zeros([1, 5]), cos, sin, true), /last dim R of x must be even but got 5/);
});
