/**
 * The benchmark grid of issue #5: dense masked attention, sparse gather attention, indexer scores and
 * top-k against the context length L, on every available tfjs backend, with the 671B head dimensions
 * (latent C = 512 + rope R = 64, value 512 in MQA mode; indexer DI = 128) and scaled-down head counts.
 *
 * Unit of work: the last T = L / 128 queries of a causal prefill of length L (a prefill chunk; keys
 * 0..L−1 cached). Dense cost per chunk grows as T·L ∝ L², sparse as T·k ∝ L at fixed k, so the fitted
 * exponents compare directly with a full prefill's (dense ≈ 2, sparse ≈ 1). `sparse_decode` is T = 1.
 * `dense_decode` and `dsa_decode` time one whole decode step at L from 8K to 128K (Figure 3).
 *
 * Node-only (the command line `dsv32 bench`); report and plot generation for docs/ is in bench/.
 */
import { tf, initBackend, type BackendName } from '../backend.ts';
import { denseAttentionMqa, sparseAttentionMqa } from '../sparse_attention.ts';
import { denseAttentionMqaFast, indexerScoresFast, selectTopKFast, sparseAttentionMqaFast } from '../sparse_fast.ts';
import { attentionFlopsPerPair, causalPairs, DIMS_671B, dsaDecodeFlops, indexerFlopsPerPair, sparsePairs } from './flops.ts';
import type { KernelPool } from '../sparse_fast.ts';
import { SPARSE_PHASES } from '../sparse_units.ts';
import { machineDescription, matmulGflops, measure, randomTopK, randomValues } from './harness.ts';

/** One row of the results (the JSON contract: op, L, k, heads, ms_median, gflops, peak_rss_mb, backend, threads + extras). */
export interface BenchResult {
  backend: string;
  /** threads the op ran on (1, or all cores through the worker pool; the peer's own thread count). */
  threads: number;
  op: string;
  /** 'k=2048' (fixed k) or 'k=L/8'. */
  series: string;
  L: number;
  k: number;
  heads: number;
  /** queries in the measured block. */
  T: number;
  ms_median: number;
  /**
   * median CPU time of the process per run (every thread). On one thread it is the time the op took
   * while it had a core, so it stays meaningful on a loaded machine; on n threads it is their sum.
   */
  cpu_ms_median: number;
  runs: number;
  /** FLOP/s by the FLOP model of docs/spec-notes.md#flop-model (src/bench/flops.ts), in GFLOP/s (null for top-k, which does no floating-point work). */
  gflops: number | null;
  flops: number;
  peak_rss_mb: number;
  peak_tfjs_mb: number;
}

/** Grid sizes of one mode. */
export interface Grid {
  mode: 'full' | 'quick' | 'targets' | 'smoke';
  /** L values of dense attention and the indexer. */
  denseL: number[];
  /** L values of sparse attention (and top-k). */
  sparseL: number[];
  /** L values of the second series, k = L/8. */
  scaledL: number[];
  /** L values where the slow reference paths are also timed (fast vs reference). */
  referenceL: number[];
  /** L values on the secondary backends (cpu). */
  secondaryL: number[];
  /** L values of the decode ops (`dense_decode`, `dsa_decode`: one query at position L − 1). */
  decodeL: number[];
  /** L values where the prefill ops also run on every core (the worker pool), besides one thread. */
  allCoreL: number[];
  /** L of the per-phase time breakdown of sparse attention (one extra instrumented run). */
  profileL: number;
  k: number;
  heads: number;
  indexHeads: number;
  /** T = max(minT, L / chunkDivisor). */
  chunkDivisor: number;
  runs: number;
  minRuns: number;
  /** time budget of one configuration's timed runs, ms. */
  budgetMs: number;
  /** size of the reference matMul (1024; the smoke grid uses 256). */
  matmulN: number;
  /** L values of the PyTorch peer (dense, sparse at fixed k) and its timed runs. */
  peerDenseL: number[];
  peerSparseL: number[];
  peerRuns: number;
}

const K = 1024;

