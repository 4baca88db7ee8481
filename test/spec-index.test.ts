import { describe, it, expect } from 'vitest';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { readClauses, readSpecFiles, renderIndex, SPEC_DIR } from '../scripts/spec-index.ts';

describe('spec suite traceability (test262-style lint)', () => {
  const clauses = readClauses();
  const specs = readSpecFiles();

  it('has clauses and spec files', () => {
    expect(clauses.length).toBeGreaterThan(0);
    expect(specs.length).toBeGreaterThan(0);
  });

  it('every spec file has frontmatter with id, description and source', () => {
    expect(specs.filter((s) => s.problem).map((s) => `${s.file}: ${s.problem}`)).toEqual([]);
  });

  it('every clause id is unique and has a reference', () => {
    const ids = clauses.map((c) => c.id);
    expect(ids.filter((id, i) => ids.indexOf(id) !== i)).toEqual([]);
    expect(clauses.filter((c) => !c.id || !c.ref).map((c) => `${c.file}: ${c.id}`)).toEqual([]);
  });

  it('every spec file names a registered clause', () => {
    const known = new Set(clauses.map((c) => c.id));
    expect(specs.filter((s) => s.id && !known.has(s.id)).map((s) => `${s.file}: ${s.id}`)).toEqual([]);
  });

  it('every clause has at least one spec file', () => {
    const covered = new Set(specs.map((s) => s.id));
    expect(clauses.filter((c) => !covered.has(c.id)).map((c) => c.id)).toEqual([]);
  });

  it('spec/INDEX.md is up to date (regenerate with `npx tsx scripts/spec-index.ts`)', () => {
    const path = join(SPEC_DIR, 'INDEX.md');
    expect(existsSync(path)).toBe(true);
    expect(readFileSync(path, 'utf8')).toBe(renderIndex(clauses, specs));
  });

  it('the lint catches a spec file without a clause and a clause without a spec file', () => {
    const fakeClauses = [{ id: 'x.covered', ref: 'Eq. 1', title: 't', file: 'x/clauses.yml' }, { id: 'x.orphan', ref: 'Eq. 2', title: 't', file: 'x/clauses.yml' }];
    const fakeSpecs = [{ file: 'x/a.spec.ts', id: 'x.covered', description: 'd', source: 's' }, { file: 'x/b.spec.ts', id: 'x.unknown', description: 'd', source: 's' }];
    const known = new Set(fakeClauses.map((c) => c.id));
    expect(fakeSpecs.filter((s) => !known.has(s.id)).map((s) => s.file)).toEqual(['x/b.spec.ts']);
    expect(renderIndex(fakeClauses, fakeSpecs)).toContain('| `x.orphan` | Eq. 2 | t | **none** |');
  });
});
