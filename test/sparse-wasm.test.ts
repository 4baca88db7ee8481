/**
 * The WebAssembly SIMD kernels of sparse attention (src/wasm/sparse_mqa.c, loaded by src/sparse_wasm.ts on
 * tfjs-backend-wasm's memory): the committed module is what its source builds, it owns nothing in the memory
 * it imports, it writes nothing outside its output, and `sparseAttentionMqaFast` on wasm runs it and agrees
 * with a float64 oracle on every path of the kernels (padding heads, the 4-slot tiles and their remainder, the
 * 8-column tiles and their scalar tail, chunk boundaries of the weighted sum, −1 padding and future slots).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { initBackend, tf } from '../src/backend.ts';
import { sparseAttentionMqaFast } from '../src/sparse_fast.ts';
import { SPARSE_PHASES } from '../src/sparse_units.ts';
import { sparseMqaKernel } from '../src/sparse_wasm.ts';
import { SPARSE_MQA_CLANG, SPARSE_MQA_SOURCE_SHA256, SPARSE_MQA_WASM_BASE64 } from '../src/wasm/sparse_mqa.wasm.ts';
import { checkSparseMqaModule, clangVersion, compileSparseMqa, sectionIds, sourceSha256 } from '../scripts/build-wasm.ts';
import { expectNoTensorLeak } from './helpers/backends.ts';
import { mulberry32 } from './helpers/random.ts';

const committed = new Uint8Array(Buffer.from(SPARSE_MQA_WASM_BASE64, 'base64'));

describe('the committed WebAssembly module', () => {
  it('was built from the committed src/wasm/sparse_mqa.c (its sha256 is recorded with the bytes)', () => {
    expect(SPARSE_MQA_SOURCE_SHA256).toBe(sourceSha256());
  });

  it('imports only env.memory and has no data segment, start function or use of a global', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dsv32-wasm-test-'));
    try {
      const file = join(dir, 'sparse_mqa.wasm');
      writeFileSync(file, committed);
      expect(() => checkSparseMqaModule(committed, file)).not.toThrow();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(sectionIds(committed)).not.toContain(11); // data
    expect(WebAssembly.Module.exports(new WebAssembly.Module(committed)).map((e) => e.name).sort()).toEqual(['sparse_scores', 'sparse_weighted']);
  });

  it('refuses a module with a data segment (it would write into the backend memory)', () => {
    // (module (import "env" "memory" (memory 1)) (data (i32.const 0) "x"))
    const withData = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 2, 15, 1, 3, 101, 110, 118, 6, 109, 101, 109, 111, 114, 121, 2, 0, 1, 11, 7, 1, 0, 65, 0, 11, 1, 120]);
    expect(() => checkSparseMqaModule(withData, 'with-data.wasm')).toThrow(/no data section/);
  });

  // another clang may emit other bytes for the same source: the comparison needs the compiler that built them
  it.skipIf(clangVersion() !== SPARSE_MQA_CLANG)(`is byte for byte what \`npm run build:wasm\` builds from the source (needs ${SPARSE_MQA_CLANG} and lld)`, () => {
    expect(Buffer.from(compileSparseMqa()).equals(Buffer.from(committed))).toBe(true);
  });
});

/** ō[t,h] = Σ_{s ∈ S_t} softmax(scale·(q̃·c_s + q_pe·k_pe_s)) c_s, S_t = the valid slots 0 ≤ s ≤ t (float64). */
function oracle(qL: Float32Array, qR: Float32Array, kv: Float32Array, pe: Float32Array, sel: Int32Array, T: number, H: number, C: number, R: number, K: number, startPos: number, scale: number): Float64Array {
  const out = new Float64Array(T * H * C);
  for (let i = 0; i < T; i++) {
    const valid = [...sel.subarray(i * K, (i + 1) * K)].filter((s) => s >= 0 && s <= startPos + i);
    for (let h = 0; h < H; h++) {
      const z = valid.map((s) => {
        let acc = 0;
        for (let c = 0; c < C; c++) acc += qL[(i * H + h) * C + c]! * kv[s * C + c]!;
        for (let r = 0; r < R; r++) acc += qR[(i * H + h) * R + r]! * pe[s * R + r]!;
        return scale * acc;
      });
      const m = Math.max(...z);
      const e = z.map((v) => Math.exp(v - m));
      const sum = e.reduce((a, b) => a + b, 0);
      for (let c = 0; c < C; c++) out[(i * H + h) * C + c] = valid.reduce((acc, s, j) => acc + (e[j]! / sum) * kv[s * C + c]!, 0);
    }
  }
  return out;
}

