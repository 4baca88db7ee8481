/**
 * Reading another implementation's trace for `dsv32 check`: a safetensors file with any subset of a
 * fixture trace's tensor names (`stepS.expected.layerL.attn.in` … `stepS.expected.logits`, `input.tokens`),
 * floats as F32, BF16 or F16, indices as I64 or I32. Every tensor is validated against the fixture's own
 * trace (same name, same shape) before anything is computed; what does not fit becomes one failed row
 * naming the tensor and the shapes, never an exception.
 *
 * @module
 */
import type { Precision } from '../precision.ts';
import { openSafetensors } from '../node.ts';
import type { Dtype, SafetensorsFile } from '../safetensors.ts';
import { parseName, type CheckName } from './names.ts';
import type { CheckRow } from './report.ts';

/** Checks whose values are indices (I64 / I32); the others are floats. */
const INDEX_CHECKS: ReadonlySet<string> = new Set(['indexer.topk', 'gate.indices']);
const FLOAT_DTYPES: ReadonlySet<Dtype> = new Set(['F32', 'BF16', 'F16']);
const INDEX_DTYPES: ReadonlySet<Dtype> = new Set(['I64', 'I32']);

/** A validated trace: the tensors that fit the fixture, and one failed row for each that does not. */
export interface OpenedTrace {
  /** `float32` values of a float tensor or the integer values of an index tensor; undefined when absent or rejected. */
  get(name: string): Float32Array | Int32Array | undefined;
  /** precision the float dtypes say: 'bf16' when any float tensor is BF16 or F16, else 'fp32'. */
  precision: Precision;
  /** failed rows of the validation (unreadable, mis-shaped, wrong dtype, another fixture). */
  problems: CheckRow[];
  /** true when nothing can be judged (the file is unreadable or belongs to another fixture). */
  fatal: boolean;
}

/**
 * Opens `path` and validates it against the fixture trace `expected` (the fixture's `trace.safetensors`):
 * every tensor name must be one of the fixture's, with the same shape (up to leading 1s), a float dtype (F32/BF16/F16) for
 * float tensors and I64/I32 for `indexer.topk` / `gate.indices`; `input.tokens`, when present, must equal
 * the fixture's. A file that cannot be read, whose tokens differ, or none of whose tensors fit the fixture
 * is one fatal row; each other misfit is a row of its own and the tensor is treated as absent.
 *
 * @param path the trace file
 * @param expected the fixture's trace (names, shapes and tokens)
 * @param caseName `case` of the rows
 */
export function openTrace(path: string, expected: SafetensorsFile, caseName: string): OpenedTrace {
  const fail = (check: CheckName, reason: string, step: number | null = null, layer: number | null = null): CheckRow => ({
    case: caseName, check, step, layer, pass: false, max_abs_err: null, max_rel_err: null, cos_diff: null, recall: null, reason,
  });
  let file: SafetensorsFile;
  try {
    file = openSafetensors(path);
  } catch (e) {
    return { get: () => undefined, precision: 'fp32', problems: [fail('trace', `cannot read the trace: ${(e as Error).message}`)], fatal: true };
  }
  try {
    return validate(file, expected, fail);
  } finally {
    file.close();
  }
}

function validate(
  file: SafetensorsFile,
  expected: SafetensorsFile,
  fail: (check: CheckName, reason: string, step?: number | null, layer?: number | null) => CheckRow,
): OpenedTrace {
  const fatal = (row: CheckRow): OpenedTrace => ({ get: () => undefined, precision: 'fp32', problems: [row], fatal: true });
  const values = new Map<string, Float32Array | Int32Array>();
  const problems: CheckRow[] = [];
  let precision: Precision = 'fp32';
  const names = file.names();
  if (names.length === 0) return fatal(fail('trace', `${file.path}: the trace holds no tensor`));
  if (file.has('input.tokens')) {
    const mine = readNumbers(file, 'input.tokens');
    const theirs = readNumbers(expected, 'input.tokens');
    if (typeof mine === 'string') return fatal(fail('input.tokens', mine));
    if (typeof theirs !== 'string' && (mine.length !== theirs.length || mine.some((v, i) => v !== theirs[i]))) {
      const at = mine.findIndex((v, i) => v !== theirs[i]);
      return fatal(fail('input.tokens',
        `input.tokens differ from the fixture's (another fixture?): [${mine.length}] ids, first difference at ${at < 0 ? mine.length : at}: ${mine[at] ?? '(none)'} vs ${theirs[at] ?? '(none)'}`));
    }
  }
  let fitting = 0;
  for (const name of names) {
    if (name === 'input.tokens') continue;
    const where = parseName(name);
    const row = (reason: string) => problems.push(fail(where?.check ?? 'trace', reason, where?.step ?? null, where?.layer ?? null));
    if (!expected.has(name)) {
      row(`tensor ${name} is not in the fixture's trace (names are stepS.expected.layerL.CHECK for the fixture's steps and layers)`);
      continue;
    }
    const info = file.info(name);
    const want = expected.info(name).shape;
    const isIndex = where !== null && INDEX_CHECKS.has(where.check);
    if (squeezed(info.shape) !== squeezed(want)) {
      row(`tensor ${name} has shape [${info.shape.join(', ')}] but the fixture's is [${want.join(', ')}]`);
      continue;
    }
    if (isIndex ? !INDEX_DTYPES.has(info.dtype) : !FLOAT_DTYPES.has(info.dtype)) {
      row(`tensor ${name} has dtype ${info.dtype} but must be ${isIndex ? 'I64 or I32' : 'F32, BF16 or F16'}`);
      continue;
    }
    const v = isIndex ? readNumbers(file, name) : readFloats(file, name);
    if (typeof v === 'string') {
      row(v);
      continue;
    }
    if (!isIndex && (info.dtype === 'BF16' || info.dtype === 'F16')) precision = 'bf16';
    values.set(name, isIndex ? Int32Array.from(v as number[]) : (v as Float32Array));
    fitting++;
  }
  if (fitting === 0) {
    const first = problems[0]?.reason ?? 'no tensor of the fixture trace';
    return fatal(fail('trace', `no tensor of the trace fits the fixture (another fixture?): ${problems.length} misfit(s), first: ${first}`));
  }
  return { get: (name) => values.get(name), precision, problems, fatal: false };
}

/** A shape without its leading 1s: `[1, n, D]` and `[n, D]` are the same tensor (engines drop the batch dim). */
function squeezed(shape: readonly number[]): string {
  const first = shape.findIndex((d) => d !== 1);
  return (first < 0 ? [] : shape.slice(first)).join();
}

function readFloats(file: SafetensorsFile, name: string): Float32Array | string {
  try {
    return Float32Array.from(file.read(name) as Float32Array);
  } catch (e) {
    return `tensor ${name}: cannot read its data: ${(e as Error).message}`;
  }
}

function readNumbers(file: SafetensorsFile, name: string): number[] | string {
  try {
    const info = file.info(name);
    if (!INDEX_DTYPES.has(info.dtype)) return `tensor ${name} has dtype ${info.dtype} but must be I64 or I32`;
    const raw = file.read(name) as ArrayLike<number | bigint>;
    const out = Array.from(raw, (v) => Number(v));
    const bad = out.findIndex((v) => !Number.isSafeInteger(v) || Math.abs(v) > 2 ** 31);
    return bad < 0 ? out : `tensor ${name}: value ${out[bad]} at ${bad} is not an index`;
  } catch (e) {
    return `tensor ${name}: cannot read its data: ${(e as Error).message}`;
  }
}
