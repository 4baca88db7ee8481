/*---
id: checkpoint.fp8.partial-edge-blocks
title: A weight whose rows or columns are not a multiple of 128 has a partial last block sharing one scale
official: inference/kernel.py weight_dequant (ceil-divided scale grid)
description: kv_a_proj_with_mqa [160, 256] has scale [2, 2]; rows 128..159 form a partial block with scale row 1
see: docs/spec-notes.md#fp8-weights (576 rows → 5 scale rows)
---*/
import { beforeAll, expect, it } from 'vitest';
import { initBackend } from '../../src/backend.ts';
import { disposeLayerWeights, loadLayerWeights } from '../../src/checkpoint.ts';
import { e4m3Decode } from '../../src/fp8.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../../src/node.ts';

const DIR = 'fixtures/golden/public-fp8';
const NAME = 'model.layers.1.self_attn.kv_a_proj_with_mqa';

beforeAll(async () => {
  await initBackend();
});

it('the scale grid is [ceil(160/128), ceil(256/128)] = [2, 2]', () => {
  const f = openSafetensors(`${DIR}/model.safetensors`);
  expect(f.info(`${NAME}.weight`).shape).toEqual([160, 256]);
  expect(f.info(`${NAME}.weight_scale_inv`).shape).toEqual([2, 2]);
  f.close();
});

it('every element of the partial block uses the second scale row', () => {
  const config = loadConfig(`${DIR}/config.json`);
  const f = openSafetensors(`${DIR}/model.safetensors`);
  const codes = f.readRaw(`${NAME}.weight`).bytes;
  const scale = f.read(`${NAME}.weight_scale_inv`) as Float32Array;
  const ckpt = openCheckpoint(DIR);
  const w = loadLayerWeights(ckpt, config, 1);
  const got = w.attn.wkv_a.weight.dataSync();
  for (let i = 128; i < 160; i++) {
    for (let j = 0; j < 256; j++) {
      const want = Math.fround(e4m3Decode(codes[i * 256 + j]!) * scale[2 + Math.floor(j / 128)]!);
      if (got[i * 256 + j] !== want) expect([i, j, got[i * 256 + j]]).toEqual([i, j, want]);
    }
  }
  expect(scale[2]).not.toBe(scale[0]); // distinct rows: using row 0 for the edge block would be caught
  disposeLayerWeights(w);
  ckpt.close();
  f.close();
});
