/**
 * safetensors reader and writer: single files and sharded checkpoints (`model.safetensors.index.json`).
 *
 * Format (huggingface/safetensors): an 8-byte little-endian u64 N, an N-byte UTF-8 JSON header
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {string: string}}`, then the data
 * region; offsets are relative to its start, and the tensors tile it exactly (no gap, no overlap, no
 * trailing byte), as the reference Rust implementation enforces. All values are little-endian.
 *
 * The reader parses the header once and reads ONE tensor at a time at its offset through a
 * {@link ByteSource}, so a 690 GB checkpoint is never held in memory. Every malformed file is a
 * {@link SafetensorsError} naming the file and the reason, raised before any allocation sized by
 * untrusted numbers beyond the file's own length.
 *
 * Browser-safe: this module reads and writes bytes in memory ({@link safetensorsFromBytes},
 * {@link serializeSafetensors}) and imports no Node built-in. Files and checkpoint directories are
 * read by `openSafetensors`, `openCheckpoint` and written by `writeSafetensors`, in the Node-only
 * module `dsv32/node` (src/node.ts), through the same parser.
 *
 * @module
 */
import { tf } from './backend.ts';
import { decodeE4m3Bytes } from './fp8.ts';
import { checkObject, checkString, kindOf } from './internal/contract.ts';
import { firstInvalidUtf8 } from './internal/utf8.ts';

// --- Types ---

/** Element types read and written (safetensors names). */
export type Dtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'F8_E4M3' | 'F8_E5M2' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

/** Bytes per element of each {@link Dtype}. */
export const DTYPE_BYTES: Readonly<Record<Dtype, number>> = Object.freeze({
  F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
});

const FLOAT_DTYPES: ReadonlySet<Dtype> = new Set(['F64', 'F32', 'F16', 'BF16', 'F8_E4M3', 'F8_E5M2']);

/** Header entry of one tensor. */
export interface TensorInfo {
  dtype: Dtype;
  shape: number[];
  /** bytes in the file = product(shape) · DTYPE_BYTES[dtype] */
  byteLength: number;
}

/** A tensor's stored bytes, undecoded (a fresh, 8-byte-aligned buffer). */
export interface RawTensor {
  dtype: Dtype;
  shape: number[];
  bytes: Uint8Array;
}

/**
 * Decoded values: every float dtype → Float32Array (F64 rounded to float32; BF16, F16, F8 exact),
 * I32/I16/I8 → Int32Array, I64 → BigInt64Array, U8/BOOL → Uint8Array.
 */
export type TensorValues = Float32Array | Int32Array | BigInt64Array | Uint8Array;

/** Read surface shared by one file (`openSafetensors`, {@link safetensorsFromBytes}) and a checkpoint (`openCheckpoint`). */
export interface SafetensorsFile {
  /** the file, or the checkpoint directory (a label for bytes in memory) */
  readonly path: string;
  /** tensor names in header (or index) order */
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  read(name: string): TensorValues;
  readRaw(name: string): RawTensor;
  /**
   * Rows [first, first + count) of the first axis, undecoded, read at their byte offset in the file
   * (an embedding row, a band of a weight matrix): `shape` is `[count, ...shape.slice(1)]`.
   */
  readRawRows(name: string, first: number, count: number): RawTensor;
  /** float32 tensor for float dtypes, int32 for integer dtypes (I64 must fit int32), bool for BOOL */
  readTensor(name: string): tf.Tensor;
  /** `__metadata__` of the file (of the index's `metadata`, stringified, for a sharded checkpoint) */
  metadata(): Record<string, string>;
  /** closes the file descriptor(s); later reads throw */
  close(): void;
}

/** A checkpoint: the same surface as one file, over one or many shards. */
export type Checkpoint = SafetensorsFile;

/** A malformed or unreadable safetensors file or checkpoint index. */
export class SafetensorsError extends Error {
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(`safetensors: ${path}: ${reason}`);
    this.name = 'SafetensorsError';
  }
}

/** Largest header accepted (same limit as the reference implementation). */
export const MAX_HEADER_BYTES = 100_000_000;

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// --- Element decoding ---

let f16Table: Float32Array | undefined;
/** IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits; subnormals, ±inf, NaN. */
function f16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}
function getF16Table(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16Value(h);
  }
  return f16Table;
}

