/**
 * The input contract of every exported function (internal: not a package.json subpath, not re-exported
 * by src/index.ts).
 *
 * A function declares its tensor arguments once, in the paper's letters (docs/conventions.md):
 *
 *   const TOKEN_RATIO = defineContract('tokenRatio', { logp: '[G, T]', logpOld: '[G, T]', mask: { shape: '[G, T]', dtype: 'mask' } });
 *   export function tokenRatio(logp, logpOld, mask) { checkTensors(TOKEN_RATIO, { logp, logpOld, mask }); ... }
 *
 * and checks them on entry, before it allocates any tensor. A violation throws one error that names
 * the function, the argument, the expected shape in letters (and in numbers, as far as they are
 * known) and the received shape, e.g.
 *
 *   tokenRatio(): logpOld must be [G, T] = [2, 3] but got [2, 4] (G, T from logp)
 *
 * Shape specs: `[T, H, C]` (exact rank), `[..., D]` (any leading dims), `[...]` (any shape), `[]` (a
 * scalar). A dim is an integer, a letter, or an expression of letters with `+`, `·` (or `*`) and `/`
 * (ceiling division, written `⌈O/B⌉` for readability). The first argument that meets a letter binds it;
 * every later use must agree. Letters known before the call (from a config or another argument) are
 * passed as `known`; `from` says where such a letter comes from, for the message.
 *
 * Argument paths reach into records: `w.wq_b.weight`, `w.experts[].w1.weight` (`[]` = every element).
 *
 * The registry {@link CONTRACTS} lets test/contract.test.ts find every contract by function name and
 * generate wrong-rank and wrong-size calls.
 * @module
 */
import type { tf } from '../backend.ts';

/** Which dtypes an argument accepts: `numeric` = float32 or int32, `mask` = float32, int32 or bool. */
export type DtypeRule = 'float32' | 'int32' | 'bool' | 'numeric' | 'mask' | 'any';

/** One tensor argument of a contract. */
export interface TensorArg {
  /** shape in letters, e.g. `[T, H, C]`, `[..., D]`. */
  shape: string;
  /** default `numeric`. */
  dtype?: DtypeRule;
  /** `null` / `undefined` are allowed (the argument is skipped). */
  optional?: boolean;
}

/** Dimension sizes by letter. */
export type Dims = Record<string, number>;

/** A function's declared tensor arguments (see the module comment). */
export interface Contract {
  fn: string;
  args: Readonly<Record<string, TensorArg>>;
  /** letter → where its value comes from when it is not a tensor's (e.g. `D: 'config.hidden_size'`). */
  from: Readonly<Record<string, string>>;
}

/** Every contract defined so far, by function name (filled as the modules load). */
export const CONTRACTS = new Map<string, Contract>();

/** Declares (and registers) a function's tensor arguments. */
export function defineContract(fn: string, args: Record<string, string | TensorArg>, from: Record<string, string> = {}): Contract {
  const c: Contract = {
    fn,
    args: Object.fromEntries(Object.entries(args).map(([k, v]) => [k, typeof v === 'string' ? { shape: v } : v])),
    from,
  };
  for (const a of Object.values(c.args)) parseShape(a.shape); // a malformed spec fails at import, not at the first call
  CONTRACTS.set(fn, c);
  return c;
}

/** Prefixes every argument path of a group of specs (to reuse one record's specs under another argument). */
export function under(prefix: string, args: Record<string, string | TensorArg>): Record<string, string | TensorArg> {
  return Object.fromEntries(Object.entries(args).map(([k, v]) => [`${prefix}.${k}`, v]));
}

// --- Shape specs ---

type Expr = { kind: 'num'; value: number } | { kind: 'var'; name: string } | { kind: 'op'; op: '+' | '·' | '/'; a: Expr; b: Expr };
interface ShapeSpec {
  ellipsis: boolean;
  /** the dims a tensor's shape is matched against: `head` leading ones, then the rest at the end. */
  dims: Expr[];
  head: number;
  text: string;
}

