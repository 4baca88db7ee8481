/**
 * Documentation lint: the guides must not name what does not exist, and no citation may leave the reader
 * stranded.
 *
 * - Functions: in docs/equations.md and docs/tour.md, every function the text names is exported by
 *   the module it names (rules below, `functionRefs`).
 * - Clauses: every conformance clause id written in README.md or docs/*.md (a backticked
 *   `area.name` whose area is one of the registries') is the `id` of some spec file's frontmatter.
 * - Links: every relative markdown link of README.md, docs/*.md and spec/INDEX.md points to an existing
 *   file, and its `#anchor`, if any, to a heading of that file (http(s)/mailto links are not checked).
 * - Citations, in every text file of src/, spec/, docs/, bench/, scripts/, test/ and README.md (comments,
 *   spec frontmatter, prose): no document outside the repository is cited (the research digests
 *   DSA.md, GRPO.md, PERF.md, STYLE.md); every `docs/x.md#anchor` names an existing document and
 *   heading; every cited spec, document or fixture path (`spec/dsa/x.spec.ts`) exists; every clause id
 *   is registered.
 *
 * Each checker is a plain function over a text; the last block runs them on hand-made bad documents
 * and on real files with a planted unresolved citation, so the lint can fail.
 */
import { describe, it, expect } from 'vitest';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { readClauses } from '../scripts/spec-index.ts';

const ROOT = resolve(import.meta.dirname, '..');
const DOCS = readdirSync(join(ROOT, 'docs'))
  .filter((f) => f.endsWith('.md'))
  .sort()
  .map((f) => join(ROOT, 'docs', f));
const MARKDOWN = [join(ROOT, 'README.md'), ...DOCS];

// --- Markdown helpers ---

/** The text with fenced code blocks blanked (line numbers kept): code is not prose. */
function withoutFences(md: string): string {
  return md.replace(/^ *```[^\n]*\n[\s\S]*?\n *```[^\n]*$/gm, (block) => block.replace(/[^\n]/g, ''));
}

/** 1-based line of a character offset. */
function lineAt(text: string, offset: number): number {
  return text.slice(0, offset).split('\n').length;
}

/** A problem found by a checker: where (file:line) and what. */
interface Problem {
  where: string;
  what: string;
}

// --- Exports of a module (parsed, not executed: type-only exports count too) ---

const exportCache = new Map<string, Set<string>>();

/** The names a source file exports (declarations with `export`, `export { ... }` lists, `export * from` followed). */
function exportsOf(file: string): Set<string> {
  const cached = exportCache.get(file);
  if (cached) return cached;
  const names = new Set<string>();
  exportCache.set(file, names);
  if (!existsSync(file)) return names;
  const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, false, ts.ScriptKind.TS);
  for (const st of sf.statements) {
    const exported = ts.canHaveModifiers(st) && ts.getModifiers(st)?.some((m) => m.kind === ts.SyntaxKind.ExportKeyword);
    if (ts.isExportDeclaration(st)) {
      if (st.exportClause && ts.isNamedExports(st.exportClause)) for (const e of st.exportClause.elements) names.add(e.name.text);
      else if (!st.exportClause && st.moduleSpecifier && ts.isStringLiteral(st.moduleSpecifier)) {
        for (const n of exportsOf(resolve(dirname(file), st.moduleSpecifier.text))) names.add(n);
      }
    } else if (exported) {
      if (ts.isVariableStatement(st)) {
        for (const d of st.declarationList.declarations) if (ts.isIdentifier(d.name)) names.add(d.name.text);
      } else if ('name' in st && st.name && ts.isIdentifier(st.name as ts.Node)) {
        names.add((st.name as ts.Identifier).text);
      }
    }
  }
  return names;
}

/** Every public module: src/<name>.ts. */
const PUBLIC_MODULES = readdirSync(join(ROOT, 'src'))
  .filter((f) => f.endsWith('.ts') && f !== 'index.ts')
  .map((f) => join(ROOT, 'src', f));

// --- Function names ---

/** A function (or type) name the text attributes to some modules. */
interface FunctionRef {
  name: string;
  /** the modules it may come from (absolute paths); empty = any public module. */
  modules: string[];
  line: number;
}

/** A name found in the text; `aside` = inside parentheses (a remark, which may name another module's export). */
interface Name {
  name: string;
  offset: number;
  aside: boolean;
}

