/**
 * package.json `exports` → the source modules behind them, for the tests that walk the public
 * subpaths (test/contract.test.ts, test/browser-safe.test.ts).
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..', '..');

/** `./x` → src/x.ts, or the target path with dist/ (or dist/src/) → src/ and .js/.d.ts → .ts; fails loudly when absent. */
export function sourceOf(key: string, target: unknown): string {
  const targets: string[] = [];
  const collect = (t: unknown): void => {
    if (typeof t === 'string') targets.push(t);
    else if (t && typeof t === 'object') Object.values(t).forEach(collect);
  };
  collect(target);
  const candidates = [
    key === '.' ? 'src/index.ts' : `src/${key.slice(2)}.ts`,
    ...targets.map((t) => t.replace(/^\.\//, '').replace(/^dist\/(src\/)?/, 'src/').replace(/\.d\.ts$|\.js$|\.mjs$/, '.ts')),
  ];
  const found = candidates.find((c) => c.startsWith('src/') && c.endsWith('.ts') && existsSync(join(ROOT, c)));
  if (!found) throw new Error(`package.json exports '${key}': no source module found (tried ${candidates.join(', ')})`);
  return found;
}

/** An export whose targets are all JSON files (data, not a module of functions). */
export function isDataExport(target: unknown): boolean {
  const targets = typeof target === 'string' ? [target] : target && typeof target === 'object' ? Object.values(target) : [];
  return targets.length > 0 && targets.every((t) => typeof t === 'string' && t.endsWith('.json'));
}

/** package.json `exports` with its module subpaths, each mapped to its source file (absolute path). */
export function publicSources(exports: Record<string, unknown>): Map<string, string> {
  const out = new Map<string, string>();
  for (const [key, target] of Object.entries(exports)) {
    if (!isDataExport(target)) out.set(key, join(ROOT, sourceOf(key, target)));
  }
  return out;
}
