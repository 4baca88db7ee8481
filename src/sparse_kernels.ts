/**
 * The work of the fast DSA kernels (src/sparse_fast.ts) cut into units — a range of queries, query
 * blocks, head groups or key ranges — each a plain function over typed arrays that writes its own
 * slice of the output. One thread runs every unit; a pool of worker threads (src/threads.ts, Node)
 * runs the same functions over disjoint units on shared memory. A unit computes exactly the same
 * arithmetic in the same order whichever thread runs it, so the results are bit-identical to one thread.
 *
 * Browser-safe: no Node import. Shape letters: docs/conventions.md (T queries, S key positions,
 * K selected slots, H heads, C latent, R rope dim, D = C + R, HI/DI indexer heads/dims).
 */
import { tf } from './backend.ts';
import { type SparseMqaKernel, sparseMqaKernel } from './sparse_wasm.ts';

/**
 * How a kernel reaches the big 2-D operands as tensors of its thread's backend. The caller's thread
 * uses the caller's tensors; a worker builds them once from shared memory and keeps them for the
 * next calls with the same `id` (the tensor's id in the calling thread).
 */
export interface TensorEnv {
  /** Rows [r0, r1) of the [rows, cols] matrix `data` (identified by `id`) as a tensor; the env owns it. */
  matrix(id: number, data: Float32Array | null, rows: number, cols: number, r0: number, r1: number): tf.Tensor2D;
  /** Forgets the tensors of `id` (a per-call operand); a no-op for the calling thread's own tensors. */
  release(id: number): void;
}

/** The env of the calling thread: its own tensors, whole (a unit asking for a row range gets a slice it must dispose). */
export function callerEnv(tensors: ReadonlyMap<number, tf.Tensor2D>): TensorEnv {
  return {
    matrix(id, _data, rows, _cols, r0, r1) {
      const t = tensors.get(id);
      if (!t) throw new Error(`callerEnv: no tensor with id ${id}`);
      if (r0 !== 0 || r1 !== rows) throw new Error(`callerEnv: rows [${r0}, ${r1}) of tensor ${id} are not the whole tensor`);
      return t;
    },
    release() {},
  };
}

// --- Sparse MQA attention: unit = one query ---

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
    const sums = softmaxColumns(zT, n, H, scale, pT); // unnormalized p[h, :] over the n slots, stored transposed [n, H]
    const t3 = prof ? performance.now() : 0;
    transposeBlock(G, n, D, C, GcT); // Gcᵀ [C, n]
    const t4 = prof ? performance.now() : 0;
    const oT = matMulHost(GcT, pT, C, n, H); // [C, H] = Gcᵀ · pᵀ         (GEMM 2)
    const t5 = prof ? performance.now() : 0;
    writeOutput(oT, sums, i, H, C, out);
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
      const sums = softmaxPanels(zT, n, H, Hp, scale, pP);
      const t3 = prof ? performance.now() : 0;
      kernel.weighted(kvAt, posAt, n, C, pPAt, Hp, oAt); // (GEMM 2)
      const t4 = prof ? performance.now() : 0;
      for (let h = 0; h < H; h++) {
        const dst = (i * H + h) * C;
        const inv = 1 / sums[h]!;
        for (let c = 0; c < C; c++) out[dst + c] = o[h * C + c]! * inv;
      }
      if (prof) addPhases(prof, [t0, t1, t2, t3, t3, t4, performance.now()]); // no transpose on this path
    });
  } finally {
    tf.dispose(buffers);
  }
}

/**
 * The softmax of {@link softmaxColumns} read from zT [n, Hp] and written in the panels of sparse_weighted,
 * pP [Hp/4][n][4] (the padding heads h ≥ H get weight 0); returns the float64 sums of the H heads.
 */
