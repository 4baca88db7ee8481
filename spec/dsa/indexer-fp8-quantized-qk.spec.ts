/*---
id: dsa.indexer.fp8-quantized-qk
title: q and k are Hadamard-rotated and e4m3 block-quantized (q per token and head, k per token) before scoring
paper: §2.1
official: inference/model.py Indexer.forward, rotate_activation; inference/kernel.py act_quant, fp8_index
info: |
  Given that the lightning indexer has a small number of heads and can be implemented in FP8, its
  computational efficiency is remarkable.
description: q and k are Hadamard-rotated and FP8 (e4m3) block-quantized, one scale per token and head for q and per token for k, before the scores; float32 Eq. 1 without this selects other keys
see: docs/spec-notes.md#lightning-indexer
---*/
import { beforeAll, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { initBackend, tf } from '../../src/backend.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../../src/node.ts';
import { loadLayerWeights, disposeLayerWeights } from '../../src/checkpoint.ts';
import { createIndexerCache, disposeIndexerCache, indexerScores } from '../../src/indexer.ts';
import type { RoundingProbe } from '../../src/fp8.ts';
import { selectTopK } from '../../src/topk.ts';

beforeAll(async () => { await initBackend(); });

function run(name: string, L: number, exact: boolean) {
  const dir = new URL(`../../fixtures/golden/${name}/`, import.meta.url).pathname;
  const config = loadConfig(`${dir}config.json`);
  const { max_seq_len: maxSeqLen } = JSON.parse(readFileSync(`${dir}manifest.json`, 'utf8'));
  const trace = openSafetensors(`${dir}trace.safetensors`);
  const w = loadLayerWeights(openCheckpoint(dir), config, L);
  const cache = createIndexerCache();
  let qScale: number[] = [];
  const probe: RoundingProbe = (site, _x, _q, scale) => {
    if (site.input === 'indexer.q') qScale = Array.from(scale.dataSync());
    return null;
  };
  const I = tf.tidy(() => indexerScores(
    trace.readTensor(`step0.expected.layer${L}.attn.in`).reshape([40, -1]) as tf.Tensor2D,
    trace.readTensor(`step0.expected.layer${L}.attn.qr`).reshape([40, -1]) as tf.Tensor2D,
    w.attn.indexer, cache, 0, { config, maxSeqLen, exact, probe },
  ));
  const scores = I.dataSync();
  const sel = tf.tidy(() => selectTopK(I, 0, config.index_topk).arraySync());
  I.dispose();
  disposeIndexerCache(cache);
  disposeLayerWeights(w);
  const expected = trace.read(`step0.expected.layer${L}.indexer.score`) as Float32Array;
  const selected = Array.from(trace.read(`step0.expected.layer${L}.indexer.topk`) as BigInt64Array, Number);
  let maxErr = 0;
  for (let i = 0; i < expected.length; i++) maxErr = Math.max(maxErr, Math.abs(scores[i]! - expected[i]!));
  const rowsDiffer = sel.filter((r, t) => r.join() !== selected.slice(t * 16, (t + 1) * 16).join()).length;
  return { maxErr, rowsDiffer, qScale };
}

it('the FP8 form reproduces the recorded scores; the unquantized form misses them by ~0.1 and selects other keys', () => {
  const fp8 = run('public-fp32', 0, false);
  const exact = run('public-fp32', 0, true);
  expect(fp8.maxErr).toBeLessThan(1e-4);
  expect(fp8.rowsDiffer).toBe(0);
  expect(exact.maxErr).toBeGreaterThan(1e-2);
  expect(exact.rowsDiffer).toBeGreaterThan(0);
});

it('with scale_fmt ue8m0 (public-fp8) the q scales are powers of two and the scores match', () => {
  const fp8 = run('public-fp8', 0, false);
  expect(fp8.maxErr).toBeLessThan(1e-3);
  expect(fp8.rowsDiffer).toBe(0);
  expect(fp8.qScale.length).toBe(40 * 8); // T × index_n_heads
  for (const s of fp8.qScale) expect(Math.log2(s)).toBe(Math.round(Math.log2(s)));
});
