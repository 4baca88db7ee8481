/**
 * Extracts the runnable examples of the documentation, for the doc-tests (`test/doc-examples.test.ts`):
 * every ```ts block inside an `@example` of a doc comment under `src/`, and every ```ts block of
 * README.md and docs/*.md that imports from dsv32.
 *
 * Conventions inside an example:
 * - `import { x } from 'dsv32'` / `'dsv32/<module>'` resolve to `src/index.ts` / `src/<module>.ts`;
 *   in a doc comment, the exports of the file itself are in scope without an import, and so is
 *   `tf` (the tfjs-core namespace) everywhere.
 * - A statement followed by a result comment, `expr; // => VALUE` or `expr; // returns VALUE`,
 *   is checked: VALUE is a JavaScript literal (numbers compared to 1e-5 relative, arrays
 *   elementwise, strings exactly). Comments that are not literals are ignored.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export interface DocExample {
  /** where it was found, e.g. `src/fp8.ts:42` or `README.md:30`. */
  where: string;
  /** the source file it documents (its exports are in scope), or null for markdown. */
  module: string | null;
  code: string;
}

function walk(dir: string, ext: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir).sort()) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) walk(p, ext, out);
    else if (p.endsWith(ext)) out.push(p);
  }
  return out;
}

/** ```ts blocks of `@example` tags in doc comments. */
export function examplesInSource(file: string): DocExample[] {
  const text = readFileSync(file, 'utf8');
  const out: DocExample[] = [];
  const re = /@example[^\n]*\n((?:\s*\*[^\n]*\n)*?)\s*\*\s*```(?:ts|typescript)\n([\s\S]*?)\n\s*\*\s*```/g;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const code = m[2]!
      .split('\n')
      .map((l) => l.replace(/^\s*\* ?/, ''))
      .join('\n');
    const line = text.slice(0, m.index).split('\n').length;
    out.push({ where: `${relative(ROOT, file)}:${line}`, module: file, code });
  }
  return out;
}

/** ```ts blocks of a markdown file that import from dsv32. */
export function examplesInMarkdown(file: string): DocExample[] {
  const text = readFileSync(file, 'utf8');
  const out: DocExample[] = [];
  const re = /```(?:ts|typescript)\n([\s\S]*?)\n\s*```/g;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const code = m[1]!.replace(/^ {3}/gm, '');
    if (!/from 'dsv32(\/[\w_]+)?'/.test(code)) continue;
    const line = text.slice(0, m.index).split('\n').length;
    out.push({ where: `${relative(ROOT, file)}:${line}`, module: null, code });
  }
  return out;
}

/** Every example of the project. */
export function allExamples(): DocExample[] {
  const md = [join(ROOT, 'README.md'), ...walk(join(ROOT, 'docs'), '.md')];
  return [...walk(join(ROOT, 'src'), '.ts').flatMap(examplesInSource), ...md.flatMap(examplesInMarkdown)];
}

const RESULT = /^(\s*)(.+?);?\s*\/\/\s*(?:=>|returns)\s+(.+?)\s*$/;

/**
 * Turns an example into a module body: imports resolved, the documented module's exports in
 * scope, result comments turned into checks through `__check(actual, expected, where)`.
 */
export function toModule(ex: DocExample, exportNames: string[]): string {
  const lines = ex.code.split('\n');
  const imported = new Set<string>();
  const body: string[] = [];
  lines.forEach((raw, i) => {
    let line = raw.replace(/from '(dsv32)((?:\/[\w_]+)?)'/, (_m, _p, sub: string) => {
      const target = sub ? join(ROOT, 'src', `${sub.slice(1)}.ts`) : join(ROOT, 'src', 'index.ts');
      return `from ${JSON.stringify(target)}`;
    });
    const imp = /^\s*import\s*\{([^}]*)\}/.exec(line);
    if (imp) for (const n of imp[1]!.split(',')) imported.add(n.trim().split(/\s+as\s+/).pop()!.trim());
    const r = RESULT.exec(line);
    if (r && !/^\s*(const|let|var|import|export|\/\/)/.test(r[2]!) && isLiteral(r[3]!)) {
      line = `${r[1]}await __check(${r[2]}, ${r[3]}, ${JSON.stringify(`${ex.where} line ${i + 1}`)});`;
    }
    body.push(line);
  });
  const header: string[] = [`import { __check } from ${JSON.stringify(join(ROOT, 'test', 'helpers', 'doc-check.ts'))};`];
  if (!imported.has('tf')) header.push(`import { tf } from ${JSON.stringify(join(ROOT, 'src', 'backend.ts'))};`);
  if (ex.module) {
    const names = exportNames.filter((n) => !imported.has(n) && n !== 'tf');
    if (names.length) header.push(`import { ${names.join(', ')} } from ${JSON.stringify(ex.module)};`);
  }
  const imports = body.filter((l) => /^\s*import\s/.test(l));
  const rest = body.filter((l) => !/^\s*import\s/.test(l));
  return [...header, ...imports, 'export default async function () {', ...rest, '}'].join('\n') + '\n';
}

function isLiteral(s: string): boolean {
  try {
    // eslint-disable-next-line no-new-func
    new Function(`return (${s});`)();
    return true;
  } catch {
    return false;
  }
}