const parsedShapes = new Map<string, ShapeSpec>();

function parseShape(text: string): ShapeSpec {
  const hit = parsedShapes.get(text);
  if (hit) return hit;
  const m = /^\[(.*)\]$/.exec(text.trim());
  if (!m) throw new Error(`contract: bad shape spec '${text}'`);
  const items = m[1]!.trim() === '' ? [] : m[1]!.split(',').map((s) => s.trim());
  const at = items.indexOf('...');
  const ellipsis = at >= 0;
  const dims = items.filter((s) => s !== '...').map((s) => parseExpr(s, text));
  const spec = { ellipsis, dims, head: ellipsis ? at : dims.length, text };
  parsedShapes.set(text, spec);
  return spec;
}

function parseExpr(src: string, whole: string): Expr {
  const tokens = src.match(/[A-Za-z][A-Za-z0-9_]*|[0-9]+|[+·*/()⌈⌉]/g) ?? [];
  if (tokens.join('') !== src.replace(/\s+/g, '')) throw new Error(`contract: bad dim '${src}' in '${whole}'`);
  let i = 0;
  const atom = (): Expr => {
    const t = tokens[i++];
    if (t === '(' || t === '⌈') {
      const e = sum();
      i++; // ')' or '⌉'
      return e;
    }
    if (t !== undefined && /^[0-9]+$/.test(t)) return { kind: 'num', value: Number(t) };
    if (t !== undefined && /^[A-Za-z]/.test(t)) return { kind: 'var', name: t };
    throw new Error(`contract: bad dim '${src}' in '${whole}'`);
  };
  const product = (): Expr => {
    let e = atom();
    while (tokens[i] === '·' || tokens[i] === '*' || tokens[i] === '/') {
      const op = tokens[i++] === '/' ? '/' : '·';
      e = { kind: 'op', op, a: e, b: atom() };
    }
    return e;
  };
  const sum = (): Expr => {
    let e = product();
    while (tokens[i] === '+') {
      i++;
      e = { kind: 'op', op: '+', a: e, b: product() };
    }
    return e;
  };
  const e = sum();
  if (i !== tokens.length) throw new Error(`contract: bad dim '${src}' in '${whole}'`);
  return e;
}

function evaluate(e: Expr, dims: Dims): number | undefined {
  if (e.kind === 'num') return e.value;
  if (e.kind === 'var') return dims[e.name];
  const a = evaluate(e.a, dims);
  const b = evaluate(e.b, dims);
  if (a === undefined || b === undefined) return undefined;
  return e.op === '+' ? a + b : e.op === '·' ? a * b : Math.ceil(a / b);
}

function lettersOf(e: Expr, out: Set<string> = new Set()): Set<string> {
  if (e.kind === 'var') out.add(e.name);
  else if (e.kind === 'op') {
    lettersOf(e.a, out);
    lettersOf(e.b, out);
  }
  return out;
}

/** Letters of a shape spec, and whether each use is a bare letter (bindable). */
export function shapeLetters(shape: string): { letters: string[]; rank: number | null; minRank: number } {
  const s = parseShape(shape);
  const letters = new Set<string>();
  for (const d of s.dims) lettersOf(d, letters);
  return { letters: [...letters], rank: s.ellipsis ? null : s.dims.length, minRank: s.dims.length };
}

// --- Checking ---

/** `[2, 3]` */
export function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** A tf.Tensor (duck-typed, so a tensor of another tfjs copy passes too). */
export function isTensor(v: unknown): v is tf.Tensor {
  return typeof v === 'object' && v !== null && Array.isArray((v as tf.Tensor).shape) && typeof (v as tf.Tensor).dtype === 'string' && typeof (v as tf.Tensor).dataSync === 'function';
}

/** A short description of a value of the wrong kind, for messages. */
export function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  if (typeof v === 'symbol') return 'a symbol';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  if (typeof v === 'object') return isTensor(v) ? `a ${v.dtype} tensor ${shapeText(v.shape)}` : 'an object';
  if (typeof v === 'function') return 'a function';
  return `${typeof v} ${String(v)}`;
}