/** The grid of each mode; `full` is sized to finish in about 30 minutes on 2 vCPUs. */
export function gridFor(mode: Grid['mode']): Grid {
  const base = { k: 2048, heads: 32, indexHeads: 16, chunkDivisor: 128, runs: 5, minRuns: 5, budgetMs: Infinity, matmulN: 1024, peerRuns: 5 };
  if (mode === 'smoke') {
    return {
      ...base, mode, denseL: [256, 512], sparseL: [256, 512], scaledL: [512], referenceL: [256], secondaryL: [256], decodeL: [512], allCoreL: [512], profileL: 512,
      k: 128, heads: 2, indexHeads: 2, runs: 1, minRuns: 1, matmulN: 256, peerDenseL: [256], peerSparseL: [256], peerRuns: 1,
    };
  }
  if (mode === 'targets') {
    // only the rows the targets of issue #17 read, with few timed runs: for a machine shared with other jobs
    return {
      ...base, mode, denseL: [4 * K, 8 * K, 16 * K, 32 * K], sparseL: [4 * K, 8 * K, 16 * K, 32 * K, 64 * K], scaledL: [], referenceL: [], secondaryL: [],
      decodeL: [8 * K, 16 * K, 32 * K, 64 * K, 128 * K], allCoreL: [16 * K], profileL: 16 * K, peerDenseL: [8 * K, 16 * K], peerSparseL: [8 * K, 16 * K, 32 * K],
      runs: 3, minRuns: 1, budgetMs: 30_000, peerRuns: 3,
    };
  }
  if (mode === 'quick') {
    return {
      ...base, mode, denseL: [1 * K, 2 * K, 4 * K], sparseL: [1 * K, 2 * K, 4 * K], scaledL: [4 * K], referenceL: [1 * K], secondaryL: [1 * K],
      decodeL: [8 * K, 16 * K], allCoreL: [4 * K], profileL: 4 * K, peerDenseL: [1 * K, 2 * K], peerSparseL: [1 * K, 2 * K, 4 * K],
    };
  }
  return {
    ...base,
    mode,
    denseL: [1 * K, 2 * K, 4 * K, 8 * K, 16 * K, 32 * K],
    sparseL: [1 * K, 2 * K, 4 * K, 8 * K, 16 * K, 32 * K, 64 * K],
    scaledL: [1 * K, 2 * K, 4 * K, 8 * K, 16 * K, 32 * K],
    referenceL: [1 * K, 2 * K],
    secondaryL: [1 * K, 2 * K],
    decodeL: [8 * K, 16 * K, 32 * K, 64 * K, 128 * K],
    allCoreL: [8 * K, 16 * K],
    profileL: 16 * K,
    peerDenseL: [1 * K, 2 * K, 4 * K, 8 * K, 16 * K],
    peerSparseL: [1 * K, 2 * K, 4 * K, 8 * K, 16 * K, 32 * K],
    peerRuns: 3,
    minRuns: 3,
    budgetMs: 60_000,
  };
}

/** Queries in the measured block at context length L. */
export function chunkSize(grid: Grid, L: number): number {
  return Math.max(1, Math.floor(L / grid.chunkDivisor));
}

/** What {@link runBackend} measured on one backend. */
export interface BackendRun {
  backend: BackendName;
  threads: number;
  matmul_gflops: number;
  results: BenchResult[];
  /** where the time of sparse attention goes (primary backend, one thread, at grid.profileL). */
  sparse_profile?: SparseProfile;
}

/** Milliseconds per query in each phase of sparse attention (one instrumented run, one thread). */
export interface SparseProfile {
  L: number;
  k: number;
  T: number;
  heads: number;
  /** ms per query by phase: gather, gemm1, softmax, transpose, gemm2, output */
  ms_per_query: Record<string, number>;
  /** GFLOP/s of the two GEMMs alone (2·k·H·576 and 2·k·H·512 FLOPs per query) */
  gemm1_gflops: number;
  gemm2_gflops: number;
}

