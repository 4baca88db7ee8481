/**
 * The spec suite's harness (test262-style: a tiny vocabulary shared by every `spec/**\/*.spec.ts`).
 * Spec files import only this, `src/<module>.ts` and fixtures.
 */
import { readFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

type Numeric = ArrayLike<number> | number | { dataSync(): ArrayLike<number> } | number[][];

function flat(v: Numeric): number[] {
  if (typeof v === 'number') return [v];
  if (typeof (v as { dataSync?: unknown }).dataSync === 'function') return Array.from((v as { dataSync(): ArrayLike<number> }).dataSync());
  return (Array.from(v as ArrayLike<number | number[]>) as Array<number | number[]>).flat(Infinity as 1) as number[];
}

/**
 * Asserts |actual − expected| ≤ atol + rtol·|expected| element-wise (NaN matches NaN). Accepts numbers,
 * (nested) arrays, typed arrays and tensors.
 */
export function assertClose(actual: Numeric, expected: Numeric, { atol = 0, rtol = 0 }: { atol?: number; rtol?: number } = {}): void {
  const a = flat(actual);
  const e = flat(expected);
  expect(a.length, 'length').toBe(e.length);
  const bad: string[] = [];
  for (let i = 0; i < e.length && bad.length < 5; i++) {
    const ok = Number.isNaN(e[i]!) ? Number.isNaN(a[i]!) : Math.abs(a[i]! - e[i]!) <= atol + rtol * Math.abs(e[i]!);
    if (!ok) bad.push(`element ${i}: got ${a[i]}, expected ${e[i]}`);
  }
  expect(bad, `assertClose (atol ${atol}, rtol ${rtol})`).toEqual([]);
}

/** Asserts a tensor's (or shape-bearing object's) shape. */
export function assertShape(actual: { shape: readonly number[] }, shape: readonly number[]): void {
  expect([...actual.shape]).toEqual([...shape]);
}

/** Asserts two collections hold the same set of values (order and duplicates ignored). */
export function assertSetEqual<T>(actual: Iterable<T>, expected: Iterable<T>): void {
  const sort = (s: Set<T>): T[] => [...s].sort((x, y) => (String(x) < String(y) ? -1 : String(x) > String(y) ? 1 : 0));
  expect(sort(new Set(actual))).toEqual(sort(new Set(expected)));
}

/** Asserts `fn` throws an instance of `ctor` whose message matches `message`. */
export function assertThrows(ctor: new (...args: never[]) => Error, fn: () => unknown, message?: RegExp | string): void {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  expect(thrown, 'expected a throw').toBeInstanceOf(ctor);
  if (message !== undefined) expect((thrown as Error).message).toMatch(message);
}

/** Parses `fixtures/vectors/<name>.json`. */
export function loadVector(name: string): any {
  return JSON.parse(readFileSync(join(ROOT, 'fixtures', 'vectors', name.endsWith('.json') ? name : `${name}.json`), 'utf8'));
}