/** e5m2: the upper byte of an IEEE binary16. */
const E5M2_TABLE = Float32Array.from({ length: 256 }, (_, c) => f16Value(c << 8));

/**
 * Decodes stored bytes of one dtype (a whole tensor or some of its rows, as {@link SafetensorsFile}
 * `readRawRows` returns them) to values, as `read` does.
 *
 * @param path names the file in the error a big-endian host gets
 * @example
 * ```ts
 * decodeTensorBytes('BF16', new Uint8Array([0x80, 0x3f, 0x00, 0xc0]), 'w'); // => [1, -2]
 * ```
 */
export function decodeTensorBytes(dtype: Dtype, bytes: Uint8Array, path: string): TensorValues {
  checkString('decodeTensorBytes', 'dtype', dtype);
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`decodeTensorBytes(): bytes must be a Uint8Array but got ${kindOf(bytes)}`);
  if (!LITTLE_ENDIAN) throw new SafetensorsError(path, 'big-endian hosts are not supported');
  const buf = bytes.buffer;
  const off = bytes.byteOffset;
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  switch (dtype) {
    case 'F32':
      return new Float32Array(buf, off, n);
    case 'F64':
      return new Float32Array(new Float64Array(buf, off, n));
    case 'BF16': {
      // bfloat16 = the upper 16 bits of a float32
      const src = new Uint16Array(buf, off, n);
      const out = new Uint32Array(n);
      for (let i = 0; i < n; i++) out[i] = src[i]! << 16;
      return new Float32Array(out.buffer);
    }
    case 'F16': {
      const src = new Uint16Array(buf, off, n);
      const table = getF16Table();
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = table[src[i]!]!;
      return out;
    }
    case 'F8_E4M3':
      // e4m3fn: 1-4-3 bits, bias 7, subnormals, no infinities, 0x7F/0xFF NaN, max 448 (src/fp8.ts)
      return decodeE4m3Bytes(bytes);
    case 'F8_E5M2': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = E5M2_TABLE[bytes[i]!]!;
      return out;
    }
    case 'I64':
      return new BigInt64Array(buf, off, n);
    case 'I32':
      return new Int32Array(buf, off, n);
    case 'I16':
      return new Int32Array(new Int16Array(buf, off, n));
    case 'I8':
      return new Int32Array(new Int8Array(buf, off, n));
    case 'U8':
    case 'BOOL':
      return bytes;
  }
}

// --- Header parsing ---

interface Entry {
  info: TensorInfo;
  /** offset of the data in the file (8 + N + begin) */
  filePos: number;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `o[k] = v` as an own data property, also for k = "__proto__" (which plain assignment would swallow). */
function setOwn(o: Record<string, string>, k: string, v: string): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

function isDtype(v: unknown): v is Dtype {
  return typeof v === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, v);
}

function isIndex(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * The first key that appears twice at the top level of a valid JSON object text (`JSON.parse` keeps
 * the last one silently), or undefined. One linear scan; nested objects are skipped.
 */
function firstRepeatedKey(text: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      const start = i;
      for (i++; text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
      if (depth !== 1) continue;
      let j = i + 1;
      while (text[j] === ' ' || text[j] === '\t' || text[j] === '\n' || text[j] === '\r') j++;
      if (text[j] !== ':') continue;
      const key = JSON.parse(text.slice(start, i + 1)) as string;
      if (seen.has(key)) return key;
      seen.add(key);
    } else if (c === 0x7b || c === 0x5b) depth++;
    else if (c === 0x7d || c === 0x5d) depth--;
  }
  return undefined;
}