/**
 * Runs the grid on one backend. `primary` selects the full L range (the secondary backends run
 * `grid.secondaryL` only). `log` receives one line per measurement. `pool`, when given, also runs the
 * fast kernels on every core at `grid.allCoreL` (rows with `threads = pool.threads`).
 */
export async function runBackend(
  backend: BackendName,
  grid: Grid,
  primary: boolean,
  log: (s: string) => void,
  pool?: KernelPool,
): Promise<BackendRun> {
  const info = await initBackend(backend);
  const matmul = await matmulGflops(primary || grid.mode === 'full' ? grid.matmulN : Math.min(grid.matmulN, 512));
  log(`[${backend}] reference matMul: ${matmul.toFixed(2)} GFLOP/s (threads: ${info.threads})`);
  const results: BenchResult[] = [];
  const { C, R, DI } = DIMS_671B;
  const H = grid.heads;
  const HI = grid.indexHeads;
  const scale = 0.1352; // softmax_scale of the 671B config (192^-0.5 · mscale²)
  const limit = (ls: number[]) => (primary ? ls : ls.filter((L) => grid.secondaryL.includes(L)));
  const allL = [...new Set([...grid.denseL, ...grid.sparseL, ...grid.scaledL])].sort((a, b) => a - b);
  const record = async (row: Omit<BenchResult, 'ms_median' | 'cpu_ms_median' | 'runs' | 'gflops' | 'peak_rss_mb' | 'peak_tfjs_mb' | 'backend'>, fn: () => tf.Tensor) => {
    const m = await measure(fn, grid);
    const full: BenchResult = {
      backend, ...row, ms_median: m.ms_median, cpu_ms_median: m.cpu_ms_median, runs: m.runs,
      gflops: row.flops > 0 ? row.flops / m.ms_median / 1e6 : null,
      peak_rss_mb: m.peak_rss_mb, peak_tfjs_mb: m.peak_tfjs_mb,
    };
    results.push(full);
    log(formatRow(full));
  };
  // thread counts at one L: 1, plus the pool's on the primary backend at grid.allCoreL
  const threadOptions = (L: number): { threads: number; opts: { pool?: KernelPool } }[] => [
    { threads: 1, opts: {} },
    ...(pool && primary && grid.allCoreL.includes(L) ? [{ threads: pool.threads, opts: { pool } }] : []),
  ];

  let sparseProfile: SparseProfile | undefined;
  for (const L of limit(allL)) {
    const T = chunkSize(grid, L);
    const seed = L;
    const kv = tf.tensor2d(randomValues(L * C, seed + 1), [L, C]);
    const pe = tf.tensor2d(randomValues(L * R, seed + 2), [L, R]);
    const qL = tf.tensor3d(randomValues(T * H * C, seed + 3), [T, H, C]);
    const qR = tf.tensor3d(randomValues(T * H * R, seed + 4), [T, H, R]);
    const seriesOf = (k: number) => (k === grid.k ? `k=${grid.k}` : 'k=L/8');
    const ks: number[] = [];
    if (limit(grid.sparseL).includes(L)) ks.push(grid.k);
    if (limit(grid.scaledL).includes(L) && L / 8 !== grid.k) ks.push(L / 8);

    // dense masked attention (the selection only masks: the cost is every causal pair)
    if (limit(grid.denseL).includes(L)) {
      const selected = randomTopK(L, T, grid.k, seed + 5);
      const flops = causalPairs(L, T) * attentionFlopsPerPair(H, C, R);
      const row = { op: 'dense', series: `k=${grid.k}`, L, k: grid.k, heads: H, T, flops };
      for (const { threads, opts } of threadOptions(L)) {
        await record({ ...row, threads }, () => denseAttentionMqaFast(qL, qR, kv, pe, selected, L - T, scale, opts));
      }
      if (primary && grid.referenceL.includes(L)) {
        await record({ ...row, op: 'dense_ref', threads: 1 }, () => denseAttentionMqa(qL, qR, kv, pe, selected, L - T, scale));
      }
      selected.dispose();
    }
    // sparse gather attention, prefill chunk and decode
    for (const k of ks) {
      const selected = randomTopK(L, T, k, seed + 6 + k);
      const flops = sparsePairs(L, T, k) * attentionFlopsPerPair(H, C, R);
      const row = { op: 'sparse', series: seriesOf(k), L, k, heads: H, T, flops };
      for (const { threads, opts } of threadOptions(k === grid.k ? L : -1)) {
        await record({ ...row, threads }, () => sparseAttentionMqaFast(qL, qR, kv, pe, selected, L - T, scale, opts));
      }
      if (primary && k === grid.k && L === grid.profileL) sparseProfile = profileSparse(qL, qR, kv, pe, selected, L, T, k, scale);
      if (primary && grid.referenceL.includes(L)) {
        await record({ ...row, op: 'sparse_ref', threads: 1 }, () => sparseAttentionMqa(qL, qR, kv, pe, selected, L - T, scale));
      }
      if (k === grid.k) {
        const last = tf.tidy(() => selected.slice([T - 1, 0], [1, -1])) as tf.Tensor2D;
        const q1 = tf.tidy(() => qL.slice([T - 1, 0, 0], [1, H, C])) as tf.Tensor3D;
        const r1 = tf.tidy(() => qR.slice([T - 1, 0, 0], [1, H, R])) as tf.Tensor3D;
        const f1 = sparsePairs(L, 1, k) * attentionFlopsPerPair(H, C, R);
        await record({ ...row, op: 'sparse_decode', T: 1, flops: f1, threads: 1 }, () => sparseAttentionMqaFast(q1, r1, kv, pe, last, L - 1, scale));
        tf.dispose([last, q1, r1]);
      }
      selected.dispose();
    }
    tf.dispose([kv, pe, qL, qR]);

    // lightning indexer scores and top-k over them
    if (limit(grid.denseL).includes(L) || ks.length > 0) {
      const q = tf.tensor3d(randomValues(T * HI * DI, seed + 7), [T, HI, DI]);
      const w = tf.tensor2d(randomValues(T * HI, seed + 8), [T, HI]);
      const keys = tf.tensor2d(randomValues(L * DI, seed + 9), [L, DI]);
      const ks1 = tf.tensor1d(randomValues(L, seed + 10).map((v) => 1 + 0.25 * v));
      const flops = causalPairs(L, T) * indexerFlopsPerPair(HI);
      const row = { op: 'indexer', series: `k=${grid.k}`, L, k: grid.k, heads: HI, T, flops };
      for (const { threads, opts } of threadOptions(L)) {
        await record({ ...row, threads }, () => indexerScoresFast(q, w, keys, ks1, opts));
      }
      const scores = indexerScoresFast(q, w, keys, ks1);
      for (const k of ks) {
        for (const { threads, opts } of threadOptions(k === grid.k ? L : -1)) {
          await record({ ...row, op: 'topk', series: seriesOf(k), k, flops: 0, threads }, () => selectTopKFast(scores, L - T, k, opts));
        }
      }
      tf.dispose([q, w, keys, ks1, scores]);
    }
  }
  // decode rows run on one thread and on every core at every decode L
  const decodeThreads = () => [{ threads: 1, opts: {} }, ...(pool ? [{ threads: pool.threads, opts: { pool } }] : [])];
  if (primary) for (const L of grid.decodeL) await decodeRows(L, grid, scale, record, decodeThreads);
  return { backend, threads: info.threads, matmul_gflops: matmul, results, sparse_profile: sparseProfile };
}

