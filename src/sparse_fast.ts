/**
 * Fast kernels for DeepSeek Sparse Attention on the tfjs backends (wasm first): the same math as the
 * reference functions of src/sparse_attention.ts, src/indexer.ts and src/topk.ts, arranged so that the
 * arithmetic runs in the one fast kernel tfjs-wasm has — a 2-D, untransposed `matMul` (XNNPACK
 * fully-connected) — and everything else is a single pass in plain TypeScript.
 *
 * What tfjs-backend-wasm 4.22 offers (measured; docs/performance.md):
 * - `matMul(a [M, K], b [K, N])` with no transpose and no batch dimension runs on XNNPACK (≈ 15–20
 *   GFLOP/s on one core here). Any batch dimension or transpose flag falls back to a naive triple
 *   loop (< 1 GFLOP/s). XNNPACK repacks `b` whenever `b` is a new tensor (≈ 15–30 ns per element), so
 *   the big operand must be `a`, or a `b` that stays the same tensor for a whole call.
 * - `transpose` and `gather` (GatherV2) cost 20–100 ns per element; `gatherND` is a fast row copy.
 * - No threads in Node (tfjs issue #3830: `WASM_HAS_MULTITHREAD_SUPPORT` is false under Node).
 *
 * Hence: gather each query's selected latents once in TypeScript (row copies), give them to XNNPACK as
 * the left operand for all H heads at once (MQA), do the softmax in TypeScript, and transpose the
 * gathered latents in TypeScript (cache-blocked) so the weighted sum is again "big operand on the left".
 *
 * Shape letters: docs/conventions.md (T queries, S key positions, K selected slots, H heads, C latent,
 * R rope dim, D = C + R, HI/DI indexer heads/dims).
 */
import { tf } from './backend.ts';
import { checkFiniteNumber, checkInteger, checkQueryPositions, checkTensors, defineContract, MQA_ARGS } from './internal/contract.ts';

const SPARSE_MQA_FAST = defineContract('sparseAttentionMqaFast', MQA_ARGS);
const DENSE_MQA_FAST = defineContract('denseAttentionMqaFast', MQA_ARGS);
const INDEXER_SCORES_FAST = defineContract('indexerScoresFast', { q: '[T, HI, DI]', weights: '[T, HI]', keys: '[S, DI]', keyScales: '[S]' });
const SELECT_TOPK_FAST = defineContract('selectTopKFast', { scores: '[T, S]' });

/** Options of {@link sparseAttentionMqaFast}. */
export interface FastGatherOptions {
  /**
   * Where the selected rows are read from. `'host'`: copy the whole cache to JS once per call (cheap
   * per query; O(S·D) per call). `'device'`: `gatherND` each query's rows on the backend and read
   * back only those (O(K·D) per query; the choice for decode). Default `'auto'`: host when T·K ≥ S.
   */
  rows?: 'auto' | 'host' | 'device';
}

// --- Sparse attention, MQA / absorbed mode (Eq. 2 over the gathered latents) ---

/**
 * Sparse MQA attention over the latent cache — same contract and result as `sparseAttentionMqa`
 * (src/sparse_attention.ts), computed query by query with two XNNPACK GEMMs shared by all heads.
 * For query t with valid slots s_1..s_n (`0 ≤ s_j ≤ t`, in the order given; −1 and future positions
 * are skipped and never read):
 *
 *   G = [c_{s_j} ; k_pe_{s_j}]_j                      [n, D]   gathered once, serves all H heads
 *   zᵀ = G · [q̃_t ; q_pe_t]ᵀ                           [n, H]   GEMM 1: 2·n·D·H FLOPs
 *   p[h, j] = softmax_j(scale · z[h, j])               over the n valid slots only
 *   ōᵀ = Gcᵀ · pᵀ                                       [C, H]   GEMM 2: 2·n·C·H FLOPs (Gc = G[:, :C])
 *
 * FLOPs per (query, valid slot) = 2H(D + C) = 2H(576 + 512) at the 671B dims (the FlashMLA convention,
 * docs/spec-notes.md#flop-model). Memory: O(K·D) per query plus the output; with `rows: 'host'` also one copy of the cache.
 * A row with no valid slot gives NaN (softmax over nothing), as the reference and the official code.
 *
 * @param qLatent [T, H, C] absorbed no-rope queries q̃ = W_UKᵀ q_nope
 * @param qPe [T, H, R] rotated rope queries
 * @param kv [S, C] latent cache; @param pe [S, R] rotated rope keys
 * @param topk [T, K] int32 selected positions (any order, −1 = padding); row i is query t = startPos + i
 * @param startPos absolute position of query row 0
 * @param scale softmax scale
 * @returns ō [T, H, C]
 * @example
 * ```ts
 * const o = sparseAttentionMqaFast(tf.ones([1, 1, 2]), tf.zeros([1, 1, 1]), tf.tensor2d([[1, 0], [0, 1]]),
 *   tf.zeros([2, 1]), tf.tensor2d([[0, 1]], [1, 2], 'int32'), 1, 1);
 * o.arraySync(); // [[[0.5, 0.5]]]
 * ```
 */
