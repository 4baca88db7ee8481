/*---
id: checkpoint.fp8.weight-scale-inv-multiplier
title: weight_scale_inv multiplies the e4m3 weight block (despite its name), reproducing the official FFN output
official: inference/model.py Linear, MLP.forward; inference/kernel.py weight_dequant, fp8_gemm
description: FP8 weights are code × weight_scale_inv per 128×128 block, and reproduce the official dense FFN output
see: docs/spec-notes.md#fp8-weights
---*/
import { beforeAll, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { disposeLayerWeights, loadLayerWeights } from '../../src/checkpoint.ts';
import { scaleFmt } from '../../src/config.ts';
import { e4m3Decode, linear } from '../../src/fp8.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../../src/node.ts';
import { assertClose } from '../harness/index.ts';

const DIR = 'fixtures/golden/public-fp8';

beforeAll(async () => {
  await initBackend();
});

it('W[i, j] = e4m3(code[i, j]) · weight_scale_inv[⌊i/128⌋, ⌊j/128⌋] for the dense gate_proj', () => {
  const config = loadConfig(`${DIR}/config.json`);
  const ckpt = openCheckpoint(DIR);
  const raw = openSafetensors(`${DIR}/model.safetensors`);
  const codes = raw.readRaw('model.layers.0.mlp.gate_proj.weight').bytes; // [256, 256]
  const scale = raw.read('model.layers.0.mlp.gate_proj.weight_scale_inv') as Float32Array; // [2, 2]
  const w = loadLayerWeights(ckpt, config, 0);
  if (w.ffn.kind !== 'dense') throw new Error('layer 0 must be dense');
  const got = w.ffn.dense.w1.weight.dataSync();
  for (const [i, j] of [[0, 0], [5, 200], [130, 7], [255, 255]] as const) {
    const s = scale[Math.floor(i / 128) * 2 + Math.floor(j / 128)]!;
    expect(got[i * 256 + j]).toBe(Math.fround(e4m3Decode(codes[i * 256 + j]!) * s));
  }
  disposeLayerWeights(w);
  ckpt.close();
  raw.close();
});

it('the loaded FP8 weights reproduce the official dense FFN output w2(silu(w1 x) · w3 x)', () => {
  const config = loadConfig(`${DIR}/config.json`);
  const ckpt = openCheckpoint(DIR);
  const trace = openSafetensors(`${DIR}/trace.safetensors`);
  const w = loadLayerWeights(ckpt, config, 0);
  if (w.ffn.kind !== 'dense') throw new Error('layer 0 must be dense');
  const { w1, w2, w3 } = w.ffn.dense;
  const x = trace.readTensor('step0.expected.layer0.ffn.in'); // [1, T, D]
  const expected = trace.read('step0.expected.layer0.ffn.out') as Float32Array;
  const y = tf.tidy(() => linear(tf.mul(tf.sigmoid(linear(x, w1, scaleFmt(config))), linear(x, w1, scaleFmt(config))).mul(linear(x, w3, scaleFmt(config))), w2, scaleFmt(config)));
  const maxRef = expected.reduce((m, v) => Math.max(m, Math.abs(v)), 1);
  assertClose(y, expected, { atol: 1e-4 * maxRef });
  tf.dispose([x, y]);
  disposeLayerWeights(w);
  ckpt.close();
  trace.close();
});
