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
 *   elementwise, strings exactly). A remark may follow the value after two or more spaces, in
 *   parentheses: `expr; // => [1, 2]  (why)`; it is not checked.
 * - Strict: a result comment whose VALUE (remark removed) is not a literal, or one on a
 *   declaration (`const x = f(); // => 3`), makes the example fail with a message naming the
 *   line. Put explanations on their own `//` line.
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
    if (r && !/^\s*\/\//.test(r[2]!)) {
      const at = `${ex.where} line ${i + 1}`;
      const value = stripRemark(r[3]!);
      if (/^\s*(const|let|var|import|export)\b/.test(r[2]!)) {
        line = `${r[1]}throw new Error(${JSON.stringify(`doc example ${at}: a result comment on a declaration is not checked; put the expression on its own line: ${raw.trim()}`)});`;
      } else if (!isLiteral(value)) {
        line = `${r[1]}throw new Error(${JSON.stringify(`doc example ${at}: the result comment's value is not a JavaScript literal (move remarks to their own // line, or write them after two spaces in parentheses): ${value}`)});`;
      } else {
        line = `${r[1]}await __check(${r[2]}, ${value}, ${JSON.stringify(at)});`;
      }
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

/** `[1, 2]  (a remark)` → `[1, 2]`: a parenthesized remark after two or more spaces is dropped. */
export function stripRemark(value: string): string {
  const m = /^(.*?\S)\s{2,}\([^]*\)\s*$/.exec(value);
  return m ? m[1]! : value;
}

/**
 * Whether `s` is a JavaScript literal: a number (optional sign; decimal, hex/octal/binary,
 * `Infinity`, `NaN`), a string, `true`, `false`, `null`, `undefined`, or an array / object of
 * literals. Not an expression such as `Math.log(3)` or `1 + 1`: the value shown must be the value
 * itself. (A small recursive-descent parser; no evaluation.)
 */
export function isLiteral(s: string): boolean {
  let i = 0;
  const ws = (): void => {
    while (i < s.length && /\s/.test(s[i]!)) i++;
  };
  const eat = (re: RegExp): boolean => {
    re.lastIndex = i;
    const m = re.exec(s);
    if (!m) return false;
    i += m[0].length;
    return true;
  };
  const NUMBER = /[+-]?(?:Infinity|NaN|0[xX][\da-fA-F_]+n?|0[oO][0-7_]+n?|0[bB][01_]+n?|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?n?)(?![\w$])/y;
  const STRING = /'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|`(?:[^`\\$]|\\.)*`/y;
  const WORD = /(?:true|false|null|undefined)(?![\w$])/y;
  const KEY = /[A-Za-z_$][\w$]*|'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|\d+/y;
  const list = (close: string, item: () => boolean): boolean => {
    ws();
    if (s[i] === close) return (i++, true);
    for (;;) {
      if (!item()) return false;
      ws();
      if (s[i] === ',') {
        i++;
        ws();
        if (s[i] === close) return (i++, true);
        continue;
      }
      if (s[i] === close) return (i++, true);
      return false;
    }
  };
  const value = (): boolean => {
    ws();
    if (s[i] === '[') return (i++, list(']', value));
    if (s[i] === '{') {
      i++;
      return list('}', () => {
        if (!eat(KEY)) return false;
        ws();
        if (s[i] !== ':') return false;
        i++;
        return value();
      });
    }
    return eat(NUMBER) || eat(STRING) || eat(WORD);
  };
  if (!value()) return false;
  ws();
  return i === s.length;
}