export function sparseAttentionMqaFast(
  qLatent: tf.Tensor3D,
  qPe: tf.Tensor3D,
  kv: tf.Tensor2D,
  pe: tf.Tensor2D,
  topk: tf.Tensor2D,
  startPos: number,
  scale: number,
  opts: FastGatherOptions = {},
): tf.Tensor3D {
  const fn = 'sparseAttentionMqaFast';
  const { T, H, C, R, S, K } = checkTensors(SPARSE_MQA_FAST, { qLatent, qPe, kv, pe, topk }) as Record<'T' | 'H' | 'C' | 'R' | 'S' | 'K', number>;
  checkQueryPositions(fn, startPos, S, T, 'S from kv, T from qLatent');
  checkFiniteNumber(fn, 'scale', scale);
  const D = C + R;
  const rowsMode = opts.rows ?? 'auto';
  if (!['auto', 'host', 'device'].includes(rowsMode)) {
    throw new RangeError(`${fn}(): opts.rows must be 'auto', 'host' or 'device' but got '${String(rowsMode)}'`);
  }
  const slotsAll = topk.dataSync() as Int32Array;
  const qL = qLatent.dataSync() as Float32Array;
  const qR = qPe.dataSync() as Float32Array;
  const readRows = rowReader(kv, pe, rowsMode === 'host' || (rowsMode === 'auto' && T * K >= S));

  // index and data buffers, reused by every query
  const positions = new Int32Array(K);
  const G = new Float32Array(K * D); // [n, D]
  const GcT = new Float32Array(C * K); // [C, n]
  const qT = new Float32Array(D * H); // [D, H]
  const pT = new Float32Array(K * H); // [n, H]
  const out = new Float32Array(T * H * C); // [T, H, C]

  for (let i = 0; i < T; i++) {
    const t = startPos + i;
    let n = 0;
    for (let j = 0; j < K; j++) {
      const s = slotsAll[i * K + j]!;
      if (s >= 0 && s <= t) positions[n++] = s; // −1 padding and future keys are never read
    }
    if (n === 0) {
      out.fill(NaN, i * H * C, (i + 1) * H * C);
      continue;
    }
    readRows(positions, n, G); // G = [c_s ; k_pe_s] for the n valid slots
    for (let h = 0; h < H; h++) {
      // qT[:, h] = [q̃[t,h] ; q_pe[t,h]]
      const ql = (i * H + h) * C;
      const qr = (i * H + h) * R;
      for (let c = 0; c < C; c++) qT[c * H + h] = qL[ql + c]!;
      for (let r = 0; r < R; r++) qT[(C + r) * H + h] = qR[qr + r]!;
    }
    const zT = matMulHost(G, qT, n, D, H); // [n, H] = G · qᵀ            (GEMM 1)
    softmaxColumns(zT, n, H, scale, pT); // p[h, :] over the n slots, stored transposed [n, H]
    transposeBlock(G, n, D, C, GcT); // Gcᵀ [C, n]
    const oT = matMulHost(GcT, pT, C, n, H); // [C, H] = Gcᵀ · pᵀ         (GEMM 2)
    for (let h = 0; h < H; h++) {
      const o = (i * H + h) * C;
      for (let c = 0; c < C; c++) out[o + c] = oT[c * H + h]!;
    }
  }
  return tf.tensor3d(out, [T, H, C]);
}

// --- Dense masked attention, MQA mode (the official decode-branch computation) ---

