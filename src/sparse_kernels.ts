/**
 * The work of the fast DSA kernels (src/sparse_fast.ts) cut into units — a range of queries, query
 * blocks, head groups or key ranges — each a plain function over typed arrays that writes its own
 * slice of the output. One thread runs every unit; a pool of worker threads (src/threads.ts, Node)
 * runs the same functions over disjoint units on shared memory. A unit computes exactly the same
 * arithmetic in the same order whichever thread runs it, so the results are bit-identical to one thread.
 * Here: dense masked attention, the indexer, top-k and the registry of every kernel a pool can run; the
 * unit of sparse attention lives in src/sparse_units.ts, the operand env in src/kernel_env.ts.
 *
 * Browser-safe: no Node import. Shape letters: docs/conventions.md (T queries, S key positions,
 * K selected slots, H heads, C latent, R rope dim, D = C + R, HI/DI indexer heads/dims).
 */
import { tf } from './backend.ts';
import { readAndDispose, type TensorEnv } from './kernel_env.ts';
import { type SparseArgs, sparseUnits } from './sparse_units.ts';

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
