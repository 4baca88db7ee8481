/**
 * The clause registry of the spec suite (test262 style): every `spec/<area>/*.spec.ts` opens with a YAML
 * frontmatter block, and that block is the only place clause metadata lives:
 *
 * ```
 * /*---
 * id: dsa.selection.eq2-topk            # <area>.<name>; <area> is the spec folder
 * title: S_t = the min(k, t+1) best …   # the clause in one line
 * paper: §2.1, Eq. (2)                  # anchor in the DeepSeek-V3.2 paper (arXiv 2512.02556)
 * official: inference/model.py Indexer.forward   # symbol(s) of the official code, `;`-separated
 * info: |                               # the paper's sentence, quoted, where there is one
 *   Given the index scores {I_{t,s}} …
 * description: what this file checks
 * see: other sources (docs/spec-notes.md#…, fixtures, other papers), `;`-separated
 * ---*\/
 * ```
 *
 * `id`, `title`, `description` and at least one of `paper` / `official` are required. This script reads
 * the frontmatter of every spec file and writes `spec/INDEX.md` from it alone; `test/spec-index.test.ts`
 * fails when a frontmatter is incomplete or malformed, when an id is repeated or lives in the wrong
 * folder, or when INDEX.md is stale.
 *
 * Run: `npx tsx scripts/spec-index.ts` (or `npm run spec:index`).
 */
import { readdirSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { join, relative, resolve, dirname, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

export const SPEC_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'spec');

/** The spec folders in paper order, each with the heading INDEX.md gives it. A clause id starts with its folder. */
export const AREAS: ReadonlyArray<{ area: string; heading: string }> = [
  { area: 'dsa', heading: 'DeepSeek Sparse Attention: MLA, lightning indexer, selection, indexer losses (paper §2.1, §2.1.1)' },
  { area: 'moe', heading: 'MoE routing and Keep Routing (official `Gate`, `MoE`; paper §3.1)' },
  { area: 'grpo', heading: 'GRPO as V3.2 scales it, Keep Sampling Mask (paper §3.1)' },
  { area: 'encoding', heading: 'Chat encoding and DSML tool calls (official `encoding/encoding_dsv32.py`)' },
  { area: 'context', heading: 'Thinking context management: the retention rule (paper §3.2.1)' },
  { area: 'numerics', heading: 'Numerics of the official kernels (FP8, Hadamard, RoPE, norms)' },
  { area: 'checkpoint', heading: 'Released checkpoint and config' },
];

/** Files of the official DeepSeek-V3.2 release that `official:` may name. */
export const OFFICIAL_FILES: readonly string[] = [
  'inference/model.py', 'inference/kernel.py', 'inference/convert.py', 'config.json',
  'encoding/encoding_dsv32.py', 'encoding/test_encoding_dsv32.py',
];

/** Sections and equations of the DeepSeek-V3.2 paper (arXiv 2512.02556 v1) that a `paper:` anchor may name. */
export const PAPER_SECTIONS: readonly string[] = ['1', '2', '2.1', '2.1.1', '2.2', '2.3', '3', '3.1', '3.2', '3.2.1', '3.2.2', '3.2.3'];
export const PAPER_EQUATIONS = 9;

/** What is wrong with a `paper:` anchor: it must start with a section, and every § and Eq. must exist in the paper. */
export function paperAnchorProblems(paper: string): string[] {
  const problems: string[] = [];
  if (!/^§\d/.test(paper)) problems.push(`paper anchor '${paper}' does not start with a section (§n.m)`);
  for (const m of paper.matchAll(/§(\d+(?:\.\d+)*)/g)) {
    if (!PAPER_SECTIONS.includes(m[1]!)) problems.push(`paper anchor '${paper}' names §${m[1]}, which is not a section of the paper (${PAPER_SECTIONS.map((x) => `§${x}`).join(', ')})`);
  }
  for (const m of paper.matchAll(/Eqs?\.\s*\(?(\d+)\)?(?:\s*[–-]\s*\(?(\d+)\)?)?/g)) {
    for (const n of [m[1], m[2]].filter((x): x is string => x !== undefined).map(Number)) {
      if (n < 1 || n > PAPER_EQUATIONS) problems.push(`paper anchor '${paper}' names Eq. (${n}); the paper numbers Eq. (1)–(${PAPER_EQUATIONS})`);
    }
  }
  return problems;
}

const REQUIRED = ['id', 'title', 'description'] as const;
const OPTIONAL = ['paper', 'official', 'info', 'see'] as const;
const KEYS: readonly string[] = [...REQUIRED, ...OPTIONAL];

/** One clause: the frontmatter of the spec file that registers it. */
export interface Clause {
  id: string;
  title: string;
  description: string;
  paper?: string;
  official?: string;
  info?: string;
  see?: string;
  /** spec file, relative to spec/ with `/` separators */
  file: string;
}

/** What is wrong with a spec file or with the registry as a whole, one line each (`file: problem`). */
export type Problem = string;

/** `;`-separated parts of a reference, not splitting inside parentheses: `a (x; y); b` → [`a (x; y)`, `b`]. */
export function splitOutsideParens(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '(') depth++;
    else if (text[i] === ')') depth = Math.max(0, depth - 1);
    else if (text[i] === ';' && depth === 0) {
      parts.push(text.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(text.slice(start).trim());
  return parts.filter((p) => p);
}

function walk(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir).sort()) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) walk(p, out);
    else out.push(p);
  }
  return out;
}