/**
 * Dense masked MQA attention — same contract and result as `denseAttentionMqa` (src/sparse_attention.ts):
 * every query scores every key position, then `M[t,s] = 0` if s is selected and s ≤ t, −∞ otherwise:
 *
 *   Z = Q · [kv ; pe]ᵀ        [Tb·H, S]   (Q = [q̃ ; q_pe] rows of a block of Tb queries)
 *   P = softmax_s(scale · Z + M)          ō = P · kv   [Tb·H, C]
 *
 * Arranged for XNNPACK: `[kv ; pe]ᵀ` [D, S] is built once per call and stays the right operand of every
 * block (packed once), and so does `kv` for the weighted sum. Blocks of Tb queries keep Z ≤ 32 MiB.
 * FLOPs: T · S · 2H(D + C) (every position, selected or not: that is what "dense masked" costs).
 *
 * @param qLatent [T, H, C]; @param qPe [T, H, R]; @param kv [S, C]; @param pe [S, R]
 * @param topk [T, K] int32 selected positions (−1 = padding); @param startPos position of row 0
 * @param scale softmax scale
 * @returns ō [T, H, C]
 * @example
 * ```ts
 * denseAttentionMqaFast(tf.ones([1, 1, 2]), tf.zeros([1, 1, 1]), tf.tensor2d([[1, 0], [0, 1]]), tf.zeros([2, 1]),
 *   tf.tensor2d([[0, 1]], [1, 2], 'int32'), 1, 1).arraySync(); // [[[0.5, 0.5]]]
 * ```
 */
export function denseAttentionMqaFast(
  qLatent: tf.Tensor3D,
  qPe: tf.Tensor3D,
  kv: tf.Tensor2D,
  pe: tf.Tensor2D,
  topk: tf.Tensor2D,
  startPos: number,
  scale: number,
): tf.Tensor3D {
  const fn = 'denseAttentionMqaFast';
  const { T, H, C, R, S, K } = checkTensors(DENSE_MQA_FAST, { qLatent, qPe, kv, pe, topk }) as Record<'T' | 'H' | 'C' | 'R' | 'S' | 'K', number>;
  checkQueryPositions(fn, startPos, S, T, 'S from kv, T from qLatent');
  checkFiniteNumber(fn, 'scale', scale);
  const D = C + R;
  const slotsAll = topk.dataSync() as Int32Array;
  const Tb = Math.max(1, Math.min(T, Math.floor((8 << 20) / (H * S)))); // Z block ≤ 32 MiB
  const keysTData = new Float32Array(D * S); // [kv ; pe]ᵀ [D, S], once per call (tf.transpose is slow on wasm)
  transposeBlock(kv.dataSync() as Float32Array, S, C, C, keysTData.subarray(0, C * S));
  transposeBlock(pe.dataSync() as Float32Array, S, R, R, keysTData.subarray(C * S));
  return tf.tidy(() => {
    const keysT = tf.tensor2d(keysTData, [D, S]);
    const q = tf.concat([qLatent, qPe], 2); // [T, H, D]
    const blocks: tf.Tensor[] = [];
    const mask = new Float32Array(Tb * S);
    for (let b0 = 0; b0 < T; b0 += Tb) {
      const tb = Math.min(Tb, T - b0);
      mask.fill(-Infinity);
      for (let i = 0; i < tb; i++) {
        const t = startPos + b0 + i;
        for (let j = 0; j < K; j++) {
          const s = slotsAll[(b0 + i) * K + j]!;
          if (s >= 0 && s <= t) mask[i * S + s] = 0;
        }
      }
      blocks.push(
        tf.tidy(() => {
          const Q = q.slice([b0, 0, 0], [tb, H, D]).reshape([tb * H, D]); // [Tb·H, D]
          const Z = tf.matMul(Q, keysT).mul(scale).reshape([tb, H, S]); // [Tb, H, S]
          const M = tf.tensor3d(mask.subarray(0, tb * S), [tb, 1, S]);
          const P = tf.softmax(Z.add(M)).reshape([tb * H, S]); // [Tb·H, S]
          return tf.matMul(P, kv).reshape([tb, H, C]); // [Tb, H, C]
        }),
      );
    }
    return (blocks.length === 1 ? blocks[0]! : tf.concat(blocks, 0)) as tf.Tensor3D;
  });
}

