import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  safetensorsFromBytes,
  safetensorsFromSource,
  SafetensorsError,
  serializeSafetensors,
  shardedSafetensors,
  type Dtype,
  type SafetensorsFile,
} from '../src/safetensors.ts';
import { openCheckpoint, openSafetensors, writeSafetensors } from '../src/node.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';

const dir = mkdtempSync(join(tmpdir(), 'dsv32-st-'));
let counter = 0;
const tmp = (name = 'f'): string => join(dir, `${name}-${counter++}.safetensors`);

/** Writes a file from a header (object or raw string) and a data region, with an optional length override. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0), lengthOverride?: bigint): string {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const h = Buffer.from(text, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(h.length));
  const p = tmp('raw');
  writeFileSync(p, Buffer.concat([len, h, data]));
  return p;
}

function errorOf(open: () => SafetensorsFile): SafetensorsError {
  try {
    open().close();
  } catch (e) {
    expect(e).toBeInstanceOf(SafetensorsError);
    return e as SafetensorsError;
  }
  throw new Error('expected a SafetensorsError');
}

/** The file reader's error; the same bytes in memory (safetensorsFromBytes) must give the same message. */
function openError(path: string): SafetensorsError {
  const e = errorOf(() => openSafetensors(path));
  if (statSync(path, { throwIfNoEntry: false })?.isFile()) {
    expect(errorOf(() => safetensorsFromBytes(readFileSync(path), path)).message).toBe(e.message);
  }
  return e;
}

/** float32 bits → value, to state expectations bit-exactly. */
function f32FromBits(bits: number): number {
  const b = new Uint32Array([bits >>> 0]);
  return new Float32Array(b.buffer)[0]!;
}

// --- Round trips ---

