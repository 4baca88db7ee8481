/**
 * Python-`json`-compatible JSON for the chat encoding.
 *
 * The official encoder (`encoding/encoding_dsv32.py`) writes tool schemas, response formats and non-string tool-call
 * arguments with `json.dumps(value, ensure_ascii=False)`, after reading the arguments with `json.loads`. Two things
 * get lost when JavaScript's `JSON.parse` / `JSON.stringify` stand in for them:
 *
 * - number kinds: Python keeps `1.0` a float (printed `1.0`), `1e5` becomes the float `100000.0`, integers are exact
 *   at any size, floats print with `repr` (`1e-05`, `1e+16`, `1.5e-07`);
 * - key order: JS objects list integer-like keys (`"2"`, `"10"`) first; a Python dict keeps insertion order.
 *
 * So {@link parsePyJson} keeps what Python keeps: integers as `number` (safe range) or `bigint`, floats as
 * {@link PyFloat}, and objects whose key order a JS object would change as {@link PyDict}. {@link pyJsonDumps} writes
 * any of these (and plain JS values) exactly as `json.dumps(v, ensure_ascii=False)` does: `", "` and `": "`
 * separators, non-ASCII kept raw, `\"` `\\` `\n` `\r` `\t` `\b` `\f` escapes, other control characters `\u00xx`.
 *
 * @module
 */
import { checkString, kindOf } from './internal/contract.ts';

/**
 * Deepest JSON nesting {@link parsePyJson} reads and {@link pyJsonDumps} writes (arrays and objects
 * inside each other). Deeper input is a {@link JsonDepthError} naming the path, never a stack
 * overflow; Python's own `json` stops near 1000 (its recursion limit), so no message the official
 * encoder accepts is refused. Stated in docs/limits.md.
 */
export const MAX_JSON_DEPTH = 512;

/** JSON nested deeper than {@link MAX_JSON_DEPTH}; the message names the path where it happens. */
export class JsonDepthError extends RangeError {
  override name = 'JsonDepthError';
}

// --- Value model ---

/** A number that Python holds as a `float` (the JSON literal had a fraction or an exponent), e.g. `1.0`, `1e5`. */
export class PyFloat {
  constructor(readonly value: number) {}
}

/** A JSON object whose key order a plain JS object would not keep (integer-like keys); entries in source order. */
export class PyDict {
  constructor(readonly entries: [string, PyJson][]) {}
}

/** What {@link parsePyJson} returns and {@link pyJsonDumps} accepts. Plain JS numbers: integers print as Python ints. */
export type PyJson =
  | null
  | boolean
  | number
  | bigint
  | string
  | PyFloat
  | PyDict
  | PyJson[]
  | { [key: string]: PyJson };

// --- Writing: json.dumps(value, ensure_ascii=False) ---

/**
 * `repr(float)` as Python prints it: the shortest round-trip digits, fixed notation when the decimal exponent is in
 * [-4, 16), otherwise `d.ddde±XX` (at least two exponent digits); integral values keep `.0`.
 *
 * @param x any float64 (NaN and ±Infinity print as Python's `json.dumps` writes them).
 * @returns the Python text of the float.
 * @example
 * ```ts
 * pyFloatRepr(1); // => '1.0'
 * pyFloatRepr(1e-7); // => '1e-07'
 * pyFloatRepr(1e16); // => '1e+16'
 * pyFloatRepr(123.5); // => '123.5'
 * pyFloatRepr(0.0001); // => '0.0001'
 * pyFloatRepr(-Infinity); // => '-Infinity'
 * ```
 */