// --- Index scores (Eq. 1), fast form of fp8Index ---

/**
 * Lightning-indexer scores from (quantized) queries and cached keys — same contract and result as
 * `fp8Index` (src/indexer.ts):
 *
 *   I[t,s] = s_k[s] · Σ_j w[t,j] · ReLU(q[t,j] · k_s)                                   (Eq. 1)
 *
 * For a block of Tb queries (Tb·HI columns), keys on the left so the big operand is never repacked:
 *
 *   Aᵀ = ReLU(keys · Qᵀ)        [S, Tb·HI]   fused GEMM + ReLU: 2·S·DI·Tb·HI FLOPs
 *   Iᵀ = Aᵀ · W                  [S, Tb]      W [Tb·HI, Tb] block-diagonal, W[t·HI + j, t] = w[t, j]
 *
 * The block-diagonal head sum costs Tb/DI of the first GEMM (≤ 12.5 % here). FLOPs per (query, key):
 * 2·HI·DI + 2·HI (the indexer count of docs/spec-notes.md#flop-model). Scores are returned for all S keys, before the causal mask.
 *
 * @param q [T, HI, DI] queries (e4m3 values q₈ in the official path)
 * @param weights [T, HI] head weights w' (scales folded in)
 * @param keys [S, DI] cached keys k₈; @param keyScales [S] key scales s_k
 * @returns [T, S] float32 index scores
 * @example
 * ```ts
 * const I = indexerScoresFast(tf.tensor3d([[[1, 0], [0, 1]]]), tf.tensor2d([[1, 2]]), tf.tensor2d([[1, 1], [-1, 3]]), tf.tensor1d([1, 0.5]));
 * I.arraySync(); // [[3, 3]]
 * ```
 */
export function indexerScoresFast(q: tf.Tensor3D, weights: tf.Tensor2D, keys: tf.Tensor2D, keyScales: tf.Tensor1D): tf.Tensor2D {
  const fn = 'indexerScoresFast';
  const { T, HI, DI, S } = checkTensors(INDEXER_SCORES_FAST, { q, weights, keys, keyScales }) as Record<'T' | 'HI' | 'DI' | 'S', number>;
  const qd = q.dataSync() as Float32Array;
  const wd = weights.dataSync() as Float32Array;
  const sk = keyScales.dataSync() as Float32Array;
  const Tb = Math.max(1, Math.min(T, Math.floor(128 / HI), Math.floor((8 << 20) / (S * HI)))); // Aᵀ ≤ 32 MiB
  const out = new Float32Array(T * S);
  const QT = new Float32Array(DI * Tb * HI); // [DI, Tb·HI]
  const W = new Float32Array(Tb * HI * Tb); // [Tb·HI, Tb]
  for (let b0 = 0; b0 < T; b0 += Tb) {
    const tb = Math.min(Tb, T - b0);
    const N = tb * HI;
    W.fill(0);
    for (let i = 0; i < tb; i++) {
      for (let j = 0; j < HI; j++) {
        const row = (b0 + i) * HI + j;
        for (let d = 0; d < DI; d++) QT[d * N + i * HI + j] = qd[row * DI + d]!;
        W[(i * HI + j) * tb + i] = wd[row]!;
      }
    }
    const IT = tf.tidy(() => {
      const A = tf.fused.matMul({ a: keys, b: tf.tensor2d(QT.subarray(0, DI * N), [DI, N]), activation: 'relu' }); // [S, N]
      return tf.matMul(A, tf.tensor2d(W.subarray(0, N * tb), [N, tb])); // [S, tb]
    });
    const it = IT.dataSync() as Float32Array;
    IT.dispose();
    for (let i = 0; i < tb; i++) {
      const o = (b0 + i) * S;
      for (let s = 0; s < S; s++) out[o + s] = sk[s]! * it[s * tb + i]!;
    }
  }
  return tf.tensor2d(out, [T, S]);
}

// --- Top-k selection (Eq. 2), linear-time form of selectTopK ---

