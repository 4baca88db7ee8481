#!/usr/bin/env python3
"""PyTorch (CPU) peer of the dsv32 benchmark: dense masked and sparse gather attention in MLA's
absorbed (MQA) mode, written from the spec (docs/spec-notes.md#mla and docs/spec-notes.md#selection),
not from the TypeScript code.

For a block of T queries at positions t = L - T .. L - 1 over a latent cache of L positions:

  z[h, t, s] = scale * (q_lat[t, h] . kv[s] + q_pe[t, h] . pe[s]) + M[t, s]
  o[t, h]    = sum_s softmax_s(z)[h, t, s] * kv[s]

dense:  every s < L is scored; M = 0 on selected s <= t, -inf elsewhere (official masked form).
sparse: each query gathers its selected rows once (index_select) and all heads attend over them
        (batched matmul [T, H, D] x [T, D, K]); -1 padding gets -inf.

Usage: attention_peer.py '<json config>'  with {"threads": 1, "runs": 5, "cases": [{"op": "dense" | "sparse",
"L": .., "k": .., "T": .., "H": .., "C": 512, "R": 64}, ...]}. Prints {"info": {...}} first (torch version,
the BLAS library this process loaded, OpenBLAS's config and core, threads, a 1024^3 matmul rate), then one
JSON object per case ({"op", "L", "k", "T", "heads", "threads", "ms_median", "runs", "peak_rss_mb"}) on its
own line, then {"done": true}.

The thread count is set three ways (torch.set_num_threads, openblas_set_num_threads, and the caller's
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS), because Debian's torch is built with BLAS_INFO=generic and calls
whatever libblas.so.3 the system's alternatives point to (reference BLAS or OpenBLAS).
"""
import ctypes
import json
import os
import re
import resource
import sys
import time

import torch


def loaded_blas():
    """The BLAS shared libraries mapped into this process (after torch ran a matmul)."""
    libs = set()
    with open('/proc/self/maps') as maps:
        for line in maps:
            path = line.split()[-1] if len(line.split()) >= 6 else ''
            name = os.path.basename(path).lower()
            if path.startswith('/') and ('blas' in name or 'mkl' in name or 'blis' in name):
                libs.add(path)
    return sorted(libs)


def blas_info(threads):
    """{blas, coretype, fair}: OpenBLAS (with its config and kernel core) or whichever BLAS is loaded."""
    torch.ones(64, 64) @ torch.ones(64, 64)  # make sure torch has called into its BLAS
    libs = loaded_blas()
    openblas = [p for p in libs if 'openblas' in os.path.basename(p).lower()]
    if openblas:
        lib = ctypes.CDLL(openblas[0])
        lib.openblas_get_config.restype = ctypes.c_char_p
        lib.openblas_get_corename.restype = ctypes.c_char_p
        if hasattr(lib, 'openblas_set_num_threads'):
            lib.openblas_set_num_threads(int(threads))
        forced = os.environ.get('OPENBLAS_CORETYPE')
        core = lib.openblas_get_corename().decode()
        return {
            'blas': f"{lib.openblas_get_config().decode().strip()} ({openblas[0]})",
            'coretype': f"{core} ({'forced by OPENBLAS_CORETYPE=' + forced if forced else 'auto-detected'})",
            'fair': True,
        }
    optimized = [p for p in libs if 'mkl' in p.lower() or 'blis' in p.lower()]
    if optimized:
        return {'blas': ', '.join(optimized), 'coretype': 'n/a', 'fair': True}
    return {'blas': 'reference BLAS (' + (', '.join(libs) or 'torch BLAS_INFO=generic') + ')', 'coretype': 'n/a', 'fair': False}


def median_of(xs):
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def matmul_gflops(n=1024, runs=5):
    a = torch.rand(n, n)
    b = torch.rand(n, n)
    a @ b
    times = []
    for _ in range(runs):
        c0 = time.process_time()
        t0 = time.perf_counter()
        a @ b
        # one thread: its CPU time is the load-free time; several: wall time
        times.append(min(time.perf_counter() - t0, time.process_time() - c0) if torch.get_num_threads() == 1 else time.perf_counter() - t0)
    return 2 * n ** 3 / median_of(times) / 1e9


def random_topk(L, T, k, gen):
    """Row i (t = L - T + i): min(k, t + 1) distinct random positions <= t, ascending, then -1."""
    width = min(k, L)
    out = torch.full((T, width), -1, dtype=torch.long)
    for i in range(T):
        t = L - T + i
        n = min(k, t + 1)
        out[i, :n] = torch.randperm(t + 1, generator=gen)[:n].sort().values
    return out