function parseHeader(
  path: string,
  headerBytes: Uint8Array,
  dataStart: number,
  dataLength: number,
): { entries: Map<string, Entry>; metadata: Record<string, string> } {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsError(path, `header is not valid UTF-8 (invalid byte sequence at header byte ${firstInvalidUtf8(headerBytes)})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(path, `header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) throw new SafetensorsError(path, 'header is not a JSON object');
  const repeated = firstRepeatedKey(text);
  if (repeated !== undefined) throw new SafetensorsError(path, `header names tensor ${JSON.stringify(repeated)} more than once (duplicate tensor name)`);

  const metadata: Record<string, string> = {};
  const entries = new Map<string, Entry>();
  const spans: { name: string; begin: number; end: number }[] = [];
  for (const [name, value] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isPlainObject(value) || !Object.values(value).every((v) => typeof v === 'string')) {
        throw new SafetensorsError(path, '__metadata__ must be an object of string values');
      }
      for (const [k, v] of Object.entries(value)) setOwn(metadata, k, v as string);
      continue;
    }
    const where = `tensor ${JSON.stringify(name)}`;
    if (!isPlainObject(value)) throw new SafetensorsError(path, `${where}: header entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = value;
    if (typeof dtype !== 'string') throw new SafetensorsError(path, `${where}: missing or non-string dtype`);
    if (!isDtype(dtype)) throw new SafetensorsError(path, `${where}: unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every(isIndex)) {
      throw new SafetensorsError(path, `${where}: shape must be an array of integers ≥ 0 but got ${JSON.stringify(shape)}`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex)) {
      throw new SafetensorsError(
        path,
        `${where}: data_offsets must be two integers ≥ 0 but got ${JSON.stringify(offsets)}`,
      );
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin) throw new SafetensorsError(path, `${where}: data_offsets [${begin}, ${end}] end before begin`);
    if (end > dataLength) {
      throw new SafetensorsError(
        path,
        `${where}: data_offsets [${begin}, ${end}] out of range: the data region has ${dataLength} bytes (truncated file?)`,
      );
    }
    // product in BigInt: a hostile shape must not overflow into a plausible size
    const expected = (shape as number[]).reduce((p, d) => p * BigInt(d), 1n) * BigInt(DTYPE_BYTES[dtype]);
    if (expected !== BigInt(end - begin)) {
      throw new SafetensorsError(
        path,
        `${where}: shape [${shape.join(', ')}] × ${dtype} is ${expected} bytes but data_offsets span ${end - begin}`,
      );
    }
    entries.set(name, { info: { dtype, shape: [...(shape as number[])], byteLength: end - begin }, filePos: dataStart + begin });
    spans.push({ name, begin, end });
  }

  // the tensors must tile the data region exactly
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let prev = '';
  for (const s of spans) {
    if (s.begin < cursor) {
      throw new SafetensorsError(path, `tensor ${JSON.stringify(s.name)} overlaps ${JSON.stringify(prev)} (bytes ${s.begin} < ${cursor})`);
    }
    if (s.begin > cursor) {
      throw new SafetensorsError(path, `gap of ${s.begin - cursor} bytes before tensor ${JSON.stringify(s.name)} (offset ${cursor})`);
    }
    cursor = s.end;
    prev = s.name;
  }
  if (cursor !== dataLength) {
    throw new SafetensorsError(path, `${dataLength - cursor} trailing bytes after the last tensor (data region ${dataLength} bytes, tensors cover ${cursor})`);
  }
  return { entries, metadata };
}

// --- One file, from any byte source ---

/**
 * Random access to the bytes of one safetensors file: what {@link safetensorsFromSource} reads
 * through (a file descriptor in `openSafetensors` of `dsv32/node`, an array in
 * {@link safetensorsFromBytes}).
 */
export interface ByteSource {
  /** total length in bytes */
  readonly size: number;
  /**
   * Exactly `length` bytes from `position` (0 ≤ position, position + length ≤ size) in a fresh
   * buffer; throws (a {@link SafetensorsError}) when they cannot be read.
   */
  read(position: number, length: number): Uint8Array;
  /** releases the source (a file descriptor); called once by `close()` or when the header is invalid */
  close?(): void;
}

/**
 * Reads a safetensors file through a {@link ByteSource}: reads and validates the header, then reads
 * tensors on demand at their offsets. The parser behind `openSafetensors` (Node, a file) and
 * {@link safetensorsFromBytes} (bytes in memory).
 *
 * @deviation F64 tensors are read as float32 (`read` returns Float32Array for every float dtype).
 * @param path names the file in every error and in `.path` (a label for bytes in memory)
 * @param source the bytes
 * @returns the reader; call `close()` when done
 * @throws SafetensorsError for a malformed file (too short, header length beyond the file or
 *   > 100 MB, bad UTF-8/JSON, not an object, bad dtype/shape/data_offsets, offsets out of range,
 *   overlap, gap or trailing bytes, size mismatch, bad `__metadata__`); the source is closed first
 * @example
 * ```ts
 * const bytes = serializeSafetensors({ w: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) } });
 * const f = safetensorsFromSource('w.safetensors', {
 *   size: bytes.byteLength,
 *   read: (position, length) => bytes.slice(position, position + length),
 * });
 * f.read('w'); // => [1, 2]
 * ```
 */