/** src modules linked in a piece of markdown, `[..](../src/x.ts)` resolved from `file`. */
function linkedModules(text: string, file: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/\]\(([^)\s]+\.ts)\)/g)) {
    const p = resolve(dirname(file), m[1]!);
    if (p.startsWith(join(ROOT, 'src') + '/')) out.push(p);
  }
  return out;
}

/** Splits at `sep` outside parentheses. */
function splitOutside(text: string, sep: string): { text: string; offset: number }[] {
  const out: { text: string; offset: number }[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '(') depth++;
    else if (c === ')') depth = Math.max(0, depth - 1);
    else if (c === sep && depth === 0) {
      out.push({ text: text.slice(start, i), offset: start });
      start = i + 1;
    }
  }
  out.push({ text: text.slice(start), offset: start });
  return out;
}

const IDENT = /^[A-Za-z$][A-Za-z0-9$]*$/;
/** camelCase or PascalCase with an inner capital: `indexerScores`, `klK3`, `RoutingRecord`. */
const CAMEL = /^[A-Za-z][a-z0-9]*[A-Z][A-Za-z0-9]*$/;

/**
 * Backticked names in a piece of text that name functions (or exported types):
 * - `name(...)` (a call written in backticks) always;
 * - outside parentheses: a plain identifier without `_` (snake_case names are the official code's,
 *   dotted ones like `MLA.forward` too) when `plain` is set (the function column of a table);
 * - otherwise (and inside parentheses) only camelCase / PascalCase identifiers, so that prose words
 *   and parameter names (`mode`, `developer`) are not taken for functions.
 */
function namesIn(text: string, plain: boolean): Name[] {
  const out: Name[] = [];
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '(') depth++;
    else if (c === ')') depth = Math.max(0, depth - 1);
    else if (c === '`') {
      const end = text.indexOf('`', i + 1);
      if (end < 0) break;
      const code = text.slice(i + 1, end);
      const call = /^([A-Za-z$][\w$]*)\(/.exec(code);
      if (call && !call[1]!.includes('_')) out.push({ name: call[1]!, offset: i + 1, aside: depth > 0 });
      else if (IDENT.test(code) && (CAMEL.test(code) || (plain && depth === 0))) out.push({ name: code, offset: i + 1, aside: depth > 0 });
      i = end;
    }
  }
  return out;
}

/**
 * The function names of a markdown guide and the modules they are attributed to.
 *
 * Tables with a `function` column (docs/equations.md): the cell is split at `;` outside
 * parentheses; a part that links a src module (`[x.ts](../src/x.ts)`, also inside parentheses as in
 * `` `stopGradient` ([internal/stop_gradient.ts](../src/internal/stop_gradient.ts)) ``) names that
 * module for its identifiers; a part without a link keeps the module of the part before it in the
 * same cell, and a cell's first part without a link may name any module linked in the table so far
 * (the rows share their modules).
 * Every backticked identifier outside parentheses counts.
 *
 * Prose (docs/tour.md, and the text around the tables): per paragraph, camelCase names and
 * backticked calls must be exported by one of the src modules the paragraph links; a paragraph
 * that links none may name any public module's export.
 *
 * Names inside parentheses are remarks (`` `modelForward` (emits `RoutingRecord`s) ``, where the
 * type lives in moe.ts): they must be exported by some public module, not necessarily the one named.
 */
