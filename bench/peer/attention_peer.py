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
"L": .., "k": .., "T": .., "H": .., "C": 512, "R": 64}, ...]}. Prints one JSON object per case
({"op", "L", "k", "T", "heads", "ms_median", "runs", "peak_rss_mb"}) on its own line, then {"done": true}.
"""
import json
import resource
import sys
import time

import torch


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
    torch.set_num_threads(int(cfg.get('threads', 1)))
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
            for _ in range(runs):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        mid = len(times) // 2
        median = times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2
        print(json.dumps({
            'op': case['op'], 'L': L, 'k': k, 'T': T, 'heads': H, 'ms_median': median, 'runs': runs,
            'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }), flush=True)
    print(json.dumps({'done': True, 'torch': torch.__version__, 'threads': torch.get_num_threads()}), flush=True)


if __name__ == '__main__':
    main()
