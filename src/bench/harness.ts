/**
 * Measurement helpers of the benchmark: seeded inputs, timing (median after a warm-up), memory
 * (process peak RSS, peak tfjs bytes of the warm-up run) and the 1024³ matmul reference rate.
 */
import os from 'node:os';
import { tf } from '../backend.ts';

// --- Inputs ---

/** Float32Array of n values, uniform with mean 0 and variance 1 (uniform on ±√3; tfjs's seeded generator). */
export function randomValues(n: number, seed: number): Float32Array {
  const a = Math.sqrt(3);
  const t = tf.randomUniform([n], -a, a, 'float32', seed);
  const data = t.dataSync() as Float32Array; // a copy (not returned from tf.tidy, which would walk its elements)
  t.dispose();
  return data;
}

/** A seeded generator of uniform numbers in [0, 1), drawn in batches of 4096 from {@link randomValues}. */
function uniformStream(seed: number): () => number {
  let batch: Float32Array = new Float32Array(0);
  let i = 0;
  let s = seed;
  const half = Math.sqrt(3);
  return () => {
    if (i === batch.length) {
      batch = randomValues(4096, s++);
      i = 0;
    }
    return Math.min((batch[i++]! + half) / (2 * half), 1 - 2 ** -24);
  };
}

/**
 * A top-k index matrix like `selectTopK` returns for the last T queries of a length-L context: row i
 * (query t = L − T + i) holds min(k, t + 1) distinct random positions ≤ t, ascending, then −1.
 */
export function randomTopK(L: number, T: number, k: number, seed: number): tf.Tensor2D {
  const r = uniformStream(seed);
  const width = Math.min(k, L);
  const out = new Int32Array(T * width).fill(-1);
  const pool = new Int32Array(L);
  for (let i = 0; i < T; i++) {
    const t = L - T + i;
    const n = Math.min(k, t + 1);
    for (let s = 0; s <= t; s++) pool[s] = s;
    for (let j = 0; j < n; j++) {
      // partial Fisher–Yates: pool[0..n) becomes a uniform sample of 0..t
      const m = j + Math.floor(r() * (t + 1 - j));
      const x = pool[j]!;
      pool[j] = pool[m]!;
      pool[m] = x;
    }
    const row = pool.slice(0, n).sort();
    out.set(row, i * width);
  }
  return tf.tensor2d(out, [T, width], 'int32');
}

// --- Timing and memory ---

/** What {@link measure} returns. */
export interface Measurement {
  ms_median: number;
  /** median CPU time of the process (user + system, every thread) per timed run, ms. */
  cpu_ms_median: number;
  runs: number;
  times_ms: number[];
  warmup_ms: number;
  peak_tfjs_mb: number;
  peak_rss_mb: number;
}

/** Peak resident set size of this process so far, in MiB (monotone over the process lifetime). */
export function peakRssMb(): number {
  return process.resourceUsage().maxRSS / 1024;
}

/**
 * Runs `fn` once under `tf.profile` (warm-up; gives the peak tfjs bytes), then `runs` timed times,
 * and returns the median. When the warm-up alone exceeds `budgetMs / runs`, fewer timed runs are
 * taken (at least `minRuns`); the count is reported.
 */
export async function measure(
  fn: () => tf.Tensor | void,
  opts: { runs: number; minRuns: number; budgetMs: number },
): Promise<Measurement> {
  const t0 = performance.now();
  const profile = await tf.profile(() => {
    const y = fn();
    if (y) y.dispose();
  });
  const warmup = performance.now() - t0;
  const peaks = profile.kernels.map((k) => k.totalBytesSnapshot);
  const peakBytes = Math.max(profile.peakBytes, ...peaks, 0);
  const runs = Math.max(opts.minRuns, Math.min(opts.runs, Math.floor(opts.budgetMs / Math.max(warmup, 1e-3))));
  const times: number[] = [];
  const cpuTimes: number[] = [];
  for (let i = 0; i < runs; i++) {
    const c = process.cpuUsage();
    const s = performance.now();
    const y = fn();
    if (y) {
      y.dataSync(); // the work is synchronous on wasm and cpu; this only makes sure
      y.dispose();
    }
    times.push(performance.now() - s);
    const used = process.cpuUsage(c);
    cpuTimes.push((used.user + used.system) / 1000);
  }
  return {
    ms_median: median(times),
    cpu_ms_median: median(cpuTimes),
    runs,
    times_ms: times,
    warmup_ms: warmup,
    peak_tfjs_mb: peakBytes / 2 ** 20,
    peak_rss_mb: peakRssMb(),
  };
}

/** The median of a non-empty list. */
export function median(xs: readonly number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** GFLOP/s of an n × n × n float32 matMul (default 1024³) on the active backend (median of 5 after a warm-up). */
export async function matmulGflops(n = 1024): Promise<number> {
  const a = tf.tensor2d(randomValues(n * n, 1), [n, n]);
  const b = tf.tensor2d(randomValues(n * n, 2), [n, n]);
  const m = await measure(() => tf.matMul(a, b), { runs: 5, minRuns: 5, budgetMs: Infinity });
  a.dispose();
  b.dispose();
  return (2 * n ** 3) / Math.min(m.ms_median, m.cpu_ms_median) / 1e6; // one thread: CPU time is the load-free time
}

/** A one-line description of this machine. */
export function machineDescription(): string {
  const cpus = os.cpus();
  const model = cpus[0]?.model.trim() ?? 'unknown CPU';
  const mem = (os.totalmem() / 2 ** 30).toFixed(1);
  return `${model}, ${cpus.length} vCPU, ${mem} GiB RAM, ${os.platform()} ${os.release()}, Node ${process.version}`;
}
