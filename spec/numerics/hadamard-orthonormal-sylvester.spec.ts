/*---
id: numerics.hadamard.orthonormal-sylvester
title: The indexer rotation is x·H·n^-1/2 in Sylvester order, orthonormal and its own inverse
official: inference/model.py rotate_activation (fast_hadamard_transform.hadamard_transform, reference hadamard_transform_ref)
description: y = x·H_128·128^-1/2 in Sylvester order matches the vector; the transform preserves norms and is its own inverse
see: docs/spec-notes.md#lightning-indexer (step 2); fixtures/vectors/numerics-hadamard.json
---*/
import { beforeAll, it } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { hadamard } from '../../src/hadamard.ts';
import { assertClose, assertThrows, loadVector } from '../harness/index.ts';

const v = loadVector('numerics-hadamard');

beforeAll(async () => {
  await initBackend();
});

it('matches the vector within 1e-6 of max(1, max|y|)', () => {
  const y = hadamard(tf.tensor2d(v.inputs.x));
  const scale = Math.max(1, ...(v.expected.y as number[][]).flat().map(Math.abs));
  assertClose(y, v.expected.y, { atol: 1e-6 * scale });
  y.dispose();
});

it('is orthonormal and involutive: ‖Hx‖ = ‖x‖, H(Hx) = x', () => {
  const x = tf.tensor2d(v.inputs.x);
  const y = hadamard(x);
  const z = hadamard(y);
  const [ny, nx] = [tf.norm(y, 'euclidean', -1), tf.norm(x, 'euclidean', -1)];
  assertClose(ny, nx, { rtol: 1e-6 });
  assertClose(z, x, { atol: 1e-5 });
  tf.dispose([x, y, z, ny, nx]);
});

it('rejects a dimension that is not a power of two', () => {
  assertThrows(RangeError, () => hadamard(tf.zeros([1, 100])), /power of two/);
});
