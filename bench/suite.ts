/**
 * The benchmark grid of issue #5: dense masked attention, sparse gather attention, indexer scores and
 * top-k against the context length L, on every available tfjs backend, with the 671B head dimensions
 * (latent C = 512 + rope R = 64, value 512 in MQA mode; indexer DI = 128) and scaled-down head counts.
 *
 * Unit of work: the last T = L / 128 queries of a causal prefill of length L (a prefill chunk; keys
 * 0..L−1 cached). Dense cost per chunk grows as T·L ∝ L², sparse as T·k ∝ L at fixed k, so the fitted
 * exponents compare directly with a full prefill's (dense ≈ 2, sparse ≈ 1). `sparse_decode` is T = 1.
 */
import { tf, initBackend, type BackendName } from '../src/backend.ts';
import { denseAttentionMqa, sparseAttentionMqa } from '../src/sparse_attention.ts';
import { denseAttentionMqaFast, indexerScoresFast, selectTopKFast, sparseAttentionMqaFast } from '../src/sparse_fast.ts';
import { attentionFlopsPerPair, causalPairs, DIMS_671B, indexerFlopsPerPair, sparsePairs } from './flops.ts';
import { machineDescription, matmulGflops, measure, randomTopK, randomValues } from './harness.ts';

/** One row of the results (the JSON contract: op, L, k, heads, ms_median, gflops, peak_rss_mb + extras). */
export interface BenchResult {
  backend: string;
  op: string;
  /** 'k=2048' (fixed k) or 'k=L/8'. */
  series: string;
  L: number;
  k: number;
  heads: number;
  /** queries in the measured block. */
  T: number;
  ms_median: number;
  runs: number;
  /** FLOP/s by the FLOP model of docs/spec-notes.md#flop-model (bench/flops.ts), in GFLOP/s (null for top-k, which does no floating-point work). */
  gflops: number | null;
  flops: number;
  peak_rss_mb: number;
  peak_tfjs_mb: number;
}