describe('writeSafetensors / openSafetensors round trip', () => {
  it('F32, F64, I32, I16, I8, U8, BOOL, I64 keep their values', () => {
    const p = tmp();
    writeSafetensors(p, {
      f32: { dtype: 'F32', shape: [2, 2], data: new Float32Array([1.5, -0, 3e38, 1e-45]) },
      f64: { dtype: 'F64', shape: [3], data: new Float64Array([0.1, -2, 1e300]) },
      i32: { dtype: 'I32', shape: [3], data: new Int32Array([-2147483648, 0, 2147483647]) },
      i16: { dtype: 'I16', shape: [2], data: new Int16Array([-32768, 32767]) },
      i8: { dtype: 'I8', shape: [2], data: new Int8Array([-128, 127]) },
      u8: { dtype: 'U8', shape: [3], data: new Uint8Array([0, 128, 255]) },
      bool: { dtype: 'BOOL', shape: [2], data: new Uint8Array([1, 0]) },
      i64: { dtype: 'I64', shape: [3], data: new BigInt64Array([-1n, 0n, 1n << 40n]) },
    });
    const f = openSafetensors(p);
    expect(f.names()).toEqual(['f32', 'f64', 'i32', 'i16', 'i8', 'u8', 'bool', 'i64']);
    expect(Array.from(f.read('f32') as Float32Array)).toEqual([1.5, -0, Math.fround(3e38), Math.fround(1e-45)]);
    expect(Object.is((f.read('f32') as Float32Array)[1], -0)).toBe(true);
    const f64 = f.read('f64');
    expect(f64).toBeInstanceOf(Float32Array);
    expect(Array.from(f64 as Float32Array)).toEqual([Math.fround(0.1), -2, Infinity]);
    expect(Array.from(f.read('i32') as Int32Array)).toEqual([-2147483648, 0, 2147483647]);
    expect(f.read('i16')).toBeInstanceOf(Int32Array);
    expect(Array.from(f.read('i16') as Int32Array)).toEqual([-32768, 32767]);
    expect(Array.from(f.read('i8') as Int32Array)).toEqual([-128, 127]);
    expect(Array.from(f.read('u8') as Uint8Array)).toEqual([0, 128, 255]);
    expect(Array.from(f.read('bool') as Uint8Array)).toEqual([1, 0]);
    expect(Array.from(f.read('i64') as BigInt64Array)).toEqual([-1n, 0n, 1n << 40n]);
    expect(f.info('f32')).toEqual({ dtype: 'F32', shape: [2, 2], byteLength: 16 });
    expect(f.info('i64')).toEqual({ dtype: 'I64', shape: [3], byteLength: 24 });
    f.close();
  });

  it('BF16 = the upper 16 bits of a float32 (raw bits in, values out)', () => {
    const p = tmp();
    const bits = new Uint16Array([0x3f80, 0xc040, 0x7f80, 0xff80, 0x0001, 0x8000, 0x7fc0, 0x4049]);
    writeSafetensors(p, { b: { dtype: 'BF16', shape: [8], data: bits } });
    const v = openSafetensors(p).read('b') as Float32Array;
    expect(v[0]).toBe(1);
    expect(v[1]).toBe(-3);
    expect(v[2]).toBe(Infinity);
    expect(v[3]).toBe(-Infinity);
    expect(v[4]).toBe(2 ** -133); // smallest bf16 subnormal
    expect(Object.is(v[5], -0)).toBe(true);
    expect(Number.isNaN(v[6])).toBe(true);
    expect(v[7]).toBe(f32FromBits(0x40490000)); // 3.140625
    expect(v[7]).toBe(3.140625);
  });

  it('BF16 from float32 rounds to nearest, ties to even', () => {
    const p = tmp();
    const x = new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -2.5, NaN]);
    writeSafetensors(p, { b: { dtype: 'BF16', shape: [5], data: x } });
    const f = openSafetensors(p);
    const raw = f.readRaw('b');
    const u16 = new Uint16Array(raw.bytes.buffer, 0, 5);
    expect(Array.from(u16.slice(0, 4))).toEqual([0x3f80, 0x3f82, 0x3f81, 0xc020]);
    expect(u16[4]! & 0x7fff).toBeGreaterThan(0x7f80); // a NaN stays NaN
    expect(Array.from((f.read('b') as Float32Array).slice(0, 4))).toEqual([1, 1 + 2 ** -6, 1 + 2 ** -7, -2.5]);
  });

  it('F16 = IEEE half: normals, subnormals, ±inf, NaN, -0', () => {
    const p = tmp();
    const bits = new Uint16Array([0x3c00, 0xc000, 0x0001, 0x03ff, 0x0400, 0x7bff, 0x7c00, 0xfc00, 0x7e00, 0x8000, 0x3555]);
    writeSafetensors(p, { h: { dtype: 'F16', shape: [11], data: bits } });
    const v = Array.from(openSafetensors(p).read('h') as Float32Array);
    expect(v.slice(0, 8)).toEqual([1, -2, 2 ** -24, 1023 * 2 ** -24, 2 ** -14, 65504, Infinity, -Infinity]);
    expect(Number.isNaN(v[8])).toBe(true);
    expect(Object.is(v[9], -0)).toBe(true);
    expect(v[10]).toBe(0.333251953125); // 0x3555: (1 + 341/1024) / 4
  });

  it('F16 from float32 rounds to nearest even, overflows to inf, keeps subnormals', () => {
    const p = tmp();
    const x = new Float32Array([1 + 2 ** -11, 1 + 3 * 2 ** -11, 65504, 65519, 65520, 2 ** -25, 3 * 2 ** -25, -(2 ** -24), 1e-10]);
    writeSafetensors(p, { h: { dtype: 'F16', shape: [9], data: x } });
    const raw = openSafetensors(p).readRaw('h');
    expect(Array.from(new Uint16Array(raw.bytes.buffer, 0, 9))).toEqual([
      0x3c00, 0x3c02, 0x7bff, 0x7bff, 0x7c00, 0x0000, 0x0002, 0x8001, 0x0000,
    ]);
  });

  it('F8_E4M3 decodes every code per the e4m3fn definition', () => {
    const p = tmp();
    const codes = Uint8Array.from({ length: 256 }, (_, i) => i);
    writeSafetensors(p, { w: { dtype: 'F8_E4M3', shape: [16, 16], data: codes } });
    const v = openSafetensors(p).read('w') as Float32Array;
    // independent construction: normal codes map to float32 bits directly (exponent rebias 7 → 127)
    for (let c = 0; c < 256; c++) {
      const s = c >> 7;
      const e = (c >> 3) & 15;
      const m = c & 7;
      if (e === 15 && m === 7) {
        expect(Number.isNaN(v[c])).toBe(true);
      } else if (e === 0) {
        expect(v[c]).toBe((s ? -1 : 1) * m * 2 ** -9);
      } else {
        expect(v[c]).toBe(f32FromBits((s << 31) | ((e - 7 + 127) << 23) | (m << 20)));
      }
    }
    expect([v[0x38], v[0x7e], v[0xfe], v[0x08], v[0x01], v[0x3c]]).toEqual([1, 448, -448, 2 ** -6, 2 ** -9, 1.5]);
    expect(Object.is(v[0x80], -0)).toBe(true);
  });

  it('F8_E5M2 decodes as the upper byte of a half', () => {
    const p = tmp();
    writeSafetensors(p, { w: { dtype: 'F8_E5M2', shape: [4], data: new Uint8Array([0x3c, 0x7b, 0x7c, 0x01]) } });
    expect(Array.from(openSafetensors(p).read('w') as Float32Array)).toEqual([1, 57344, Infinity, 2 ** -16]);
  });

  it('scalars, empty tensors and metadata', () => {
    const p = tmp();
    writeSafetensors(
      p,
      {
        s: { dtype: 'F32', shape: [], data: new Float32Array([7]) },
        e: { dtype: 'F32', shape: [0, 3], data: new Float32Array(0) },
        z: { dtype: 'I32', shape: [1], data: new Int32Array([5]) },
      },
      { format: 'pt', note: 'ü' },
    );
    const f = openSafetensors(p);
    expect(Array.from(f.read('s') as Float32Array)).toEqual([7]);
    expect(f.info('e')).toEqual({ dtype: 'F32', shape: [0, 3], byteLength: 0 });
    expect((f.read('e') as Float32Array).length).toBe(0);
    expect(f.metadata()).toEqual({ format: 'pt', note: 'ü' });
    f.close();
  });

  it('pads the header to a multiple of 8 bytes', () => {
    const p = tmp();
    writeSafetensors(p, { abc: { dtype: 'U8', shape: [1], data: new Uint8Array([1]) } });
    const buf = readFileSync(p);
    const n = Number(buf.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    expect(buf.length).toBe(8 + n + 1);
  });

  it('reads the golden fixture header and a tensor at its offset', () => {
    const path = 'fixtures/golden/public-fp8/model.safetensors';
    const f = openSafetensors(path);
    expect(f.names().length).toBe(184);
    expect(f.metadata()).toEqual({ format: 'pt' });
    expect(f.info('model.layers.0.self_attn.kv_a_proj_with_mqa.weight')).toEqual({ dtype: 'F8_E4M3', shape: [160, 256], byteLength: 40960 });
    // independent read of the same bytes
    const buf = readFileSync(path);
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString());
    const [b, e] = header['model.norm.weight'].data_offsets as [number, number];
    const expected = new Float32Array(buf.buffer.slice(buf.byteOffset + 8 + n + b, buf.byteOffset + 8 + n + e));
    expect(Array.from(f.read('model.norm.weight') as Float32Array)).toEqual(Array.from(expected));
    f.close();
  });
});

