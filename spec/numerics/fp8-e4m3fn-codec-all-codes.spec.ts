/*---
id: numerics.fp8.e4m3fn-codec
title: All 256 e4m3fn codes decode to the format's values; encoding rounds to nearest even and saturates at ±448
official: inference/kernel.py act_quant_kernel (the cast to torch.float8_e4m3fn)
description: all 256 e4m3fn codes decode to the vector's values; values and midpoints encode (RNE, saturating) to the vector's codes
see: docs/spec-notes.md#fp8-e4m3fn; fixtures/vectors/numerics-fp8-codec.json
---*/
import { beforeAll, it } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { e4m3Decode, e4m3Encode, e4m3Round } from '../../src/fp8.ts';
import { assertClose, assertThrows, loadVector } from '../harness/index.ts';

const v = loadVector('numerics-fp8-codec');
const expectedDecode = (v.expected.decode as (number | null)[]).map((x) => (x === null ? NaN : x));

beforeAll(async () => {
  await initBackend();
});

it('decodes every code exactly, NaN at 0x7F and 0xFF only', () => {
  assertClose(Array.from({ length: 256 }, (_, c) => e4m3Decode(c)), expectedDecode);
});

it('encodes every listed value (grid values, midpoints, saturating values, ±0) to the listed code', () => {
  assertClose((v.inputs.values as number[]).map(e4m3Encode), v.expected.codes);
});

it('the tensor rounding gives the value of the listed code', () => {
  const got = e4m3Round(tf.tensor1d(v.inputs.values));
  assertClose(got, (v.expected.codes as number[]).map(e4m3Decode));
  got.dispose();
});

it('rejects a code outside 0..255', () => {
  assertThrows(RangeError, () => e4m3Decode(-1), /e4m3Decode\(\): code must be an integer in 0\.\.255 but got -1/);
});