const DTYPES: Record<DtypeRule, readonly string[] | null> = {
  float32: ['float32'],
  int32: ['int32'],
  bool: ['bool'],
  numeric: ['float32', 'int32'],
  mask: ['float32', 'int32', 'bool'],
  any: null,
};

/** Every (path, value) an argument path reaches in `params` (`[]` expands arrays). */
function resolve(fn: string, path: string, params: Record<string, unknown>): [string, unknown][] {
  let found: [string, unknown][] = [['', params]];
  for (const seg of path.split('.')) {
    const many = seg.endsWith('[]');
    const key = many ? seg.slice(0, -2) : seg;
    const next: [string, unknown][] = [];
    for (const [at, v] of found) {
      const p = at ? `${at}.${key}` : key;
      if (v === undefined || v === null) {
        next.push([p, undefined]); // a missing record: its tensors are missing (fine when optional)
        continue;
      }
      if (typeof v !== 'object') throw new TypeError(`${fn}(): ${at || 'argument'} must be an object but got ${kindOf(v)}`);
      const child = (v as Record<string, unknown>)[key];
      if (!many) next.push([p, child]);
      else {
        if (child === undefined || child === null) next.push([`${p}[]`, undefined]);
        else if (!Array.isArray(child)) throw new TypeError(`${fn}(): ${p} must be an array but got ${kindOf(child)}`);
        else child.forEach((c, i) => next.push([`${p}[${i}]`, c]));
      }
    }
    found = next;
  }
  return found;
}

/**
 * Checks the tensor arguments named in `params` against the contract (all of its arguments, in
 * declaration order); returns every letter's size. `known` pre-binds letters (e.g. from a config).
 * @throws TypeError (not a tensor, disposed, wrong dtype) or RangeError (wrong rank or size) naming
 *   the function and the argument.
 */
export function checkTensors(c: Contract, params: Record<string, unknown>, known: Dims = {}): Dims {
  const fn = c.fn;
  const dims: Dims = { ...known };
  const source: Record<string, string> = {};
  for (const k of Object.keys(known)) source[k] = c.from[k] ? `= ${c.from[k]}` : 'from the other arguments';
  for (const [path, arg] of Object.entries(c.args)) {
    const spec = parseShape(arg.shape);
    for (const [at, v] of resolve(fn, path, params)) {
      if (v === undefined || v === null) {
        if (arg.optional) continue;
        throw new TypeError(`${fn}(): ${at} must be a tensor ${spec.text} but got ${kindOf(v)}`);
      }
      // a weight may also be a deferred matrix (src/weight_matrix.ts): bytes outside the backend, a shape
      const deferred = typeof v === 'object' && (v as { deferred?: unknown }).deferred === true && Array.isArray((v as { shape?: unknown }).shape);
      if (!deferred && !isTensor(v)) throw new TypeError(`${fn}(): ${at} must be a tensor ${spec.text} but got ${kindOf(v)}`);
      if (!deferred) {
        const t = v as tf.Tensor;
        if (t.isDisposed) throw new TypeError(`${fn}(): ${at} ${spec.text} was disposed`);
        const allowed = DTYPES[arg.dtype ?? 'numeric'];
        if (allowed && !allowed.includes(t.dtype)) {
          throw new TypeError(`${fn}(): ${at} must be ${spec.text} of dtype ${allowed.join(' or ')} but got dtype ${t.dtype} ${shapeText(t.shape)}`);
        }
      }
      const shape = (v as { shape: number[] }).shape;
      const n = spec.dims.length;
      if (spec.ellipsis ? shape.length < n : shape.length !== n) {
        throw new RangeError(`${fn}(): ${at} must be ${spec.text} (rank ${spec.ellipsis ? `≥ ${n}` : n}) but got ${shapeText(shape)}`);
      }
      const tail = [...shape.slice(0, spec.head), ...shape.slice(shape.length - (n - spec.head))];
      const before = { ...dims };
      spec.dims.forEach((e, i) => {
        if (e.kind === 'var' && dims[e.name] === undefined) {
          dims[e.name] = tail[i]!;
          source[e.name] = `from ${at}`;
        }
      });
      const bad = spec.dims.some((e, i) => {
        const want = evaluate(e, dims);
        if (want === undefined) throw new Error(`contract ${fn}: ${at} ${spec.text}: letters of '${exprText(e)}' are not known`);
        return want !== tail[i];
      });
      if (bad) {
        // letters this tensor binds show as letters, unless it uses them twice (as in [H, T, T])
        const uses = spec.dims.flatMap((e) => [...lettersOf(e)]);
        const shown = { ...before };
        for (const l of uses) if (shown[l] === undefined && uses.indexOf(l) !== uses.lastIndexOf(l)) shown[l] = dims[l]!;
        const want: (number | string)[] = spec.dims.map((e) => evaluate(e, shown) ?? exprText(e));
        if (spec.ellipsis) want.splice(spec.head, 0, '...');
        const used = new Set<string>();
        spec.dims.forEach((e) => lettersOf(e, used));
        const groups = new Map<string, string[]>();
        for (const l of used) {
          if (before[l] === undefined) continue;
          const s = source[l]!;
          groups.set(s, [...(groups.get(s) ?? []), l]);
        }
        const from = [...groups].map(([s, ls]) => `${ls.join(', ')} ${s}`);
        throw new RangeError(
          `${fn}(): ${at} must be ${spec.text} = [${want.join(', ')}] but got ${shapeText(shape)}${from.length ? ` (${from.join('; ')})` : ''}`,
        );
      }
    }
  }
  return dims;
}