/**
 * The clause a spec file's text registers, or the problems that keep it from registering one.
 * @param text the spec file's source
 * @param file its path relative to spec/ (`area/name.spec.ts`), used in messages and for the folder check
 */
export function parseFrontmatter(text: string, file: string): { clause?: Clause; problems: Problem[] } {
  const m = /^\s*\/\*---\n([\s\S]*?)\n---\*\//.exec(text);
  if (!m) return { problems: [`${file}: no /*--- ... ---*/ frontmatter at the top`] };
  let meta: unknown;
  try {
    meta = parse(m[1]!);
  } catch (e) {
    return { problems: [`${file}: frontmatter is not YAML: ${(e as Error).message.split('\n')[0]}`] };
  }
  if (!meta || typeof meta !== 'object' || Array.isArray(meta)) return { problems: [`${file}: frontmatter is not a YAML mapping`] };
  const fields = meta as Record<string, unknown>;
  const problems: Problem[] = [];
  for (const k of Object.keys(fields)) if (!KEYS.includes(k)) problems.push(`${file}: unknown frontmatter key '${k}' (expected ${KEYS.join(', ')})`);
  for (const k of KEYS) {
    if (k in fields && (typeof fields[k] !== 'string' || !(fields[k] as string).trim())) problems.push(`${file}: '${k}' must be a non-empty string`);
  }
  const str = (k: string): string | undefined => (typeof fields[k] === 'string' && (fields[k] as string).trim() ? (fields[k] as string).trim() : undefined);
  const missing = REQUIRED.filter((k) => !str(k));
  if (missing.length) problems.push(`${file}: frontmatter lacks ${missing.join(', ')}`);
  const paper = str('paper');
  const official = str('official');
  if (!paper && !official) problems.push(`${file}: frontmatter names neither a paper anchor ('paper') nor an official symbol ('official')`);
  if (paper) problems.push(...paperAnchorProblems(paper).map((p) => `${file}: ${p}`));
  if (official) {
    for (const part of splitOutsideParens(official)) {
      if (!OFFICIAL_FILES.some((f) => part === f || part.startsWith(`${f} `))) {
        problems.push(`${file}: official symbol '${part}' does not start with an official file (${OFFICIAL_FILES.join(', ')})`);
      }
    }
  }
  const id = str('id');
  const area = file.split('/')[0]!;
  if (id && id.split('.')[0] !== area) problems.push(`${file}: clause '${id}' is in spec/${area}/, but its id says spec/${id.split('.')[0]}/`);
  if (id && !/^[a-z][a-z0-9]*(\.[a-z0-9][a-z0-9-]*)+$/.test(id)) problems.push(`${file}: clause id '${id}' is not area.name (lowercase, dots, dashes)`);
  if (problems.length) return { problems };
  const clause: Clause = { id: id!, title: str('title')!, description: str('description')!, file };
  for (const k of OPTIONAL) {
    const v = str(k);
    if (v) clause[k] = v;
  }
  return { clause, problems };
}

