/*---
id: numerics.fp8.weight-dequant-edge-blocks
title: W = W8 · scale[⌊i/128⌋, ⌊j/128⌋], the last row and column blocks may be partial
official: inference/kernel.py weight_dequant
description: a [200, 300] FP8 weight with [2, 3] block scales (partial last blocks) dequantizes exactly to the vector
see: docs/spec-notes.md#fp8-weights; fixtures/vectors/numerics-weight-dequant.json
---*/
import { beforeAll, it } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { decodeE4m3Bytes, weightDequant } from '../../src/fp8.ts';
import { assertClose, assertShape, assertThrows, loadVector } from '../harness/index.ts';

const v = loadVector('numerics-weight-dequant');

beforeAll(async () => {
  await initBackend();
});

it('W = decode(codes) · scale[⌊i/128⌋, ⌊j/128⌋] exactly', () => {
  const codes = v.inputs.codes as number[][];
  const w8 = tf.tensor2d(decodeE4m3Bytes(Uint8Array.from(codes.flat())), [codes.length, codes[0]!.length]);
  const s = tf.tensor2d(v.inputs.weight_scale_inv);
  const w = weightDequant(w8, s);
  assertShape(w, [200, 300]);
  assertClose(w, v.expected.weight);
  tf.dispose([w8, s, w]);
});

it('the scale grid must be [ceil(out/128), ceil(in/128)]', () => {
  const w8 = tf.zeros([200, 300]);
  const s = tf.zeros([2, 2]);
  assertThrows(RangeError, () => weightDequant(w8, s), /scaleInv must be \[⌈O\/B⌉, ⌈I\/B⌉\] = \[2, 3\]/);
  tf.dispose([w8, s]);
});