function exprText(e: Expr): string {
  if (e.kind === 'num') return String(e.value);
  if (e.kind === 'var') return e.name;
  if (e.op === '/') return `⌈${exprText(e.a)}/${exprText(e.b)}⌉`;
  const wrap = (x: Expr) => (x.kind === 'op' && x.op === '+' && e.op === '·' ? `(${exprText(x)})` : exprText(x));
  return `${wrap(e.a)}${e.op === '+' ? ' + ' : '·'}${wrap(e.b)}`;
}

// --- Plain (non-tensor) arguments ---

/** An integer ≥ min (a safe integer). */
export function checkInteger(fn: string, name: string, v: unknown, min = 0): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new RangeError(`${fn}(): ${name} must be an integer ≥ ${min} but got ${typeof v === 'number' ? v : kindOf(v)}`);
  }
  return v;
}

/** A finite number. */
export function checkFiniteNumber(fn: string, name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new RangeError(`${fn}(): ${name} must be a finite number but got ${typeof v === 'number' ? v : kindOf(v)}`);
  return v;
}

/** A non-null object (not an array). */
export function checkObject(fn: string, name: string, v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new TypeError(`${fn}(): ${name} must be an object but got ${kindOf(v)}`);
  return v as Record<string, unknown>;
}

/** An array. */
export function checkArray(fn: string, name: string, v: unknown): readonly unknown[] {
  if (!Array.isArray(v)) throw new TypeError(`${fn}(): ${name} must be an array but got ${kindOf(v)}`);
  return v;
}

/** A string. */
export function checkString(fn: string, name: string, v: unknown): string {
  if (typeof v !== 'string') throw new TypeError(`${fn}(): ${name} must be a string but got ${kindOf(v)}`);
  return v;
}

/** One of the given values. */
export function checkChoice<T extends string | null | boolean>(fn: string, name: string, v: unknown, choices: readonly T[]): T {
  if (!choices.includes(v as T)) {
    throw new TypeError(`${fn}(): ${name} must be ${choices.map((c) => (typeof c === 'string' ? `'${c}'` : String(c))).join(' or ')} but got ${typeof v === 'string' ? `'${v}'` : kindOf(v)}`);
  }
  return v as T;
}

// --- Shared argument groups ---

