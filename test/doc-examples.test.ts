/**
 * Doc-tests: every `@example` in src/ and every dsv32 example in README.md and docs/ runs, and
 * its `// => VALUE` result comments hold (scripts/doc-examples.ts), so examples cannot rot.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { allExamples, toModule, ROOT } from '../scripts/doc-examples.ts';
import { initBackend } from '../src/backend.ts';

const TMP = join(ROOT, 'test', '.doctest-tmp');
const examples = allExamples();

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
    const bad = toModule({ where: 'test', module: null, code: `import { tf } from 'dsv32/backend';\ntf.scalar(2).arraySync(); // => 3` }, []);
    const file = join(TMP, 'bad.ts');
    writeFileSync(file, bad);
    const mod = (await import(file)) as { default: () => Promise<void> };
    await expect(mod.default()).rejects.toThrow(/expected 3, got 2/);
  });
});