describeEachBackend('readTensor', () => {
  it('gives float32 for floats, int32 for I32/I64/U8, bool for BOOL; no leak', async () => {
    const p = tmp();
    writeSafetensors(p, {
      bf: { dtype: 'BF16', shape: [2, 1], data: new Float32Array([1, -2]) },
      i64: { dtype: 'I64', shape: [2], data: new BigInt64Array([-3n, 4n]) },
      u8: { dtype: 'U8', shape: [2], data: new Uint8Array([3, 250]) },
      b: { dtype: 'BOOL', shape: [2], data: new Uint8Array([1, 0]) },
      big: { dtype: 'I64', shape: [1], data: new BigInt64Array([1n << 33n]) },
    });
    const f = openSafetensors(p);
    const t = f.readTensor('bf');
    expect(t.dtype).toBe('float32');
    expect(t.shape).toEqual([2, 1]);
    expect(await t.data()).toEqual(new Float32Array([1, -2]));
    t.dispose();
    const i = f.readTensor('i64');
    expect(i.dtype).toBe('int32');
    expect(Array.from(await i.data())).toEqual([-3, 4]);
    i.dispose();
    const u = f.readTensor('u8');
    expect(u.dtype).toBe('int32');
    expect(Array.from(await u.data())).toEqual([3, 250]);
    u.dispose();
    const b = f.readTensor('b');
    expect(b.dtype).toBe('bool');
    b.dispose();
    expect(() => f.readTensor('big')).toThrow(/tensor "big": I64 value 8589934592 at index 0 does not fit int32/);
    await expectNoTensorLeak(() => f.readTensor('bf').dispose());
    f.close();
  });
});

// --- Bytes in memory (browser-safe: no file system) ---

