/**
 * Sparse MQA attention of DSA (arXiv 2512.02556, §2.1, Eq. 2 over the selected latents) cut into units of one
 * query each, for `sparseAttentionMqaFast` (src/sparse_fast.ts) on the calling thread or on the workers of
 * src/threads.ts (KERNELS of src/sparse_kernels.ts). On tfjs-backend-wasm the two WebAssembly SIMD kernels of
 * src/wasm/sparse_mqa.c read the selected rows in place; elsewhere the rows are gathered and both GEMMs run on
 * the backend's `matMul`. A unit computes the same arithmetic in the same order on any thread.
 *
 * Browser-safe: no Node import. Shape letters: docs/conventions.md (T queries, S key positions, K selected
 * slots, H heads, C latent, R rope dim, D = C + R).
 */
import { tf } from './backend.ts';
import { readAndDispose, type TensorEnv } from './kernel_env.ts';
import { type SparseMqaKernel, sparseMqaKernel } from './sparse_wasm.ts';

/** Inputs of {@link sparseUnits}; arrays are row-major. */
export interface SparseArgs {
  T: number; H: number; C: number; R: number; S: number; K: number;
  startPos: number; scale: number;
  /** [T, H, C], [T, H, R] */
  qL: Float32Array; qR: Float32Array;
  /** [T, K] selected positions (−1 padding) */
  slots: Int32Array;
  /**
   * Where each query's rows come from. `'host'`: copied from the host arrays `kv`/`pe`. `'backend'`: read on the
   * backend from the tensors of kvId/peId (`env.matrix`; a worker builds them once from `kv`/`pe`): in place by the
   * wasm kernels, else gathered by `gatherND`.
   */
  gather: 'host' | 'backend';
  /** [S, C], [S, R] cache rows on the host (null on the calling thread when gathering on the backend). */
  kv: Float32Array | null; pe: Float32Array | null;
  kvId: number; peId: number;
  /** [T, H, C] output */
  out: Float32Array;
  /**
   * when given, accumulates milliseconds per phase: [operands, GEMM 1, softmax, transpose, GEMM 2, output]. `operands` =
   * gathering the rows (XNNPACK path) and laying out the queries; on the wasm kernels the gather is inside the GEMMs
   * and there is no transpose (0 ms).
   */
  profile?: Float64Array;
}

/**
 * Queries [u0, u1) of sparse MQA attention (Eq. 2 over the gathered latents; see sparseAttentionMqaFast):
 * G = [c_s ; k_pe_s] [n, D], zᵀ = G · qᵀ [n, H], p = softmax over the n valid slots, ōᵀ = Gcᵀ · pᵀ [C, H].
 * On tfjs-backend-wasm with the SIMD kernels: `sparseUnitsWasm` below; elsewhere G is gathered and both GEMMs
 * run on the backend's `matMul` (the transpose in TypeScript).
 */
export function sparseUnits(a: SparseArgs, env: TensorEnv, u0: number, u1: number): void {
  const heap = a.gather === 'backend' ? wasmHeap() : null;
  const kernel = heap ? sparseMqaKernel() : null;
  if (heap && kernel) {
    sparseUnitsWasm(a, env, heap, kernel, u0, u1);
    return;
  }
  const { H, C, R, K, S, scale, qL, qR, out } = a;
  const prof = a.profile;
  const D = C + R;
  const G = new Float32Array(K * D); // [n, D]
  const GcT = new Float32Array(C * K); // [C, n]
  const qT = new Float32Array(D * H); // [D, H]
  const pT = new Float32Array(K * H); // [n, H]
  const readRows = a.gather === 'host' ? hostRows(a.kv!, a.pe!, C, R) : deviceRows(env.matrix(a.kvId, a.kv, S, C, 0, S), env.matrix(a.peId, a.pe, S, R, 0, S));
  forEachQuery(a, u0, u1, (i, n, positions) => {
    const t0 = prof ? performance.now() : 0;
    readRows(positions, n, G); // G = [c_s ; k_pe_s] for the n valid slots
    for (let h = 0; h < H; h++) {
      const ql = (i * H + h) * C;
      const qr = (i * H + h) * R;
      for (let c = 0; c < C; c++) qT[c * H + h] = qL[ql + c]!;
      for (let r = 0; r < R; r++) qT[(C + r) * H + h] = qR[qr + r]!;
    }
    const t1 = prof ? performance.now() : 0;
    const zT = matMulHost(G, qT, n, D, H); // [n, H] = G · qᵀ            (GEMM 1)
    const t2 = prof ? performance.now() : 0;
    const sums = softmaxColumns(zT, n, H, H, H, H, scale, pT); // unnormalized p[h, :] over the n slots, stored transposed [n, H]
    const t3 = prof ? performance.now() : 0;
    transposeBlock(G, n, D, C, GcT); // Gcᵀ [C, n]
    const t4 = prof ? performance.now() : 0;
    const oT = matMulHost(GcT, pT, C, n, H); // [C, H] = Gcᵀ · pᵀ         (GEMM 2)
    const t5 = prof ? performance.now() : 0;
    writeOutput(oT, 1, H, sums, i, H, C, out); // oT [C, H]
    if (prof) addPhases(prof, [t0, t1, t2, t3, t4, t5, performance.now()]);
  });
}

