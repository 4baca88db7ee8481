/**
 * Runs the PyTorch peer (bench/peer/attention_peer.py) when a Python with torch is available
 * (`python3 -c 'import torch'`; Debian: `apt-get install python3-torch`, then /usr/bin/python3).
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { attentionFlopsPerPair, causalPairs, sparsePairs } from './flops.ts';
import type { BenchResult } from './suite.ts';

/** A case for the peer. */
export interface PeerCase {
  op: 'dense' | 'sparse';
  L: number;
  k: number;
  T: number;
  H: number;
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

/**
 * Runs the cases in one peer process (one thread, `runs` timed runs after a warm-up each) and returns
 * them as results with backend 'torch'. Throws when the peer fails.
 */
export function runPeer(python: string, cases: PeerCase[], runs: number, timeoutMs: number, fixedK: number): BenchResult[] {
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'peer', 'attention_peer.py');
  const cfg = JSON.stringify({ threads: 1, runs, cases: cases.map((c) => ({ ...c, C: 512, R: 64 })) });
  const r = spawnSync(python, [script, cfg], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 1 << 24 });
  const lines = (r.stdout ?? '').split('\n').filter((l) => l.startsWith('{'));
  const out: BenchResult[] = [];
  for (const line of lines) {
    const o = JSON.parse(line) as { op?: string; L: number; k: number; T: number; heads: number; ms_median: number; runs: number; peak_rss_mb: number };
    if (!o.op) continue;
    const pairs = o.op === 'dense' ? causalPairs(o.L, o.T) : sparsePairs(o.L, o.T, o.k);
    const flops = pairs * attentionFlopsPerPair(o.heads);
    out.push({
      backend: 'torch', op: o.op, series: o.k === fixedK || o.op === 'dense' ? `k=${fixedK}` : 'k=L/8', L: o.L, k: o.k, heads: o.heads, T: o.T,
      ms_median: o.ms_median, runs: o.runs, gflops: flops / o.ms_median / 1e6, flops, peak_rss_mb: o.peak_rss_mb, peak_tfjs_mb: 0,
    });
  }
  if (r.status !== 0 && out.length === 0) {
    throw new Error(`PyTorch peer failed (${r.error?.message ?? `exit ${r.status}`}): ${(r.stderr ?? '').slice(-400)}`);
  }
  return out;
}