def dense_masked(q, kv, pe, topk, start, scale, block):
    """Official masked-dense form, processed in query blocks to bound the [Tb, H, L] scores."""
    T, H, D = q.shape
    L, C = kv.shape
    keys = torch.cat([kv, pe], dim=1)  # [L, D]
    out = []
    for b0 in range(0, T, block):
        qb = q[b0:b0 + block]  # [Tb, H, D]
        tb = qb.shape[0]
        z = (qb.reshape(tb * H, D) @ keys.T).reshape(tb, H, L) * scale
        mask = torch.full((tb, L), float('-inf'))
        idx = topk[b0:b0 + tb]
        t = torch.arange(start + b0, start + b0 + tb).unsqueeze(1)
        valid = (idx >= 0) & (idx <= t)
        rows = torch.arange(tb).unsqueeze(1).expand_as(idx)
        mask[rows[valid], idx[valid]] = 0.0
        p = torch.softmax(z + mask.unsqueeze(1), dim=-1)
        out.append((p.reshape(tb * H, L) @ kv).reshape(tb, H, C))
    return torch.cat(out, 0)


def sparse_gather(q, kv, pe, topk, start, scale, block):
    """Gather each query's selected latents once ([Tb, K, D]) and serve all heads with bmm."""
    T, H, D = q.shape
    L, C = kv.shape
    keys = torch.cat([kv, pe], dim=1)  # [L, D]
    out = []
    for b0 in range(0, T, block):
        idx = topk[b0:b0 + block]
        tb, K = idx.shape
        t = torch.arange(start + b0, start + b0 + tb).unsqueeze(1)
        valid = (idx >= 0) & (idx <= t)
        g = keys.index_select(0, torch.where(valid, idx, 0).reshape(-1)).reshape(tb, K, D)
        z = torch.bmm(q[b0:b0 + tb], g.transpose(1, 2)) * scale  # [Tb, H, K]
        z = z.masked_fill(~valid.unsqueeze(1), float('-inf'))
        p = torch.softmax(z, dim=-1)
        out.append(torch.bmm(p, g[:, :, :C]))  # [Tb, H, C]
    return torch.cat(out, 0)


def main():
    cfg = json.loads(sys.argv[1])
    threads = int(cfg.get('threads', 1))
    torch.set_num_threads(threads)
    info = blas_info(threads)
    info.update({'torch': torch.__version__, 'threads': torch.get_num_threads(), 'matmul_gflops': matmul_gflops(),
                 'torch_blas_info': ''.join(re.findall(r'BLAS_INFO=(\w+)', torch.__config__.show())[:1])})
    print(json.dumps({'info': info}), flush=True)
    runs = int(cfg.get('runs', 5))
    scale = 0.1352
    for case in cfg['cases']:
        L, k, T, H = case['L'], case['k'], case['T'], case['H']
        C, R = case.get('C', 512), case.get('R', 64)
        gen = torch.Generator().manual_seed(L)
        a = 3 ** 0.5
        kv = (torch.rand(L, C, generator=gen) * 2 - 1) * a
        pe = (torch.rand(L, R, generator=gen) * 2 - 1) * a
        q = (torch.rand(T, H, C + R, generator=gen) * 2 - 1) * a
        topk = random_topk(L, T, k, gen)
        if case['op'] == 'dense':
            block = max(1, min(T, (8 << 20) // (H * L)))
            fn = lambda: dense_masked(q, kv, pe, topk, L - T, scale, block)  # noqa: E731
        else:
            block = max(1, min(T, (64 << 20) // (min(k, L) * (C + R) * 4)))
            fn = lambda: sparse_gather(q, kv, pe, topk, L - T, scale, block)  # noqa: E731
        with torch.no_grad():
            fn()  # warm-up
            times = []
            cpu_times = []
            for _ in range(runs):
                c0 = time.process_time()
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1000)
                cpu_times.append((time.process_time() - c0) * 1000)
        median = median_of(times)
        print(json.dumps({
            'op': case['op'], 'L': L, 'k': k, 'T': T, 'heads': H, 'threads': threads, 'ms_median': median, 'cpu_ms_median': median_of(cpu_times), 'runs': runs,
            'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }), flush=True)
    print(json.dumps({'done': True, 'torch': torch.__version__, 'threads': torch.get_num_threads()}), flush=True)


if __name__ == '__main__':
    main()