export function pyFloatRepr(x: number): string {
  if (typeof x !== 'number') throw new TypeError(`pyFloatRepr(): x must be a number but got ${kindOf(x)}`);
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  // String(x) gives the shortest round-trip digits (closest on ties), in JS's own notation; re-lay them out.
  const s = String(Math.abs(x));
  let digits: string;
  let exp: number; // scientific exponent: value = d.ddd × 10^exp
  const e = s.indexOf('e');
  if (e >= 0) {
    digits = s.slice(0, e).replace('.', '');
    exp = Number(s.slice(e + 1));
  } else {
    const [intPart = '', fracPart = ''] = s.split('.');
    if (intPart !== '0') {
      exp = intPart.length - 1;
      digits = intPart + fracPart;
    } else {
      const zeros = fracPart.length - fracPart.replace(/^0+/, '').length;
      exp = -(zeros + 1);
      digits = fracPart.slice(zeros);
    }
  }
  digits = digits.replace(/0+$/, '') || '0';
  const decpt = exp + 1; // digits are 0.ddd × 10^decpt
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) return `${sign}0.${'0'.repeat(-decpt)}${digits}`;
    if (decpt >= digits.length) return `${sign}${digits}${'0'.repeat(decpt - digits.length)}.0`;
    return `${sign}${digits.slice(0, decpt)}.${digits.slice(decpt)}`;
  }
  const mantissa = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  const expAbs = String(Math.abs(exp)).padStart(2, '0');
  return `${sign}${mantissa}e${exp < 0 ? '-' : '+'}${expAbs}`;
}

const ESCAPES: Record<string, string> = { '"': '\\"', '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b', '\f': '\\f' };

/**
 * A JSON string literal as `json.dumps(s, ensure_ascii=False)` writes it: `"` and backslash escaped, `\n \r \t \b \f` as
 * two-character escapes, other control characters as `\u00xx`, everything else (non-ASCII included) raw.
 *
 * @example
 * ```ts
 * pyJsonString('é"\n'); // => '"é\\"\\n"'
 * pyJsonString('\u0001'); // => '"\\u0001"'
 * ```
 */
export function pyJsonString(s: string): string {
  checkString('pyJsonString', 's', s);
  // eslint-disable-next-line no-control-regex
  return `"${s.replace(/[\u0000-\u001f"\\]/g, (c) => ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}"`;
}

/**
 * `json.dumps(value, ensure_ascii=False)` of the official encoder's `to_json`.
 *
 * JS numbers: integers print as Python ints (`BigInt(n)` digits, so `1e21` → `1000000000000000000000`), other
 * numbers as Python floats; wrap a value in {@link PyFloat} to print an integral float (`1.0`).
 * `undefined` values inside objects are skipped, as `JSON.stringify` does.
 *
 * @deviation A plain JS number cannot say whether Python held it as int or float: integral numbers print as ints.
 * Values read with {@link parsePyJson} (tool-call arguments, the CLI input file) keep the exact Python kinds.
 *
 * @param value a JSON value (see {@link PyJson}).
 * @returns the text, with `", "` and `": "` separators.
 * @example
 * ```ts
 * pyJsonDumps({ a: [1, new PyFloat(2), 'é\n'], b: null }); // => '{"a": [1, 2.0, "é\\n"], "b": null}'
 * pyJsonDumps(0.5); // => '0.5'
 * pyJsonDumps(new PyDict([['2', 1], ['1', 2]])); // => '{"2": 1, "1": 2}'
 * ```
 */
export function pyJsonDumps(value: PyJson): string {
  const path: (string | number)[] = [];
  const dump = (v: PyJson): string => {
    if (v === null) return 'null';
    if (v === true) return 'true';
    if (v === false) return 'false';
    if (typeof v === 'string') return pyJsonString(v);
    if (typeof v === 'bigint') return v.toString();
    if (typeof v === 'number') return Number.isInteger(v) ? BigInt(v).toString() : pyFloatRepr(v);
    if (v instanceof PyFloat) return pyFloatRepr(v.value);
    if (typeof v !== 'object') throw new TypeError(`pyJsonDumps(): value must be JSON (null, boolean, number, string, array or object) but got ${kindOf(v)} at ${jsonPath(path)}`);
    if (path.length >= MAX_JSON_DEPTH) throw new JsonDepthError(`pyJsonDumps(): value nests deeper than ${MAX_JSON_DEPTH} levels at ${jsonPath(path)}`);
    const entries: [string | number, PyJson | undefined][] = Array.isArray(v) ? v.map((x, j) => [j, x]) : v instanceof PyDict ? v.entries : Object.entries(v);
    const parts: string[] = [];
    for (const [k, x] of entries) {
      if (x === undefined && typeof k === 'string') continue;
      path.push(k);
      parts.push(typeof k === 'number' ? dump(x as PyJson) : `${pyJsonString(k)}: ${dump(x as PyJson)}`);
      path.pop();
    }
    return Array.isArray(v) ? `[${parts.join(', ')}]` : `{${parts.join(', ')}}`;
  };
  return dump(value);
}