describe('serializeSafetensors / safetensorsFromBytes / shardedSafetensors', () => {
  const tensors = {
    w: { dtype: 'BF16' as Dtype, shape: [2, 2], data: new Float32Array([1, -2, 0.5, 3]) },
    i: { dtype: 'I64' as Dtype, shape: [1], data: new BigInt64Array([-7n]) },
  };

  it('serializeSafetensors gives exactly the bytes writeSafetensors writes', () => {
    const p = tmp();
    writeSafetensors(p, tensors, { format: 'pt' });
    expect(Buffer.from(serializeSafetensors(tensors, { format: 'pt' })).equals(readFileSync(p))).toBe(true);
  });

  it('safetensorsFromBytes reads the golden fixture like openSafetensors', () => {
    const path = 'fixtures/golden/public-fp8/model.safetensors';
    const file = openSafetensors(path);
    const mem = safetensorsFromBytes(new Uint8Array(readFileSync(path)), 'fp8 model');
    expect(mem.path).toBe('fp8 model');
    expect(mem.names()).toEqual(file.names());
    expect(mem.metadata()).toEqual(file.metadata());
    for (const n of ['model.norm.weight', 'model.layers.0.self_attn.kv_a_proj_with_mqa.weight', 'model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv']) {
      expect(mem.info(n)).toEqual(file.info(n));
      expect(mem.readRaw(n)).toEqual(file.readRaw(n));
      expect(Array.from(mem.read(n) as Float32Array)).toEqual(Array.from(file.read(n) as Float32Array));
    }
    file.close();
    mem.close();
    expect(() => mem.read('model.norm.weight')).toThrow('safetensors: fp8 model: read of "model.norm.weight" after close()');
  });

  it('reads copy the bytes: changing the input afterwards changes nothing read before', () => {
    const bytes = serializeSafetensors(tensors);
    const f = safetensorsFromBytes(bytes);
    const raw = f.readRaw('w');
    expect(raw.bytes.byteOffset % 8).toBe(0);
    bytes.fill(0);
    expect(Array.from(safetensorsFromBytes(serializeSafetensors(tensors)).read('w') as Float32Array)).toEqual([1, -2, 0.5, 3]);
    expect(raw.bytes).toEqual(new Uint8Array([0x80, 0x3f, 0x00, 0xc0, 0x00, 0x3f, 0x40, 0x40]));
  });

  it('a non-Uint8Array argument is a TypeError naming the function', () => {
    expect(() => safetensorsFromBytes([1, 2, 3] as unknown as Uint8Array)).toThrow('safetensorsFromBytes(): bytes must be a Uint8Array but got Array');
  });

  it('serializeSafetensors names itself in its errors', () => {
    expect(() => serializeSafetensors({ a: { dtype: 'F32', shape: [3], data: new Float32Array(2) } })).toThrow(
      'serializeSafetensors(): tensor "a": shape [3] × F32 needs 12 bytes but the data has 8',
    );
  });

  it('safetensorsFromSource closes the source when the header is invalid, and on close()', () => {
    let closed = 0;
    const good = serializeSafetensors(tensors);
    const source = (bytes: Uint8Array) => ({ size: bytes.byteLength, read: (p: number, n: number) => bytes.slice(p, p + n), close: () => void closed++ });
    expect(() => safetensorsFromSource('bad', source(good.subarray(0, 5)))).toThrow('safetensors: bad: file has 5 bytes, shorter than the 8-byte header length');
    expect(closed).toBe(1);
    const f = safetensorsFromSource('good', source(good));
    f.close();
    f.close();
    expect(closed).toBe(2);
  });

  it('shardedSafetensors reads shards from memory and validates the index like openCheckpoint', () => {
    const shards: Record<string, Uint8Array> = {
      's1.safetensors': serializeSafetensors({ a: tensors.w }),
      's2.safetensors': serializeSafetensors({ b: tensors.i }),
    };
    const open = (s: string) => {
      if (!shards[s]) throw new SafetensorsError(s, 'no such shard');
      return safetensorsFromBytes(shards[s]!, s);
    };
    const ck = shardedSafetensors('mem', 'mem/index', { weight_map: { a: 's1.safetensors', b: 's2.safetensors' }, metadata: { total_size: 16 } }, open);
    expect(ck.names()).toEqual(['a', 'b']);
    expect(ck.metadata()).toEqual({ total_size: '16' });
    expect(Array.from(ck.read('b') as BigInt64Array)).toEqual([-7n]);
    ck.close();
    expect(() => shardedSafetensors('mem', 'mem/index', { weight_map: { a: 's2.safetensors' } }, open)).toThrow(
      'safetensors: mem/index: weight_map puts "a" in shard "s2.safetensors", which has no such tensor',
    );
    for (const bad of ['/abs.safetensors', '..', 'x/../../y', 'C:\\w.safetensors', '']) {
      expect(() => shardedSafetensors('mem', 'mem/index', { weight_map: { a: bad } }, open)).toThrow(/must be a shard file name inside the directory/);
    }
    expect(() => shardedSafetensors('mem', 'mem/index', [], open)).toThrow('safetensors: mem/index: index must be a JSON object with a "weight_map" object');
  });
});

// --- Writer errors ---

describe('writeSafetensors errors', () => {
  it('rejects a data length that does not match the shape', () => {
    expect(() => writeSafetensors(tmp(), { a: { dtype: 'F32', shape: [3], data: new Float32Array(2) } })).toThrow(
      'writeSafetensors(): tensor "a": shape [3] × F32 needs 12 bytes but the data has 8',
    );
  });
  it('rejects an array type that does not fit the dtype', () => {
    expect(() => writeSafetensors(tmp(), { a: { dtype: 'I32', shape: [1], data: new Float32Array(1) } })).toThrow(
      'writeSafetensors(): tensor "a": cannot write Float32Array as I32',
    );
  });
  it('rejects unknown dtypes, bad shapes, the reserved name and bad metadata', () => {
    expect(() => writeSafetensors(tmp(), { a: { dtype: 'F4' as Dtype, shape: [1], data: new Uint8Array(1) } })).toThrow(
      'writeSafetensors(): tensor "a": unknown dtype "F4"',
    );
    expect(() => writeSafetensors(tmp(), { a: { dtype: 'U8', shape: [-1], data: new Uint8Array(1) } })).toThrow(
      'writeSafetensors(): tensor "a": shape must be integers ≥ 0 but got [-1]',
    );
    expect(() => writeSafetensors(tmp(), { __metadata__: { dtype: 'U8', shape: [1], data: new Uint8Array(1) } })).toThrow(
      'writeSafetensors(): "__metadata__" is reserved',
    );
    expect(() => writeSafetensors(tmp(), {}, { a: 1 as unknown as string })).toThrow(
      'writeSafetensors(): metadata must be an object of string values',
    );
  });
});

// --- Malformed files: one named test per case ---

