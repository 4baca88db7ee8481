/**
 * Runs the PyTorch peer (bench/peer/attention_peer.py) when a Python with torch is available
 * (`python3 -c 'import torch'`; Debian: `apt-get install python3-torch libopenblas0-pthread`, then
 * /usr/bin/python3), once per thread count, and reads from the peer process which BLAS it loaded.
 *
 * The peer process runs with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from its environment (only
 * its own: this process and the tests keep the machine's settings), so OpenBLAS picks its kernels for
 * the CPU it finds; a forced older core (e.g. Haswell on an AVX-512 machine) runs at well under half speed.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { attentionFlopsPerPair, causalPairs, sparsePairs } from './flops.ts';
import type { PeerInfo } from './report.ts';
import type { BenchResult } from './suite.ts';

/** A case for the peer. */
export interface PeerCase {
  op: 'dense' | 'sparse';
  L: number;
  k: number;
  T: number;
  H: number;
}

/** Environment variables removed from the peer's environment (and only from it). */
export const PEER_UNSET_ENV = ['OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE'] as const;

/** bench/peer/attention_peer.py of this package: from src/bench/ (sources) or dist/bench/ (compiled). */
export function peerScript(): string | null {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const up of [['..', '..'], ['..', '..', '..']]) {
    const candidate = path.join(here, ...up, 'bench', 'peer', 'attention_peer.py');
    if (fs.existsSync(candidate)) return candidate;
  }
  return null;
}

/** Which Python (if any) can import torch, and its version. */
export function findTorch(): { python: string; version: string } | null {
  const candidates = [process.env.DSV32_PYTHON, '/usr/bin/python3', 'python3'].filter((p): p is string => !!p);
  for (const python of candidates) {
    const r = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', timeout: 60_000 });
    if (r.status === 0) return { python, version: r.stdout.trim() };
  }
  return null;
}

/** The peer's environment: this process's, minus {@link PEER_UNSET_ENV}, with every BLAS/OpenMP pool at `threads`. */
export function peerEnv(threads: number, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base, OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads), MKL_NUM_THREADS: String(threads) };
  for (const name of PEER_UNSET_ENV) delete env[name];
  return env;
}

interface PeerInfoLine {
  blas: string;
  coretype: string;
  fair: boolean;
  torch: string;
  threads: number;
  matmul_gflops: number;
}

/**
 * Runs the cases in one peer process per thread count (`runs` timed runs after a warm-up each) and
 * returns the rows (backend 'torch', with their thread count) and the peer as it described itself.
 * Throws when the peer fails before producing a row.
 */
export function runPeer(python: string, cases: PeerCase[], runs: number, threadCounts: number[], timeoutMs: number, fixedK: number): { rows: BenchResult[]; info: PeerInfo } {
  const script = peerScript();
  if (!script) throw new Error(`the peer script bench/peer/attention_peer.py is not in this installation (it ships with a clone of the repository, not with the npm package)`);
  const rows: BenchResult[] = [];
  let info: PeerInfo = { available: false, python };
  for (const threads of threadCounts) {
    const cfg = JSON.stringify({ threads, runs, cases: cases.map((c) => ({ ...c, C: 512, R: 64 })) });
    const r = spawnSync(python, [script, cfg], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 1 << 24, env: peerEnv(threads) });
    const lines = (r.stdout ?? '').split('\n').filter((l) => l.startsWith('{'));
    let got = 0;
    for (const line of lines) {
      const o = JSON.parse(line) as { info?: PeerInfoLine; op?: string; L: number; k: number; T: number; heads: number; threads: number; ms_median: number; cpu_ms_median?: number; runs: number; peak_rss_mb: number };
      if (o.info) {
        info = {
          available: true, python, torch: o.info.torch, blas: o.info.blas, coretype: o.info.coretype, fair: o.info.fair,
          threads: Math.max(info.threads ?? 0, o.info.threads), matmul_gflops: threads === 1 ? o.info.matmul_gflops : (info.matmul_gflops ?? o.info.matmul_gflops / threads),
        };
        continue;
      }
      if (!o.op) continue;
      const pairs = o.op === 'dense' ? causalPairs(o.L, o.T) : sparsePairs(o.L, o.T, o.k);
      const flops = pairs * attentionFlopsPerPair(o.heads);
      rows.push({
        backend: 'torch', threads: o.threads, op: o.op, series: o.k === fixedK || o.op === 'dense' ? `k=${fixedK}` : 'k=L/8', L: o.L, k: o.k, heads: o.heads, T: o.T,
        ms_median: o.ms_median, cpu_ms_median: o.cpu_ms_median ?? NaN, runs: o.runs, gflops: flops / o.ms_median / 1e6, flops, peak_rss_mb: o.peak_rss_mb, peak_tfjs_mb: 0,
      });
      got++;
    }
    if (r.status !== 0 && got === 0) {
      throw new Error(`PyTorch peer failed at ${threads} thread(s) (${r.error?.message ?? `exit ${r.status}`}): ${(r.stderr ?? '').slice(-400)}`);
    }
  }
  return { rows, info };
}
