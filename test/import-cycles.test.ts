// No import cycles in src/: every relative import — static (`import … from`, `export … from`, type-only
// included) and dynamic (`import('…')`) — makes an edge; the graph must be acyclic, so data flows one way
// and every module can be read (and loaded) before the modules that use it.
import { it, expect } from 'vitest';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const SRC = resolve('src');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((e) => {
    const p = join(dir, e);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** Relative specifiers imported by a source text: static imports and re-exports, and dynamic import() calls. */
export function importsOf(text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1'); // comments out (examples in doc comments are not imports)
  const out: string[] = [];
  for (const m of code.matchAll(/^\s*(?:import|export)\s[^;]*?\sfrom\s*['"]([^'"]+)['"]/gm)) out.push(m[1]!);
  for (const m of code.matchAll(/^\s*import\s*['"]([^'"]+)['"]/gm)) out.push(m[1]!);
  for (const m of code.matchAll(/\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g)) out.push(m[1]!);
  return out.filter((s) => s.startsWith('.'));
}

/** The first cycle found by depth-first search, as a list of files (first = last), or null. */
export function findCycle(graph: Map<string, string[]>): string[] | null {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (n: string): string[] | null => {
    if (state.get(n) === 'done') return null;
    if (state.get(n) === 'open') return [...stack.slice(stack.indexOf(n)), n];
    state.set(n, 'open');
    stack.push(n);
    for (const m of graph.get(n) ?? []) {
      const c = visit(m);
      if (c) return c;
    }
    stack.pop();
    state.set(n, 'done');
    return null;
  };
  for (const n of [...graph.keys()].sort()) {
    const c = visit(n);
    if (c) return c;
  }
  return null;
}

it('the import scanner sees static, re-export, type-only and dynamic imports, not commented ones', () => {
  const text = [
    "import { a } from './a.ts';",
    "import type { B } from '../b.ts';",
    "export { c } from './c.ts';",
    "const d = await import('./d.ts');",
    "// import { e } from './e.ts';",
    " * const f = await import('./f.ts');", // inside a doc comment below
    "import { tf } from 'node:path';",
  ].join('\n').replace(" * const f", '/**\n * const f') + '\n */';
  expect(importsOf(text)).toEqual(['./a.ts', '../b.ts', './c.ts', './d.ts']);
});

it('the cycle finder finds a cycle through a dynamic edge and none in a DAG', () => {
  expect(findCycle(new Map([['a', ['b']], ['b', ['c']], ['c', ['a']]]))).toEqual(['a', 'b', 'c', 'a']);
  expect(findCycle(new Map([['a', ['b', 'c']], ['b', ['c']], ['c', []]]))).toBeNull();
});

it('src/ has no import cycle (static or dynamic)', () => {
  // every file of src/ and whatever they import outside it (bench/peer.ts), followed transitively
  const graph = new Map<string, string[]>();
  const todo = files(SRC);
  while (todo.length) {
    const f = todo.pop()!;
    if (graph.has(f)) continue;
    expect(existsSync(f), `missing import target ${relative(SRC, f)}`).toBe(true);
    const targets = importsOf(readFileSync(f, 'utf8')).map((s) => resolve(dirname(f), s));
    graph.set(f, targets);
    todo.push(...targets);
  }
  expect(graph.size).toBeGreaterThan(30);
  const cycle = findCycle(graph);
  expect(cycle?.map((f) => relative(SRC, f)).join(' → ') ?? null).toBeNull();
});

it('nothing in src/ imports src/conformance/run.ts except the CLI and the browser run of it', () => {
  const run = join(SRC, 'conformance', 'run.ts');
  const importers = files(SRC).filter((f) => importsOf(readFileSync(f, 'utf8')).some((s) => resolve(dirname(f), s) === run));
  // the runners: the CLI, the conformance page (src/browser/runner.ts) and its Node driver (`conformance --backend`)
  expect(importers.map((f) => relative(SRC, f)).sort()).toEqual([join('browser', 'runner.ts'), join('browser_host', 'conformance.ts'), join('cli', 'conformance.ts')]);
});