/**
 * Same contract and result as `selectTopK` (src/topk.ts): row i (query t = startPos + i) selects the
 * n_t = min(k, t + 1) positions s ≤ t with the largest score (ties: lower position first), returned
 * ascending and −1 padded to width min(k, S). Columns s > t are ignored.
 *
 * Linear time per row instead of a sort: a quickselect finds the n_t-th largest value θ, then one
 * ascending scan keeps every s with score > θ and the lowest positions with score = θ.
 *
 * @param scores [T, S] index scores; @param startPos position of row 0; @param k index_topk ≥ 1
 * @returns int32 [T, min(k, S)]
 * @example
 * ```ts
 * selectTopKFast(tf.tensor2d([[0.5, 0, 0], [0.1, 0.9, 0], [0.3, 0.2, 0.3]]), 0, 2).arraySync();
 * // [[0, -1], [0, 1], [0, 2]]
 * ```
 */
export function selectTopKFast(scores: tf.Tensor2D, startPos: number, k: number): tf.Tensor2D {
  const fn = 'selectTopKFast';
  const { T, S } = checkTensors(SELECT_TOPK_FAST, { scores }) as Record<'T' | 'S', number>;
  checkInteger(fn, 'k', k, 1);
  checkQueryPositions(fn, startPos, S, T, 'S and T from scores');
  const width = Math.min(k, S);
  const values = scores.dataSync() as Float32Array;
  const out = new Int32Array(T * width).fill(-1);
  const work = new Float32Array(S);
  for (let i = 0; i < T; i++) {
    const t = startPos + i;
    const row = values.subarray(i * S, i * S + t + 1); // candidates s = 0..t
    for (let s = 0; s <= t; s++) {
      if (Number.isNaN(row[s]!)) throw new RangeError(`${fn}(): scores must not be NaN but row ${i} column ${s} is NaN`);
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
  return tf.tensor2d(out, [T, width], 'int32');
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

/** Returns `(positions, n, G)` → fills G [n, C + R] with rows [kv[s] ; pe[s]] of the first n positions. */
function rowReader(kv: tf.Tensor2D, pe: tf.Tensor2D, host: boolean): (positions: Int32Array, n: number, G: Float32Array) => void {
  const [, C] = kv.shape;
  const R = pe.shape[1];
  const D = C + R;
  if (host) {
    const kvd = kv.dataSync() as Float32Array;
    const ped = pe.dataSync() as Float32Array;
    return (positions, n, G) => {
      for (let j = 0; j < n; j++) {
        const s = positions[j]!;
        G.set(kvd.subarray(s * C, s * C + C), j * D);
        G.set(ped.subarray(s * R, s * R + R), j * D + C);
      }
    };
  }
  return (positions, n, G) => {
    const [c, r] = tf.tidy(() => {
      const index = tf.tensor2d(positions.subarray(0, n), [n, 1], 'int32');
      return [tf.gatherND(kv, index), tf.gatherND(pe, index)];
    });
    const cd = c.dataSync() as Float32Array;
    const rd = r.dataSync() as Float32Array;
    c.dispose();
    r.dispose();
    for (let j = 0; j < n; j++) {
      G.set(cd.subarray(j * C, j * C + C), j * D);
      G.set(rd.subarray(j * R, j * R + R), j * D + C);
    }
  };
}

/** `a [M, K] · b [K, N]` on the backend (2-D, untransposed: XNNPACK on wasm); returns the data. */
function matMulHost(a: Float32Array, b: Float32Array, M: number, K: number, N: number): Float32Array {
  const y = tf.tidy(() => tf.matMul(tf.tensor2d(a.subarray(0, M * K), [M, K]), tf.tensor2d(b.subarray(0, K * N), [K, N])));
  const data = y.dataSync() as Float32Array;
  y.dispose();
  return data;
}

/** pT[j, h] = softmax over j of scale · zT[j, h] (columns of an [n, H] matrix), in row order. */
function softmaxColumns(zT: Float32Array, n: number, H: number, scale: number, pT: Float32Array): void {
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
  for (let h = 0; h < H; h++) sum[h] = 1 / sum[h]!;
  for (let j = 0; j < n; j++) for (let h = 0; h < H; h++) pT[j * H + h]! *= sum[h]!;
}

/**
 * dst [cols, rows] = the first `cols` columns of src [rows, width], transposed. Eight source rows at a
 * time, so each destination row is written in runs of 8 contiguous floats (measured ≈ 3× faster here
 * than square tiles).
 */
function transposeBlock(src: Float32Array, rows: number, width: number, cols: number, dst: Float32Array): void {
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
