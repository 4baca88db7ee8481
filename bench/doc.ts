/**
 * docs/performance.md and its plot, rendered from a saved `dsv32 bench --json` report (bench/render.ts;
 * `npm run bench:doc -- FILE.json`). The numbers are what that run reached; nothing here measures.
 */
import { attentionFlopsPerPair, DIMS_671B, indexerFlopsPerPair } from '../src/bench/flops.ts';
import { exponentTable, resultsTable, seriesRows, type BenchReport } from '../src/bench/report.ts';
import type { BenchResult } from '../src/bench/suite.ts';
import { decodeRatio, findRow, loadText, OTHER_CPU_LIMIT, targetsAcrossRuns, targetSummary, threadSpeedup, wasLoaded } from '../src/bench/targets.ts';
import { plotLogLog, type PlotSeries } from './svg.ts';

const f2 = (x: number | null | undefined) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(2));

/** The log-log plot of time against L: dense vs sparse vs indexer (primary backend, one thread, and the peer). */
export function timePlot(report: BenchReport): string {
  const g = report.grid;
  const b = report.backend;
  const cpu = wasLoaded(report); // a loaded machine: plot the CPU time of each run (one thread), which waiting does not inflate
  const pts = (rows: BenchResult[]) => rows.map((r) => [r.L, cpu && Number.isFinite(r.cpu_ms_median) ? r.cpu_ms_median : r.ms_median] as const);
  const series: PlotSeries[] = [
    { label: `dense masked (${b})`, color: '#d62728', points: pts(seriesRows(report.results, b, 'dense', g)) },
    { label: `sparse k=${g.k} (${b})`, color: '#1f77b4', points: pts(seriesRows(report.results, b, 'sparse', g)) },
    { label: `sparse k=L/8 (${b})`, color: '#17becf', points: pts(seriesRows(report.results, b, 'sparse', g, true)) },
    { label: `indexer (${b})`, color: '#2ca02c', points: pts(seriesRows(report.results, b, 'indexer', g)) },
    { label: `top-k k=${g.k} (${b})`, color: '#9467bd', points: pts(seriesRows(report.results, b, 'topk', g)) },
    { label: 'dense_decode (T = 1)', color: '#8c564b', points: pts(seriesRows(report.results, b, 'dense_decode', g)) },
    { label: 'dsa_decode (T = 1)', color: '#e377c2', points: pts(seriesRows(report.results, b, 'dsa_decode', g)) },
    { label: 'dense masked (torch)', color: '#d62728', dashed: true, points: pts(seriesRows(report.results, 'torch', 'dense', g)) },
    { label: `sparse k=${g.k} (torch)`, color: '#1f77b4', dashed: true, points: pts(seriesRows(report.results, 'torch', 'sparse', g)) },
  ].filter((s) => s.points.length > 1); // a lone point (e.g. the k = L/8 series when only k = L/8 = 2048 ran) is no line
  return plotLogLog(
    `Time against context length L, one thread (H = ${g.heads}, HI = ${g.indexHeads})`,
    'context length L (log₂)',
    cpu ? 'median CPU time per run (log₁₀)' : 'median time (log₁₀)',
    series,
  );
}

/** One line about a run: when, how long, and the machine's load. */
function runLine(r: BenchReport): string {
  const load = loadText(r);
  return `${r.mode} run of ${r.date} (${r.seconds.toFixed(0)} s; ${load})`;
}

/** The peer paragraph: what it is, which BLAS it loaded and whether it is a fair peer. */
function peerText(report: BenchReport): string {
  const p = report.peer;
  const g = report.grid;
  if (!p.available) return `not run — ${p.reason ?? 'unavailable'}`;
  const verdict = p.fair
    ? `an optimized BLAS, so the ratios below compare like with like`
    : `**reference BLAS — not a fair peer**: no speedup is computed against it`;
  return (
    `torch ${p.torch} (${p.python}) with ${p.blas ?? 'an unknown BLAS'}, kernel core ${p.coretype ?? 'unknown'}, 1024³ matmul ` +
    `${f2(p.matmul_gflops)} GFLOP/s on one thread — ${verdict}. Same shapes, written from the paper's equations ` +
    `(bench/peer/attention_peer.py); run at 1${(p.threads ?? 1) > 1 ? ` and ${p.threads}` : ''} thread(s); median of ${g.peerRuns} runs ` +
    `after a warm-up, at L ≤ ${Math.max(...g.peerDenseL) / 1024}K (dense) and ≤ ${Math.max(...g.peerSparseL) / 1024}K (sparse)`
  );
}