export function safetensorsFromSource(path: string, source: ByteSource): SafetensorsFile {
  checkString('safetensorsFromSource', 'path', path);
  checkObject('safetensorsFromSource', 'source', source);
  let entries: Map<string, Entry>;
  let metadata: Record<string, string>;
  try {
    const size = source.size;
    if (size < 8) throw new SafetensorsError(path, `file has ${size} bytes, shorter than the 8-byte header length`);
    const lenBytes = source.read(0, 8);
    const n = new DataView(lenBytes.buffer, lenBytes.byteOffset, 8).getBigUint64(0, true);
    if (n > BigInt(MAX_HEADER_BYTES)) {
      throw new SafetensorsError(path, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
    }
    if (n > BigInt(size - 8)) {
      throw new SafetensorsError(path, `header length ${n} goes beyond the file (${size - 8} bytes after the length)`);
    }
    const headerLength = Number(n);
    ({ entries, metadata } = parseHeader(path, source.read(8, headerLength), 8 + headerLength, size - 8 - headerLength));
  } catch (e) {
    source.close?.();
    throw e;
  }

  let open = true;
  const entry = (name: string): Entry => {
    if (!open) throw new SafetensorsError(path, `read of ${JSON.stringify(name)} after close()`);
    const e = entries.get(name);
    if (!e) throw new SafetensorsError(path, `no tensor named ${JSON.stringify(name)}`);
    return e;
  };
  const readRaw = (name: string): RawTensor => {
    const e = entry(name);
    return { dtype: e.info.dtype, shape: [...e.info.shape], bytes: source.read(e.filePos, e.info.byteLength) };
  };
  const readRawRows = (name: string, first: number, count: number): RawTensor => {
    const e = entry(name);
    const [rows, ...rest] = e.info.shape;
    if (rows === undefined || !Number.isSafeInteger(first) || !Number.isSafeInteger(count) || first < 0 || count < 0 || first + count > rows) {
      throw new SafetensorsError(path, `tensor ${JSON.stringify(name)}: rows [${first}, ${first} + ${count}) must lie in [0, ${rows ?? 'a scalar has no rows'})`);
    }
    const rowBytes = rows === 0 ? 0 : e.info.byteLength / rows;
    return { dtype: e.info.dtype, shape: [count, ...rest], bytes: source.read(e.filePos + first * rowBytes, count * rowBytes) };
  };
  const read = (name: string): TensorValues => {
    const raw = readRaw(name);
    return decodeTensorBytes(raw.dtype, raw.bytes, path);
  };
  return {
    path,
    names: () => [...entries.keys()],
    has: (name) => entries.has(name),
    info: (name) => {
      const { info } = entry(name);
      return { dtype: info.dtype, shape: [...info.shape], byteLength: info.byteLength };
    },
    read,
    readRaw,
    readRawRows,
    readTensor: (name) => toTensor(read(name), entry(name).info, path, name),
    metadata: () => ({ ...metadata }),
    close: () => {
      if (open) source.close?.();
      open = false;
    },
  };
}

/**
 * Reads a safetensors file held in memory (fetched, or read by any means): the same validation and
 * reader as a file on disk. Each read copies the tensor's bytes into a fresh buffer, so `bytes` may
 * be changed or dropped after the reads.
 *
 * @param bytes the whole file
 * @param path names the bytes in errors and in `.path`
 * @throws SafetensorsError for malformed bytes (see {@link safetensorsFromSource})
 * @example
 * ```ts
 * const bytes = serializeSafetensors({ w: { dtype: 'BF16', shape: [2], data: new Float32Array([1, -2]) } }, { format: 'pt' });
 * const f = safetensorsFromBytes(bytes);
 * f.info('w'); // => { dtype: 'BF16', shape: [2], byteLength: 4 }
 * f.read('w'); // => [1, -2]
 * f.metadata(); // => { format: 'pt' }
 * ```
 */
export function safetensorsFromBytes(bytes: Uint8Array, path = '(bytes)'): SafetensorsFile {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`safetensorsFromBytes(): bytes must be a Uint8Array but got ${(bytes as object)?.constructor?.name ?? typeof bytes}`);
  }
  return safetensorsFromSource(path, {
    size: bytes.byteLength,
    // a fresh plain Uint8Array at offset 0 also for a Node Buffer (whose own slice() is a shared view)
    read: (position, length) => new Uint8Array(bytes.buffer, bytes.byteOffset + position, length).slice(),
  });
}