/** One instrumented run of sparse attention: milliseconds per query in each phase. */
function profileSparse(qL: tf.Tensor3D, qR: tf.Tensor3D, kv: tf.Tensor2D, pe: tf.Tensor2D, selected: tf.Tensor2D, L: number, T: number, k: number, scale: number): SparseProfile {
  const H = qL.shape[1];
  const profile = new Float64Array(SPARSE_PHASES.length);
  sparseAttentionMqaFast(qL, qR, kv, pe, selected, L - T, scale, { profile }).dispose();
  const perQuery = Object.fromEntries(SPARSE_PHASES.map((name, i) => [name, profile[i]! / T]));
  const n = Math.min(k, L - T + 1); // every query of the block has at least this many valid slots
  return {
    L, k, T, heads: H, ms_per_query: perQuery,
    gemm1_gflops: (2 * n * H * (DIMS_671B.C + DIMS_671B.R)) / perQuery.gemm1! / 1e6,
    gemm2_gflops: (2 * n * H * DIMS_671B.C) / perQuery.gemm2! / 1e6,
  };
}

/**
 * `dense_decode` and `dsa_decode` at context length L: one new query at position L − 1 (Figure 3's
 * decode cost). dense_decode = absorbed MQA over all L latents (V3.1); dsa_decode = indexer over all
 * L keys + top-k + sparse attention over the k selected latents (V3.2, §2.1 / Eq. 1–2).
 */
