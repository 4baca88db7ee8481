/**
 * Doc-tests: every `@example` in src/ and every dsv32 example in README.md and docs/ runs, and
 * its `// => VALUE` result comments hold (scripts/doc-examples.ts), so examples cannot rot.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { allExamples, isLiteral, stripRemark, toModule, ROOT, type DocExample } from '../scripts/doc-examples.ts';
import { initBackend } from '../src/backend.ts';

const TMP = join(ROOT, 'test', '.doctest-tmp');
const examples = allExamples();

/** Writes a hand-made example as a module and imports it (what the doc-tests do). */
async function load(code: string, name: string): Promise<() => Promise<void>> {
  const ex: DocExample = { where: 'test', module: null, code: `import { tf } from 'dsv32/backend';\n${code}` };
  const file = join(TMP, `${name}.ts`);
  writeFileSync(file, toModule(ex, []));
  return ((await import(file)) as { default: () => Promise<void> }).default;
}

describe('documentation examples', () => {
  beforeAll(async () => {
    mkdirSync(TMP, { recursive: true });
    await initBackend('cpu');
  });

  it('there are examples to run', () => {
    expect(examples.length).toBeGreaterThan(0);
  });

  it.each(examples.map((e, i) => [e.where, i] as const))('%s', async (_where, i) => {
    const ex = examples[i]!;
    const exports = ex.module ? Object.keys(await import(ex.module)) : [];
    const file = join(TMP, `ex${i}.ts`);
    writeFileSync(file, toModule(ex, exports));
    const mod = (await import(file)) as { default: () => Promise<void> };
    await mod.default();
  });

  it('a wrong result comment fails', async () => {
    const run = await load('tf.scalar(2).arraySync(); // => 3', 'bad');
    await expect(run()).rejects.toThrow(/expected 3, got 2/);
  });

  it('a result comment whose value is not a literal fails (not silently skipped)', async () => {
    const run = await load('tf.scalar(2).arraySync(); // => 2 (the scalar)', 'bad-nonliteral');
    await expect(run()).rejects.toThrow(/test line 2: the result comment's value is not a JavaScript literal .*: 2 \(the scalar\)/);
    const expr = await load('tf.scalar(2).arraySync(); // returns Math.SQRT2 ** 2', 'bad-expression');
    await expect(expr()).rejects.toThrow(/not a JavaScript literal/);
  });

  it('a remark after two spaces in parentheses is dropped and the value still checked', async () => {
    const ok = await load('tf.tensor1d([1, 2]).arraySync(); // => [1, 2]  (a remark, not checked)', 'remark-ok');
    await expect(ok()).resolves.toBeUndefined();
    const bad = await load('tf.tensor1d([1, 2]).arraySync(); // => [1, 3]  (a remark)', 'remark-bad');
    await expect(bad()).rejects.toThrow(/result\[1\]: expected 3, got 2/);
  });

  it('a result comment on a declaration fails', async () => {
    const run = await load('const x = tf.scalar(2).arraySync(); // => 2', 'bad-declaration');
    await expect(run()).rejects.toThrow(/a result comment on a declaration is not checked/);
  });

  it('isLiteral accepts literals only; stripRemark drops a parenthesized remark', () => {
    for (const v of ['3', '-1.5e-3', '0x7e', '-Infinity', 'NaN', "'a // b'", '"x"', 'true', 'null', '[[0, -1], [1, 2]]', '{ a: 1, "b": [true] }', '[]'])
      expect(isLiteral(v), v).toBe(true);
    for (const v of ['Math.log(3)', '1 + 1', 'x', '3 (note)', '[1]  (note)', 'e', '[1, 2', "'open", 'new Date()', '(() => 1)()'])
      expect(isLiteral(v), v).toBe(false);
    expect(stripRemark('[1, 1, 0]  (true, true, false)')).toBe('[1, 1, 0]');
    expect(stripRemark('1   (the FP8 round trip moved some values)')).toBe('1');
    expect(stripRemark('3 (one space: kept)')).toBe('3 (one space: kept)');
    expect(stripRemark("'a  (b)'")).toBe("'a  (b)'");
  });
});
