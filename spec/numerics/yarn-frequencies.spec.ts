/*---
id: numerics.rope.yarn-frequencies
title: YaRN keeps fast dims, divides slow dims by the factor, ramps in between, and applies only beyond original_seq_len
official: inference/model.py precompute_freqs_cis (find_correction_range, linear_ramp_factor), MLA.__init__
description: YaRN-corrected float32 frequencies match the vector within 2 float32 ulp, for three configs; MLA softmax scale carries mscale²
see: docs/spec-notes.md#rope-and-yarn; fixtures/vectors/numerics-rope.json
---*/
import { it, expect } from 'vitest';
import { yarnFrequencies } from '../../src/rope.ts';
import { softmaxScale } from '../../src/config.ts';
import { assertClose, loadVector } from '../harness/index.ts';

const v = loadVector('numerics-rope');

for (const [k, c] of (v.cases as any[]).entries()) {
  const p = {
    dim: c.config.R, theta: c.config.theta, factor: c.config.factor, originalMaxPos: c.config.L0,
    betaFast: c.config.bf, betaSlow: c.config.bs, maxSeqLen: c.config.max_seq_len,
  };
  it(`case ${k} (R ${p.dim}, θ ${p.theta}, factor ${p.factor}, L0 ${p.originalMaxPos}, max_seq_len ${p.maxSeqLen}): frequencies`, () => {
    const f = yarnFrequencies(p);
    (c.freqs as number[]).forEach((e, i) => assertClose(f[i]!, e, { atol: 2 * 2 ** (Math.floor(Math.log2(e)) - 23) }));
  });
  it(`case ${k}: softmax scale`, () => {
    const rope_scaling = { factor: p.factor, mscale: c.config.mscale, original_max_position_embeddings: p.originalMaxPos };
    const config = { qk_nope_head_dim: c.config.qk_head_dim - p.dim, qk_rope_head_dim: p.dim, rope_scaling };
    assertClose(softmaxScale(config, p.maxSeqLen), c.softmax_scale, { rtol: 1e-12 });
  });
}

it('no YaRN correction when max_seq_len ≤ original_max_position_embeddings', () => {
  const base = { dim: 64, theta: 10000, factor: 40, originalMaxPos: 4096, betaFast: 32, betaSlow: 1 };
  const plain = yarnFrequencies({ ...base, maxSeqLen: 4096 });
  const yarn = yarnFrequencies({ ...base, maxSeqLen: 4097 });
  expect(plain[0]).toBe(yarn[0]);
  assertClose(yarn[31]!, plain[31]! / 40, { rtol: 1e-6 });
});