async function decodeRows(
  L: number,
  grid: Grid,
  scale: number,
  record: (row: Omit<BenchResult, 'ms_median' | 'cpu_ms_median' | 'runs' | 'gflops' | 'peak_rss_mb' | 'peak_tfjs_mb' | 'backend'>, fn: () => tf.Tensor) => Promise<void>,
  threadOptions: () => { threads: number; opts: { pool?: KernelPool } }[],
): Promise<void> {
  const { C, R, DI } = DIMS_671B;
  const H = grid.heads;
  const HI = grid.indexHeads;
  const k = grid.k;
  const seed = 7 * L;
  const kv = tf.tensor2d(randomValues(L * C, seed + 1), [L, C]);
  const pe = tf.tensor2d(randomValues(L * R, seed + 2), [L, R]);
  const keys = tf.tensor2d(randomValues(L * DI, seed + 3), [L, DI]);
  const keyScales = tf.tensor1d(randomValues(L, seed + 4).map((v) => 1 + 0.25 * v));
  const qL = tf.tensor3d(randomValues(H * C, seed + 5), [1, H, C]);
  const qR = tf.tensor3d(randomValues(H * R, seed + 6), [1, H, R]);
  const qI = tf.tensor3d(randomValues(HI * DI, seed + 7), [1, HI, DI]);
  const wI = tf.tensor2d(randomValues(HI, seed + 8), [1, HI]);
  const all = tf.tensor2d(Int32Array.from({ length: L }, (_, s) => s), [1, L], 'int32'); // dense: every position
  const row = { L, k, heads: H, T: 1, series: `k=${k}` };
  for (const { threads, opts } of threadOptions()) {
    await record({ ...row, op: 'dense_decode', threads, flops: L * attentionFlopsPerPair(H, C, R) }, () =>
      denseAttentionMqaFast(qL, qR, kv, pe, all, L - 1, scale, opts),
    );
    await record({ ...row, op: 'dsa_decode', threads, flops: dsaDecodeFlops(L, k, H, HI) }, () => {
      const scores = indexerScoresFast(qI, wI, keys, keyScales, opts); // [1, L]
      const selected = selectTopKFast(scores, L - 1, k); // [1, k]
      const out = sparseAttentionMqaFast(qL, qR, kv, pe, selected, L - 1, scale, opts);
      tf.dispose([scores, selected]);
      return out;
    });
  }
  tf.dispose([kv, pe, keys, keyScales, qL, qR, qI, wI, all]);
}

/** One console line per result. */
export function formatRow(r: BenchResult): string {
  const g = r.gflops === null ? '     -' : r.gflops.toFixed(2).padStart(6);
  return (
    `[${r.backend}${r.threads > 1 ? ` ×${r.threads}` : ''}] ${r.op.padEnd(13)} ${r.series.padEnd(7)} L=${String(r.L).padStart(6)} k=${String(r.k).padStart(5)} ` +
    `T=${String(r.T).padStart(4)} heads=${r.heads} ${r.ms_median.toFixed(1).padStart(9)} ms (cpu ${r.cpu_ms_median.toFixed(1)}) ${g} GFLOP/s ` +
    `(${r.runs} runs, rss ${r.peak_rss_mb.toFixed(0)} MB, tfjs ${r.peak_tfjs_mb.toFixed(0)} MB)`
  );
}

export { machineDescription };