/** Problems of a set of clauses taken together: repeated ids, folders that are not spec areas. */
export function registryProblems(clauses: readonly Clause[]): Problem[] {
  const problems: Problem[] = [];
  const seen = new Map<string, string>();
  for (const c of clauses) {
    const other = seen.get(c.id);
    if (other) problems.push(`${c.file}: clause '${c.id}' is already registered by ${other}`);
    else seen.set(c.id, c.file);
    const area = c.file.split('/')[0]!;
    if (!AREAS.some((a) => a.area === area)) problems.push(`${c.file}: spec/${area}/ is not a spec area (${AREAS.map((a) => a.area).join(', ')})`);
  }
  return problems;
}

/** Every clause registered under `specDir`, and every problem found on the way. */
export function readClauses(specDir = SPEC_DIR): { clauses: Clause[]; problems: Problem[] } {
  const clauses: Clause[] = [];
  const problems: Problem[] = [];
  for (const path of walk(specDir).filter((f) => f.endsWith('.spec.ts'))) {
    const file = relative(specDir, path).split(sep).join('/');
    const r = parseFrontmatter(readFileSync(path, 'utf8'), file);
    problems.push(...r.problems);
    if (r.clause) clauses.push(r.clause);
  }
  problems.push(...registryProblems(clauses));
  return { clauses, problems };
}

const cell = (s: string | undefined): string => (s ?? '—').replace(/\s*\n\s*/g, ' ').replace(/\|/g, '\\|');

/** Markdown of spec/INDEX.md, from the clauses alone. */
export function renderIndex(clauses: readonly Clause[]): string {
  const lines = [
    '# Spec clause index',
    '',
    'Generated by `npx tsx scripts/spec-index.ts` from the frontmatter of the spec files alone (the frontmatter is the',
    'clause registry); `test/spec-index.test.ts` fails when it is stale. "Paper" anchors point into DeepSeek-V3.2',
    '(arXiv 2512.02556); "official" names symbols of the official inference and encoding code; each spec file quotes',
    "the paper's sentence (`info`) where there is one. [docs/spec-notes.md](../docs/spec-notes.md) explains the",
    'official code in our words. The frontmatter fields of a new spec file are described in',
    '[scripts/spec-index.ts](../scripts/spec-index.ts).',
  ];
  for (const { area, heading } of AREAS) {
    const rows = clauses.filter((c) => c.file.split('/')[0] === area).sort((a, b) => a.id.localeCompare(b.id));
    if (!rows.length) continue;
    lines.push('', `## ${area} — ${heading}`, '', '| clause | paper | official | statement | spec file |', '|---|---|---|---|---|');
    for (const c of rows) {
      lines.push(`| \`${c.id}\` | ${cell(c.paper)} | ${cell(c.official)} | ${cell(c.title)} | [${c.file}](${c.file}) |`);
    }
  }
  return lines.join('\n') + '\n';
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { clauses, problems } = readClauses();
  if (problems.length) {
    process.stderr.write(`spec-index: ${problems.length} problem(s) in the spec frontmatter:\n${problems.map((p) => `  spec/${p}`).join('\n')}\n`);
    process.exit(1);
  }
  writeFileSync(join(SPEC_DIR, 'INDEX.md'), renderIndex(clauses));
  process.stdout.write(`wrote ${join(SPEC_DIR, 'INDEX.md')} (${clauses.length} clauses)\n`);
}