/** n seeded uniform values in [−1, 1). */
function uniform(n: number, seed: number): Float32Array {
  const next = mulberry32(seed);
  return Float32Array.from({ length: n }, () => 2 * next() - 1);
}

describe('sparse attention on the WebAssembly kernels [wasm]', () => {
  let previous: string;
  beforeAll(async () => {
    previous = tf.getBackend();
    await initBackend('wasm');
  });
  afterAll(async () => {
    if (previous && previous !== 'wasm') await tf.setBackend(previous);
  });

  it('loads on the backend memory, and sparseAttentionMqaFast runs it (no transpose phase)', () => {
    expect(sparseMqaKernel()).not.toBeNull();
    const T = 2, H = 8, C = 16, R = 4, S = 12, K = 8;
    const profile = new Float64Array(SPARSE_PHASES.length);
    tf.tidy(() => {
      const sel = tf.tensor2d(Int32Array.from({ length: T * K }, (_, j) => j % S), [T, K], 'int32');
      sparseAttentionMqaFast(tf.tensor3d(uniform(T * H * C, 1), [T, H, C]), tf.tensor3d(uniform(T * H * R, 2), [T, H, R]),
        tf.tensor2d(uniform(S * C, 3), [S, C]), tf.tensor2d(uniform(S * R, 4), [S, R]), sel, S - T, 0.5, { profile });
    });
    expect(profile[SPARSE_PHASES.indexOf('gemm1')]).toBeGreaterThan(0);
    expect(profile[SPARSE_PHASES.indexOf('transpose')]).toBe(0);
  });

  it('≡ float64 oracle on every path of the kernels', async () => {
    await fc.assert(
      fc.property(
        fc.record({
          T: fc.integer({ min: 1, max: 3 }), H: fc.integer({ min: 1, max: 19 }), C: fc.integer({ min: 1, max: 41 }), R: fc.integer({ min: 1, max: 9 }),
          K: fc.integer({ min: 1, max: 70 }), extra: fc.integer({ min: 0, max: 60 }), seed: fc.integer({ min: 1, max: 1 << 20 }), padding: fc.boolean(),
        }),
        ({ T, H, C, R, K, extra, seed, padding }) => {
          const S = T + extra;
          const startPos = S - T;
          const sel = new Int32Array(T * K);
          const pick = uniform(T * K, seed + 5);
          for (let i = 0; i < T; i++) {
            const seen = new Set<number>();
            for (let j = 0; j < K; j++) {
              // distinct positions over 0..S−1 (future ones included: they must be ignored), some −1 padding
              let s = Math.floor(((pick[i * K + j]! + 1) / 2) * S) % S;
              while (seen.has(s) && seen.size < S) s = (s + 1) % S;
              const pad = padding && j % 5 === 4;
              sel[i * K + j] = pad || seen.has(s) ? -1 : s;
              if (!pad) seen.add(s);
            }
            sel[i * K] = startPos + i; // at least one valid slot per row
          }
          const qL = uniform(T * H * C, seed), qR = uniform(T * H * R, seed + 1), kv = uniform(S * C, seed + 2), pe = uniform(S * R, seed + 3);
          const got = tf.tidy(() =>
            sparseAttentionMqaFast(tf.tensor3d(qL, [T, H, C]), tf.tensor3d(qR, [T, H, R]), tf.tensor2d(kv, [S, C]), tf.tensor2d(pe, [S, R]),
              tf.tensor2d(sel, [T, K], 'int32'), startPos, 0.3).dataSync());
          const want = oracle(qL, qR, kv, pe, sel, T, H, C, R, K, startPos, 0.3);
          for (let e = 0; e < want.length; e++) expect(Math.abs(got[e]! - want[e]!), `element ${e}`).toBeLessThanOrEqual(2e-5);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('writes nothing outside its output, and reads the rows it is given (direct call with guard zones)', () => {
    const kernel = sparseMqaKernel()!;
    const n = 7, C = 13, R = 3, Hp = 8, S = 20, guard = 64;
    const D = C + R;
    const sizes = { kv: S * C, pe: S * R, pos: n, qP: Hp * D, zT: n * Hp, pP: Hp * n, o: Hp * C };
    const offsets: Record<string, number> = {};
    let total = guard;
    for (const [name, size] of Object.entries(sizes)) {
      offsets[name] = total;
      total += size + guard;
    }
    const region = tf.tensor1d(uniform(total, 9)); // one tensor holds every buffer, with guard zones between them
    try {
      const backend = tf.backend() as unknown as { typedArrayFromHeap(t: { dataId: object; shape: number[]; dtype: string }): Float32Array };
      const view = () => backend.typedArrayFromHeap({ dataId: region.dataId, shape: region.shape, dtype: 'float32' });
      const v = view();
      const pos = new Int32Array(v.buffer, v.byteOffset + 4 * offsets.pos!, n);
      pos.set([3, 0, 19, 7, 7, 12, 1]);
      const before = v.slice();
      const at = (name: string) => v.byteOffset + 4 * offsets[name]!;
      kernel.scores(at('kv'), at('pe'), at('pos'), n, C, R, at('qP'), Hp, at('zT'));
      kernel.weighted(at('kv'), at('pos'), n, C, at('pP'), Hp, at('o'));
      const after = view();
      const written = (e: number) => (e >= offsets.zT! && e < offsets.zT! + sizes.zT) || (e >= offsets.o! && e < offsets.o! + sizes.o);
      const changedElsewhere: number[] = [];
      for (let e = 0; e < total; e++) if (!written(e) && !Object.is(after[e], before[e])) changedElsewhere.push(e);
      expect(changedElsewhere).toEqual([]);
      // spot-check both outputs against float64 sums over the same rows
      const f = (name: string, e: number) => before[offsets[name]! + e]!;
      for (const [j, h] of [[0, 0], [4, 5], [6, 7]] as const) {
        let z = 0;
        for (let d = 0; d < C; d++) z += f('kv', pos[j]! * C + d) * f('qP', (h >> 3) * D * 8 + d * 8 + (h & 7));
        for (let r = 0; r < R; r++) z += f('pe', pos[j]! * R + r) * f('qP', (h >> 3) * D * 8 + (C + r) * 8 + (h & 7));
        expect(after[offsets.zT! + j * Hp + h]).toBeCloseTo(z, 4);
      }
      for (const [h, c] of [[0, 0], [3, 9], [7, 12]] as const) {
        let o = 0;
        for (let j = 0; j < n; j++) o += f('pP', (h >> 2) * n * 4 + j * 4 + (h & 3)) * f('kv', pos[j]! * C + c);
        expect(after[offsets.o! + h * C + c]).toBeCloseTo(o, 4);
      }
    } finally {
      region.dispose();
    }
  });

  it('leaks no tensor', async () => {
    const T = 2, H = 5, C = 9, R = 2, S = 10, K = 6;
    await expectNoTensorLeak(() => {
      tf.tidy(() => {
        const sel = tf.tensor2d(Int32Array.from({ length: T * K }, (_, j) => j % S), [T, K], 'int32');
        sparseAttentionMqaFast(tf.tensor3d(uniform(T * H * C, 1), [T, H, C]), tf.tensor3d(uniform(T * H * R, 2), [T, H, R]),
          tf.tensor2d(uniform(S * C, 3), [S, C]), tf.tensor2d(uniform(S * R, 4), [S, R]), sel, S - T, 0.5);
      });
    });
  });
});
