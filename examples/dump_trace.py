"""Dump a `dsv32 check` trace from a PyTorch DeepSeek-V3.2 implementation with forward hooks.

Run your model on a dsv32 fixture (its checkpoint, its `input.tokens`, its steps from `manifest.json`:
a prefill of `steps[0].length` tokens at position 0, then one token per decode step), then

    npx dsv32 check trace.safetensors --fixture fixtures/golden/public-fp8

The module names below are those of DeepSeek's `inference/model.py` (`layers.L.attn`, `.attn.indexer`,
`.ffn`, `.ffn.gate`, `.attn_norm`, `.ffn_norm`); map them to your engine's (e.g. `model.layers.L.self_attn`,
`.mlp`, `.mlp.gate`, `.input_layernorm`, `.post_attention_layernorm` in Hugging Face naming).
Any subset of the tensors is fine: `dsv32 check` judges what it finds. Needs torch and safetensors.
"""
import json
import sys

import torch
from safetensors.torch import save_file


def dump_trace(model, tokens, steps, path):
    """Runs `model` over the fixture's steps and writes the trace to `path`.

    model:  the official `Transformer` (or yours, with the hooks below re-pointed), weights loaded
    tokens: 1-D LongTensor, the fixture's `input.tokens`
    steps:  the fixture manifest's `steps` list [{"step", "start_pos", "length"}, ...]
    """
    out = {"input.tokens": tokens.to(torch.int64)}
    current = {"step": 0}

    def name(layer, what):
        return f"step{current['step']}.expected.layer{layer}.{what}"

    def keep(key, t):
        # floats as the engine computed them (bf16 stays bf16: dsv32 reads BF16/F16/F32); [1, n, dim] like the fixture
        out[key] = t.detach().to("cpu").contiguous()

    hooks = []

    def hook(module, record):
        # a forward hook must return None (a returned value would replace the module's output)
        def run(m, args, res):
            record(args, res)
        hooks.append(module.register_forward_hook(run))

    for layer, block in enumerate(model.layers):
        def attn(args, res, l=layer):  # attn.in = MLA input (after attn_norm); attn.out = MLA output (after wo)
            keep(name(l, "attn.in"), args[0])
            keep(name(l, "attn.out"), res)

        def ffn(args, res, l=layer):  # ffn.in = FFN input (after ffn_norm); ffn.out = FFN output
            keep(name(l, "ffn.in"), args[0])
            keep(name(l, "ffn.out"), res)

        def gate(args, res, l=layer):  # (weights [n, k], indices [n, k]) in gate order
            keep(name(l, "gate.weights"), res[0])
            keep(name(l, "gate.indices"), res[1].to(torch.int64))

        def indexer(args, res, l=layer):  # Indexer.forward(x, qr, start_pos, ...) returns the top-k indices
            keep(name(l, "indexer.topk"), canonical_topk(res, args[2]))

        hook(block.attn, attn)
        hook(block.attn.q_norm, lambda args, res, l=layer: keep(name(l, "attn.qr"), res))  # q_norm(wq_a(x))
        hook(block.ffn, ffn)
        if hasattr(block.ffn, "gate"):
            hook(block.ffn.gate, gate)
        # indexer.score (the score before the causal mask) is a local variable of the official Indexer.forward:
        # patch your indexer to expose it, or dump only the selections.
        hook(block.attn.indexer, indexer)

    try:
        with torch.inference_mode():
            for st in steps:
                current["step"] = st["step"]
                s, n = st["start_pos"], st["length"]
                logits = model(tokens[s:s + n].unsqueeze(0), s)  # the official forward returns the last position's logits
                keep(f"step{st['step']}.expected.logits", logits)
    finally:
        for h in hooks:
            h.remove()
    save_file(out, path, metadata={"producer": "examples/dump_trace.py"})


def canonical_topk(indices, start_pos):
    """[1, n, k] top-k indices (with -1 / masked picks) -> [n, min(k, end_pos)]: positions s <= t, ascending, -1 padded."""
    idx = indices[0].to(torch.int64)
    n = idx.shape[0]
    end_pos = start_pos + n
    k = min(idx.shape[-1], end_pos)
    rows = []
    for t in range(n):
        row = sorted({int(s) for s in idx[t].tolist() if 0 <= s <= start_pos + t})[:k]
        rows.append(row + [-1] * (k - len(row)))
    return torch.tensor(rows, dtype=torch.int64)


if __name__ == "__main__":
    # usage: python dump_trace.py FIXTURE_DIR OUT.safetensors  (build `model` for your engine below)
    fixture, path = sys.argv[1], sys.argv[2]
    manifest = json.load(open(f"{fixture}/manifest.json"))
    from safetensors.torch import load_file
    tokens = load_file(f"{fixture}/trace.safetensors")["input.tokens"]
    model = ...  # your engine's model, loaded from f"{fixture}/model.safetensors" with f"{fixture}/config.json"
    dump_trace(model, tokens, manifest["steps"], path)