/** MQA-form attention inputs (MLA's absorbed mode): the gather, dense and fast paths share them. */
export const MQA_ARGS: Record<string, string | TensorArg> = {
  qLatent: '[T, H, C]',
  kv: '[S, C]',
  pe: '[S, R]',
  qPe: '[T, H, R]',
  topk: { shape: '[T, K]', dtype: 'int32' },
};

/** MHA-form attention inputs (per-head keys and values). */
export const MHA_ARGS: Record<string, string | TensorArg> = {
  q: '[T, H, Dqk]',
  k: '[S, H, Dqk]',
  v: '[S, H, Dv]',
  topk: { shape: '[T, K]', dtype: 'int32' },
};

/**
 * Query positions against key positions: `startPos` an integer ≥ 0 and `S ≥ startPos + T` (every
 * query's own key exists). `where` says which arguments S and T come from.
 */
export function checkQueryPositions(fn: string, startPos: unknown, S: number, T: number, where: string): number {
  checkInteger(fn, 'startPos', startPos, 0);
  if ((startPos as number) + T > S) {
    throw new RangeError(`${fn}(): the keys must cover every query position: need S ≥ startPos + T = ${(startPos as number) + T} but got S = ${S} (${where})`);
  }
  return startPos as number;
}

/** The config keys behind the letters of the weight shapes (docs/conventions.md). */
export const CONFIG_LETTERS: Readonly<Record<string, string>> = {
  D: 'config.hidden_size',
  Dq: 'config.q_lora_rank',
  H: 'config.num_attention_heads',
  Dn: 'config.qk_nope_head_dim',
  R: 'config.qk_rope_head_dim',
  Dv: 'config.v_head_dim',
  C: 'config.kv_lora_rank',
  HI: 'config.index_n_heads',
  DI: 'config.index_head_dim',
  E: 'config.n_routed_experts',
  I: 'config.moe_intermediate_size',
  F: 'config.intermediate_size',
  V: 'config.vocab_size',
  Is: 'config.n_shared_experts · moe_intermediate_size',
};

/** The letters a config fixes (only those it has as integers). */
export function configDims(fn: string, config: unknown): Dims {
  const c = checkObject(fn, 'config', config);
  const get = (key: string): number | undefined => (Number.isSafeInteger(c[key]) ? (c[key] as number) : undefined);
  const dims: Dims = {};
  for (const [letter, key] of Object.entries(CONFIG_LETTERS)) {
    const v = key.includes('·') ? undefined : get(key.slice('config.'.length));
    if (v !== undefined) dims[letter] = v;
  }
  const shared = get('n_shared_experts');
  if (shared !== undefined && dims.I !== undefined) dims.Is = shared * dims.I;
  return dims;
}

/** `IndexerWeights` (src/checkpoint.ts). */
export const INDEXER_WEIGHTS: Record<string, string | TensorArg> = {
  'wq_b.weight': '[HI·DI, Dq]',
  'wk.weight': '[DI, D]',
  'k_norm.weight': '[DI]',
  'k_norm.bias': '[DI]',
  'weights_proj.weight': '[HI, D]',
};

/** `AttentionWeights` (src/checkpoint.ts). */
export const ATTENTION_WEIGHTS: Record<string, string | TensorArg> = {
  'wq_a.weight': '[Dq, D]',
  q_norm: '[Dq]',
  'wq_b.weight': '[H·(Dn + R), Dq]',
  'wkv_a.weight': '[C + R, D]',
  kv_norm: '[C]',
  'wkv_b.weight': '[H·(Dn + Dv), C]',
  'wo.weight': '[D, H·Dv]',
  ...under('indexer', INDEXER_WEIGHTS),
};

/** `FfnWeights` of width `F` (a letter). */
export function ffnWeights(F: string, optional = false): Record<string, TensorArg> {
  return {
    'w1.weight': { shape: `[${F}, D]`, optional },
    'w2.weight': { shape: `[D, ${F}]`, optional },
    'w3.weight': { shape: `[${F}, D]`, optional },
  };
}