function toTensor(values: TensorValues, info: TensorInfo, path: string, name: string): tf.Tensor {
  if (FLOAT_DTYPES.has(info.dtype)) return tf.tensor(values as Float32Array, info.shape, 'float32');
  if (info.dtype === 'BOOL') return tf.tensor(values as Uint8Array, info.shape, 'bool');
  if (values instanceof BigInt64Array) {
    const out = new Int32Array(values.length);
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (v < -2147483648n || v > 2147483647n) {
        throw new SafetensorsError(path, `tensor ${JSON.stringify(name)}: I64 value ${v} at index ${i} does not fit int32`);
      }
      out[i] = Number(v);
    }
    return tf.tensor(out, info.shape, 'int32');
  }
  return tf.tensor(Int32Array.from(values as Int32Array | Uint8Array), info.shape, 'int32');
}

// --- Sharded checkpoint, from any shard opener ---

/**
 * A sharded checkpoint (the Hugging Face layout) from its parsed index `model.safetensors.index.json`,
 * `{"weight_map": {tensor: shard}, "metadata"?: {...}}`, and a function that opens one shard. Every
 * shard is opened and its header validated up front, and every tensor of the weight map must be in
 * its shard; tensors a shard holds but the map does not name are not exposed. `openCheckpoint` of
 * `dsv32/node` is this over files; in memory, `openShard` can be `(s) => safetensorsFromBytes(bytesOf[s], s)`.
 *
 * @param path the checkpoint (directory), for `.path` and errors after opening
 * @param indexPath the index, named in errors about it
 * @param index the parsed index JSON
 * @param openShard opens a shard by its file name in the weight map (`forTensor`: the first tensor
 *   that needs it, for error messages)
 * @throws SafetensorsError naming the index for a malformed index (not an object, no `weight_map`
 *   object, a shard name that is empty, absolute or contains `..`) or a tensor missing from its shard;
 *   the shards already opened are closed first
 * @example
 * ```ts
 * const a = serializeSafetensors({ x: { dtype: 'F32', shape: [1], data: new Float32Array([1]) } });
 * const b = serializeSafetensors({ y: { dtype: 'I32', shape: [2], data: new Int32Array([2, 3]) } });
 * const shards: Record<string, Uint8Array> = { 'a.safetensors': a, 'b.safetensors': b };
 * const index = { weight_map: { x: 'a.safetensors', y: 'b.safetensors' } };
 * const ckpt = shardedSafetensors('ckpt', 'ckpt/model.safetensors.index.json', index, (s) => safetensorsFromBytes(shards[s]!, s));
 * ckpt.names(); // => ['x', 'y']
 * ckpt.read('y'); // => [2, 3]
 * ckpt.close();
 * ```
 */