// --- Reading: json.loads ---

/**
 * Reads `obj[key]` from a plain object or a {@link PyDict} (last duplicate wins, as in a Python dict); `undefined`
 * for a missing key or a value that is not an object.
 *
 * @example
 * ```ts
 * pyGet(parsePyJson('{"2": "b", "1": "a"}'), '1'); // => 'a'
 * pyGet({ x: 1 }, 'y'); // => undefined
 * pyGet([1], '0'); // => undefined
 * ```
 */
export function pyGet(obj: PyJson | undefined, key: string): PyJson | undefined {
  if (typeof obj === 'symbol' || typeof obj === 'function') throw new TypeError(`pyGet(): obj must be a JSON value but got ${kindOf(obj)}`);
  checkString('pyGet', 'key', key);
  if (obj instanceof PyDict) return obj.entries.find(([k]) => k === key)?.[1];
  if (obj !== null && typeof obj === 'object' && !Array.isArray(obj) && !(obj instanceof PyFloat)) {
    return Object.hasOwn(obj, key) ? obj[key] : undefined;
  }
  return undefined;
}

/**
 * True for a JSON object (plain object or {@link PyDict}); false for arrays, {@link PyFloat}, null and scalars.
 *
 * @example
 * ```ts
 * isPyObject({}); // => true
 * isPyObject(new PyDict([])); // => true
 * isPyObject([]); // => false
 * isPyObject(new PyFloat(1)); // => false
 * ```
 */
export function isPyObject(v: unknown): v is PyDict | { [key: string]: PyJson } {
  return v instanceof PyDict || (v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof PyFloat));
}

/**
 * `json.loads(text)` keeping Python's number kinds and key order (see the module comment). Accepts what Python's
 * default decoder accepts: standard JSON plus the literals `NaN`, `Infinity`, `-Infinity`; duplicate keys keep the
 * first position and the last value. Throws `SyntaxError` naming the position.
 *
 * @param text JSON text (Python's dialect, see above).
 * @returns the value: integers as `number` (safe range) or `bigint`, floats as {@link PyFloat}, objects as plain
 *   objects or {@link PyDict}.
 * @throws SyntaxError naming the position and the text near it.
 * @example
 * ```ts
 * pyJsonDumps(parsePyJson('{"x": 1.0, "2": 1e5, "n": 12345678901234567890}')); // => '{"x": 1.0, "2": 100000.0, "n": 12345678901234567890}'
 * parsePyJson('1e5') instanceof PyFloat; // => true
 * parsePyJson('[1, NaN]'); // => [1, { value: NaN }]
 * ```
 */
