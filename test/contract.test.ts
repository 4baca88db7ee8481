// The input contract of every exported function, generated from package.json `exports` (not a hand
// list of functions). How a function is classified:
//
// - a TENSOR function has a contract in src/internal/contract.ts (CONTRACTS, registered when its module
//   loads) and a valid call in test/helpers/valid-calls.ts. For every tensor its valid arguments hold
//   (found by walking the arguments, so nested weights count) the test requires a contract entry, then
//   calls the function with that tensor replaced by (a) a tensor of the wrong rank, (b) a tensor with
//   one dim one larger, for every dim, and (c) a plain array. (a) and (c) must throw; (b) must throw
//   whenever the dim's letter is tied to another argument (it appears twice among the tensors passed,
//   or the function fixes it from a non-tensor argument such as the config). Every throw must name the
//   function and the argument, and leave `tf.memory().numTensors` unchanged. An argument whose shape is
//   free (`[...]`) has no wrong rank; a function whose letters are all free has no wrong size.
// - which functions are tensor functions is decided by their signatures (parsed with the TypeScript
//   compiler): a parameter typed as a tf.Tensor or a record of tensors (…Weights, Linear, …Cache,
//   GrpoInputs) needs a contract, except the BOOKKEEPING functions that only list, free or measure
//   such records (they get the plain check below).
// - every other function is a PLAIN function: called with a symbol (a value no function accepts) as
//   its first argument, it must throw an error naming the function and that parameter — except the
//   functions that take no argument and the two total functions `describeValue` and `isPyObject`,
//   which must return for it.
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { resolve, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { tf, initBackend } from '../src/backend.ts';
import * as contractModule from '../src/internal/contract.ts';
import { CONTRACTS, shapeLetters } from '../src/internal/contract.ts';
import ts from 'typescript';
import { VALID_CALLS } from './helpers/valid-calls.ts';
import { isDataExport, sourceOf } from './helpers/package-exports.ts';

const ROOT = resolve(__dirname, '..');
type Fn = (...args: unknown[]) => unknown;

function paramNames(fn: Fn): string[] {
  const src = Function.prototype.toString.call(fn);
  const open = src.indexOf('(');
  let depth = 0;
  let end = open;
  for (let i = open; i < src.length; i++) {
    if ('([{'.includes(src[i]!)) depth++;
    else if (')]}'.includes(src[i]!) && --depth === 0) {
      end = i;
      break;
    }
  }
  const inner = src.slice(open + 1, end);
  const names: string[] = [];
  let d = 0;
  let cur = '';
  for (const ch of inner + ',') {
    if ('([{'.includes(ch)) d++;
    if (')]}'.includes(ch)) d--;
    if (ch === ',' && d === 0) {
      if (cur.trim()) names.push(cur.trim().replace(/^\.\.\./, '').split(/\s*=/)[0]!.trim());
      cur = '';
    } else cur += ch;
  }
  return names;
}

const isClass = (f: Fn): boolean => /^class[\s{]/.test(Function.prototype.toString.call(f));
const isPlain = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null);

/** Every tensor reachable through plain objects and arrays, with its argument path. */
function tensorsIn(args: unknown[], names: string[]): { path: string; get: (a: unknown[]) => tf.Tensor; set: (a: unknown[], t: unknown) => void }[] {
  const out: ReturnType<typeof tensorsIn> = [];
  const walk = (v: unknown, path: string, keys: (string | number)[]): void => {
    if (v instanceof tf.Tensor) {
      const get = (a: unknown[]) => keys.slice(1).reduce<unknown>((o, k) => (o as Record<string | number, unknown>)[k], a[keys[0] as number]) as tf.Tensor;
      const set = (a: unknown[], t: unknown) => {
        if (keys.length === 1) a[keys[0] as number] = t;
        else (keys.slice(1, -1).reduce<unknown>((o, k) => (o as Record<string | number, unknown>)[k], a[keys[0] as number]) as Record<string | number, unknown>)[keys[keys.length - 1]!] = t;
      };
      out.push({ path, get, set });
    } else if (Array.isArray(v)) v.forEach((c, i) => walk(c, `${path}[${i}]`, [...keys, i]));
    else if (isPlain(v)) for (const [k, c] of Object.entries(v)) walk(c, `${path}.${k}`, [...keys, k]);
  };
  args.forEach((a, i) => walk(a, names[i] ?? `arg${i}`, [i]));
  return out;
}

function disposeDeep(v: unknown): void {
  if (v instanceof tf.Tensor) v.dispose();
  else if (Array.isArray(v)) v.forEach(disposeDeep);
  else if (v && typeof v === 'object') Object.values(v).forEach(disposeDeep);
}

/** Calls fn on args built inside a tidy; returns the error (or null) and the tensor count change of the call. */
function attempt(fn: Fn, build: () => unknown[], mutate: (args: unknown[]) => void): { error: Error | null; leaked: number } {
  let error: Error | null = null;
  let leaked = 0;
  tf.tidy(() => {
    const args = build();
    mutate(args);
    const before = tf.memory().numTensors;
    try {
      disposeDeep(fn(...args));
    } catch (e) {
      error = e as Error;
      leaked = tf.memory().numTensors - before;
    }
  });
  return { error, leaked };
}

// --- Signatures: which exported functions take tensors (parsed with the TypeScript compiler) ---

/** Parameter types that hold tensors: a tf.Tensor, or a record of them (weights, caches, GRPO inputs). */
const TENSOR_TYPE = /\btf\.Tensor|\bTensor[1-6]?D\b|\bTensor\b|Weights\b|\bLinear(Like)?\b|Cache\b|GrpoInputs\b/;

/** Functions that take tensor records only to list, free or measure them (no math, no shapes to relate). */
const BOOKKEEPING = new Set([
  'layerTensors', 'disposeLayerWeights', 'disposeGlobalWeights', 'disposeModelWeights',
  'disposeIndexerCache', 'indexerCacheLength', 'disposeMlaCache', 'mlaCacheLength', 'truncateMlaCache',
  'disposeModelCache', 'modelCacheLength',
]);

/** Exported function name → the text of its parameter types, for every function declared in `file`. */
function signatures(file: string): Map<string, string> {
  const sf = ts.createSourceFile(file, readFileSync(join(ROOT, file), 'utf8'), ts.ScriptTarget.ES2022, true, ts.ScriptKind.TS);
  const out = new Map<string, string>();
  for (const st of sf.statements) {
    if (ts.isFunctionDeclaration(st) && st.name && ts.getModifiers(st)?.some((m) => m.kind === ts.SyntaxKind.ExportKeyword)) {
      out.set(st.name.text, st.parameters.map((p) => p.type?.getText(sf) ?? '').join(', '));
    }
  }
  return out;
}

// --- Discovery ---

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { exports: Record<string, unknown> };
const functions = new Map<string, { fn: Fn; subpath: string }>();
const paramTypes = new Map<string, string>();
const moduleExports = new Map<string, Record<string, unknown>>();

beforeAll(async () => {
  await initBackend('cpu');
  for (const [key, target] of Object.entries(pkg.exports)) {
    if (isDataExport(target)) continue; // e.g. "./package.json": no functions to check
    const file = sourceOf(key, target);
    for (const [name, types] of signatures(file)) paramTypes.set(name, types);
    const mod = (await import(pathToFileURL(join(ROOT, file)).href)) as Record<string, unknown>;
    moduleExports.set(key, mod);
    for (const [name, v] of Object.entries(mod)) {
      if (typeof v === 'function' && !isClass(v as Fn) && !functions.has(name)) functions.set(name, { fn: v as Fn, subpath: key });
    }
  }
});

describe('discovery from package.json exports', () => {
  it('maps every subpath to a source module, dist/ targets included', () => {
    expect(sourceOf('./topk', './src/topk.ts')).toBe('src/topk.ts');
    expect(sourceOf('./topk', { types: './dist/topk.d.ts', import: './dist/topk.js' })).toBe('src/topk.ts');
    expect(sourceOf('./topk', { types: './dist/src/topk.d.ts', import: './dist/src/topk.js' })).toBe('src/topk.ts');
    expect(sourceOf('./top-k', { import: './dist/src/topk.js' })).toBe('src/topk.ts'); // key and file names may differ
    expect(sourceOf('.', { import: './dist/index.js' })).toBe('src/index.ts');
    expect(() => sourceOf('./nonexistent', './dist/nonexistent.js')).toThrow(/no source module found/);
    expect(isDataExport('./package.json')).toBe(true);
    expect(isDataExport({ import: './dist/src/topk.js' })).toBe(false);
  });

  it('finds the exported functions (more than 100) and no internal helper among them', () => {
    expect(functions.size).toBeGreaterThan(100);
    const internal = new Set<unknown>(Object.values(contractModule));
    for (const [key, mod] of moduleExports) {
      for (const [name, v] of Object.entries(mod)) expect(internal.has(v as never), `${key} exports internal ${name}`).toBe(false);
      expect(mod).not.toHaveProperty('checkMqaInputs');
      expect(mod).not.toHaveProperty('checkTopk');
    }
  });

  it('gives every function whose signature takes tensors a contract (or lists it as bookkeeping)', () => {
    const missing = [...functions.keys()].filter((n) => TENSOR_TYPE.test(paramTypes.get(n) ?? '') && !CONTRACTS.has(n) && !BOOKKEEPING.has(n));
    expect(missing, 'tensor functions without a contract').toEqual([]);
    expect([...paramTypes.keys()].filter((n) => functions.has(n)).length, 'signatures found').toBeGreaterThan(100);
    // and the rule can fail: a made-up signature is classified as a tensor function
    expect(TENSOR_TYPE.test('x: tf.Tensor2D, w: AttentionWeights')).toBe(true);
    expect(TENSOR_TYPE.test('text: string, options: { thinkingMode: ThinkingMode }')).toBe(false);
  });

  it('has a valid call for every contract and a contract for every valid call', () => {
    const withContract = [...functions.keys()].filter((n) => CONTRACTS.has(n)).sort();
    expect(Object.keys(VALID_CALLS).sort()).toEqual(withContract);
  });
});

// --- Tensor functions ---

describe('tensor functions: wrong rank, wrong size and non-tensors are rejected on entry', () => {
  it.each(Object.keys(VALID_CALLS))('%s', (name) => {
    const entry = functions.get(name);
    expect(entry, `${name} is not exported by any package.json subpath`).toBeDefined();
    const { fn } = entry!;
    const contract = CONTRACTS.get(name)!;
    const build = VALID_CALLS[name]!;
    const names = paramNames(fn);

    const valid = attempt(fn, build, () => {});
    expect(valid.error, `${name}: the valid call failed`).toBeNull();

    const sample = tf.tidy(() => {
      const args = build();
      return tensorsIn(args, names).map((t) => ({ path: t.path, shape: t.get(args).shape, dtype: t.get(args).dtype }));
    });
    expect(sample.length).toBeGreaterThan(0);
    // letters of the tensors passed: a letter used twice, or fixed by a non-tensor argument, is tied
    const specOf = (path: string) => contract.args[path.replace(/\[\d+\]/g, '[]')];
    const count = new Map<string, number>();
    for (const { path } of sample) {
      const spec = specOf(path);
      expect(spec, `${name}: tensor argument ${path} has no contract entry`).toBeDefined();
      const { letters } = shapeLetters(spec!.shape);
      const raw = spec!.shape.replace(/[[\]\s]/g, '').split(',');
      for (const l of letters) count.set(l, (count.get(l) ?? 0) + raw.filter((d) => d.match(/[A-Za-z][A-Za-z0-9_]*/g)?.includes(l)).length);
    }
    const tied = (l: string) => (count.get(l) ?? 0) >= 2 || l in contract.from;
    let sizeErrors = 0;
    let tiedDims = 0;

    const expectNamed = (r: { error: Error | null; leaked: number }, path: string, what: string) => {
      expect(r.error, `${name}: ${what} of ${path} was accepted`).not.toBeNull();
      expect(r.error!.message, `${name}: ${what} of ${path}`).toContain(`${name}()`);
      expect(r.error!.message, `${name}: ${what} of ${path}`).toContain(path);
      expect(r.leaked, `${name}: ${what} of ${path} leaked tensors`).toBe(0);
    };

    sample.forEach(({ path, shape, dtype }, index) => {
      const spec = specOf(path)!;
      const { rank, minRank } = shapeLetters(spec.shape);
      const replace = (make: () => unknown) => (args: unknown[]) => tensorsIn(args, names)[index]!.set(args, make());
      // (a) wrong rank
      if (rank !== null || minRank > 0) {
        const wrong = rank !== null ? [...shape, 1] : shape.slice(shape.length - minRank + 1);
        expectNamed(attempt(fn, build, replace(() => tf.zeros(wrong, dtype))), path, `rank ${wrong.length}`);
      }
      // (c) not a tensor
      expectNamed(attempt(fn, build, replace(() => [[1, 2]])), path, 'a plain array');
      // (b) one dim one larger
      const dims = spec.shape.replace(/[[\]\s]/g, '').split(',').filter((d) => d !== '');
      const head = dims.indexOf('...');
      const named = head < 0 ? dims : dims.filter((d) => d !== '...');
      named.forEach((d, j) => {
        const axis = head < 0 || j < head ? j : shape.length - (named.length - j);
        const bigger = shape.map((n, a) => (a === axis ? n + 1 : n));
        const r = attempt(fn, build, replace(() => tf.zeros(bigger, dtype)));
        const letters = d.match(/[A-Za-z][A-Za-z0-9_]*/g) ?? [];
        const mustFail = letters.length !== 1 || letters[0] !== d || tied(d);
        if (mustFail) {
          tiedDims++;
          expectNamed(r, path, `size ${bigger.join('x')}`);
        }
        if (r.error) {
          sizeErrors++;
          expect(r.error.message).toContain(`${name}()`);
          expect(r.error.message, `${name}: size ${bigger.join('x')} of ${path}`).toContain(path);
          expect(r.leaked).toBe(0);
        }
      });
    });
    // a function with a tied letter has at least one wrong size that is caught
    if (tiedDims > 0) expect(sizeErrors).toBeGreaterThan(0);
  });
});

// --- Plain functions ---

const TOTAL = new Set(['describeValue', 'isPyObject']);

describe('plain functions reject an argument of the wrong kind, naming function and parameter', () => {
  it('covers every exported function without a contract', async () => {
    const plain = [...functions.keys()].filter((n) => !CONTRACTS.has(n));
    expect(plain.length).toBeGreaterThan(30);
    const problems: string[] = [];
    const pending: { name: string; param: string; result: Promise<unknown> }[] = [];
    for (const name of plain) {
      const { fn } = functions.get(name)!;
      const names = paramNames(fn);
      if (names.length === 0) {
        try {
          disposeDeep(fn());
        } catch (e) {
          problems.push(`${name}(): ${(e as Error).message}`);
        }
        continue;
      }
      let error: unknown = null;
      let result: unknown;
      const before = tf.memory().numTensors;
      try {
        result = fn(Symbol('not an argument'));
      } catch (e) {
        error = e;
      }
      if (result instanceof Promise) {
        pending.push({ name, param: names[0]!, result });
        continue;
      }
      const message = error instanceof Error ? error.message : '';
      if (TOTAL.has(name)) {
        if (error !== null) problems.push(`${name} must be total but threw ${message}`);
      } else if (!(error instanceof Error)) problems.push(`${name}(${names.join(', ')}) accepted a symbol as ${names[0]}`);
      else if (!message.includes(`${name}()`) || !message.includes(names[0]!)) problems.push(`${name}(${names[0]}): ${message}`);
      if (tf.memory().numTensors !== before) problems.push(`${name} leaked tensors`);
    }
    // async functions must reject, naming themselves and the parameter
    for (const { name, param, result } of pending) {
      const outcome = await result.then(
        (v) => ({ ok: true as const, v }),
        (e: unknown) => ({ ok: false as const, e }),
      );
      if (outcome.ok) problems.push(`${name}(${param}) accepted a symbol`);
      else if (!(outcome.e instanceof Error) || !outcome.e.message.includes(`${name}()`) || !outcome.e.message.includes(param)) problems.push(`${name}(${param}): ${String(outcome.e)}`);
    }
    expect(pending.length, 'async functions found').toBeGreaterThan(0);
    expect(problems).toEqual([]);
  });

  it('async functions reject a symbol with an error naming them', async () => {
    await expect(initBackend(Symbol('x') as never)).rejects.toThrow(/initBackend\(\): name/);
  });
});