describe('malformed files give SafetensorsError', () => {
  const ok = (dtype = 'F32', shape = [2], offsets = [0, 8]) => ({ dtype, shape, data_offsets: offsets });

  it('nonexistent file', () => {
    expect(openError(join(dir, 'nope.safetensors')).message).toMatch(/nope.safetensors: cannot open \(ENOENT\)/);
  });
  it('a directory is not a file', () => {
    expect(openError(dir).message).toMatch(/not a regular file/);
  });
  it('file shorter than 8 bytes', () => {
    const p = tmp();
    writeFileSync(p, Buffer.from([1, 2, 3]));
    const e = openError(p);
    expect(e.message).toBe(`safetensors: ${p}: file has 3 bytes, shorter than the 8-byte header length`);
    expect(e.path).toBe(p);
  });
  it('header length beyond the file', () => {
    const p = rawFile({}, new Uint8Array(0), 1000n);
    expect(openError(p).message).toMatch(/header length 1000 goes beyond the file \(2 bytes after the length\)/);
  });
  it('absurd header length (> 100 MB), checked before any allocation', () => {
    const p = rawFile({}, new Uint8Array(0), 1n << 62n);
    expect(openError(p).message).toMatch(/header length 4611686018427387904 exceeds the 100000000-byte limit/);
  });
  it('header is not UTF-8', () => {
    const p = tmp();
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(2n);
    writeFileSync(p, Buffer.concat([len, Buffer.from([0xff, 0xfe])]));
    expect(openError(p).message).toMatch(/header is not valid UTF-8 \(invalid byte sequence at header byte 0\)/);
  });
  it('bad JSON', () => {
    expect(openError(rawFile('{"a": ')).message).toMatch(/header is not valid JSON/);
  });
  it('header not an object', () => {
    expect(openError(rawFile('[1, 2]')).message).toMatch(/header is not a JSON object/);
    expect(openError(rawFile('null')).message).toMatch(/header is not a JSON object/);
  });
  it('entry not an object', () => {
    expect(openError(rawFile({ a: 5 })).message).toMatch(/tensor "a": header entry is not an object/);
  });
  it('missing dtype', () => {
    expect(openError(rawFile({ a: { shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4))).message).toMatch(
      /tensor "a": missing or non-string dtype/,
    );
  });
  it('unknown dtype', () => {
    expect(openError(rawFile({ a: ok('F4') }, new Uint8Array(8))).message).toMatch(/tensor "a": unknown dtype "F4"/);
  });
  it('invalid shape', () => {
    expect(openError(rawFile({ a: ok('F32', [-2] as number[]) }, new Uint8Array(8))).message).toMatch(
      /tensor "a": shape must be an array of integers ≥ 0 but got \[-2\]/,
    );
    expect(openError(rawFile({ a: { dtype: 'F32', shape: '2', data_offsets: [0, 8] } }, new Uint8Array(8))).message).toMatch(
      /shape must be an array of integers/,
    );
    expect(openError(rawFile({ a: ok('F32', [1.5]) }, new Uint8Array(8))).message).toMatch(/shape must be an array of integers/);
  });
  it('missing or invalid data_offsets', () => {
    expect(openError(rawFile({ a: { dtype: 'F32', shape: [2] } }, new Uint8Array(8))).message).toMatch(
      /tensor "a": data_offsets must be two integers ≥ 0 but got undefined/,
    );
    expect(openError(rawFile({ a: ok('F32', [2], [0, 4, 8]) }, new Uint8Array(8))).message).toMatch(
      /data_offsets must be two integers ≥ 0 but got \[0,4,8\]/,
    );
    expect(openError(rawFile({ a: ok('F32', [2], [-8, 0]) }, new Uint8Array(8))).message).toMatch(/data_offsets must be two integers/);
    expect(openError(rawFile({ a: ok('F32', [0], [8, 0]) }, new Uint8Array(8))).message).toMatch(
      /data_offsets \[8, 0\] end before begin/,
    );
  });
  it('offsets out of range (truncated data)', () => {
    expect(openError(rawFile({ a: ok('F32', [2], [0, 8]) }, new Uint8Array(5))).message).toMatch(
      /tensor "a": data_offsets \[0, 8\] out of range: the data region has 5 bytes \(truncated file\?\)/,
    );
  });
  it('shape × dtype size ≠ byte length', () => {
    expect(openError(rawFile({ a: ok('BF16', [3], [0, 8]) }, new Uint8Array(8))).message).toMatch(
      /tensor "a": shape \[3\] × BF16 is 6 bytes but data_offsets span 8/,
    );
  });
  it('a huge shape cannot overflow into a matching size', () => {
    expect(openError(rawFile({ a: ok('F32', [2 ** 52, 2 ** 52, 2 ** 52], [0, 8]) }, new Uint8Array(8))).message).toMatch(
      new RegExp(`× F32 is ${2n ** 158n} bytes but data_offsets span 8`), // 2^52·2^52·2^52·4
    );
  });
  it('overlapping regions', () => {
    const e = openError(rawFile({ a: ok('F32', [2], [0, 8]), b: ok('F32', [1], [4, 8]) }, new Uint8Array(8)));
    expect(e.message).toMatch(/tensor "b" overlaps "a" \(bytes 4 < 8\)/);
  });
  it('gap between regions (also when unsorted)', () => {
    const e = openError(rawFile({ b: ok('F32', [1], [12, 16]), a: ok('F32', [2], [0, 8]) }, new Uint8Array(16)));
    expect(e.message).toMatch(/gap of 4 bytes before tensor "b" \(offset 8\)/);
    expect(openError(rawFile({ a: ok('F32', [1], [4, 8]) }, new Uint8Array(8))).message).toMatch(/gap of 4 bytes before tensor "a" \(offset 0\)/);
  });
  it('a tensor name given twice is reported as a duplicate name, not as a gap', () => {
    const a = JSON.stringify(ok('F32', [1], [0, 4]));
    const b = JSON.stringify(ok('F32', [1], [4, 8]));
    const e = openError(rawFile(`{"__metadata__": {"a": "x", "b": "y"}, "w": ${a}, "v": ${b}, "w" : ${b}}`, new Uint8Array(8)));
    expect(e.message).toMatch(/header names tensor "w" more than once \(duplicate tensor name\)/);
    expect(e.message).not.toMatch(/gap/);
    // a repeated key inside __metadata__ or an escaped name is not a repeated tensor
    const f = openSafetensors(rawFile(`{"__metadata__": {"k": "1", "k": "2"}, "w\\"": ${a}, "w": ${b}}`, new Uint8Array(8)));
    expect(f.names().sort()).toEqual(['w', 'w"']);
    f.close();
  });
  it('unsorted but contiguous regions are fine', () => {
    const f = openSafetensors(rawFile({ b: ok('F32', [1], [8, 12]), a: ok('F32', [2], [0, 8]) }, new Uint8Array(12)));
    expect(f.names()).toEqual(['b', 'a']);
    f.close();
  });
  it('trailing bytes after the last tensor', () => {
    expect(openError(rawFile({ a: ok('F32', [2], [0, 8]) }, new Uint8Array(10))).message).toMatch(
      /2 trailing bytes after the last tensor \(data region 10 bytes, tensors cover 8\)/,
    );
  });
  it('__metadata__ not a string map', () => {
    expect(openError(rawFile({ __metadata__: { a: 1 } })).message).toMatch(/__metadata__ must be an object of string values/);
    expect(openError(rawFile({ __metadata__: 'pt' })).message).toMatch(/__metadata__ must be an object of string values/);
  });
  it('__metadata__ keys are own string properties, "__proto__" included', () => {
    const f = openSafetensors(rawFile('{"__metadata__": {"__proto__": "x", "format": "pt"}}'));
    const m = f.metadata();
    expect(Object.getPrototypeOf(m)).toBe(Object.prototype);
    expect(Object.getOwnPropertyDescriptor(m, '__proto__')?.value).toBe('x');
    expect(m.format).toBe('pt');
    f.close();
  });
  it('unknown tensor name and read after close', () => {
    const p = tmp();
    writeSafetensors(p, { a: { dtype: 'U8', shape: [1], data: new Uint8Array(1) } });
    const f = openSafetensors(p);
    expect(() => f.read('b')).toThrow(`safetensors: ${p}: no tensor named "b"`);
    expect(() => f.info('b')).toThrow(SafetensorsError);
    f.close();
    f.close(); // idempotent
    expect(() => f.read('a')).toThrow(`safetensors: ${p}: read of "a" after close()`);
  });
  it('file shrunk after open: unexpected end of file', () => {
    const p = tmp();
    writeSafetensors(p, { a: { dtype: 'U8', shape: [64], data: new Uint8Array(64) } });
    const f = openSafetensors(p);
    const n = Number(readFileSync(p).readBigUInt64LE(0));
    writeFileSync(p, readFileSync(p).subarray(0, 8 + n + 10));
    expect(() => f.read('a')).toThrow(/unexpected end of file at byte/);
    f.close();
  });
});

// --- Sharded checkpoints ---

describe('openCheckpoint', () => {
  function shardedDir(): string {
    const d = mkdtempSync(join(dir, 'ckpt-'));
    writeSafetensors(join(d, 'model-00001-of-00002.safetensors'), {
      a: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) },
      b: { dtype: 'I32', shape: [1], data: new Int32Array([7]) },
    });
    writeSafetensors(join(d, 'model-00002-of-00002.safetensors'), {
      c: { dtype: 'BF16', shape: [1], data: new Float32Array([-4]) },
    });
    return d;
  }
  const writeIndex = (d: string, index: unknown) =>
    writeFileSync(join(d, 'model.safetensors.index.json'), typeof index === 'string' ? index : JSON.stringify(index));

  it('reads tensors through the weight map', () => {
    const d = shardedDir();
    writeIndex(d, {
      metadata: { total_size: 14 },
      weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00001-of-00002.safetensors', c: 'model-00002-of-00002.safetensors' },
    });
    const ck = openCheckpoint(d);
    expect(ck.names()).toEqual(['a', 'b', 'c']);
    expect(Array.from(ck.read('a') as Float32Array)).toEqual([1, 2]);
    expect(Array.from(ck.read('c') as Float32Array)).toEqual([-4]);
    expect(ck.info('b')).toEqual({ dtype: 'I32', shape: [1], byteLength: 4 });
    expect(ck.readRaw('c').dtype).toBe('BF16');
    expect(ck.metadata()).toEqual({ total_size: '14' });
    expect(() => ck.read('zz')).toThrow(`safetensors: ${d}: no tensor named "zz"`);
    ck.close();
    expect(() => ck.read('a')).toThrow(/after close\(\)/);
  });
  it('a directory with model.safetensors, or a file path, is a single-file checkpoint', () => {
    const d = mkdtempSync(join(dir, 'single-'));
    writeSafetensors(join(d, 'model.safetensors'), { a: { dtype: 'F32', shape: [1], data: new Float32Array([3]) } });
    expect(Array.from(openCheckpoint(d).read('a') as Float32Array)).toEqual([3]);
    expect(Array.from(openCheckpoint(join(d, 'model.safetensors')).read('a') as Float32Array)).toEqual([3]);
  });
  it('index naming a missing shard', () => {
    const d = shardedDir();
    writeIndex(d, { weight_map: { a: 'model-00001-of-00002.safetensors', x: 'model-00009.safetensors' } });
    expect(() => openCheckpoint(d)).toThrow(/weight_map names shard "model-00009.safetensors" \(for "x"\) but .* does not exist/);
  });
  it('index naming a tensor that is not in its shard', () => {
    const d = shardedDir();
    writeIndex(d, { weight_map: { a: 'model-00001-of-00002.safetensors', c: 'model-00001-of-00002.safetensors' } });
    expect(() => openCheckpoint(d)).toThrow(
      /weight_map puts "c" in shard "model-00001-of-00002.safetensors", which has no such tensor/,
    );
  });
  it('index that is not JSON or lacks weight_map', () => {
    const d = shardedDir();
    writeIndex(d, '{');
    expect(() => openCheckpoint(d)).toThrow(/model.safetensors.index.json: index is not readable JSON/);
    writeIndex(d, { metadata: {} });
    expect(() => openCheckpoint(d)).toThrow(/index must be a JSON object with a "weight_map" object/);
  });
  it('index shard names may not leave the directory', () => {
    const d = shardedDir();
    writeIndex(d, { weight_map: { a: '../x.safetensors' } });
    expect(() => openCheckpoint(d)).toThrow(/weight_map\["a"\] must be a shard file name inside the directory but got "..\/x.safetensors"/);
    writeIndex(d, { weight_map: { a: 3 } });
    expect(() => openCheckpoint(d)).toThrow(/weight_map\["a"\] must be a shard file name/);
  });
  it('a malformed shard is reported with the shard path', () => {
    const d = shardedDir();
    writeFileSync(join(d, 'model-00002-of-00002.safetensors'), Buffer.from([1]));
    writeIndex(d, { weight_map: { a: 'model-00001-of-00002.safetensors', c: 'model-00002-of-00002.safetensors' } });
    expect(() => openCheckpoint(d)).toThrow(/model-00002-of-00002.safetensors: file has 1 bytes/);
  });
  it('empty directory and missing path', () => {
    const d = mkdtempSync(join(dir, 'empty-'));
    expect(() => openCheckpoint(d)).toThrow(/neither model.safetensors.index.json nor model.safetensors in this directory/);
    expect(() => openCheckpoint(join(d, 'nope'))).toThrow(/cannot open checkpoint \(ENOENT\)/);
  });
});