/** Grid sizes of one mode. */
export interface Grid {
  mode: 'full' | 'quick' | 'smoke';
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

/** The grid of each mode; `full` is sized to finish in about 20 minutes on 2 vCPUs. */
export function gridFor(mode: Grid['mode']): Grid {
  const base = { k: 2048, heads: 32, indexHeads: 16, chunkDivisor: 128, runs: 5, minRuns: 5, budgetMs: Infinity, matmulN: 1024, peerRuns: 5 };
  if (mode === 'smoke') {
    return { ...base, mode, denseL: [256, 512], sparseL: [256, 512], scaledL: [512], referenceL: [256], secondaryL: [256], k: 128, heads: 2, indexHeads: 2, runs: 1, minRuns: 1, matmulN: 256, peerDenseL: [256], peerSparseL: [256], peerRuns: 1 };
  }
  if (mode === 'quick') {
    return { ...base, mode, denseL: [1 * K, 2 * K, 4 * K], sparseL: [1 * K, 2 * K, 4 * K], scaledL: [4 * K], referenceL: [1 * K], secondaryL: [1 * K], peerDenseL: [1 * K, 2 * K], peerSparseL: [1 * K, 2 * K, 4 * K] };
  }
  return {
    ...base,
    mode,
    denseL: [1 * K, 2 * K, 4 * K, 8 * K, 16 * K, 32 * K],
    sparseL: [1 * K, 2 * K, 4 * K, 8 * K, 16 * K, 32 * K, 64 * K],
    scaledL: [1 * K, 2 * K, 4 * K, 8 * K, 16 * K, 32 * K],
    referenceL: [1 * K, 2 * K],
    secondaryL: [1 * K, 2 * K],
    peerDenseL: [1 * K, 2 * K, 4 * K, 8 * K],
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
}

/**
 * Runs the grid on one backend. `primary` selects the full L range (the secondary backends run
 * `grid.secondaryL` only). `log` receives one line per measurement.
 */
export async function runBackend(backend: BackendName, grid: Grid, primary: boolean, log: (s: string) => void): Promise<BackendRun> {
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

  for (const L of limit(allL)) {
    const T = chunkSize(grid, L);
    const seed = L;
    const kv = tf.tensor2d(randomValues(L * C, seed + 1), [L, C]);
    const pe = tf.tensor2d(randomValues(L * R, seed + 2), [L, R]);
    const qL = tf.tensor3d(randomValues(T * H * C, seed + 3), [T, H, C]);
    const qR = tf.tensor3d(randomValues(T * H * R, seed + 4), [T, H, R]);
    const record = async (op: string, series: string, k: number, heads: number, Tq: number, flops: number, fn: () => tf.Tensor) => {
      const m = await measure(fn, grid);
      const row: BenchResult = {
        backend, op, series, L, k, heads, T: Tq, ms_median: m.ms_median, runs: m.runs,
        gflops: flops > 0 ? flops / m.ms_median / 1e6 : null, flops,
        peak_rss_mb: m.peak_rss_mb, peak_tfjs_mb: m.peak_tfjs_mb,
      };
      results.push(row);
      log(formatRow(row));
    };
    const seriesOf = (k: number) => (k === grid.k ? `k=${grid.k}` : 'k=L/8');
    const ks: number[] = [];
    if (limit(grid.sparseL).includes(L)) ks.push(grid.k);
    if (limit(grid.scaledL).includes(L) && L / 8 !== grid.k) ks.push(L / 8);

    // dense masked attention (the selection only masks: the cost is every causal pair)
    if (limit(grid.denseL).includes(L)) {
      const topk = randomTopK(L, T, grid.k, seed + 5);
      const flops = causalPairs(L, T) * attentionFlopsPerPair(H, C, R);
      await record('dense', `k=${grid.k}`, grid.k, H, T, flops, () => denseAttentionMqaFast(qL, qR, kv, pe, topk, L - T, scale));
      if (primary && grid.referenceL.includes(L)) {
        await record('dense_ref', `k=${grid.k}`, grid.k, H, T, flops, () => denseAttentionMqa(qL, qR, kv, pe, topk, L - T, scale));
      }
      topk.dispose();
    }
    // sparse gather attention, prefill chunk and decode
    for (const k of ks) {
      const topk = randomTopK(L, T, k, seed + 6 + k);
      const flops = sparsePairs(L, T, k) * attentionFlopsPerPair(H, C, R);
      await record('sparse', seriesOf(k), k, H, T, flops, () => sparseAttentionMqaFast(qL, qR, kv, pe, topk, L - T, scale));
      if (primary && grid.referenceL.includes(L)) {
        await record('sparse_ref', seriesOf(k), k, H, T, flops, () => sparseAttentionMqa(qL, qR, kv, pe, topk, L - T, scale));
      }
      if (k === grid.k) {
        const last = tf.tidy(() => topk.slice([T - 1, 0], [1, -1])) as tf.Tensor2D;
        const q1 = tf.tidy(() => qL.slice([T - 1, 0, 0], [1, H, C])) as tf.Tensor3D;
        const r1 = tf.tidy(() => qR.slice([T - 1, 0, 0], [1, H, R])) as tf.Tensor3D;
        const f1 = sparsePairs(L, 1, k) * attentionFlopsPerPair(H, C, R);
        await record('sparse_decode', seriesOf(k), k, H, 1, f1, () => sparseAttentionMqaFast(q1, r1, kv, pe, last, L - 1, scale));
        tf.dispose([last, q1, r1]);
      }
      topk.dispose();
    }
    tf.dispose([kv, pe, qL, qR]);

    // lightning indexer scores and top-k over them
    if (limit(grid.denseL).includes(L) || ks.length > 0) {
      const q = tf.tensor3d(randomValues(T * HI * DI, seed + 7), [T, HI, DI]);
      const w = tf.tensor2d(randomValues(T * HI, seed + 8), [T, HI]);
      const keys = tf.tensor2d(randomValues(L * DI, seed + 9), [L, DI]);
      const ks1 = tf.tensor1d(randomValues(L, seed + 10).map((v) => 1 + 0.25 * v));
      const flops = causalPairs(L, T) * indexerFlopsPerPair(HI, DI);
      await record('indexer', `k=${grid.k}`, grid.k, HI, T, flops, () => indexerScoresFast(q, w, keys, ks1));
      const scores = indexerScoresFast(q, w, keys, ks1);
      for (const k of ks) await record('topk', seriesOf(k), k, HI, T, 0, () => selectTopKFast(scores, L - T, k));
      tf.dispose([q, w, keys, ks1, scores]);
    }
  }
  return { backend, threads: info.threads, matmul_gflops: matmul, results };
}

/** One console line per result. */
export function formatRow(r: BenchResult): string {
  const g = r.gflops === null ? '     -' : r.gflops.toFixed(2).padStart(6);
  return (
    `[${r.backend}] ${r.op.padEnd(13)} ${r.series.padEnd(7)} L=${String(r.L).padStart(6)} k=${String(r.k).padStart(5)} ` +
    `T=${String(r.T).padStart(4)} heads=${r.heads} ${r.ms_median.toFixed(1).padStart(9)} ms ${g} GFLOP/s ` +
    `(${r.runs} runs, rss ${r.peak_rss_mb.toFixed(0)} MB, tfjs ${r.peak_tfjs_mb.toFixed(0)} MB)`
  );
}

export { machineDescription };