export function shardedSafetensors(
  path: string,
  indexPath: string,
  index: unknown,
  openShard: (shard: string, forTensor: string) => SafetensorsFile,
): Checkpoint {
  checkString('shardedSafetensors', 'path', path);
  if (!isPlainObject(index) || !isPlainObject(index.weight_map)) {
    throw new SafetensorsError(indexPath, 'index must be a JSON object with a "weight_map" object');
  }
  const weightMap = new Map<string, string>();
  for (const [name, shard] of Object.entries(index.weight_map)) {
    if (typeof shard !== 'string' || shard === '' || /^([\\/]|[A-Za-z]:)/.test(shard) || shard.split(/[\\/]/).includes('..')) {
      throw new SafetensorsError(indexPath, `weight_map[${JSON.stringify(name)}] must be a shard file name inside the directory but got ${JSON.stringify(shard)}`);
    }
    weightMap.set(name, shard);
  }
  const metadata: Record<string, string> = {};
  if (isPlainObject(index.metadata)) {
    for (const [k, v] of Object.entries(index.metadata)) setOwn(metadata, k, typeof v === 'string' ? v : String(JSON.stringify(v)));
  }

  const shards = new Map<string, SafetensorsFile>();
  const closeAll = (): void => shards.forEach((s) => s.close());
  try {
    for (const [name, shard] of weightMap) {
      let file = shards.get(shard);
      if (!file) {
        file = openShard(shard, name);
        shards.set(shard, file);
      }
      if (!file.has(name)) {
        throw new SafetensorsError(indexPath, `weight_map puts ${JSON.stringify(name)} in shard ${JSON.stringify(shard)}, which has no such tensor`);
      }
    }
  } catch (e) {
    closeAll();
    throw e;
  }

  let open = true;
  const fileOf = (name: string): SafetensorsFile => {
    if (!open) throw new SafetensorsError(path, `read of ${JSON.stringify(name)} after close()`);
    const shard = weightMap.get(name);
    if (shard === undefined) throw new SafetensorsError(path, `no tensor named ${JSON.stringify(name)}`);
    return shards.get(shard)!;
  };
  return {
    path,
    names: () => [...weightMap.keys()],
    has: (name) => weightMap.has(name),
    info: (name) => fileOf(name).info(name),
    read: (name) => fileOf(name).read(name),
    readRaw: (name) => fileOf(name).readRaw(name),
    readRawRows: (name, first, count) => fileOf(name).readRawRows(name, first, count),
    readTensor: (name) => fileOf(name).readTensor(name),
    metadata: () => ({ ...metadata }),
    close: () => {
      if (open) closeAll();
      open = false;
    },
  };
}

// --- Writing ---

/** Data accepted by {@link serializeSafetensors} (and `writeSafetensors`) for one tensor. */
export type WritableData =
  | Uint8Array
  | Float32Array
  | Float64Array
  | Uint16Array
  | Int32Array
  | Int16Array
  | Int8Array
  | BigInt64Array;

/** One tensor to write. */
export interface WritableTensor {
  dtype: Dtype;
  shape: number[];
  data: WritableData;
}

function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
}

/** float → IEEE binary16 bits, round to nearest even, overflow to ±inf. */
function f16Bits(v: number): number {
  if (Number.isNaN(v)) return 0x7e00;
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a >= 65520) return sign | 0x7c00;
  if (a < 2 ** -14) return sign | roundHalfEven(a * 2 ** 24); // subnormal (1024 carries into the smallest normal)
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  return sign | (((e + 15) << 10) + roundHalfEven(a * 2 ** (10 - e)) - 1024);
}

/** float32 → bfloat16 bits, round to nearest even (the upper 16 bits after rounding), NaN kept quiet. */
function bf16Bits(u32: number, isNaN: boolean): number {
  if (isNaN) return ((u32 >>> 16) & 0x8000) | 0x7fc0;
  return ((u32 + 0x7fff + ((u32 >>> 16) & 1)) >>> 16) & 0xffff;
}

function toBytes(fn: string, where: string, t: WritableTensor, count: number): Uint8Array {
  const { dtype, data } = t;
  const asBytes = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  let out: Uint8Array | undefined;
  if (data instanceof Uint8Array) out = data; // raw bytes for any dtype (U8, BOOL, F8 codes, BF16 bytes, ...)
  else if (data instanceof Float32Array) {
    if (dtype === 'F32') out = asBytes(data);
    else if (dtype === 'F64') out = asBytes(Float64Array.from(data));
    else if (dtype === 'BF16') {
      const u = new Uint32Array(data.buffer, data.byteOffset, data.length);
      out = asBytes(Uint16Array.from(u, (x, i) => bf16Bits(x, Number.isNaN(data[i]!))));
    } else if (dtype === 'F16') out = asBytes(Uint16Array.from(data, f16Bits));
  } else if (data instanceof Float64Array) {
    if (dtype === 'F64') out = asBytes(data);
    else if (dtype === 'F32') out = asBytes(Float32Array.from(data));
  } else if (data instanceof Uint16Array) {
    if (dtype === 'F16' || dtype === 'BF16') out = asBytes(data);
  } else if (data instanceof Int32Array) {
    if (dtype === 'I32') out = asBytes(data);
    else if (dtype === 'I64') out = asBytes(BigInt64Array.from(data, (x) => BigInt(x)));
  } else if (data instanceof Int16Array) {
    if (dtype === 'I16') out = asBytes(data);
  } else if (data instanceof Int8Array) {
    if (dtype === 'I8') out = asBytes(data);
  } else if (data instanceof BigInt64Array) {
    if (dtype === 'I64') out = asBytes(data);
  }
  if (!out) {
    throw new TypeError(`${fn}: ${where}: cannot write ${data?.constructor?.name ?? typeof data} as ${dtype}`);
  }
  if (out.byteLength !== count * DTYPE_BYTES[dtype]) {
    throw new RangeError(
      `${fn}: ${where}: shape [${t.shape.join(', ')}] × ${dtype} needs ${count * DTYPE_BYTES[dtype]} bytes but the data has ${out.byteLength}`,
    );
  }
  return out;
}