/**
 * {@link sparseUnits} on tfjs-backend-wasm with the WebAssembly SIMD kernels of src/sparse_wasm.ts, which read
 * the selected rows straight from the cache tensors in WebAssembly memory (the gather fused into both GEMMs):
 *
 *   zᵀ = [kv ; pe][s_1..s_n] · qᵀ [n, Hp]   (sparse_scores),   p = softmax (TypeScript),   ō = p · kv[s_1..s_n] [Hp, C]   (sparse_weighted)
 *
 * Hp = H rounded up to 8: the padding heads have zero queries and zero weights and are never read. The
 * operand buffers are allocated once per call in WebAssembly memory (sized for K slots) and reused by every query.
 */
function sparseUnitsWasm(a: SparseArgs, env: TensorEnv, heap: WasmHeap, kernel: SparseMqaKernel, u0: number, u1: number): void {
  const { H, C, R, S, K, scale, qL, qR, out } = a;
  const prof = a.profile;
  const D = C + R;
  const Hp = Math.ceil(H / 8) * 8;
  const kv = env.matrix(a.kvId, a.kv, S, C, 0, S);
  const pe = env.matrix(a.peId, a.pe, S, R, 0, S);
  const buffers = [heap.tensor([K], 'int32'), heap.tensor([Hp * D]), heap.tensor([K * Hp]), heap.tensor([Hp * K]), heap.tensor([Hp * C])];
  try {
    const [posT, qPT, zTT, pPT, oT] = buffers as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
    // views after the last allocation (growth detaches views); nothing below allocates
    const pos = heap.view(posT, 'int32'), qP = heap.view(qPT), zT = heap.view(zTT), pP = heap.view(pPT), o = heap.view(oT);
    const at = (t: tf.Tensor) => heap.view(t).byteOffset;
    const [kvAt, peAt, posAt, qPAt, zTAt, pPAt, oAt] = [at(kv), at(pe), pos.byteOffset, qP.byteOffset, zT.byteOffset, pP.byteOffset, o.byteOffset];
    qP.fill(0); // the padding heads' queries stay zero
    forEachQuery(a, u0, u1, (i, n, positions) => {
      const t0 = prof ? performance.now() : 0;
      pos.set(positions.subarray(0, n));
      for (let h = 0; h < H; h++) {
        const panel = (h >> 3) * D * 8 + (h & 7); // qP [Hp/8][D][8]
        const ql = (i * H + h) * C;
        const qr = (i * H + h) * R;
        for (let c = 0; c < C; c++) qP[panel + c * 8] = qL[ql + c]!;
        for (let r = 0; r < R; r++) qP[panel + (C + r) * 8] = qR[qr + r]!;
      }
      const t1 = prof ? performance.now() : 0;
      kernel.scores(kvAt, peAt, posAt, n, C, R, qPAt, Hp, zTAt); // (GEMM 1)
      const t2 = prof ? performance.now() : 0;
      const sums = softmaxColumns(zT, n, H, Hp, 4, Hp, scale, pP); // pP [Hp/4][n][4], padding heads 0
      const t3 = prof ? performance.now() : 0;
      kernel.weighted(kvAt, posAt, n, C, pPAt, Hp, oAt); // (GEMM 2)
      const t4 = prof ? performance.now() : 0;
      writeOutput(o, C, 1, sums, i, H, C, out); // o [Hp, C]
      if (prof) addPhases(prof, [t0, t1, t2, t3, t3, t4, performance.now()]); // no transpose on this path
    });
  } finally {
    tf.dispose(buffers);
  }
}

