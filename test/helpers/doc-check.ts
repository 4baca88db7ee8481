/** Result check used by the doc-tests: `expr; // => VALUE` in an example becomes `__check(expr, VALUE, where)`. */
import { tf } from '../../src/backend.ts';

function plain(x: unknown): unknown {
  if (x instanceof tf.Tensor) return x.arraySync();
  if (ArrayBuffer.isView(x) && !(x instanceof DataView)) return Array.from(x as unknown as ArrayLike<number | bigint>, (v) => (typeof v === 'bigint' ? Number(v) : v));
  return x;
}

function close(a: unknown, b: unknown, path: string): string | null {
  if (typeof b === 'number') {
    if (typeof a !== 'number') return `${path}: expected number ${b}, got ${JSON.stringify(a)}`;
    if (Number.isNaN(b) && Number.isNaN(a)) return null;
    if (a === b) return null;
    return Math.abs(a - b) <= 1e-5 * Math.max(1, Math.abs(b)) ? null : `${path}: expected ${b}, got ${a}`;
  }
  if (Array.isArray(b)) {
    if (!Array.isArray(a) || a.length !== b.length) return `${path}: expected ${JSON.stringify(b)}, got ${JSON.stringify(a)}`;
    for (let i = 0; i < b.length; i++) {
      const e = close(plain(a[i]), b[i], `${path}[${i}]`);
      if (e) return e;
    }
    return null;
  }
  if (b !== null && typeof b === 'object') {
    if (a === null || typeof a !== 'object') return `${path}: expected an object, got ${JSON.stringify(a)}`;
    for (const k of Object.keys(b)) {
      const e = close(plain((a as Record<string, unknown>)[k]), (b as Record<string, unknown>)[k], `${path}.${k}`);
      if (e) return e;
    }
    return null;
  }
  return Object.is(a, b) ? null : `${path}: expected ${JSON.stringify(b)}, got ${JSON.stringify(a)}`;
}

export async function __check(actual: unknown, expected: unknown, where: string): Promise<void> {
  const value = plain(await actual);
  const err = close(value, expected, 'result');
  if (err) throw new Error(`doc example ${where}: ${err}`);
}
