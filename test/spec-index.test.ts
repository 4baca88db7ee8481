import { describe, it, expect } from 'vitest';
import { readFileSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { AREAS, parseFrontmatter, readClauses, registryProblems, renderIndex, SPEC_DIR } from '../scripts/spec-index.ts';

describe('spec clause registry (test262-style frontmatter)', () => {
  const { clauses, problems } = readClauses();

  it('reads one clause per spec file, in every area of the paper', () => {
    const specFiles = readdirSync(SPEC_DIR, { recursive: true }).map(String).filter((f) => f.endsWith('.spec.ts'));
    expect(clauses.length).toBe(specFiles.length);
    expect(clauses.length).toBeGreaterThan(40);
    expect([...new Set(clauses.map((c) => c.file.split('/')[0]))].sort()).toEqual(AREAS.map((a) => a.area).sort());
  });

  it('every frontmatter is complete and well formed, ids are unique and live in their folder', () => {
    expect(problems).toEqual([]);
  });

  it('the frontmatter is the only registry: no clauses.yml under spec/', () => {
    const ymls = readdirSync(SPEC_DIR, { recursive: true }).map(String).filter((f) => /clauses\.ya?ml$/.test(f));
    expect(ymls).toEqual([]);
  });

  it('each clause anchored in the paper quotes it where the paper has a sentence (info), and the indexer losses are DSA clauses', () => {
    const byId = new Map(clauses.map((c) => [c.id, c]));
    for (const id of ['dsa.indexer.eq1-score', 'dsa.indexer-loss.dense-eq3', 'dsa.indexer-loss.sparse-eq4', 'moe.keep-routing.replay', 'context.drop-reasoning-on-new-user-turn']) {
      expect(byId.get(id)?.info, id).toBeTruthy();
    }
    expect(byId.get('dsa.indexer-loss.sparse-eq4')?.info).toContain('detach the indexer input');
    expect(clauses.filter((c) => c.id.startsWith('grpo.indexer'))).toEqual([]);
  });

  it('spec/INDEX.md is up to date (regenerate with `npx tsx scripts/spec-index.ts`)', () => {
    const path = join(SPEC_DIR, 'INDEX.md');
    expect(existsSync(path)).toBe(true);
    expect(readFileSync(path, 'utf8')).toBe(renderIndex(clauses));
  });
});

describe('the registry lint catches bad frontmatter (in-memory spec files)', () => {
  const good = [
    'id: dsa.x.ok',
    'title: t',
    'paper: §2.1, Eq. (2)',
    'official: inference/model.py Indexer.forward (topk; mask); inference/kernel.py fp8_index',
    'info: |',
    '  A sentence.',
    'description: d',
  ];
  const spec = (lines: string[]): string => `/*---\n${lines.join('\n')}\n---*/\nimport { it } from 'vitest';\n`;

  it('accepts a complete frontmatter', () => {
    const r = parseFrontmatter(spec(good), 'dsa/ok.spec.ts');
    expect(r.problems).toEqual([]);
    expect(r.clause).toMatchObject({ id: 'dsa.x.ok', paper: '§2.1, Eq. (2)', info: 'A sentence.', file: 'dsa/ok.spec.ts' });
  });

  it.each([
    [['// no frontmatter'], 'no /*--- ... ---*/ frontmatter'],
    [['id: [unclosed'], 'frontmatter is not YAML'],
    [good.filter((l) => !l.startsWith('title')), 'frontmatter lacks title'],
    [good.filter((l) => !/^(paper|official)/.test(l)), 'neither a paper anchor'],
    [good.map((l) => (l.startsWith('paper') ? 'paper: DSA notes §2.4' : l)), "paper anchor 'DSA notes §2.4' does not start with a section"],
    [good.map((l) => (l.startsWith('paper') ? 'paper: §2.4, Eq. (2)' : l)), 'names §2.4, which is not a section of the paper'],
    [good.map((l) => (l.startsWith('paper') ? 'paper: §3.1, Eq. (8)–(10)' : l)), 'names Eq. (10); the paper numbers Eq. (1)–(9)'],
    [good.map((l) => (l.startsWith('official') ? 'official: model.py MLA.forward' : l)), "official symbol 'model.py MLA.forward'"],
    [[...good, 'source: somewhere'], "unknown frontmatter key 'source'"],
    [good.map((l) => (l.startsWith('id') ? 'id: grpo.x.ok' : l)), "is in spec/dsa/, but its id says spec/grpo/"],
  ])('%#: reports %j', (lines, message) => {
    const text = lines[0] === '// no frontmatter' ? '// no frontmatter\n' : spec(lines as string[]);
    const r = parseFrontmatter(text, 'dsa/bad.spec.ts');
    expect(r.clause).toBeUndefined();
    expect(r.problems.join('\n')).toContain(message);
  });

  it('reports a repeated id and a folder that is not a spec area', () => {
    const a = parseFrontmatter(spec(good), 'dsa/a.spec.ts').clause!;
    const b = parseFrontmatter(spec(good), 'dsa/b.spec.ts').clause!;
    const c = { ...a, id: 'misc.x', file: 'misc/c.spec.ts' };
    expect(registryProblems([a, b, c])).toEqual([
      "dsa/b.spec.ts: clause 'dsa.x.ok' is already registered by dsa/a.spec.ts",
      'misc/c.spec.ts: spec/misc/ is not a spec area (dsa, moe, grpo, encoding, context, numerics, checkpoint)',
    ]);
  });

  it('renders the index from the frontmatter alone', () => {
    const a = parseFrontmatter(spec(good), 'dsa/a.spec.ts').clause!;
    expect(renderIndex([a])).toContain('| `dsa.x.ok` | §2.1, Eq. (2) | inference/model.py Indexer.forward (topk; mask); inference/kernel.py fp8_index | t | [dsa/a.spec.ts](dsa/a.spec.ts) |');
  });
});