/**
 * Calls `each(i, n, positions)` for query rows [u0, u1) with the row's n valid slots s (0 ≤ s ≤ t, in the order
 * given; −1 padding and future keys are never read) in positions[0, n); a row with none is NaN (softmax over nothing).
 */
function forEachQuery(a: SparseArgs, u0: number, u1: number, each: (i: number, n: number, positions: Int32Array) => void): void {
  const { K, H, C, slots, startPos, out } = a;
  const positions = new Int32Array(K);
  for (let i = u0; i < u1; i++) {
    const t = startPos + i;
    let n = 0;
    for (let j = 0; j < K; j++) {
      const s = slots[i * K + j]!;
      if (s >= 0 && s <= t) positions[n++] = s;
    }
    if (n === 0) out.fill(NaN, i * H * C, (i + 1) * H * C);
    else each(i, n, positions);
  }
}

/** Adds the six phase times between consecutive time stamps to `profile` (SPARSE_PHASES order). */
function addPhases(profile: Float64Array, stamps: number[]): void {
  for (let j = 0; j + 1 < stamps.length; j++) profile[j]! += stamps[j + 1]! - stamps[j]!;
}

/**
 * out[i, h, :] = ō[h, :] / sums[h] for query row i, where ō (the unnormalized weighted sum) holds element (h, c)
 * at h·hStride + c·cStride: [C, H] is (1, H), [Hp, C] is (C, 1).
 */
function writeOutput(o: Float32Array, hStride: number, cStride: number, sums: Float64Array, i: number, H: number, C: number, out: Float32Array): void {
  for (let h = 0; h < H; h++) {
    const dst = (i * H + h) * C;
    const inv = 1 / sums[h]!;
    for (let c = 0; c < C; c++) out[dst + c] = o[h * hStride + c * cStride]! * inv;
  }
}

/** Tensors allocated in, and views of, the WebAssembly memory of tfjs-backend-wasm. */
interface WasmHeap {
  /** an uninitialized tensor whose data lives in WebAssembly memory */
  tensor(shape: number[], dtype?: 'float32' | 'int32'): tf.Tensor;
  /** the data of a tensor of this backend, in place (valid until the memory next grows) */
  view(t: tf.Tensor): Float32Array;
  view(t: tf.Tensor, dtype: 'int32'): Int32Array;
}

/** The public methods of BackendWasm (tfjs-backend-wasm 4.x) that {@link WasmHeap} uses. */
interface BackendWasmMemory {
  makeOutput(shape: number[], dtype: 'float32' | 'int32'): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): Float32Array | Int32Array;
}

/** The WebAssembly memory of the current backend if it is tfjs-backend-wasm, else null. */
function wasmHeap(): WasmHeap | null {
  if (tf.getBackend() !== 'wasm') return null;
  const backend = tf.backend() as unknown as Partial<BackendWasmMemory>;
  if (typeof backend.makeOutput !== 'function' || typeof backend.typedArrayFromHeap !== 'function') return null;
  const b = backend as BackendWasmMemory;
  return {
    tensor: (shape, dtype = 'float32') => tf.engine().makeTensorFromTensorInfo(b.makeOutput(shape, dtype)),
    view: ((t: tf.Tensor) => b.typedArrayFromHeap({ dataId: t.dataId, shape: t.shape, dtype: t.dtype })) as WasmHeap['view'],
  };
}

/** Phase names of {@link SparseArgs.profile}. */
export const SPARSE_PHASES = ['operands', 'gemm1', 'softmax', 'transpose', 'gemm2', 'output'] as const;

// --- Helpers ---

type RowReader = (positions: Int32Array, n: number, G: Float32Array) => void;

