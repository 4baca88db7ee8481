/**
 * Where the time of fast sparse attention goes, and what the other arrangements of the same arithmetic on
 * tfjs-backend-wasm cost: the measurement behind the "sparse prefill efficiency" paragraph of
 * docs/performance.md. One query of `sparseAttentionMqaFast` at L = 16K, k = 2048, H = 32, C = 512, R = 64
 * (the bench's prefill dims) is
 *
 *   G = [c_s ; k_pe_s] [n, D] gathered,  zᵀ = G · qᵀ [n, H] (GEMM 1),  p = softmax,  ōᵀ = Gcᵀ · pᵀ [C, H] (GEMM 2).
 *
 * Variants, each timed per query over the same random selections (median of `--repeats` passes over `--queries`
 * queries, default L/128 as in the bench):
 * - `shipped`: `sparseAttentionMqaFast` itself, with its phase profile: on wasm the WebAssembly SIMD kernels of
 *   src/wasm/sparse_mqa.c, which read the selected rows in place (the gather fused into both GEMMs, no transpose);
 * The other variants arrange the same arithmetic around XNNPACK (tfjs-wasm's `matMul`):
 * - `gemms only`: the two GEMMs alone on operands built once (what the query would cost if the gather, the
 *   softmax and the transpose were free; the small right operands qᵀ, pᵀ are still new tensors each query);
 * - `packed right operand`: GEMM 2 as p [H, n] · Gc [n, C], which needs no transpose but hands XNNPACK a new
 *   right operand to pack every query;
 * - `heap-resident`: G gathered by `gatherND` on the backend, Gcᵀ and pᵀ written straight into WebAssembly
 *   memory (BackendWasm.makeOutput / typedArrayFromHeap): no host copies (what `shipped` did on wasm before the kernels, here
 *   written out inline);
 * - `host gather`: the arrangement before `heap-resident`: rows copied from a host copy of the cache, qᵀ, G, Gcᵀ and pᵀ
 *   copied into the backend per query (`rows: 'host'`);
 * - `fused gather + transpose`: Gcᵀ written from each 8-row group of G while it is in L1;
 * - `softmax`: the TypeScript exp pass against `tf.exp` (and the column sums) on the backend, on one [n, H] block.
 * `dense` is `denseAttentionMqaFast` on T = L/128 queries, the reference rate for the FLOP-ratio percentage.
 *
 * ```
 * npx tsx bench/sparse-layouts.ts --json layouts.json   # then: npm run bench:doc -- RUN.json ... layouts.json
 * ```
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { initBackend, tf } from '../src/backend.ts';
import { otherCpu, readCpuTicks } from '../src/bench/machine_share.ts';
import { denseAttentionMqaFast, sparseAttentionMqaFast } from '../src/sparse_fast.ts';
import { SPARSE_PHASES, transposeBlock } from '../src/sparse_units.ts';

const L = 16384, k = 2048, H = 32, C = 512, R = 64, D = C + R;
const FLOPS_PER_PAIR = 2 * H * (D + C); // docs/spec-notes.md#flop-model

function flag(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : dflt;
}

interface WasmBackend {
  makeOutput(shape: number[], dtype: 'float32' | 'int32'): { dataId: object; shape: number[]; dtype: 'float32' | 'int32' };
  typedArrayFromHeap(info: { dataId: object; shape: number[]; dtype: string }): Float32Array | Int32Array;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function uniform(n: number, seed: number): Float32Array {
  let x = seed >>> 0 || 1;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    a[i] = x / 4294967296 - 0.5;
  }
  return a;
}

async function main(): Promise<void> {
  const queries = Number(flag('--queries', String(L / 128))); // the bench's prefill chunk at this L
  const repeats = Number(flag('--repeats', '3'));
  const json = flag('--json', '');
  await initBackend('wasm');
  const backend = tf.backend() as unknown as WasmBackend;
  const load0 = loadavg()[0]!;
  const ticks0 = readCpuTicks();
  const started = new Date().toISOString();

  const T = queries;
  const kvd = uniform(L * C, 1), ped = uniform(L * R, 2), qL = uniform(T * H * C, 3), qR = uniform(T * H * R, 4);
  const kv = tf.tensor2d(kvd, [L, C]), pe = tf.tensor2d(ped, [L, R]);
  const slots = new Int32Array(T * k);
  const pick = uniform(T * k * 2, 5);
  for (let i = 0; i < T; i++) {
    const t = L - T + i;
    const seen = new Set<number>();
    for (let j = 0; seen.size < k; j++) seen.add(Math.floor((pick[(i * k * 2 + j) % pick.length]! + 0.5) * (t + 1)) % (t + 1));
    slots.set([...seen], i * k);
  }
  const scale = 1 / Math.sqrt(D);

  const heap = (shape: number[], dtype: 'float32' | 'int32' = 'float32'): [tf.Tensor, Float32Array | Int32Array] => {
    const info = backend.makeOutput(shape, dtype);
    return [tf.engine().makeTensorFromTensorInfo(info), backend.typedArrayFromHeap(info)];
  };
  const read = (t: tf.Tensor): Float32Array => {
    const d = t.dataSync() as Float32Array;
    t.dispose();
    return d;
  };
  const qT = new Float32Array(D * H);
  const buildQT = (i: number) => {
    for (let h = 0; h < H; h++) {
      for (let c = 0; c < C; c++) qT[c * H + h] = qL[(i * H + h) * C + c]!;
      for (let r = 0; r < R; r++) qT[(C + r) * H + h] = qR[(i * H + h) * R + r]!;
    }
  };
  const G = new Float32Array(k * D), GcT = new Float32Array(C * k), pT = new Float32Array(k * H), p = new Float32Array(H * k);
  const gatherHost = (i: number, into: Float32Array) => {
    for (let j = 0; j < k; j++) {
      const s = slots[i * k + j]!;
      into.set(kvd.subarray(s * C, s * C + C), j * D);
      into.set(ped.subarray(s * R, s * R + R), j * D + C);
    }
  };
  const softmaxJs = (zT: Float32Array | Int32Array, out: Float32Array | Int32Array, transposed: boolean): Float64Array => {
    const max = new Float64Array(H).fill(-Infinity);
    const sum = new Float64Array(H);
    for (let j = 0; j < k; j++) for (let h = 0; h < H; h++) max[h] = Math.max(max[h]!, zT[j * H + h]!);
    for (let j = 0; j < k; j++) {
      for (let h = 0; h < H; h++) {
        const e = Math.exp(scale * (zT[j * H + h]! - max[h]!));
        out[transposed ? j * H + h : h * k + j] = e;
        sum[h]! += e;
      }
    }
    return sum;
  };

  const variants: Record<string, () => void> = {
    'shipped': () => {
      tf.tidy(() => {
        sparseAttentionMqaFast(tf.tensor3d(qL, [T, H, C]), tf.tensor3d(qR, [T, H, R]), kv, pe, tf.tensor2d(slots, [T, k], 'int32'), L - T, scale);
      });
    },
    'host gather': () => {
      tf.tidy(() => {
        sparseAttentionMqaFast(tf.tensor3d(qL, [T, H, C]), tf.tensor3d(qR, [T, H, R]), kv, pe, tf.tensor2d(slots, [T, k], 'int32'), L - T, scale, { rows: 'host' });
      });
    },
    'gemms only': (() => {
      const Gt = tf.tensor2d(uniform(k * D, 6), [k, D]);
      const GcTt = tf.tensor2d(uniform(C * k, 7), [C, k]);
      return () => {
        for (let i = 0; i < T; i++) {
          read(tf.tidy(() => tf.matMul(Gt, tf.tensor2d(qT, [D, H]))));
          read(tf.tidy(() => tf.matMul(GcTt, tf.tensor2d(pT, [k, H]))));
        }
      };
    })(),
    'packed right operand': () => {
      for (let i = 0; i < T; i++) {
        buildQT(i);
        gatherHost(i, G);
        tf.tidy(() => {
          const Gt = tf.tensor2d(G, [k, D]);
          const zT = tf.matMul(Gt, tf.tensor2d(qT, [D, H])).dataSync() as Float32Array;
          softmaxJs(zT, p, false);
          tf.matMul(tf.tensor2d(p, [H, k]), Gt.slice([0, 0], [k, C])).dataSync();
        });
      }
    },
    'heap-resident': () => {
      for (let i = 0; i < T; i++) {
        tf.tidy(() => {
          const [idx, pos] = heap([k, 1], 'int32');
          pos.set(slots.subarray(i * k, (i + 1) * k));
          const [qLT] = heap([C, H]);
          const [qRT] = heap([R, H]);
          const a = backend.typedArrayFromHeap(qLT); // views taken after the last allocation (a growing heap detaches them)
          const b = backend.typedArrayFromHeap(qRT);
          for (let h = 0; h < H; h++) {
            for (let c = 0; c < C; c++) a[c * H + h] = qL[(i * H + h) * C + c]!;
            for (let r = 0; r < R; r++) b[r * H + h] = qR[(i * H + h) * R + r]!;
          }
          const Gc = tf.gatherND(kv, idx) as tf.Tensor2D;
          const Gr = tf.gatherND(pe, idx) as tf.Tensor2D;
          const zT = tf.add(tf.matMul(Gc, qLT as tf.Tensor2D), tf.matMul(Gr, qRT as tf.Tensor2D));
          const [GcTt, GcTv] = heap([C, k]);
          transposeBlock(backend.typedArrayFromHeap(Gc) as Float32Array, k, C, C, GcTv as Float32Array);
          const [pTt, pTv] = heap([k, H]);
          softmaxJs(backend.typedArrayFromHeap(zT), pTv, true);
          backend.typedArrayFromHeap(tf.matMul(GcTt as tf.Tensor2D, pTt as tf.Tensor2D));
        });
      }
    },
    'fused gather + transpose': () => {
      for (let i = 0; i < T; i++) {
        buildQT(i);
        const k8 = k - (k % 8);
        for (let r = 0; r < k8; r += 8) {
          for (let q = 0; q < 8; q++) {
            const s = slots[i * k + r + q]!;
            G.set(kvd.subarray(s * C, s * C + C), (r + q) * D);
            G.set(ped.subarray(s * R, s * R + R), (r + q) * D + C);
          }
          for (let c = 0; c < C; c++) {
            const a = r * D + c, o = c * k + r;
            for (let q = 0; q < 8; q++) GcT[o + q] = G[a + q * D]!;
          }
        }
        const zT = read(tf.tidy(() => tf.matMul(tf.tensor2d(G, [k, D]), tf.tensor2d(qT, [D, H]))));
        softmaxJs(zT, pT, true);
        read(tf.tidy(() => tf.matMul(tf.tensor2d(GcT, [C, k]), tf.tensor2d(pT, [k, H]))));
      }
    },
  };
  const z = uniform(k * H, 8);
  const softmaxVariants: Record<string, () => void> = {
    'softmax: exp in TypeScript': () => {
      for (let i = 0; i < T; i++) softmaxJs(z, pT, true);
    },
    'softmax: tf.exp on the backend': () => {
      for (let i = 0; i < T; i++) {
        // the shift by the column maxima in TypeScript (a broadcast subtraction on wasm is slow), exp and sums on the backend
        const max = new Float64Array(H).fill(-Infinity);
        for (let j = 0; j < k; j++) for (let h = 0; h < H; h++) max[h] = Math.max(max[h]!, z[j * H + h]!);
        const [shifted] = heap([k, H]);
        const v = backend.typedArrayFromHeap(shifted);
        for (let j = 0; j < k; j++) for (let h = 0; h < H; h++) v[j * H + h] = scale * (z[j * H + h]! - max[h]!);
        tf.tidy(() => {
          const e = tf.exp(shifted);
          backend.typedArrayFromHeap(e);
          backend.typedArrayFromHeap(tf.sum(e, 0));
        });
        shifted.dispose();
      }
    },
  };

  const all = { ...variants, ...softmaxVariants };
  const times: Record<string, number[]> = Object.fromEntries(Object.keys(all).map((name) => [name, []]));
  for (const fn of Object.values(all)) fn(); // warm-up: JIT, XNNPACK operators, heap growth
  for (let r = 0; r < repeats; r++) {
    for (const [name, fn] of Object.entries(all)) {
      const t0 = performance.now();
      fn();
      times[name]!.push((performance.now() - t0) / T);
    }
  }
  const profile = new Float64Array(6);
  tf.tidy(() => {
    sparseAttentionMqaFast(tf.tensor3d(qL, [T, H, C]), tf.tensor3d(qR, [T, H, R]), kv, pe, tf.tensor2d(slots, [T, k], 'int32'), L - T, scale, { profile });
  });

  // dense reference rate: T = L/128 queries at the end of an L-long prefill (the bench's prefill unit)
  const Td = L / 128;
  const denseQL = tf.tensor3d(uniform(Td * H * C, 9), [Td, H, C]), denseQR = tf.tensor3d(uniform(Td * H * R, 10), [Td, H, R]);
  const denseSel = tf.tensor2d(new Int32Array(Td * k).map((_, i) => (i % k) * 7 % (L - Td)), [Td, k], 'int32');
  let pairs = 0;
  for (let i = 0; i < Td; i++) pairs += L - Td + i + 1;
  const denseMs: number[] = [];
  for (let r = 0; r < 2; r++) {
    const t0 = performance.now();
    denseAttentionMqaFast(denseQL, denseQR, kv, pe, denseSel, L - Td, scale).dispose();
    denseMs.push(performance.now() - t0);
  }
  const denseGflops = (FLOPS_PER_PAIR * pairs) / Math.min(...denseMs) / 1e6;

  const rows = Object.entries(times).map(([name, ms]) => {
    const perQuery = median(ms);
    const isSoftmax = name.startsWith('softmax');
    const gflops = isSoftmax ? null : (FLOPS_PER_PAIR * k) / perQuery / 1e6;
    return { variant: name, ms_per_query: perQuery, gflops, pct_of_flop_ratio: gflops === null ? null : (100 * gflops) / denseGflops };
  });
  const phases = SPARSE_PHASES.map((name, j) => ({ phase: name, ms_per_query: profile[j]! / T }));
  const other = otherCpu(ticks0, readCpuTicks());
  const report = {
    started, load_average: [load0, loadavg()[0]!], other_cpu: other, cpus: cpus().length, L, k, heads: H, queries: T, repeats,
    dense_gflops: denseGflops, rows, shipped_phases: phases,
  };
  const share = other ? `other processes ${(100 * other.share).toFixed(1)}%, steal ${(100 * other.steal_share).toFixed(1)}% of the machine` : 'load not measured';
  console.log(`sparse layouts at L=${L}, k=${k}, H=${H} (${T} queries × ${repeats}; ${share})`);
  console.log(`dense reference: ${denseGflops.toFixed(2)} GFLOP/s`);
  for (const r of rows) {
    console.log(`${r.variant.padEnd(32)} ${r.ms_per_query.toFixed(3).padStart(7)} ms/query` + (r.gflops === null ? '' : `  ${r.gflops.toFixed(2)} GFLOP/s  ${r.pct_of_flop_ratio!.toFixed(0)}% of the FLOP ratio`));
  }
  console.log('shipped phases (ms/query): ' + phases.map((x) => `${x.phase} ${x.ms_per_query.toFixed(3)}`).join(', '));
  if (json) writeFileSync(json, JSON.stringify(report, null, 2) + '\n');
  for (const t of [kv, pe, denseQL, denseQR, denseSel]) t.dispose();
}

await main();
