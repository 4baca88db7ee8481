/**
 * Node-only: reading `config.json` files, safetensors files and checkpoint directories, and writing
 * safetensors files (`import { loadConfig, openCheckpoint } from 'dsv32/node'`).
 *
 * Everything else in dsv32 (the root entry `dsv32` and every other subpath) imports no Node
 * built-in and bundles for the browser; this module is the file-system side of
 * src/config.ts ({@link config!parseConfig}) and src/safetensors.ts
 * ({@link safetensors!safetensorsFromSource}, {@link safetensors!shardedSafetensors},
 * {@link safetensors!serializeSafetensors}), which do the parsing and validation. The conformance
 * runner (src/conformance/) and the command line (src/cli/) are Node-only too.
 *
 * Tensors are read one at a time at their file offset (`readSync` at a position), so a 690 GB
 * checkpoint is never held in memory.
 *
 * @module
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, parseConfig, type ModelConfig } from './config.ts';
import { checkString } from './internal/contract.ts';
import {
  SafetensorsError,
  safetensorsFromSource,
  serializeSafetensors,
  shardedSafetensors,
  type Checkpoint,
  type SafetensorsFile,
  type WritableTensor,
} from './safetensors.ts';

// --- config.json ---

/**
 * Reads and validates a `config.json` file ({@link config!parseConfig} on its JSON).
 *
 * @param path path of `config.json`
 * @throws ConfigError naming the file when it cannot be read, is not JSON, or holds an invalid config
 * @example
 * ```ts
 * loadConfig('fixtures/golden/public-fp8/config.json').hidden_size; // => 256
 * ```
 */
export function loadConfig(path: string): ModelConfig {
  checkString('loadConfig', 'path', path);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError('(file)', `a readable file at ${path}`, (e as Error).message, 'loadConfig()');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ConfigError('(file)', `valid JSON in ${path}`, (e as Error).message, 'loadConfig()');
  }
  try {
    return parseConfig(json);
  } catch (e) {
    if (e instanceof ConfigError) e.message = `${e.message} (in ${path})`;
    throw e;
  }
}

// --- safetensors files ---

function readExact(fd: number, position: number, length: number, path: string): Uint8Array {
  const out = new Uint8Array(length);
  const CHUNK = 1 << 30; // readSync reads at most 2 GiB per call
  let done = 0;
  while (done < length) {
    const got = readSync(fd, out, done, Math.min(CHUNK, length - done), position + done);
    if (got <= 0) throw new SafetensorsError(path, `unexpected end of file at byte ${position + done}`);
    done += got;
  }
  return out;
}

/**
 * Opens one `.safetensors` file: reads and validates its header
 * ({@link safetensors!safetensorsFromSource}), keeps the descriptor open, reads tensors on demand.
 *
 * @deviation F64 tensors are read as float32 (`read` returns Float32Array for every float dtype).
 * @param path the file
 * @returns the reader; call `close()` when done
 * @throws SafetensorsError for an unreadable or malformed file (not a regular file, too short, header
 *   length beyond the file or > 100 MB, bad UTF-8/JSON, not an object, bad dtype/shape/data_offsets,
 *   offsets out of range, overlap, gap or trailing bytes, size mismatch, bad `__metadata__`)
 * @example
 * ```ts
 * const f = openSafetensors('fixtures/golden/public-fp8/model.safetensors');
 * f.info('model.norm.weight'); // => { dtype: 'F32', shape: [256], byteLength: 1024 }
 * f.read('model.norm.weight').length; // => 256
 * f.close();
 * ```
 */
export function openSafetensors(path: string): SafetensorsFile {
  checkString('openSafetensors', 'path', path);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw new SafetensorsError(path, `cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let size: number;
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new SafetensorsError(path, 'not a regular file');
    size = st.size;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  return safetensorsFromSource(path, {
    size,
    read: (position, length) => readExact(fd, position, length, path),
    close: () => closeSync(fd),
  });
}

/**
 * Opens a checkpoint: a directory with `model.safetensors.index.json` (`{"weight_map": {tensor: shard}}`,
 * the sharded Hugging Face layout, read by {@link safetensors!shardedSafetensors}), else a directory
 * with `model.safetensors`, else a `.safetensors` file. Every shard header is read and validated up
 * front, and every tensor of the weight map must be in its shard; tensors a shard holds but the map
 * does not name are not exposed.
 *
 * @param path checkpoint directory (or a single file)
 * @throws SafetensorsError for a missing path, a directory without either file, an unreadable or
 *   malformed index, a missing or malformed shard
 * @example
 * ```ts
 * const ckpt = openCheckpoint('fixtures/golden/public-fp8');
 * ckpt.info('model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv').shape; // => [2, 2]
 * ckpt.close();
 * ```
 */
export function openCheckpoint(path: string): Checkpoint {
  checkString('openCheckpoint', 'path', path);
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new SafetensorsError(path, `cannot open checkpoint (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (st.isFile()) return openSafetensors(path);
  const indexPath = join(path, 'model.safetensors.index.json');
  if (existsSync(indexPath)) return openSharded(path, indexPath);
  const single = join(path, 'model.safetensors');
  if (existsSync(single)) return openSafetensors(single);
  throw new SafetensorsError(path, 'neither model.safetensors.index.json nor model.safetensors in this directory');
}

function openSharded(dir: string, indexPath: string): Checkpoint {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(indexPath, 'utf8'));
  } catch (e) {
    throw new SafetensorsError(indexPath, `index is not readable JSON (${(e as Error).message})`);
  }
  return shardedSafetensors(dir, indexPath, json, (shard, forTensor) => {
    const shardPath = join(dir, shard);
    if (!existsSync(shardPath)) {
      throw new SafetensorsError(indexPath, `weight_map names shard ${JSON.stringify(shard)} (for ${JSON.stringify(forTensor)}) but ${shardPath} does not exist`);
    }
    return openSafetensors(shardPath);
  });
}

/**
 * Writes a `.safetensors` file: the bytes of {@link safetensors!serializeSafetensors} (tensors in the
 * given order, contiguous; header padded with spaces to a multiple of 8 bytes, as the reference
 * writer does; the data rules are there).
 *
 * @param path output file (overwritten)
 * @param tensors name → {dtype, shape, data}
 * @param metadata optional `__metadata__` string map
 * @throws TypeError / RangeError naming the tensor for data that does not fit (see serializeSafetensors)
 * @example
 * ```ts
 * import { tmpdir } from 'node:os';
 * const path = `${tmpdir()}/dsv32-example-${process.pid}.safetensors`;
 * // 1 + 2⁻⁸ is a tie between two bf16 values: rounds to the even one, 1
 * writeSafetensors(path, { w: { dtype: 'BF16', shape: [3], data: new Float32Array([1, -2, 1 + 2 ** -8]) } });
 * openSafetensors(path).read('w'); // => [1, -2, 1]
 * ```
 */
export function writeSafetensors(path: string, tensors: Record<string, WritableTensor>, metadata?: Record<string, string>): void {
  checkString('writeSafetensors', 'path', path);
  writeFileSync(path, serializeSafetensors(tensors, metadata, 'writeSafetensors()'));
}