/** Fills G [n, C + R] with rows [kv[s] ; pe[s]] copied from host arrays. */
function hostRows(kvd: Float32Array, ped: Float32Array, C: number, R: number): RowReader {
  const D = C + R;
  return (positions, n, G) => {
    for (let j = 0; j < n; j++) {
      const s = positions[j]!;
      G.set(kvd.subarray(s * C, s * C + C), j * D);
      G.set(ped.subarray(s * R, s * R + R), j * D + C);
    }
  };
}

/** Fills G [n, C + R] with rows gathered on the backend (`gatherND`) and read back: O(n·D) per query. */
function deviceRows(kv: tf.Tensor2D, pe: tf.Tensor2D): RowReader {
  const C = kv.shape[1];
  const R = pe.shape[1];
  const D = C + R;
  return (positions, n, G) => {
    const [c, r] = tf.tidy(() => {
      const index = tf.tensor2d(positions.subarray(0, n), [n, 1], 'int32');
      return [tf.gatherND(kv, index), tf.gatherND(pe, index)];
    });
    const cd = readAndDispose(c);
    const rd = readAndDispose(r);
    for (let j = 0; j < n; j++) {
      G.set(cd.subarray(j * C, j * C + C), j * D);
      G.set(rd.subarray(j * R, j * R + R), j * D + C);
    }
  };
}

/** `a [M, K] · b [K, N]` on the backend (2-D, untransposed: XNNPACK on wasm); returns the data. */
function matMulHost(a: Float32Array, b: Float32Array, M: number, K: number, N: number): Float32Array {
  return readAndDispose(tf.tidy(() => tf.matMul(tf.tensor2d(a.subarray(0, M * K), [M, K]), tf.tensor2d(b.subarray(0, K * N), [K, N]))));
}

/**
 * p[j, h] = exp(scale · (z[j, h] − max_j z[j, h])) for the heads h < H of z [n, zStride] (in row order), written
 * in panels of `lanes` heads — element (j, h) at ⌊h / lanes⌋·n·lanes + j·lanes + h mod lanes, so [n, H] when
 * lanes = H and sparse_weighted's pP [Hp/4][n][4] when lanes = 4 — and 0 for the padding heads H ≤ h < heads;
 * returns the column sums (float64), by which the weighted sum is divided afterwards (the softmax's normalization).
 */
function softmaxColumns(z: Float32Array, n: number, H: number, zStride: number, lanes: number, heads: number, scale: number, p: Float32Array): Float64Array {
  const at = Int32Array.from({ length: heads }, (_, h) => Math.floor(h / lanes) * n * lanes + (h % lanes));
  const max = new Float64Array(H).fill(-Infinity);
  const sum = new Float64Array(H);
  for (let j = 0; j < n; j++) for (let h = 0; h < H; h++) max[h] = Math.max(max[h]!, z[j * zStride + h]!);
  for (let j = 0; j < n; j++) {
    for (let h = 0; h < H; h++) {
      const e = Math.exp(scale * (z[j * zStride + h]! - max[h]!)); // scale > 0: the max of scale·z is scale·max
      p[at[h]! + j * lanes] = e;
      sum[h]! += e;
    }
    for (let h = H; h < heads; h++) p[at[h]! + j * lanes] = 0;
  }
  return sum;
}

/**
 * dst [cols, rows] = the first `cols` columns of src [rows, width], transposed. Eight source rows at a
 * time, so each destination row is written in runs of 8 contiguous floats (measured ≈ 3× faster here
 * than square tiles).
 */
export function transposeBlock(src: Float32Array, rows: number, width: number, cols: number, dst: Float32Array): void {
  const r8 = rows - (rows % 8);
  for (let r = 0; r < r8; r += 8) {
    for (let c = 0; c < cols; c++) {
      const i = r * width + c;
      const o = c * rows + r;
      dst[o] = src[i]!;
      dst[o + 1] = src[i + width]!;
      dst[o + 2] = src[i + 2 * width]!;
      dst[o + 3] = src[i + 3 * width]!;
      dst[o + 4] = src[i + 4 * width]!;
      dst[o + 5] = src[i + 5 * width]!;
      dst[o + 6] = src[i + 6 * width]!;
      dst[o + 7] = src[i + 7 * width]!;
    }
  }
  for (let r = r8; r < rows; r++) for (let c = 0; c < cols; c++) dst[c * rows + r] = src[r * width + c]!;
}
