/*---
id: dsa.indexer.rope-non-interleaved
title: Indexer RoPE rotates the first qk_rope_head_dim dims with rotate-half pairs; the pre-fix interleaved layout selects other keys
official: inference/model.py Indexer.forward ("rope in indexer is not interleaved"), apply_rotary_emb
description: The indexer rotates the FIRST qk_rope_head_dim dims of q and k with the non-interleaved (rotate-half) pair layout; the pre-fix interleaved layout selects different keys
see: docs/spec-notes.md#rope-layouts (fix of 2025-11-17, DeepSeek-V3.2-Exp commit 8631a81)
---*/
import { beforeAll, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { initBackend, tf } from '../../src/backend.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../../src/node.ts';
import { loadLayerWeights, disposeLayerWeights } from '../../src/checkpoint.ts';
import { createIndexerCache, disposeIndexerCache, indexerScores } from '../../src/indexer.ts';
import { selectTopK } from '../../src/topk.ts';

beforeAll(async () => { await initBackend(); });
const base = new URL('../../fixtures/golden/public-fp32/', import.meta.url).pathname;
const bug = new URL('../../fixtures/golden/public-fp32-indexer-rope-bug/', import.meta.url).pathname;

/** Step-0 selections of layer 0 (its input precedes every indexer, so both runs saw it). */
function layer0Selection(ropeInterleaved: boolean): number[][] {
  const config = loadConfig(`${base}config.json`);
  const { max_seq_len: maxSeqLen } = JSON.parse(readFileSync(`${base}manifest.json`, 'utf8'));
  const trace = openSafetensors(`${base}trace.safetensors`);
  const w = loadLayerWeights(openCheckpoint(base), config, 0);
  const cache = createIndexerCache();
  const sel = tf.tidy(() => {
    const x = trace.readTensor('step0.expected.layer0.attn.in').reshape([40, -1]) as tf.Tensor2D;
    const qr = trace.readTensor('step0.expected.layer0.attn.qr').reshape([40, -1]) as tf.Tensor2D;
    return selectTopK(indexerScores(x, qr, w.attn.indexer, cache, 0, { config, maxSeqLen, ropeInterleaved }), 0, config.index_topk);
  });
  disposeIndexerCache(cache);
  disposeLayerWeights(w);
  const out = sel.arraySync();
  sel.dispose();
  return out;
}

const rows = (path: string, name: string): number[][] => {
  const flat = Array.from(openSafetensors(path).read(name) as BigInt64Array, Number);
  return Array.from({ length: 40 }, (_, t) => flat.slice(t * 16, (t + 1) * 16));
};

it('the shipped layout gives the official selections', () => {
  expect(layer0Selection(false)).toEqual(rows(`${base}trace.safetensors`, 'step0.expected.layer0.indexer.topk'));
});

it('the interleaved layout gives the pre-fix selections, which differ in every sparse row', () => {
  const buggy = layer0Selection(true);
  expect(buggy).toEqual(rows(`${bug}trace.safetensors`, 'step0.interleaved_bug.layer0.indexer.topk'));
  const official = rows(`${base}trace.safetensors`, 'step0.expected.layer0.indexer.topk');
  const differing = buggy.filter((r, t) => r.join() !== official[t]!.join()).length;
  expect(differing).toBe(40 - 16); // rows t ≥ k = 16 are sparse
});
