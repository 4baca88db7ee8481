/*---
id: numerics.fp8.act-quant-scale
title: The plain activation scale is max(amax, 1e-4) times float32(1/448), computed in float32
official: inference/kernel.py act_quant_kernel (s = amax · fp8_max_inv, amax ≥ 1e-4)
description: without scale_fmt the block scale is float32(max(amax, 1e-4) × float32(1/448)) and the codes are e4m3(x / scale)
see: docs/spec-notes.md#activation-quantization; fixtures/vectors/numerics-act-quant.json (none)
---*/
import { beforeAll, it } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { actQuant, e4m3Encode } from '../../src/fp8.ts';
import { assertClose, assertShape, loadVector } from '../harness/index.ts';

const v = loadVector('numerics-act-quant');

beforeAll(async () => {
  await initBackend();
});

it('scales and codes equal the vector exactly', () => {
  const x = tf.tensor2d(v.inputs.x);
  const { q, scale } = actQuant(x, null, v.inputs.block);
  assertShape(scale, [x.shape[0], x.shape[1] / 128]);
  assertClose(scale, v.expected.none.scales);
  assertClose(Array.from(q.dataSync(), e4m3Encode), (v.expected.none.codes as number[][]).flat());
  tf.dispose([x, q, scale]);
});

it('an all-zero block gets the floor scale float32(1e-4 × float32(1/448))', () => {
  const x = tf.zeros([1, 128]);
  const { q, scale } = actQuant(x, null);
  assertClose(scale, [Math.fround(Math.fround(1e-4) * Math.fround(1 / 448))]);
  tf.dispose([x, q, scale]);
});