function functionRefs(md: string, file: string): FunctionRef[] {
  const text = withoutFences(md);
  const refs: FunctionRef[] = [];
  const lines = text.split('\n');
  let offset = 0;
  let fnColumn = -1;
  let table: string[] = [];
  let paragraph: { text: string; offset: number } | null = null;
  const flush = (): void => {
    if (!paragraph) return;
    const mods = linkedModules(paragraph.text, file);
    for (const n of namesIn(paragraph.text, false)) {
      refs.push({ name: n.name, modules: n.aside ? [] : mods, line: lineAt(text, paragraph.offset + n.offset) });
    }
    paragraph = null;
  };
  for (const line of lines) {
    const isRow = /^\s*\|/.test(line);
    if (isRow) {
      flush();
      const cells = line.split(/(?<!\\)\|/).slice(1, -1);
      if (cells.every((c) => /^\s*:?-+:?\s*$/.test(c))) {
        // separator row
      } else if (fnColumn < 0 && cells.some((c) => /^\s*function/i.test(c))) {
        fnColumn = cells.findIndex((c) => /^\s*function/i.test(c));
        table = [];
      } else if (fnColumn >= 0) {
        const cell = cells[fnColumn] ?? '';
        const cellOffset = offset + 1 + cells.slice(0, fnColumn).reduce((a, c) => a + c.length + 1, 0);
        let current = [...table];
        for (const part of splitOutside(cell, ';')) {
          const mods = linkedModules(part.text, file);
          if (mods.length) current = mods;
          table.push(...mods);
          for (const n of namesIn(part.text, true)) {
            refs.push({ name: n.name, modules: n.aside ? [] : current, line: lineAt(text, cellOffset + part.offset + n.offset) });
          }
        }
      } else {
        const mods = linkedModules(line, file);
        for (const n of namesIn(line, false)) refs.push({ name: n.name, modules: n.aside ? [] : mods, line: lineAt(text, offset + n.offset) });
      }
    } else {
      fnColumn = -1;
      if (line.trim() === '' || /^#/.test(line)) flush();
      else if (paragraph) paragraph.text += '\n' + line;
      else paragraph = { text: line, offset };
    }
    offset += line.length + 1;
  }
  flush();
  return refs;
}

/** Problems with the function names of one guide. */
function checkFunctions(md: string, file: string): Problem[] {
  const problems: Problem[] = [];
  const where = relative(ROOT, file);
  for (const r of functionRefs(md, file)) {
    const candidates = r.modules.length ? r.modules : PUBLIC_MODULES;
    if (candidates.some((m) => exportsOf(m).has(r.name))) continue;
    const named = r.modules.length ? r.modules.map((m) => relative(ROOT, m)).join(' or ') : 'any public module';
    const elsewhere = PUBLIC_MODULES.filter((m) => exportsOf(m).has(r.name)).map((m) => relative(ROOT, m));
    problems.push({
      where: `${where}:${r.line}`,
      what: `\`${r.name}\` is not exported by ${named}${elsewhere.length ? ` (it is by ${elsewhere.join(', ')})` : ''}`,
    });
  }
  return problems;
}

// --- Clause ids ---

/** Every registered clause id: the `id` of each spec file's frontmatter (scripts/spec-index.ts). */
function registeredClauses(): Set<string> {
  return new Set(readClauses().clauses.map((c) => c.id));
}

/** Backticked clause ids: `area.rest` with area one of `prefixes`, not a file name, no wildcard. */
function clauseRefs(md: string, prefixes: ReadonlySet<string>): { id: string; line: number }[] {
  const text = withoutFences(md);
  const out: { id: string; line: number }[] = [];
  for (const m of text.matchAll(/`([a-z][a-z0-9]*)\.([a-z0-9][a-z0-9.-]*)`/g)) {
    if (!prefixes.has(m[1]!) || /\.(ts|js|md|py|json|ya?ml|txt|safetensors)$/.test(m[0].slice(1, -1))) continue;
    out.push({ id: `${m[1]}.${m[2]}`, line: lineAt(text, m.index) });
  }
  return out;
}

function checkClauses(md: string, file: string, ids: ReadonlySet<string>): Problem[] {
  const prefixes = new Set([...ids].map((id) => id.split('.')[0]!));
  return clauseRefs(md, prefixes)
    .filter((r) => !ids.has(r.id))
    .map((r) => ({ where: `${relative(ROOT, file)}:${r.line}`, what: `clause \`${r.id}\` is not the id of any spec file (spec/*/*.spec.ts frontmatter)` }));
}

// --- Relative links ---

/** Relative link targets of a markdown file (code spans and fences skipped), with their `#anchor` if any. */
function relativeLinks(md: string): { target: string; anchor?: string; line: number }[] {
  const text = withoutFences(md).replace(/`[^`\n]*`/g, (s) => ' '.repeat(s.length));
  const out: { target: string; anchor?: string; line: number }[] = [];
  for (const m of text.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
    const raw = m[1]!;
    if (/^[a-z][a-z0-9+.-]*:/i.test(raw)) continue;
    const hash = raw.indexOf('#');
    const anchor = hash >= 0 ? decodeURI(raw.slice(hash + 1)) : undefined;
    out.push({ target: decodeURI(hash >= 0 ? raw.slice(0, hash) : raw), ...(anchor ? { anchor } : {}), line: lineAt(text, m.index) });
  }
  return out;
}

/** GitHub's heading anchor: lowercase, punctuation dropped (letters, digits, `_`, `-` and spaces kept), spaces → `-`. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** The anchors of a markdown text: the slugs of its headings (a repeated slug gets -1, -2, … as on GitHub). */
function anchorsOf(md: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const m of withoutFences(md).matchAll(/^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$/gm)) {
    const s = slug(m[1]!);
    const n = seen.get(s) ?? 0;
    seen.set(s, n + 1);
    anchors.add(n ? `${s}-${n}` : s);
  }
  return anchors;
}

/** What is wrong with a link to `target#anchor` from `file` (`md` = the text of `file`), or null. */
function linkProblem(md: string, file: string, target: string, anchor: string | undefined): string | null {
  const path = target ? resolve(dirname(file), target) : file;
  if (target && !existsSync(path)) return `link target ${target} does not exist`;
  if (anchor === undefined || !path.endsWith('.md')) return null;
  const anchors = anchorsOf(target ? read(path) : md);
  return anchors.has(anchor) ? null : `${target || relative(ROOT, file)} has no heading with anchor #${anchor}`;
}

function checkLinks(md: string, file: string): Problem[] {
  const problems: Problem[] = [];
  for (const l of relativeLinks(md)) {
    const what = linkProblem(md, file, l.target, l.anchor);
    if (what) problems.push({ where: `${relative(ROOT, file)}:${l.line}`, what });
  }
  return problems;
}

// --- Citations anywhere in the repository (code comments, frontmatter, prose) ---

/**
 * Names of documents that are not in this repository (the research digests the code was written from):
 * a reader of the repository or of the npm package cannot follow them. Cite the paper, the official
 * source symbol, or docs/spec-notes.md instead.
 */
const FOREIGN_DOCS = /\b(?:DSA|GRPO|PERF|STYLE)\.md\b|\bspec digests?\b|\bshared\/spec\b/g;

/** `docs/<name>.md`, optionally `#anchor`, written as a path from the repository root (not inside a longer path). */
const DOC_REFS = /(?<![\w./-])docs\/([\w.-]+\.md)(?:#([\w-]+))?/g;

/**
 * A cited path from the repository root: a spec file, a document or a fixture (`spec/dsa/x.spec.ts`,
 * `fixtures/vectors/y.json`), written in any text; wildcards are skipped. (Paths into src/, test/ and
 * bench/ are code references that the type checker and the tests follow, not citations.)
 */
const REPO_PATHS = /(?<![\w./-])((?:spec|docs|fixtures)\/[\w./*-]*[\w*])/g;

/** Extensions that can not end a clause id: `context.ts`, `encoding.md` are files. */
const FILE_EXT = /\.(ts|js|mjs|md|py|json|ya?ml|txt|svg|safetensors)$/;

/**
 * Clause ids written in any text: `<area>.<name>` with a registered area, lowercase, and either a `-` or
 * a second dot (so that code such as `context.length` is not taken for an id), not part of a longer
 * path or identifier, not a file name.
 */
function textClauseRefs(text: string, areas: ReadonlySet<string>): { id: string; offset: number }[] {
  const out: { id: string; offset: number }[] = [];
  for (const m of text.matchAll(/(?<![\w./-])([a-z]+)\.([a-z0-9][a-z0-9-]*(?:\.[a-z0-9][a-z0-9-]*)*)(?![\w(/*])/g)) {
    const id = m[0];
    if (!areas.has(m[1]!) || FILE_EXT.test(id) || !(/-/.test(m[2]!) || m[2]!.includes('.'))) continue;
    out.push({ id, offset: m.index });
  }
  return out;
}

/**
 * Citations in one file's text that do not resolve: names of documents outside the repository,
 * `docs/x.md#anchor` references to a missing document or heading, spec / document / fixture paths that
 * do not exist, and clause ids no spec file registers.
 */
function checkCitations(text: string, file: string, ids: ReadonlySet<string>): Problem[] {
  const where = (offset: number): string => `${relative(ROOT, file)}:${lineAt(text, offset)}`;
  const problems: Problem[] = [];
  for (const m of text.matchAll(FOREIGN_DOCS)) {
    problems.push({ where: where(m.index), what: `cites "${m[0]}", which is not in this repository (cite the paper, the official code or docs/spec-notes.md)` });
  }
  for (const m of text.matchAll(DOC_REFS)) {
    // a path from the repository root resolves as a link written in README.md would
    const what = linkProblem('', join(ROOT, 'README.md'), `docs/${m[1]}`, m[2]);
    if (what) problems.push({ where: where(m.index), what });
  }
  for (const m of text.matchAll(REPO_PATHS)) {
    if (m[1]!.includes('*') || /^docs\/[\w.-]+\.md$/.test(m[1]!) || existsSync(join(ROOT, m[1]!))) continue;
    problems.push({ where: where(m.index), what: `path ${m[1]} does not exist in the repository` });
  }
  const areas = new Set([...ids].map((id) => id.split('.')[0]!));
  for (const r of textClauseRefs(text, areas)) {
    if (!ids.has(r.id)) problems.push({ where: where(r.offset), what: `clause \`${r.id}\` is not the id of any spec file (spec/*/*.spec.ts frontmatter)` });
  }
  const line = (p: Problem): number => Number(p.where.slice(p.where.lastIndexOf(':') + 1));
  return problems.sort((a, b) => line(a) - line(b));
}

/** Text files scanned for citations: src/, spec/, docs/, bench/, scripts/, test/ and README.md (generated site and bench output skipped). */
const SCANNED_DIRS = ['src', 'spec', 'docs', 'bench', 'scripts', 'test'];
const SKIPPED = new Set(['docs/site', 'bench/out', 'test/.doctest-tmp', 'node_modules']);
/** The two registry lints plant unresolved citations in their own source on purpose. */
const PLANTING = new Set(['test/docs-lint.test.ts', 'test/spec-index.test.ts']);

function textFiles(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (SKIPPED.has(relative(ROOT, p))) continue;
    if (e.isDirectory()) textFiles(p, out);
    else if (/\.(ts|js|mjs|md|py|sh|ya?ml|json)$/.test(e.name)) out.push(p);
  }
  return out;
}

const SCANNED = [join(ROOT, 'README.md'), ...SCANNED_DIRS.flatMap((d) => textFiles(join(ROOT, d)))]
  .filter((f) => !PLANTING.has(relative(ROOT, f)))
  .sort();

// --- The lint ---

const read = (f: string): string => readFileSync(f, 'utf8');
const show = (ps: Problem[]): string[] => ps.map((p) => `${p.where}: ${p.what}`);

describe('docs lint', () => {
  const clauses = registeredClauses();

  it('the clause registries are read, and the guides cite clauses', () => {
    expect(clauses.size).toBeGreaterThan(20);
    expect(clauses.has('dsa.selection.eq2-topk')).toBe(true);
    const prefixes = new Set([...clauses].map((id) => id.split('.')[0]!));
    expect(clauseRefs(read(join(ROOT, 'docs', 'equations.md')), prefixes).length).toBeGreaterThan(20);
    expect(clauseRefs(read(join(ROOT, 'docs', 'tour.md')), prefixes).length).toBeGreaterThan(15);
  });

  it.each(['docs/equations.md', 'docs/tour.md'])('%s: every function named is exported by the module named', (f) => {
    const file = join(ROOT, f);
    const refs = functionRefs(read(file), file);
    expect(refs.length).toBeGreaterThan(20);
    expect(show(checkFunctions(read(file), file))).toEqual([]);
  });

  it.each(MARKDOWN.map((f) => relative(ROOT, f)))('%s: every clause id is registered', (f) => {
    const file = join(ROOT, f);
    expect(show(checkClauses(read(file), file, clauses))).toEqual([]);
  });

  it.each([...MARKDOWN, join(ROOT, 'spec', 'INDEX.md')].map((f) => relative(ROOT, f)))('%s: every relative link and #anchor resolves', (f) => {
    const file = join(ROOT, f);
    expect(show(checkLinks(read(file), file))).toEqual([]);
  });

  it('scans the code, the specs, the docs and the benchmarks for citations', () => {
    const scanned = SCANNED.map((f) => relative(ROOT, f));
    for (const f of ['src/fp8.ts', 'spec/dsa/indexer-eq1-score.spec.ts', 'docs/deviations.md', 'bench/render.ts', 'src/bench/flops.ts', 'bench/peer/attention_peer.py', 'scripts/spec-index.ts', 'README.md']) {
      expect(scanned).toContain(f);
    }
    expect(scanned.some((f) => f.startsWith('docs/site/'))).toBe(false);
    // the scan sees real citations: docs/spec-notes.md anchors and clause ids in code comments
    const refs = SCANNED.flatMap((f) => [...read(f).matchAll(DOC_REFS)]);
    expect(refs.filter((m) => m[1] === 'spec-notes.md' && m[2]).length).toBeGreaterThan(30);
    const areas = new Set([...clauses].map((id) => id.split('.')[0]!));
    expect(SCANNED.flatMap((f) => textClauseRefs(read(f), areas)).length).toBeGreaterThan(clauses.size);
  });

  it('every citation in src/, spec/, docs/, bench/, scripts/, test/ and README.md resolves', () => {
    expect(show(SCANNED.flatMap((file) => checkCitations(read(file), file, clauses)))).toEqual([]);
  });
});

describe('docs lint catches mistakes (checkers on bad in-memory documents)', () => {
  const file = join(ROOT, 'docs', 'bad.md');
  const clauses = registeredClauses();

  it('a function attributed to the wrong module, or to none that exports it', () => {
    const md = [
      '| paper | function(s) | spec |',
      '|---|---|---|',
      '| Eq. 1 | [indexer.ts](../src/indexer.ts) `indexerScores`, `selectTopK` | `dsa.indexer.eq1-score` |',
      '| Eq. 2 | `fp8Index` (the `fp8_index` kernel, `mode`); `noSuchFunction` ([topk.ts](../src/topk.ts)) | — |',
      '| Eq. 3 | `selectionMask` (with `RoutingRecord`s and `madeUpType`s) | — |',
      '',
      'Prose: [src/topk.ts](../src/topk.ts) has `selectTopK(scores, startPos, k)` but not `indexerScoresExact`.',
      '',
      'No link here: `madeUpHelper` is exported by nobody; `rmsNorm` is.',
    ].join('\n');
    const problems = show(checkFunctions(md, file));
    expect(problems).toEqual([
      'docs/bad.md:3: `selectTopK` is not exported by src/indexer.ts (it is by src/topk.ts)',
      'docs/bad.md:4: `noSuchFunction` is not exported by src/topk.ts',
      'docs/bad.md:5: `madeUpType` is not exported by any public module',
      'docs/bad.md:7: `indexerScoresExact` is not exported by src/topk.ts (it is by src/indexer.ts)',
      'docs/bad.md:9: `madeUpHelper` is not exported by any public module',
    ]);
  });

  it('an unregistered clause id (file names and wildcards are not clause ids)', () => {
    const md = 'See `dsa.indexer.eq1-score`, `dsa.indexer.eq9-made-up`, `grpo.nope`, `moe.ts`, `encoding.*`, `indexer.score`.\n';
    expect(show(checkClauses(md, file, clauses))).toEqual([
      'docs/bad.md:1: clause `dsa.indexer.eq9-made-up` is not the id of any spec file (spec/*/*.spec.ts frontmatter)',
      'docs/bad.md:1: clause `grpo.nope` is not the id of any spec file (spec/*/*.spec.ts frontmatter)',
    ]);
  });

  it('a relative link to a missing file or heading (http, code spans and fences are skipped)', () => {
    const md = [
      '# Top of the page',
      '[ok](tour.md#step-1--index-scores-eq-1) [ok](../src/topk.ts) [web](https://example.com/x.md) [anchor](#top-of-the-page)',
      '[missing](no-such-file.md) ![missing picture](img/none.svg)',
      '`[not a link](nowhere.md)`',
      '```',
      '[in a fence](nowhere.md)',
      '# Not a heading (in a fence)',
      '```',
      '[no such heading](tour.md#step-99) [nor here](#not-a-heading-in-a-fence) [code has no anchors](../src/topk.ts#L1)',
    ].join('\n');
    expect(show(checkLinks(md, file))).toEqual([
      'docs/bad.md:3: link target no-such-file.md does not exist',
      'docs/bad.md:3: link target img/none.svg does not exist',
      'docs/bad.md:9: tour.md has no heading with anchor #step-99',
      'docs/bad.md:9: docs/bad.md has no heading with anchor #not-a-heading-in-a-fence',
    ]);
  });

  it('heading anchors follow GitHub: punctuation dropped, spaces to dashes, repeats numbered', () => {
    expect([...anchorsOf('# Numerics (FP8, Hadamard, RoPE, norms)\n## V3.2-Exp and V3.2\n### Step 1 — Index scores (Eq. 1)\n## Notes\n## Notes\n')]).toEqual([
      'numerics-fp8-hadamard-rope-norms', 'v32-exp-and-v32', 'step-1--index-scores-eq-1', 'notes', 'notes-1',
    ]);
  });

  it('every kind of unresolved citation planted in a comment is reported, and only those', () => {
    const code = [
      '/**',
      ' * Block-wise FP8 quantization [kernel.py act_quant_kernel; DSA.md §2.4].',
      ' * The YaRN ramp (GRPO.md A2, spec digest §1.4, see ../shared/spec/PERF.md).',
      ' * Resolves: docs/spec-notes.md#activation-quantization, docs/deviations.md, paper §2.1 Eq. (1),',
      ' * clause dsa.selection.eq2-topk, `context.length`, context.ts, encoding.* and moe.ts.',
      ' * Does not: docs/spec-notes.md#no-such-section, docs/no-such-doc.md, clause dsa.selection.eq2-made-up,',
      ' * spec/grpo/indexer-kl-dense-eq3.spec.ts (moved); fixtures/vectors/grpo-*.json is a pattern.',
      " * 'grpo.indexer-kl-dense-eq3' (renamed to dsa.indexer-loss.dense-eq3).",
      ' */',
    ].join('\n');
    expect(show(checkCitations(code, join(ROOT, 'src', 'bad.ts'), clauses))).toEqual([
      'src/bad.ts:2: cites "DSA.md", which is not in this repository (cite the paper, the official code or docs/spec-notes.md)',
      'src/bad.ts:3: cites "GRPO.md", which is not in this repository (cite the paper, the official code or docs/spec-notes.md)',
      'src/bad.ts:3: cites "spec digest", which is not in this repository (cite the paper, the official code or docs/spec-notes.md)',
      'src/bad.ts:3: cites "shared/spec", which is not in this repository (cite the paper, the official code or docs/spec-notes.md)',
      'src/bad.ts:3: cites "PERF.md", which is not in this repository (cite the paper, the official code or docs/spec-notes.md)',
      'src/bad.ts:6: docs/spec-notes.md has no heading with anchor #no-such-section',
      'src/bad.ts:6: link target docs/no-such-doc.md does not exist',
      'src/bad.ts:6: clause `dsa.selection.eq2-made-up` is not the id of any spec file (spec/*/*.spec.ts frontmatter)',
      'src/bad.ts:7: path spec/grpo/indexer-kl-dense-eq3.spec.ts does not exist in the repository',
      'src/bad.ts:8: clause `grpo.indexer-kl-dense-eq3` is not the id of any spec file (spec/*/*.spec.ts frontmatter)',
    ]);
  });

  it('the repository scan fails when a copy of a real file gets a planted citation', () => {
    // real files change; compare what is reported, not where
    const whats = (text: string, f: string): string[] => checkCitations(text, join(ROOT, f), clauses).map((p) => p.what);
    const plant = (f: string, from: string, to: string): string => {
      const text = read(join(ROOT, f));
      expect(whats(text, f)).toEqual([]);
      expect(text).toContain(from);
      return text.replace(from, to);
    };
    expect(whats(plant('src/fp8.ts', 'docs/spec-notes.md#fp8-e4m3fn', 'DSA.md §2.4'), 'src/fp8.ts')).toEqual([
      'cites "DSA.md", which is not in this repository (cite the paper, the official code or docs/spec-notes.md)',
    ]);
    const spec = 'spec/dsa/indexer-eq1-score.spec.ts';
    expect(whats(plant(spec, 'see: docs/spec-notes.md#lightning-indexer', 'see: docs/spec-notes.md#the-indexer'), spec)).toEqual([
      'docs/spec-notes.md has no heading with anchor #the-indexer',
    ]);
    const doc = 'docs/deviations.md';
    expect(whats(plant(doc, '([spec-notes.md](spec-notes.md#selection))', '(see spec/grpo/indexer-kl-sparse-eq4.spec.ts)'), doc)).toEqual([
      'path spec/grpo/indexer-kl-sparse-eq4.spec.ts does not exist in the repository',
    ]);
  });
});
