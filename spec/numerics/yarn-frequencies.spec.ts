/*---
id: numerics.rope.yarn-frequencies
description: YaRN-corrected float32 frequencies match the vector within 2 float32 ulp, for three configs; MLA softmax scale carries mscale²
source: inference/model.py precompute_freqs_cis, MLA.__init__; DSA.md §1.4; fixtures/vectors/numerics-rope.json
---*/
import { it, expect } from 'vitest';
import { mlaSoftmaxScale, yarnFrequencies } from '../../src/rope.ts';
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
    assertClose(mlaSoftmaxScale(c.config.qk_head_dim, { ...p, mscale: c.config.mscale }), c.softmax_scale, { rtol: 1e-12 });
  });
}

it('no YaRN correction when max_seq_len ≤ original_max_position_embeddings', () => {
  const base = { dim: 64, theta: 10000, factor: 40, originalMaxPos: 4096, betaFast: 32, betaSlow: 1 };
  const plain = yarnFrequencies({ ...base, maxSeqLen: 4096 });
  const yarn = yarnFrequencies({ ...base, maxSeqLen: 4097 });
  expect(plain[0]).toBe(yarn[0]);
  assertClose(yarn[31]!, plain[31]! / 40, { rtol: 1e-6 });
});