/**
 * Serializes tensors to the bytes of a `.safetensors` file (tensors in the given order, contiguous;
 * header padded with spaces to a multiple of 8 bytes, as the reference writer does). `writeSafetensors`
 * of `dsv32/node` writes these bytes to a file.
 *
 * Data: a Uint8Array is taken as the raw little-endian bytes for any dtype (FP8 codes, BF16 bits);
 * otherwise the array type must match: F32←Float32Array, F64←Float64Array or Float32Array,
 * BF16/F16←Float32Array (rounded to nearest even) or Uint16Array (bits), I32←Int32Array,
 * I64←BigInt64Array or Int32Array, I16←Int16Array, I8←Int8Array.
 *
 * @param tensors name → {dtype, shape, data}
 * @param metadata optional `__metadata__` string map
 * @param fn the function named in error messages (`writeSafetensors()` passes its own name)
 * @returns the whole file: u64 header length N, N bytes of JSON header, the data region
 * @throws TypeError / RangeError naming the tensor for an unknown dtype, a bad shape, data of the
 *   wrong type or length, the reserved name `__metadata__`, or metadata that is not a string map
 * @example
 * ```ts
 * // 1 + 2⁻⁸ is a tie between two bf16 values: rounds to the even one, 1
 * const bytes = serializeSafetensors({ w: { dtype: 'BF16', shape: [3], data: new Float32Array([1, -2, 1 + 2 ** -8]) } });
 * safetensorsFromBytes(bytes).read('w'); // => [1, -2, 1]
 * bytes.byteLength % 8; // => 6  (8 + header + 6 data bytes; the header is padded to a multiple of 8)
 * ```
 */
export function serializeSafetensors(
  tensors: Record<string, WritableTensor>,
  metadata?: Record<string, string>,
  fn = 'serializeSafetensors()',
): Uint8Array {
  checkObject(typeof fn === 'string' ? fn.replace(/\(\)$/, '') : 'serializeSafetensors', 'tensors', tensors);
  const header: Record<string, unknown> = {};
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const where = `tensor ${JSON.stringify(name)}`;
    if (name === '__metadata__') throw new RangeError(`${fn}: "__metadata__" is reserved, not a tensor name`);
    if (!isDtype(t.dtype)) throw new TypeError(`${fn}: ${where}: unknown dtype ${JSON.stringify(t.dtype)}`);
    if (!Array.isArray(t.shape) || !t.shape.every(isIndex)) {
      throw new TypeError(`${fn}: ${where}: shape must be integers ≥ 0 but got ${JSON.stringify(t.shape)}`);
    }
    const count = t.shape.reduce((p, d) => p * d, 1);
    const bytes = toBytes(fn, where, t, count);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    offset += bytes.byteLength;
    blobs.push(bytes);
  }
  if (metadata !== undefined) {
    if (!isPlainObject(metadata) || !Object.values(metadata).every((v) => typeof v === 'string')) {
      throw new TypeError(`${fn}: metadata must be an object of string values`);
    }
    header.__metadata__ = metadata;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerLength = json.byteLength + ((8 - (json.byteLength % 8)) % 8);
  const out = new Uint8Array(8 + headerLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.byteLength, 8 + headerLength); // spaces
  let at = 8 + headerLength;
  for (const b of blobs) {
    out.set(b, at);
    at += b.byteLength;
  }
  return out;
}
