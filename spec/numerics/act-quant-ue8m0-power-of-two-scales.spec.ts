/*---
id: numerics.fp8.act-quant-ue8m0
title: ue8m0 activation scales are the smallest power of two ≥ amax/448, so the e4m3 values fit
official: inference/kernel.py fast_round_scale, fast_log2_ceil (scale_fmt ue8m0)
description: ue8m0 block scales are powers of two rounded up from amax·float32(1/448); codes match the vector exactly
see: docs/spec-notes.md#activation-quantization; fixtures/vectors/numerics-act-quant.json (ue8m0)
---*/
import { beforeAll, it, expect } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { actQuant, e4m3Encode } from '../../src/fp8.ts';
import { assertClose, loadVector } from '../harness/index.ts';

const v = loadVector('numerics-act-quant');

beforeAll(async () => {
  await initBackend();
});

it('scales and codes equal the vector exactly', () => {
  const x = tf.tensor2d(v.inputs.x);
  const { q, scale } = actQuant(x, 'ue8m0', v.inputs.block);
  assertClose(scale, v.expected.ue8m0.scales);
  assertClose(Array.from(q.dataSync(), e4m3Encode), (v.expected.ue8m0.codes as number[][]).flat());
  tf.dispose([x, q, scale]);
});

it('every scale is a power of two s with s/2 < amax·float32(1/448) ≤ s', () => {
  const rows = v.inputs.x as number[][];
  const x = tf.tensor2d(rows);
  const { q, scale } = actQuant(x, 'ue8m0');
  const s = scale.arraySync() as number[][];
  rows.forEach((row, r) => {
    for (let b = 0; b < row.length / 128; b++) {
      const amax = Math.max(1e-4, ...row.slice(b * 128, b * 128 + 128).map(Math.abs));
      const plain = Math.fround(Math.fround(amax) * Math.fround(1 / 448));
      const sb = s[r]![b]!;
      expect(Number.isInteger(Math.log2(sb))).toBe(true);
      expect(sb >= plain && sb / 2 < plain).toBe(true);
    }
  });
  tf.dispose([x, q, scale]);
});