/** Why targets are missed, from the numbers of the report itself. */
function whyText(report: BenchReport): string {
  const g = report.grid;
  const p = report.peer;
  const parts: string[] = [];
  parts.push(
    'How to read the numbers: the sparse/dense percentage is the ratio of the two rows\' FLOP rates. On wasm, sparse attention ' +
      'runs two WebAssembly SIMD kernels of its own (src/wasm/sparse_mqa.c) that read the selected rows straight from the cache ' +
      `(the gather fused into both GEMMs, no transpose); the phase line says where its time goes: the two GEMMs (k × 576 × H and ` +
      `H × k × 512 with H = ${g.heads}), the softmax in TypeScript, which costs O(k·H) per query whatever the dims, and small ` +
      'operand and output passes. The arrangements of the same arithmetic on XNNPACK that tfjs allows, and what each costs, ' +
      'are measured in "Sparse prefill: the arrangements tried" below.',
  );
  if (p.available && p.fair && p.matmul_gflops) {
    parts.push(
      `The peer's one-thread 1024³ matmul runs at ${f2(p.matmul_gflops)} GFLOP/s (OpenBLAS, native kernels for this CPU) against ` +
        `${f2(report.matmul_gflops)} for tfjs-wasm (XNNPACK on 128-bit WebAssembly SIMD): ${f2(p.matmul_gflops / report.matmul_gflops)}× on the ` +
        'operation dense attention is made of, which no arrangement of the same wasm GEMM can close (128-bit SIMD against the ' +
        'CPU\'s native vector width). Sparse attention is closer: the peer gathers the rows and then calls BLAS on small GEMMs, ' +
        'while the wasm kernels read the rows in place.' + sparsePeerBound(report),
    );
  }
  const n = Math.max(1, ...report.results.filter((r) => r.backend === report.backend).map((r) => r.threads ?? 1));
  const sparseThreads = threadSpeedup(report, 'sparse', 16384, n);
  if (n > 1 && !wasLoaded(report) && sparseThreads && sparseThreads.speedup < 1.7) {
    const { speedup: sparseX, one: sparseOne, all: sparseAll } = sparseThreads;
    parts.push(
      `Sparse attention on ${n} threads: ${f2(sparseX)}× one thread. The queries split evenly (every one has k valid slots at 16K), ` +
        `and the threads together spent ${f2(sparseAll.cpu_ms_median / sparseOne.cpu_ms_median)}× the CPU time of one thread for the same ` +
        'work: the time goes to contention, not to waiting. Each query reads k rows of 576 floats (4.7 MB at k = 2048) from ' +
        'random places of the cache, twice (scores, then the weighted sum), and each worker reads its own copy of the cache, ' +
        'so the threads compete for the last-level cache and the memory bandwidth; dense attention and the indexer, whose ' +
        'GEMMs reuse their operands from cache, scale better.',
    );
  }
  const one = decodeRatio(report, 131072, 1);
  const all = decodeRatio(report, 131072, n);
  if (n > 1 && one && all) {
    parts.push(
      `A decode step on ${n} threads splits the indexer's L keys and dense decode's heads; the sparse attention of its one query ` +
        'stays on one thread (MQA: the k selected rows serve every head; splitting the heads would read them once per thread). ' +
        `In this run dense_decode ÷ dsa_decode at 128K is ${f2(all.ratio)}× on ${n} threads ` +
        `against ${f2(one.ratio)}× on one (dsa_decode ${f2(one.dsa.ms_median / all.dsa.ms_median)}× faster on ${n} threads, dense_decode ` +
        `${f2(one.dense.ms_median / all.dense.ms_median)}×).`,
    );
  }
  parts.push(
    'A DSA decode step is far from its FLOP model at small L because its fixed costs (top-k over L scores, the k selected rows, ' +
      'the softmax) do not shrink with L while dense decode does; the ratio grows with L. The paper\'s 8.6× is a cost ' +
      'ratio of whole V3.1 / V3.2 decode on H800 (Figure 3), not a kernel ratio.',
  );
  if (wasLoaded(report)) {
    parts.push(
      'This run shared the machine with other jobs, so wall times mostly measure waiting ' +
        'for a core: the one-thread verdicts use CPU time, and thread speedups (which need free cores) are not measurable here. ' +
        'CPU time still includes memory stalls caused by the other jobs; dense decode, which streams the whole cache every step, ' +
        'is the op most exposed to them, so its ratios vary most between runs.',
    );
  }
  return parts.join('\n\n');
}