// --- Fuzzing ---

describe('fuzzing: malformed input is a SafetensorsError or a correct read', () => {
  const valid = tmp('valid');
  writeSafetensors(
    valid,
    {
      a: { dtype: 'F32', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
      b: { dtype: 'BF16', shape: [4], data: new Float32Array([1, -1, 0.5, 2]) },
      c: { dtype: 'F8_E4M3', shape: [3], data: new Uint8Array([0x38, 0x7f, 0x80]) },
      d: { dtype: 'I64', shape: [2], data: new BigInt64Array([5n, -5n]) },
      e: { dtype: 'F16', shape: [1], data: new Uint16Array([0x3c00]) },
    },
    { format: 'pt' },
  );
  const validBytes = readFileSync(valid);
  const headerEnd = 8 + Number(validBytes.readBigUInt64LE(0));
  const fuzzPath = tmp('fuzz');

  /**
   * Opens and reads everything; returns the reader's results or the error. The bytes reader
   * (safetensorsFromBytes) on the same file must agree: the same error message, or the same bytes.
   */
  function readAll(path: string): { ok: true; raw: Map<string, Uint8Array> } | { ok: false; err: unknown } {
    const fromFile = readAllWith(() => openSafetensors(path));
    const fromBytes = readAllWith(() => safetensorsFromBytes(readFileSync(path), path));
    if (fromFile.ok && fromBytes.ok) expect([...fromBytes.raw]).toEqual([...fromFile.raw]);
    else expect(fromBytes.ok ? 'read' : String(fromBytes.err)).toBe(fromFile.ok ? 'read' : String(fromFile.err));
    return fromFile;
  }

  function readAllWith(open: () => SafetensorsFile): { ok: true; raw: Map<string, Uint8Array> } | { ok: false; err: unknown } {
    let f;
    try {
      f = open();
      const raw = new Map<string, Uint8Array>();
      for (const name of f.names()) {
        const info = f.info(name);
        const r = f.readRaw(name);
        const v = f.read(name);
        const n = info.shape.reduce((p, d) => p * d, 1);
        if (v.length !== n && !(info.dtype === 'U8' || info.dtype === 'BOOL')) throw new Error(`length ${v.length} ≠ ${n}`);
        raw.set(name, r.bytes);
      }
      return { ok: true, raw };
    } catch (err) {
      return { ok: false, err };
    } finally {
      f?.close();
    }
  }

  it('random byte mutations, truncations and appended bytes', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(validBytes.length - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
        fc.oneof(fc.constant(-1), fc.nat(validBytes.length)),
        fc.uint8Array({ maxLength: 8 }),
        (mutations, truncateTo, appended) => {
          const bytes = Buffer.from(validBytes);
          for (const [pos, val] of mutations) bytes[pos] = val;
          const cut = truncateTo >= 0 ? bytes.subarray(0, truncateTo) : bytes;
          const file = Buffer.concat([cut, appended]);
          writeFileSync(fuzzPath, file);
          const r = readAll(fuzzPath);
          if (!r.ok) {
            expect(r.err).toBeInstanceOf(SafetensorsError);
            return;
          }
          const headerIntact = truncateTo < 0 && appended.length === 0 && mutations.every(([p]) => p >= headerEnd);
          if (headerIntact) {
            // data-only mutations: every tensor reads back exactly the mutated bytes at its offsets
            const header = JSON.parse(validBytes.subarray(8, headerEnd).toString());
            for (const [name, bytesRead] of r.raw) {
              const [b, e] = header[name].data_offsets as [number, number];
              expect(Buffer.from(bytesRead).equals(file.subarray(headerEnd + b, headerEnd + e))).toBe(true);
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('mutations confined to the data region always read', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: headerEnd, max: validBytes.length - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }), (mutations) => {
        const bytes = Buffer.from(validBytes);
        for (const [pos, val] of mutations) bytes[pos] = val;
        writeFileSync(fuzzPath, bytes);
        const r = readAll(fuzzPath);
        expect(r.ok).toBe(true);
      }),
      { numRuns: 100 },
    );
  });

  it('random headers', () => {
    const dtype = fc.oneof(
      fc.constantFrom('F64', 'F32', 'F16', 'BF16', 'F8_E4M3', 'F8_E5M2', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL'),
      fc.string({ maxLength: 4 }),
      fc.integer(),
    );
    const dim = fc.oneof(fc.integer({ min: 0, max: 4 }), fc.integer(), fc.double(), fc.constant(2 ** 60));
    const entry = fc.record(
      {
        dtype,
        shape: fc.oneof(fc.array(dim, { maxLength: 3 }), fc.string()),
        data_offsets: fc.oneof(fc.tuple(fc.integer({ min: -2, max: 40 }), fc.integer({ min: -2, max: 40 })), fc.array(fc.integer(), { maxLength: 3 })),
      },
      { requiredKeys: [] },
    );
    const header = fc.oneof(
      fc.dictionary(fc.oneof(fc.string({ maxLength: 3 }), fc.constant('__metadata__'), fc.constant('__proto__')), fc.oneof(entry, fc.jsonValue())),
      fc.jsonValue(),
    );
    fc.assert(
      fc.property(header, fc.nat(40), fc.boolean(), (h, dataLen, asText) => {
        const text = asText ? JSON.stringify(h) : `${JSON.stringify(h)}  `;
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(Buffer.byteLength(text ?? 'null')));
        writeFileSync(fuzzPath, Buffer.concat([len, Buffer.from(text ?? 'null'), Buffer.alloc(dataLen, 0x3c)]));
        const r = readAll(fuzzPath);
        if (!r.ok) expect(r.err).toBeInstanceOf(SafetensorsError);
      }),
      { numRuns: 400 },
    );
  });

  it('random sharded index files', () => {
    const d = mkdtempSync(join(dir, 'fuzz-idx-'));
    writeSafetensors(join(d, 's1.safetensors'), { a: { dtype: 'U8', shape: [1], data: new Uint8Array([1]) } });
    fc.assert(
      fc.property(
        fc.oneof(
          fc.record({ weight_map: fc.dictionary(fc.constantFrom('a', 'b', '__proto__'), fc.oneof(fc.constantFrom('s1.safetensors', 's2.safetensors', '', '/etc/passwd', '..'), fc.jsonValue())) }),
          fc.jsonValue(),
        ),
        (index) => {
          writeFileSync(join(d, 'model.safetensors.index.json'), JSON.stringify(index) ?? '');
          try {
            const ck = openCheckpoint(d);
            for (const n of ck.names()) ck.read(n);
            ck.close();
          } catch (e) {
            expect(e).toBeInstanceOf(SafetensorsError);
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});
