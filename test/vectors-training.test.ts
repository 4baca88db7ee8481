/**
 * Every training reference vector (fixtures/vectors, kinds grpo / keep_sampling_mask / indexer_kl) passes
 * checkTrainingVector on every backend; a perturbed expected value (in memory) and malformed files fail
 * with a reason instead of throwing.
 */
import { it, expect } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkTrainingVector } from '../src/conformance/vectors_training.ts';
import { describeEachBackend } from './helpers/backends.ts';

const DIR = fileURLToPath(new URL('../fixtures/vectors/', import.meta.url));
const TRAINING = new Set(['grpo', 'keep_sampling_mask', 'indexer_kl']);
const files = readdirSync(DIR).filter((f) => f.endsWith('.json')).map((f) => ({ name: f.replace(/\.json$/, ''), json: JSON.parse(readFileSync(join(DIR, f), 'utf8')) }))
  .filter((v) => TRAINING.has(v.json.kind));
const byKind = (k: string) => files.find((f) => f.json.kind === k)!;
const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

describeEachBackend('training vectors', () => {
  it('finds the bundled vectors of every training kind', () => {
    expect(new Set(files.map((f) => f.json.kind))).toEqual(TRAINING);
    expect(files.length).toBeGreaterThanOrEqual(5);
  });

  it.each(files.map((f) => [f.name, f] as const))('%s: every expected field passes', async (_n, f) => {
    const rows = await checkTrainingVector(f.name, f.json);
    const failed = rows.filter((r) => !r.pass);
    expect(failed).toEqual([]);
    const checks = rows.map((r) => r.check);
    for (const key of Object.keys(f.json.expected)) expect(checks.some((c) => c.endsWith(`.${key}`))).toBe(true);
  });

  it('a perturbed expected value fails (grpo loss, grad_logp, opsm_keep; sampling ratio; indexer selection)', async () => {
    const g = clone(byKind('grpo').json);
    g.expected.loss += 1e-4;
    g.expected.grad_logp[0][0] += 1e-3;
    g.expected.opsm_keep[0] = !g.expected.opsm_keep[0];
    const rg = await checkTrainingVector('perturbed', g);
    const bad = rg.filter((r) => !r.pass).map((r) => r.check);
    expect(bad).toEqual(expect.arrayContaining(['grpo.loss', 'grpo.grad_logp', 'grpo.opsm_keep']));
    expect(rg.find((r) => r.check === 'grpo.loss')!.reason).toMatch(/max rel err .* > rtol 0.000001/);

    const k = clone(byKind('keep_sampling_mask').json);
    k.expected.ratio[2] *= 1 + 1e-5;
    expect((await checkTrainingVector('perturbed', k)).filter((r) => !r.pass).map((r) => r.check)).toEqual(['keep_sampling_mask.ratio']);

    const ix = clone(byKind('indexer_kl').json);
    ix.expected.selected[8][0] = 3;
    ix.expected.loss_sparse += 1e-5;
    expect((await checkTrainingVector('perturbed', ix)).filter((r) => !r.pass).map((r) => r.check))
      .toEqual(['indexer_kl.selected', 'indexer_kl.loss_sparse']);
  });

  it('malformed vectors give failed rows with a reason, never a throw', async () => {
    const g = clone(byKind('grpo').json);
    g.inputs.logp = g.inputs.logp.slice(1); // shape mismatch with the mask
    const r1 = await checkTrainingVector('bad-shape', g);
    expect(r1).toHaveLength(1);
    expect(r1[0]!.pass).toBe(false);
    expect(r1[0]!.reason).toMatch(/grpoLoss\(\): inputs.logp must be \[G, T\] = \[4, 5\] but got \[3, 5\]/);

    const g2 = clone(byKind('grpo').json);
    delete g2.inputs.rewards;
    expect((await checkTrainingVector('no-rewards', g2))[0]!.reason).toMatch(/malformed vector: inputs.rewards must be an array \(inputs.rewards has rank 1\) but got undefined/);

    const k = clone(byKind('keep_sampling_mask').json);
    k.inputs.kept[1] = 'x'; // a ragged row
    expect((await checkTrainingVector('ragged', k))[0]!.reason).toMatch(/malformed vector: inputs.kept\[1\] must be an array \(inputs.kept has rank 2\) but got the string "x"/);
    k.inputs.kept[1] = [...k.inputs.kept[0]];
    k.inputs.kept[0] = k.inputs.kept[0].slice(1); // the FIRST row is the short one
    expect((await checkTrainingVector('ragged-first', k))[0]!.reason).toMatch(
      new RegExp(`malformed vector: inputs.kept\\[0\\] has length ${k.inputs.kept[1].length - 1} but the other rows of inputs.kept have length ${k.inputs.kept[1].length}`),
    );

    for (const junk of [null, 42, { kind: 'grpo' }, { kind: 'rope' }]) {
      const rows = await checkTrainingVector('junk', junk);
      expect(rows.length).toBeGreaterThan(0);
      expect(rows.every((r) => !r.pass && typeof r.reason === 'string')).toBe(true);
    }
  });
});