/**
 * What the sparse target against the peer (≥ 2× at one thread) would need, from the report's own rows: the peer's sparse
 * GFLOP/s at 16K, twice that, and tfjs-wasm's one-thread 1024³ matmul rate (the ceiling of any wasm GEMM).
 */
function sparsePeerBound(report: BenchReport): string {
  const peer = findRow(report, 'torch', 'sparse', 16384, report.grid.k);
  const ours = findRow(report, report.backend, 'sparse', 16384, report.grid.k);
  if (!peer?.gflops || !ours?.gflops) return '';
  return (
    ` At 16K on one thread the peer's sparse attention runs at ${f2(peer.gflops)} GFLOP/s and ours at ${f2(ours.gflops)}; twice the ` +
    `peer's speed would need ${f2(2 * peer.gflops)} GFLOP/s, ${f2((2 * peer.gflops) / report.matmul_gflops)}× tfjs-wasm's own ` +
    `1024³ matmul (${f2(report.matmul_gflops)} GFLOP/s).`
  );
}

/** A saved run of bench/sparse-layouts.ts. */
export interface LayoutsReport {
  started: string;
  load_average: [number, number];
  other_cpu: { share: number; steal_share: number } | null;
  cpus: number;
  L: number; k: number; heads: number; queries: number; repeats: number;
  dense_gflops: number;
  rows: { variant: string; ms_per_query: number; gflops: number | null; pct_of_flop_ratio: number | null }[];
  shipped_phases: { phase: string; ms_per_query: number }[];
}

/** The section on the arrangements of sparse attention tried on wasm, from bench/sparse-layouts.ts runs. */
function layoutsSection(runs: LayoutsReport[], sources: string[]): string {
  if (runs.length === 0) return '';
  const parts = runs.map((r, i) => {
    const rows = r.rows
      .map((x) => `| ${x.variant} | ${f2(x.ms_per_query)} | ${x.gflops === null ? '–' : f2(x.gflops)} | ${x.pct_of_flop_ratio === null ? '–' : `${x.pct_of_flop_ratio.toFixed(0)}%`} |`)
      .join('\n');
    const phases = r.shipped_phases.map((p) => `${p.phase} ${f2(p.ms_per_query)}`).join(', ');
    return (
      `Run of ${r.started} (\`${sources[i]}\`; ${r.other_cpu ? `other processes used ${(100 * r.other_cpu.share).toFixed(1)}% of the machine, steal ${(100 * r.other_cpu.steal_share).toFixed(1)}%` : 'machine load not recorded'}): L = ${r.L / 1024}K, k = ${r.k}, H = ${r.heads}, ${r.queries} queries, median of ${r.repeats} passes; ` +
      `dense reference ${f2(r.dense_gflops)} GFLOP/s.\n\n| variant | ms per query | GFLOP/s | % of the FLOP ratio |\n|---|---:|---:|---:|\n${rows}\n\n` +
      `Phases of \`shipped\` (ms per query): ${phases}.`
    );
  });
  return `
## Sparse prefill: the arrangements tried

\`npx tsx bench/sparse-layouts.ts --json FILE\` times one query of sparse attention at the bench's prefill dims: the
shipped kernels, and every arrangement of the same arithmetic around tfjs-backend-wasm's \`matMul\` (its header describes
each), against the dense path in the same process. "% of the FLOP ratio" is the variant's GFLOP/s ÷ dense GFLOP/s: the target's measure.

${parts.join('\n\n')}

What the rows say: \`shipped\` is the WebAssembly SIMD kernels of src/wasm/sparse_mqa.c, which read the selected rows
straight from the cache tensors (FlashMLA-style: the gather fused into both GEMMs, no transpose). Every other row
arranges the same arithmetic around XNNPACK, the one fast GEMM tfjs-wasm has: its two GEMMs alone ("gemms only") are
the floor of those arrangements, and everything else in them is layout work that XNNPACK's API imposes — the gathered
rows must be the left operand (handing them over as the right operand costs a packing per query, "packed right
operand"), so G_cᵀ needs a transpose; a fused gather and transpose in TypeScript is slower than the two passes;
keeping every operand in WebAssembly memory ("heap-resident", the arrangement shipped before the kernels) removed the
copies between JavaScript and the backend ("host gather", the one before that). \`tf.exp\` on the backend is slower
than the TypeScript softmax pass, which both arrangements use.
`;
}

