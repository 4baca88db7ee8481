/*---
id: numerics.norms.fused-residual
title: The fused norm returns r' = x + r and w ⊙ r'/sqrt(mean(r'²) + eps)
official: inference/model.py RMSNorm.forward (residual branch), Block.forward
description: the fused residual RMSNorm returns r' = x + r and w ⊙ r'/sqrt(mean(r'²) + eps)
see: docs/spec-notes.md#block
---*/
import { beforeAll, it } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { rmsNormResidual } from '../../src/norms.ts';
import { assertClose } from '../harness/index.ts';

beforeAll(async () => {
  await initBackend();
});

it('r′ = x + r; out = w ⊙ r′ / sqrt(mean(r′²) + eps)', () => {
  const x = [1, -2, 3, 0.5];
  const r = [0.5, 0.5, -1, 1.5];
  const w = [1, 2, 0.5, -1];
  const eps = 1e-6;
  const sum = x.map((v, i) => v + r[i]!);
  const rms = Math.sqrt(sum.reduce((s, v) => s + v * v, 0) / sum.length + eps);
  const { out, residual } = rmsNormResidual(tf.tensor1d(x), tf.tensor1d(r), tf.tensor1d(w), eps);
  assertClose(residual, sum);
  assertClose(out, sum.map((v, i) => (w[i]! * v) / rms), { rtol: 1e-6, atol: 1e-7 });
  tf.dispose([out, residual]);
});