function softmaxPanels(zT: Float32Array, n: number, H: number, Hp: number, scale: number, pP: Float32Array): Float64Array {
  const max = new Float64Array(H).fill(-Infinity);
  const sum = new Float64Array(H);
  for (let j = 0; j < n; j++) for (let h = 0; h < H; h++) max[h] = Math.max(max[h]!, zT[j * Hp + h]!);
  for (let j = 0; j < n; j++) {
    for (let h = 0; h < H; h++) {
      const e = Math.exp(scale * (zT[j * Hp + h]! - max[h]!)); // scale > 0: the max of scale·z is scale·max
      pP[(h >> 2) * n * 4 + j * 4 + (h & 3)] = e;
      sum[h]! += e;
    }
    for (let h = H; h < Hp; h++) pP[(h >> 2) * n * 4 + j * 4 + (h & 3)] = 0;
  }
  return sum;
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

/** out[i, h, :] = oT[:, h] / sums[h] for query row i (oT is [C, H], the unnormalized weighted sum). */
function writeOutput(oT: Float32Array, sums: Float64Array, i: number, H: number, C: number, out: Float32Array): void {
  for (let h = 0; h < H; h++) {
    const o = (i * H + h) * C;
    const inv = 1 / sums[h]!;
    for (let c = 0; c < C; c++) out[o + c] = oT[c * H + h]! * inv;
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

// --- Dense masked MQA attention: unit = (query block, head group) ---

/** Inputs of {@link denseUnits}. */
export interface DenseArgs {
  T: number; H: number; C: number; R: number; S: number; K: number;
  startPos: number; scale: number;
  qL: Float32Array; qR: Float32Array; slots: Int32Array;
  /** [S, C], [S, R] (null on the calling thread, which passes its tensors through the env) */
  kv: Float32Array | null; pe: Float32Array | null;
  kvId: number; peId: number;
  /**
   * [D, S] = [kv ; pe]ᵀ built for this call (prefill; id keysTId ≤ −2), or null with keysTId = −1 (decode). With it a block computes
   * Z = Q · [kv ; pe]ᵀ and the masked softmax on the backend (faster when Tb·H is large); without it
   * Zᵀ = kv · Q̃ᵀ + pe · Q_peᵀ and the softmax in TypeScript (no per-call transform of the cache).
   */
  keysT: Float32Array | null;
  keysTId: number;
  /** queries per block and head groups per block: unit u = block ⌊u / groups⌋, heads of group u mod groups */
  Tb: number; groups: number;
  out: Float32Array;
}

/** Units of dense masked attention: ⌈T / Tb⌉ · groups. */
export function denseUnitCount(a: Pick<DenseArgs, 'T' | 'Tb' | 'groups'>): number {
  return Math.ceil(a.T / a.Tb) * a.groups;
}

/**
 * Units [u0, u1) of dense masked MQA attention (see denseAttentionMqaFast). For a block of tb queries
 * and a group of hg heads (N = tb·hg columns), with both cache operands untransposed:
 *
 *   Zᵀ = kv · Q̃ᵀ + pe · Q_peᵀ                    [S, N]   keys on the left, never repacked
 *   P[n, s] = exp(scale·(Zᵀ[s, n] − max_n)) on selected s ≤ t, else 0        (one pass, written [N, S])
 *   ō = (P · kv) / Σ_s P[n, s]                    [N, C]   kv is the right operand: XNNPACK packs it once per tensor
 */
export function denseUnits(a: DenseArgs, env: TensorEnv, u0: number, u1: number): void {
  const { T, H, C, R, S, K, startPos, scale, qL, qR, slots, Tb, groups, out } = a;
  const hgMax = Math.ceil(H / groups);
  const kv = env.matrix(a.kvId, a.kv, S, C, 0, S);
  if (a.keysTId !== -1) {
    denseUnitsKeysT(a, env, kv, u0, u1);
    return;
  }
  const pe = env.matrix(a.peId, a.pe, S, R, 0, S);
  const QLT = new Float32Array(C * Tb * hgMax);
  const QRT = new Float32Array(R * Tb * hgMax);
  const mask = new Float32Array(Tb * S);
  const P = new Float32Array(Tb * hgMax * S); // [N, S]
  for (let u = u0; u < u1; u++) {
    const b0 = Math.floor(u / groups) * Tb;
    const g = u % groups;
    const h0 = g * hgMax;
    const hg = Math.min(hgMax, H - h0);
    const tb = Math.min(Tb, T - b0);
    if (hg <= 0 || tb <= 0) continue;
    const N = tb * hg;
    for (let i = 0; i < tb; i++) {
      for (let hh = 0; hh < hg; hh++) {
        const row = (b0 + i) * H + h0 + hh;
        const n = i * hg + hh;
        for (let c = 0; c < C; c++) QLT[c * N + n] = qL[row * C + c]!;
        for (let r = 0; r < R; r++) QRT[r * N + n] = qR[row * R + r]!;
      }
    }
    blockMask(mask, slots, K, S, startPos, b0, tb);
    const zT = readAndDispose(
      tf.tidy(() => tf.add(tf.matMul(kv, tf.tensor2d(QLT.subarray(0, C * N), [C, N])), tf.matMul(pe, tf.tensor2d(QRT.subarray(0, R * N), [R, N])))),
    ); // [S, N]
    const sums = maskedSoftmaxColumns(zT, mask, S, tb, hg, scale, P);
    const o = readAndDispose(tf.tidy(() => tf.matMul(tf.tensor2d(P.subarray(0, N * S), [N, S]), kv))); // [N, C]
    for (let i = 0; i < tb; i++) {
      for (let hh = 0; hh < hg; hh++) {
        const n = i * hg + hh;
        const inv = 1 / sums[n]!;
        const dst = ((b0 + i) * H + h0 + hh) * C;
        for (let c = 0; c < C; c++) out[dst + c] = o[n * C + c]! * inv;
      }
    }
  }
}

/** mask[i, s] = 0 if query b0 + i (position startPos + b0 + i) selected s ≤ its position, else −∞; i < tb. */
function blockMask(mask: Float32Array, slots: Int32Array, K: number, S: number, startPos: number, b0: number, tb: number): void {
  mask.fill(-Infinity, 0, tb * S);
  for (let i = 0; i < tb; i++) {
    const t = startPos + b0 + i;
    for (let j = 0; j < K; j++) {
      const s = slots[(b0 + i) * K + j]!;
      if (s >= 0 && s <= t) mask[i * S + s] = 0;
    }
  }
}

/**
 * The prefill arrangement of {@link denseUnits}: per block, Q [N, D] (N = tb·hg rows (i, h)),
 * Z = Q · [kv ; pe]ᵀ [N, S] (the transposed keys are the right operand, packed once per call),
 * P = softmax(scale · Z + M) on the backend, ō = P · kv [N, C].
 */
function denseUnitsKeysT(a: DenseArgs, env: TensorEnv, kv: tf.Tensor2D, u0: number, u1: number): void {
  const { T, H, C, R, S, K, startPos, scale, qL, qR, slots, Tb, groups, out } = a;
  const D = C + R;
  const hgMax = Math.ceil(H / groups);
  const keysT = env.matrix(a.keysTId, a.keysT, D, S, 0, D);
  const Q = new Float32Array(Tb * hgMax * D);
  const mask = new Float32Array(Tb * S);
  for (let u = u0; u < u1; u++) {
    const b0 = Math.floor(u / groups) * Tb;
    const h0 = (u % groups) * hgMax;
    const hg = Math.min(hgMax, H - h0);
    const tb = Math.min(Tb, T - b0);
    if (hg <= 0 || tb <= 0) continue;
    for (let i = 0; i < tb; i++) {
      for (let hh = 0; hh < hg; hh++) {
        const row = (b0 + i) * H + h0 + hh;
        const n = i * hg + hh;
        Q.set(qL.subarray(row * C, row * C + C), n * D);
        Q.set(qR.subarray(row * R, row * R + R), n * D + C);
      }
    }
    blockMask(mask, slots, K, S, startPos, b0, tb);
    const o = readAndDispose(
      tf.tidy(() => {
        const Z = tf.matMul(tf.tensor2d(Q.subarray(0, tb * hg * D), [tb * hg, D]), keysT).mul(scale).reshape([tb, hg, S]);
        const M = tf.tensor3d(mask.subarray(0, tb * S), [tb, 1, S]);
        const P = tf.softmax(Z.add(M)).reshape([tb * hg, S]);
        return tf.matMul(P, kv); // [tb·hg, C]
      }),
    );
    for (let i = 0; i < tb; i++) {
      for (let hh = 0; hh < hg; hh++) {
        const n = i * hg + hh;
        out.set(o.subarray(n * C, n * C + C), ((b0 + i) * H + h0 + hh) * C);
      }
    }
  }
  env.release(a.keysTId);
}

/**
 * P[n, s] = exp(scale·(zT[s, n] + mask[i, s] − max_n)) with column n = i·hg + hh; returns Σ_s P[n, s]
 * per column (float64 sums). A column with no unmasked entry gives NaN.
 */
function maskedSoftmaxColumns(zT: Float32Array, mask: Float32Array, S: number, tb: number, hg: number, scale: number, P: Float32Array): Float64Array {
  const N = tb * hg;
  const max = new Float64Array(N).fill(-Infinity);
  for (let s = 0; s < S; s++) {
    const zr = s * N;
    for (let i = 0; i < tb; i++) {
      const m = mask[i * S + s]!;
      if (m !== 0) continue;
      for (let hh = 0; hh < hg; hh++) {
        const n = i * hg + hh;
        const z = zT[zr + n]!;
        if (z > max[n]!) max[n] = z;
      }
    }
  }
  const sum = new Float64Array(N);
  for (let s = 0; s < S; s++) {
    const zr = s * N;
    for (let i = 0; i < tb; i++) {
      const m = mask[i * S + s]!;
      for (let hh = 0; hh < hg; hh++) {
        const n = i * hg + hh;
        const e = m === 0 ? Math.exp(scale * (zT[zr + n]! - max[n]!)) : 0; // scale > 0: the max of scale·z is scale·max
        P[n * S + s] = e;
        sum[n]! += e;
      }
    }
  }
  for (let n = 0; n < N; n++) if (max[n] === -Infinity) sum[n] = NaN; // no valid slot: NaN, as the reference
  return sum;
}

// --- Lightning-indexer scores: unit = (query block, key range) ---

/** Inputs of {@link indexerUnits}. */
export interface IndexerArgs {
  T: number; HI: number; DI: number; S: number;
  /** [T, HI, DI], [T, HI], [S] */
  q: Float32Array; w: Float32Array; keyScales: Float32Array;
  /** [S, DI] (null on the calling thread) */
  keys: Float32Array | null;
  keysId: number;
  /** queries per block, and key ranges per block (unit u = block ⌊u / ranges⌋, keys of range u mod ranges) */
  Tb: number; ranges: number;
  /** [T, S] */
  out: Float32Array;
}

/** Units of the indexer: ⌈T / Tb⌉ · ranges. */
export function indexerUnitCount(a: Pick<IndexerArgs, 'T' | 'Tb' | 'ranges'>): number {
  return Math.ceil(a.T / a.Tb) * a.ranges;
}

/**
 * Units [u0, u1) of the index scores I[t,s] = s_k[s] · Σ_j w[t,j] · ReLU(q[t,j] · k_s) (Eq. 1; see
 * indexerScoresFast): per block of tb queries and range of keys, Aᵀ = ReLU(keys · Qᵀ) [S', tb·HI] (fused),
 * Iᵀ = Aᵀ · W [S', tb] with W block-diagonal (W[i·HI + j, i] = w[t_i, j]).
 */
export function indexerUnits(a: IndexerArgs, env: TensorEnv, u0: number, u1: number): void {
  const { T, HI, DI, S, q, w, keyScales, Tb, ranges, out } = a;
  const span = Math.ceil(S / ranges);
  const QT = new Float32Array(DI * Tb * HI);
  const W = new Float32Array(Tb * HI * Tb);
  for (let u = u0; u < u1; u++) {
    const b0 = Math.floor(u / ranges) * Tb;
    const s0 = (u % ranges) * span;
    const s1 = Math.min(S, s0 + span);
    const tb = Math.min(Tb, T - b0);
    if (tb <= 0 || s1 <= s0) continue;
    const N = tb * HI;
    W.fill(0);
    for (let i = 0; i < tb; i++) {
      for (let j = 0; j < HI; j++) {
        const row = (b0 + i) * HI + j;
        for (let d = 0; d < DI; d++) QT[d * N + i * HI + j] = q[row * DI + d]!;
        W[(i * HI + j) * tb + i] = w[row]!;
      }
    }
    const keys = env.matrix(a.keysId, a.keys, S, DI, s0, s1);
    const it = readAndDispose(
      tf.tidy(() => {
        const A = tf.fused.matMul({ a: keys, b: tf.tensor2d(QT.subarray(0, DI * N), [DI, N]), activation: 'relu' }); // [S', N]
        return tf.matMul(A, tf.tensor2d(W.subarray(0, N * tb), [N, tb])); // [S', tb]
      }),
    );
    for (let i = 0; i < tb; i++) {
      const o = (b0 + i) * S;
      for (let s = s0; s < s1; s++) out[o + s] = keyScales[s]! * it[(s - s0) * tb + i]!;
    }
  }
}

// --- Top-k: unit = one query row ---

/** Inputs of {@link topkUnits}. */
export interface TopkArgs {
  T: number; S: number; k: number; width: number; startPos: number;
  /** [T, S] scores; [T, width] output, −1 filled */
  scores: Float32Array; out: Int32Array;
}

/**
 * Rows [u0, u1) of top-k (see selectTopKFast): the n_t = min(k, t + 1) largest scores among s ≤ t, ties to
 * the lower position, ascending. Quickselect finds the n_t-th largest θ, one scan keeps > θ and the first = θ.
 */
export function topkUnits(a: TopkArgs, _env: TensorEnv, u0: number, u1: number): void {
  const { S, k, width, startPos, scores, out } = a;
  const work = new Float32Array(S);
  for (let i = u0; i < u1; i++) {
    const t = startPos + i;
    const row = scores.subarray(i * S, i * S + t + 1); // candidates s = 0..t
    for (let s = 0; s <= t; s++) {
      if (Number.isNaN(row[s]!)) throw new RangeError(`selectTopKFast(): scores must not be NaN but row ${i} column ${s} is NaN`);
    }
    const n = Math.min(k, t + 1);
    const o = i * width;
    if (n === t + 1) {
      for (let s = 0; s <= t; s++) out[o + s] = s;
      continue;
    }
    work.set(row);
    const theta = nthLargest(work.subarray(0, t + 1), n);
    let above = 0; // how many scores are strictly above θ: all of them are selected
    for (let s = 0; s <= t; s++) if (row[s]! > theta) above++;
    let ties = n - above; // slots left for scores equal to θ, lowest positions first
    let m = 0;
    for (let s = 0; s <= t; s++) {
      const v = row[s]!;
      if (v > theta || (v === theta && ties-- > 0)) out[o + m++] = s;
    }
  }
}

/** Every kernel a pool can run, by name. */
export const KERNELS = { sparse: sparseUnits, dense: denseUnits, indexer: indexerUnits, topk: topkUnits } as const;

/** Name of a kernel in {@link KERNELS}. */
export type KernelName = keyof typeof KERNELS;

/** Arguments of each kernel. */
export interface KernelArgs {
  sparse: SparseArgs;
  dense: DenseArgs;
  indexer: IndexerArgs;
  topk: TopkArgs;
}

// --- Helpers ---

/** The n-th largest value of `a` (1-based), by Hoare quickselect; permutes `a`. */
function nthLargest(a: Float32Array, n: number): number {
  let lo = 0;
  let hi = a.length - 1;
  const target = n - 1; // index in descending order
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1]!;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! > pivot) i++;
      while (a[j]! < pivot) j--;
      if (i <= j) {
        const x = a[i]!;
        a[i] = a[j]!;
        a[j] = x;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return a[target]!;
  }
  return a[target]!;
}

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

/** The data of a float32 tensor, which is then disposed. */
function readAndDispose(t: tf.Tensor): Float32Array {
  const data = t.dataSync() as Float32Array;
  t.dispose();
  return data;
}

/** `a [M, K] · b [K, N]` on the backend (2-D, untransposed: XNNPACK on wasm); returns the data. */
function matMulHost(a: Float32Array, b: Float32Array, M: number, K: number, N: number): Float32Array {
  return readAndDispose(tf.tidy(() => tf.matMul(tf.tensor2d(a.subarray(0, M * K), [M, K]), tf.tensor2d(b.subarray(0, K * N), [K, N]))));
}

/**
 * pT[j, h] = exp(scale · (zT[j, h] − max_j zT[j, h])) (columns of an [n, H] matrix, in row order); returns the
 * column sums (float64), by which the weighted sum is divided afterwards (the softmax's normalization).
 */
function softmaxColumns(zT: Float32Array, n: number, H: number, scale: number, pT: Float32Array): Float64Array {
  const max = new Float64Array(H).fill(-Infinity);
  const sum = new Float64Array(H);
  for (let j = 0; j < n; j++) for (let h = 0; h < H; h++) max[h] = Math.max(max[h]!, zT[j * H + h]!);
  for (let j = 0; j < n; j++) {
    for (let h = 0; h < H; h++) {
      const e = Math.exp(scale * (zT[j * H + h]! - max[h]!)); // scale > 0: the max of scale·z is scale·max
      pT[j * H + h] = e;
      sum[h]! += e;
    }
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
