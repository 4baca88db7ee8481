/*---
id: grpo.advantage-mean-baseline
description: V3.2 advantages are R − mean(R) (no std); the DeepSeekMath form divides by the std plus eps
source: DeepSeek-V3.2 paper §3.1 Eq. (5)–(6); DeepSeekMath §4.1.2; fixtures/vectors/grpo-*.json
---*/
import { beforeAll, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { groupAdvantages } from '../../src/grpo.ts';

beforeAll(async () => { await initBackend(); });

it('R = [1, 0, 0.5, 0] gives [0.625, −0.375, 0.125, −0.375] with no std division', () => {
  const a = groupAdvantages(tf.tensor1d([1, 0, 0.5, 0]), 'mean');
  expect(Array.from(a.dataSync())).toEqual([0.625, -0.375, 0.125, -0.375]);
});

it('scaling every reward by 10 scales the V3.2 advantage by 10 (no std normalisation)', () => {
  const a = groupAdvantages(tf.tensor1d([10, 0, 5, 0]), 'mean');
  expect(Array.from(a.dataSync())).toEqual([6.25, -3.75, 1.25, -3.75]);
});

it('the DeepSeekMath form uses (R − mean)/(std + eps): sample std 0.478714 → TRL values of spec GRPO.md', () => {
  const a = Array.from(groupAdvantages(tf.tensor1d([1, 0, 0.5, 0]), 'mean_std_sample', 1e-4).dataSync());
  [1.30531, -0.783186, 0.261062, -0.783186].forEach((v, i) => expect(a[i]).toBeCloseTo(v, 5));
  const p = Array.from(groupAdvantages(tf.tensor1d([1, 0, 0.5, 0]), 'mean_std_population', 0).dataSync());
  [1.507557, -0.904534, 0.301511, -0.904534].forEach((v, i) => expect(p[i]).toBeCloseTo(v, 5));
});