/** The whole docs/performance.md, from a report (and the target summaries of further runs). */
export function performanceDoc(
  report: BenchReport,
  svgName: string,
  others: BenchReport[] = [],
  sources: string[] = [],
  layouts: LayoutsReport[] = [],
  layoutSources: string[] = [],
): string {
  const g = report.grid;
  const H = g.heads;
  const HI = g.indexHeads;
  const backends = report.backends.map((x) => `${x.name} (1024³ matMul ${f2(x.matmul_gflops)} GFLOP/s on one thread)`).join('; ');
  const threadCounts = [...new Set(report.results.filter((r) => r.backend === report.backend).map((r) => r.threads ?? 1))].sort((a, b) => a - b);
  const otherRuns = others.length
    ? `\n### Other runs\n\n${others.map((o) => `The ${runLine(o)}:\n\n${targetSummary(o)}`).join('\n\n')}\n`
    : '';
  return `# Performance of DeepSeek Sparse Attention on tfjs (CPU)

Rendered by \`npm run bench:doc${sources.length ? ` -- ${[...sources, ...layoutSources].join(' ')}` : ''}\` from the report of \`npx dsv32 bench --json FILE\`: ${runLine(report)}. Do not edit by
hand: rerun the bench. Nothing here is a test; every number is what this machine reached in the run named here; the
share of the machine other processes used during the run (above) says how much to trust single rows.

- Machine: ${report.machine}
- Backends: ${backends}; thread counts ${threadCounts.join(' and ')} (worker threads, src/threads.ts)
- PyTorch peer: ${peerText(report)}

## What is measured

- **Prefill unit:** the last T = L/${g.chunkDivisor} queries of a causal prefill of length L, with all L keys cached
  (one chunk of a chunked prefill). Dense cost per chunk grows as T·L ∝ L², sparse as T·k ∝ L at fixed k, so the
  exponents compare with a full prefill's (dense 2, sparse 1).
- **Decode unit (paper Figure 3):** one new query at position L − 1, L from ${Math.min(...g.decodeL) / 1024}K to ${Math.max(...g.decodeL) / 1024}K.
  \`dense_decode\` = V3.1's absorbed MQA over all L latents (\`denseAttentionMqaFast\` with every position selected);
  \`dsa_decode\` = the whole V3.2 step: lightning-indexer scores over all L keys (\`indexerScoresFast\`) + top-k
  (\`selectTopKFast\`) + sparse attention over the k selected latents (\`sparseAttentionMqaFast\`).
- **Dimensions:** the 671B head dims — latent C = ${DIMS_671B.C} + rope R = ${DIMS_671B.R} (D_qk = 576), value ${DIMS_671B.C}
  (MQA / absorbed mode), indexer DI = ${DIMS_671B.DI} — with head counts scaled down ${DIMS_671B.H / H}× to fit: H = ${H} attention heads
  (671B: ${DIMS_671B.H}) and HI = ${HI} indexer heads (671B: ${DIMS_671B.HI}), so every FLOP ratio (indexer ÷ attention, dense ÷ DSA)
  is the 671B one.
- **FLOP model ([spec-notes.md](spec-notes.md#flop-model), src/bench/flops.ts):** ${attentionFlopsPerPair(H)} FLOPs per attended pair for core attention
  (2·H·(576 + 512), FlashMLA's \`tests/lib.py\` convention) and ${indexerFlopsPerPair(HI)} per scored pair for the indexer
  (HI·2·DI + 2·HI). Dense and indexer count every causal pair; sparse counts min(k, t + 1) pairs per query; a DSA
  decode step counts L indexer pairs + min(k, L) attention pairs.
- **Ops:** \`dense\` = dense masked attention (every key scored, the top-k selection applied as a −∞ mask, the official
  masked form); \`sparse\` = gather attention over the selected latents; \`indexer\` = lightning-indexer scores (Eq. 1);
  \`topk\` = top-k over those scores; \`sparse_decode\` = one query of \`sparse\`. \`*_ref\` rows time the simple reference
  paths of src/sparse_attention.ts on the same inputs. Inputs are seeded uniform values; prefill selections are
  random (k distinct positions ≤ t per query).
- **Threads:** \`threads\` = 1 runs on the calling thread; more runs the same kernels on worker threads over shared
  memory (one tfjs-wasm instance per worker; results bit-identical to one thread, test/threads.test.ts). Rows with more
  than one thread are taken at L ∈ {${g.allCoreL.map((L) => `${L / 1024}K`).join(', ')}} and for the decode ops.
- **Statistics:** median of ${g.runs} timed runs after one warm-up run; a configuration whose warm-up took longer than
  ${Number.isFinite(g.budgetMs) ? `${g.budgetMs / 1000 / g.runs} s` : '∞'} got fewer timed runs, never fewer than ${g.minRuns} (the \`runs\` column).
  **Peak RSS** is the process's peak resident set so far (\`process.resourceUsage().maxRSS\`, monotone over the run, so it
  bounds the op's own peak from above; worker threads share the process); **peak tfjs** is \`tf.profile\`'s peak tensor
  bytes of the warm-up run on the calling thread. **% of matmul** is GFLOP/s ÷ (threads × one-thread 1024³ matMul).
- **Wall and CPU time:** \`median ms\` is wall time; \`CPU ms\` is the process's CPU time per run (every thread). On
  one thread, CPU time is the time the op ran while it had a core, so on a machine shared with other jobs it is the
  better estimate of the op's own cost, and the targets give ratios on both (marked "cpu"). On several threads CPU time
  is the sum over threads, so speedups from threads are on wall time only — and a loaded machine does not give a job
  two free cores, so those rows count only when the run was quiet: other processes used at most
  ${100 * OTHER_CPU_LIMIT}% of the machine's CPU time (kernel CPU accounting, src/bench/machine_share.ts; older reports: the load average).

## Results

![time vs L](${svgName})

${resultsTable(report)}

### Exponents of time against L (one thread)

Fixed-k sparse is fitted over L ≥ 2k = ${2 * g.k} (below that every query attends all t + 1 ≤ k keys: sparse is dense).

${exponentTable(report)}

### Targets (issue #17)
${others.length ? `
Over the ${others.length + 1} runs of this page (this one and "Other runs" below; thread targets only from quiet runs):

${targetsAcrossRuns([report, ...others])}

This run in detail:
` : ''}
${targetSummary(report)}

${whyText(report)}
${otherRuns}
## The PyTorch peer on Debian

Debian's \`python3-torch\` is built with \`BLAS_INFO=generic\`: it calls whatever \`libblas.so.3\` the system's
alternatives point to. Without an optimized BLAS that is the reference BLAS, which is not a fair peer (the report says
which BLAS the peer loaded, and its 1024³ matmul rate). Set it up with

\`\`\`sh
apt-get install python3-torch libopenblas0-pthread   # OpenBLAS becomes libblas.so.3
\`\`\`

The peer script lives in the repository (bench/peer/), not in the npm package. The bench runs it with /usr/bin/python3
(or \`DSV32_PYTHON\`), once per thread count, with \`OPENBLAS_CORETYPE\`
and \`OPENBLAS_L2_SIZE\` removed from the peer's environment only (this process and the tests keep the machine's
settings): a forced older core such as \`Haswell\` on an AVX-512 machine makes OpenBLAS use narrower kernels. The
peer reports which BLAS it loaded (\`/proc/self/maps\`, \`openblas_get_config\`, \`openblas_get_corename\`); the report
labels a reference BLAS "reference BLAS — not a fair peer" and computes no speedup against it.

${layoutsSection(layouts, layoutSources)}
## How the fast path is built, and what tfjs lacks

tfjs-backend-wasm 4.22 runs one kernel fast: a **2-D, untransposed \`matMul\`** (XNNPACK fully-connected). Measured here:

- A \`matMul\` with a batch dimension or a transpose flag falls back to a naive triple loop (< 1 GFLOP/s): the
  reference paths' batched \`[Tb, H, D] × [Tb, D, K]ᵀ\` products run there. **Missing kernel: batched GEMM on XNNPACK.**
- XNNPACK repacks the right operand whenever it is a new tensor and keeps the packed form
  while that tensor lives, so a freshly gathered \`[K, C]\` block must never be the right operand, and a long-lived cache
  tensor may be. **Missing: a GEMM that takes its weights unpacked.**
- \`transpose\` and \`gather\` (GatherV2) cost 20–100 ns per element; \`gatherND\` is a fast row copy.
  **Missing: fused gather-GEMM (FlashMLA-style sparse attention) and a fast transpose.** dsv32 brings its own for
  sparse attention (below).
- **Threads:** tfjs-wasm has none in Node (\`WASM_HAS_MULTITHREAD_SUPPORT\` is false under Node, tfjs issue #3830).
  dsv32 therefore runs its own: \`createKernelPool()\` (src/threads.ts) starts worker threads, each with its own tfjs
  backend; inputs and outputs live in SharedArrayBuffers; the calling thread hands each worker a contiguous range of
  work units and waits (Atomics) until each worker has acknowledged the call, so the kernels stay synchronous. Units are queries (sparse, top-k),
  query blocks or head groups (dense), query blocks or key ranges (indexer; a decode step splits its L keys). A unit
  computes the same arithmetic on any thread, so the results are bit-identical to one thread. \`DSV32_THREADS\` sets the
  default (every core).

The fast kernels (src/sparse_fast.ts over the units of src/sparse_kernels.ts and src/sparse_units.ts) serve all H heads of a query with one
pass over its selected latents (MQA), skip −1 and future slots, and build nothing of size [L, k, d]:

- **sparse on wasm**: two WebAssembly SIMD kernels (src/wasm/sparse_mqa.c, compiled by clang, committed as
  src/wasm/sparse_mqa.wasm.ts, loaded by src/sparse_wasm.ts) run on tfjs-backend-wasm's own memory and read the k
  selected rows of the cache tensors in place: \`zᵀ[j, h] = [c ; k_pe]_{s_j} · [q̃ ; q_pe]_h\` (4 slots × 8 heads per
  register tile), the softmax over the valid slots in TypeScript, then \`ō[h, :] = Σ_j p[h, j] c_{s_j}\` (4 heads × 8
  columns per tile, the slots in chunks of 16 that stay in L1), divided by the softmax sums at the end. Every output
  element is one float32 accumulator summed in a fixed order, so threads give bit-identical results. Where the kernels
  cannot load (another backend; a shared-memory or SIMD-less wasm), the XNNPACK arrangement below runs.
- **sparse elsewhere**: the selected latents are gathered once: \`zᵀ = G · [q̃ ; q_pe]ᵀ\` [K, H], the softmax in
  TypeScript, \`ōᵀ = G_cᵀ · pᵀ\` [C, H] with G_cᵀ built by a cache-blocked TypeScript transpose, both GEMMs 2-D with
  the big operand on the left.
- **dense**: \`Zᵀ = kv · Q̃ᵀ + pe · Q_peᵀ\` [L, Tb·H] with the cache tensors as left operands (never transposed or
  repacked), the masked softmax in one TypeScript pass, then \`ō = P · kv\` with kv as the right operand: XNNPACK packs kv
  once per cache tensor and keeps it, which a real decode loop also gets when its cache tensor is long-lived (a loop
  that builds a new cache tensor every step would pay the packing every step).
- **indexer**: \`ReLU(keys · Qᵀ)\` [L, Tb·HI] (fused ReLU, keys on the left), then the head-weighted sum as one more GEMM
  with a block-diagonal weight matrix [Tb·HI, Tb] (Tb/DI extra work).
- **top-k**: quickselect per row (linear time) instead of a sort; same tie rule as \`selectTopK\`.

The fast and reference paths are checked against each other and against a float64 oracle by
test/sparse-fast.test.ts (wasm and cpu), and one thread against 2 and 3 by test/threads.test.ts. MLA uses them with
\`mlaForward(…, { attention: 'fast' })\` (src/mla.ts), checked against the golden traces by test/golden-fast.test.ts.

## Reproduce

\`\`\`sh
npx dsv32 bench --quick --json quick.json     # a few minutes; prints the tables; writes only quick.json
npx dsv32 bench --json run1.json              # full grid: 1K–128K, wasm and cpu backends
npx dsv32 bench --targets --backends wasm --json t.json   # only the rows the targets read (4K–128K), few runs
npx tsx bench/sparse-layouts.ts --json layouts.json   # the arrangements of sparse attention (one query, 16K)
npm run bench:doc -- run1.json [run2.json] [layouts.json]   # rewrites this file and ${svgName}
DSV32_THREADS=1 npx dsv32 bench --json one.json   # one thread only
\`\`\`
`;
}