/** `MoeWeights` (src/checkpoint.ts). */
export const MOE_WEIGHTS: Record<string, string | TensorArg> = {
  'gate.weight': '[E, D]',
  'gate.bias': { shape: '[E]', optional: true },
  ...under('experts[]', ffnWeights('I')),
  ...under('shared', ffnWeights('Is', true)),
};

/** `LayerWeights` (src/checkpoint.ts); the FFN is dense or MoE, so both are optional here. */
export const LAYER_WEIGHTS: Record<string, string | TensorArg> = {
  attn_norm: '[D]',
  ffn_norm: '[D]',
  ...under('attn', ATTENTION_WEIGHTS),
  ...under('ffn.dense', ffnWeights('F', true)),
  ...Object.fromEntries(Object.entries(under('ffn.moe', MOE_WEIGHTS)).map(([k, v]) => [k, { ...(typeof v === 'string' ? { shape: v } : v), optional: true }])),
};

/** `GlobalWeights` (src/checkpoint.ts). */
export const GLOBAL_WEIGHTS: Record<string, string | TensorArg> = { embed: '[V, D]', norm: '[D]', head: '[V, D]' };

/** An `MlaCache` (src/mla.ts): empty (nulls) or S cached positions. */
export const MLA_CACHE: Record<string, string | TensorArg> = {
  kv: { shape: '[S, C]', optional: true },
  pe: { shape: '[S, R]', optional: true },
  'indexer.keys': { shape: '[S, DI]', optional: true },
  'indexer.scales': { shape: '[S]', optional: true },
};

// --- Nested arrays (JSON vectors) ---

/**
 * The shape of a nested array of the given rank. A ragged row is named by its index and length
 * (against the length most rows at that level have), so one short row — the first one included —
 * never decides the expected shape. Throws a RangeError whose message starts with `what`.
 */
export function nestedShape(x: unknown, rank: number, what: string): number[] {
  const shape: number[] = [];
  let nodes: unknown[] = [x];
  const pathOf = (k: number): string => {
    const idx: number[] = [];
    for (let d = shape.length - 1; d >= 0; d--) {
      idx.unshift(k % shape[d]!);
      k = Math.floor(k / shape[d]!);
    }
    return what + idx.map((i) => `[${i}]`).join('');
  };
  for (let d = 0; d < rank; d++) {
    const bad = nodes.findIndex((n) => !Array.isArray(n));
    if (bad >= 0) throw new RangeError(`${pathOf(bad)} must be an array (${what} has rank ${rank}) but got ${kindOf(nodes[bad])}`);
    const lengths = new Map<number, number>();
    for (const n of nodes as unknown[][]) lengths.set(n.length, (lengths.get(n.length) ?? 0) + 1);
    const common = [...lengths].sort((a, b) => b[1] - a[1] || b[0] - a[0])[0]?.[0] ?? 0;
    const ragged = (nodes as unknown[][]).findIndex((n) => n.length !== common);
    if (ragged >= 0) {
      throw new RangeError(`${pathOf(ragged)} has length ${(nodes[ragged] as unknown[]).length} but the other rows of ${what} have length ${common} (a ragged array)`);
    }
    shape.push(common);
    nodes = (nodes as unknown[][]).flat(1);
  }
  return shape;
}

/** A weight matrix: a rank-2 tf.Tensor or a deferred matrix (src/weight_matrix.ts) with a [rows, cols] shape. */
export function checkMatrix(fn: string, name: string, v: unknown): void {
  const shape = typeof v === 'object' && v !== null ? (v as { shape?: unknown }).shape : undefined;
  const deferred = typeof v === 'object' && v !== null && (v as { deferred?: unknown }).deferred === true;
  if (!(isTensor(v) || deferred) || !Array.isArray(shape) || shape.length !== 2) {
    throw new TypeError(`${fn}(): ${name} must be a weight matrix [rows, cols] (a rank-2 tensor or a deferred matrix) but got ${kindOf(v)}`);
  }
}