export function parsePyJson(text: string): PyJson {
  checkString('parsePyJson', 'text', text);
  let i = 0;
  const path: (string | number)[] = []; // keys and indices from the root to the value being read
  const fail = (what: string): never => {
    const near = JSON.stringify(text.slice(Math.max(0, i - 10), i + 10));
    throw new SyntaxError(`${what} at position ${i} (near ${near})`);
  };
  const ws = (): void => {
    for (let c = text.charCodeAt(i); c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d; c = text.charCodeAt(++i));
  };
  const literal = (word: string, v: PyJson): PyJson => {
    if (!text.startsWith(word, i)) fail('invalid literal');
    i += word.length;
    return v;
  };
  const SIMPLE: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
  const str = (): string => {
    i++; // opening quote
    const parts: string[] = [];
    for (;;) {
      const start = i; // a run of plain characters is copied as one slice
      let c = text.charCodeAt(i);
      while (i < text.length && c !== 0x22 && c !== 0x5c && c >= 0x20) c = text.charCodeAt(++i);
      if (i > start) parts.push(text.slice(start, i));
      if (i >= text.length) fail('unterminated string');
      if (c === 0x22) {
        i++;
        return parts.length === 1 ? parts[0]! : parts.join('');
      }
      if (c < 0x20) fail('invalid control character in string');
      const esc = text[i + 1];
      if (esc !== undefined && SIMPLE[esc] !== undefined) {
        parts.push(SIMPLE[esc]);
        i += 2;
      } else if (esc === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
        parts.push(String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16))); // UTF-16 pairs join by themselves
        i += 6;
      } else {
        fail('invalid escape');
      }
    }
  };
  const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?/y;
  const num = (): PyJson => {
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (!m) return fail('invalid number');
    i += m[0].length;
    if (m[1] !== undefined || m[2] !== undefined) return new PyFloat(Number(m[0]));
    const n = Number(m[0]);
    return Number.isSafeInteger(n) ? n + 0 /* -0 → 0, as Python's int */ : BigInt(m[0]);
  };
  const enter = (): void => {
    if (path.length >= MAX_JSON_DEPTH) {
      throw new JsonDepthError(`parsePyJson(): JSON nests deeper than ${MAX_JSON_DEPTH} levels at ${jsonPath(path)} (position ${i})`);
    }
  };
  const value = (): PyJson => {
    ws();
    const c = text[i];
    if (c === '{') {
      enter();
      i++;
      const entries: [string, PyJson][] = [];
      const slot = new Map<string, number>(); // a repeated key keeps its first place and its last value, as in Python
      ws();
      if (text[i] === '}') {
        i++;
        return {};
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected a property name in double quotes');
        const k = str();
        ws();
        if (text[i] !== ':') fail("expected ':'");
        i++;
        path.push(k);
        const v = value();
        path.pop();
        const at = slot.get(k);
        if (at !== undefined) entries[at] = [k, v];
        else {
          slot.set(k, entries.length);
          entries.push([k, v]);
        }
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === '}') {
          i++;
          break;
        } else fail("expected ',' or '}'");
      }
      const obj: { [key: string]: PyJson } = Object.create(null);
      for (const [k, v] of entries) obj[k] = v;
      const keptOrder = Object.keys(obj).every((k, j) => k === entries[j]![0]);
      return keptOrder ? { ...obj } : new PyDict(entries);
    }
    if (c === '[') {
      enter();
      i++;
      const arr: PyJson[] = [];
      ws();
      if (text[i] === ']') {
        i++;
        return arr;
      }
      for (;;) {
        path.push(arr.length);
        arr.push(value());
        path.pop();
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === ']') {
          i++;
          return arr;
        } else fail("expected ',' or ']'");
      }
    }
    if (c === '"') return str();
    if (c === 'n') return literal('null', null);
    if (c === 't') return literal('true', true);
    if (c === 'f') return literal('false', false);
    if (c === 'N') return literal('NaN', new PyFloat(NaN));
    if (c === 'I') return literal('Infinity', new PyFloat(Infinity));
    if (c === '-' && text.startsWith('-Infinity', i)) return literal('-Infinity', new PyFloat(-Infinity));
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return num();
    return fail(c === undefined ? 'unexpected end of input' : 'unexpected character');
  };
  const v = value();
  ws();
  if (i < text.length) fail('extra data after the JSON value');
  return v;
}

/**
 * A JSON path for messages: `$.messages[0].tools[2]`; a run of one repeated step prints once with its
 * count (`[0]×600`), so a deep path stays one short line.
 */
function jsonPath(path: readonly (string | number)[]): string {
  const steps = path.map((k) => (typeof k === 'number' ? `[${k}]` : /^[A-Za-z_$][\w$]*$/.test(k) ? `.${k}` : `[${JSON.stringify(k)}]`));
  let out = '$';
  for (let j = 0; j < steps.length; ) {
    let n = 1;
    while (j + n < steps.length && steps[j + n] === steps[j]) n++;
    out += n > 3 ? `${steps[j]}×${n}` : steps[j]!.repeat(n);
    j += n;
  }
  return out;
}
