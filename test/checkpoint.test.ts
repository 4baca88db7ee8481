import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { tf } from '../src/backend.ts';
import {
  CheckpointError,
  disposeGlobalWeights,
  disposeLayerWeights,
  layerTensors,
  loadGlobalWeights,
  loadLayerWeights,
} from '../src/checkpoint.ts';
import type { ModelConfig } from '../src/config.ts';
import type { WritableTensor } from '../src/safetensors.ts';
import { loadConfig, openCheckpoint, openSafetensors, writeSafetensors } from '../src/node.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';

const FP8 = 'fixtures/golden/public-fp8';
const FP32 = 'fixtures/golden/public-fp32';
const tmpRoot = mkdtempSync(join(tmpdir(), 'dsv32-ckpt-'));
let n = 0;
const newDir = (): string => mkdtempSync(join(tmpRoot, `c${n++}-`));

// --- Independent oracle: parse the file and decode by hand (no src/ code) ---

interface RawEntry {
  dtype: string;
  shape: number[];
  bytes: Buffer;
}
function rawTensors(file: string): Map<string, RawEntry> {
  const buf = readFileSync(file);
  const len = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + len).toString('utf8')) as Record<string, any>;
  const out = new Map<string, RawEntry>();
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [b, e] = v.data_offsets as [number, number];
    out.set(name, { dtype: v.dtype, shape: v.shape, bytes: buf.subarray(8 + len + b, 8 + len + e) });
  }
  return out;
}
/** e4m3fn by its definition: (−1)^s · 2^(e−7) · (1 + m/8), subnormal (−1)^s · 2^−6 · m/8, 0x7F/0xFF NaN. */
function e4m3(code: number): number {
  const s = code & 0x80 ? -1 : 1;
  const e = (code >> 3) & 15;
  const m = code & 7;
  if (e === 15 && m === 7) return NaN;
  return e === 0 ? s * 2 ** -6 * (m / 8) : s * 2 ** (e - 7) * (1 + m / 8);
}
const f32At = (b: Buffer, i: number): number => b.readFloatLE(4 * i);
const bf16At = (b: Buffer, i: number): number => {
  const t = Buffer.alloc(4);
  t.writeUInt16LE(b.readUInt16LE(2 * i), 2);
  return t.readFloatLE(0);
};
/** Dequantized W[i, j] = e4m3(code[i, j]) · scale[⌊i/128⌋, ⌊j/128⌋] (float32). */
function dequantOracle(raw: Map<string, RawEntry>, prefix: string): { w: Float32Array; scale: number[]; shape: number[] } {
  const w8 = raw.get(`${prefix}.weight`)!;
  const s = raw.get(`${prefix}.weight_scale_inv`)!;
  expect(w8.dtype).toBe('F8_E4M3');
  const [rows, cols] = w8.shape as [number, number];
  const sCols = s.shape[1]!;
  const w = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      w[i * cols + j] = e4m3(w8.bytes[i * cols + j]!) * f32At(s.bytes, Math.floor(i / 128) * sCols + Math.floor(j / 128));
    }
  }
  const scale = Array.from({ length: s.shape[0]! * sCols }, (_, k) => f32At(s.bytes, k));
  return { w, scale, shape: [rows, cols] };
}

const fp8Raw = rawTensors(join(FP8, 'model.safetensors'));
const fp32Raw = rawTensors(join(FP32, 'model.safetensors'));

/** Copies a checkpoint's tensors (raw bytes) into `files` (file name → tensor names), with edits. */
function rewrite(
  src: string,
  dir: string,
  edit: (name: string, t: WritableTensor) => WritableTensor | null = (_, t) => t,
  files: Record<string, (name: string) => boolean> = { 'model.safetensors': () => true },
): void {
  const f = openSafetensors(join(src, 'model.safetensors'));
  const weightMap: Record<string, string> = {};
  for (const [file, pick] of Object.entries(files)) {
    const tensors: Record<string, WritableTensor> = {};
    for (const name of f.names().filter(pick)) {
      const r = f.readRaw(name);
      const t = edit(name, { dtype: r.dtype, shape: r.shape, data: r.bytes });
      if (t) tensors[name] = t;
      if (t) weightMap[name] = file;
    }
    writeSafetensors(join(dir, file), tensors);
  }
  f.close();
  if (!files['model.safetensors']) writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
}

async function values(t: tf.Tensor): Promise<Float32Array> {
  return (await t.data()) as Float32Array;
}

describeEachBackend('checkpoint loading', () => {
  const config8: ModelConfig = loadConfig(join(FP8, 'config.json'));
  const config32: ModelConfig = loadConfig(join(FP32, 'config.json'));

  it('FP8 fixture: every FP8 weight equals code · block scale (scale is a multiplier), incl. kv_a edge block', async () => {
    const ck = openCheckpoint(FP8);
    const w = loadLayerWeights(ck, config8, 1);
    const p = 'model.layers.1.self_attn';
    const cases: [string, { weight: tf.Tensor; fp8: boolean }][] = [
      [`${p}.kv_a_proj_with_mqa`, w.attn.wkv_a],
      [`${p}.q_a_proj`, w.attn.wq_a],
      [`${p}.q_b_proj`, w.attn.wq_b],
      [`${p}.kv_b_proj`, w.attn.wkv_b],
      [`${p}.o_proj`, w.attn.wo],
      [`${p}.indexer.wq_b`, w.attn.indexer.wq_b],
      [`${p}.indexer.wk`, w.attn.indexer.wk],
    ];
    for (const [name, lin] of cases) {
      const o = dequantOracle(fp8Raw, name);
      expect(lin.fp8, name).toBe(true);
      expect(lin.weight.shape, name).toEqual(o.shape);
      expect(Array.from(await values(lin.weight)), name).toEqual(Array.from(o.w));
    }
    // kv_a_proj_with_mqa is [160, 256]: scale [2, 2], rows 128..159 use the partial second scale row
    const o = dequantOracle(fp8Raw, `${p}.kv_a_proj_with_mqa`);
    expect(o.scale.length).toBe(4);
    expect(new Set(o.scale).size).toBeGreaterThan(1); // distinct block scales: a wrong block index would show
    expect(o.scale.every((s) => s !== 1)).toBe(true);
    const got = await values(w.attn.wkv_a.weight);
    const code = fp8Raw.get(`${p}.kv_a_proj_with_mqa.weight`)!.bytes;
    for (const [i, j] of [[150, 3], [159, 255], [128, 130], [0, 0], [127, 200]] as const) {
      const s = o.scale[Math.floor(i / 128) * 2 + Math.floor(j / 128)]!;
      expect(got[i * 256 + j]).toBe(Math.fround(e4m3(code[i * 256 + j]!) * s));
    }
    disposeLayerWeights(w);
    ck.close();
  });

  it('FP8 fixture: BF16 weights_proj / gate load as float32 with fp8 false; experts and shared expert', async () => {
    const ck = openCheckpoint(FP8);
    const w = loadLayerWeights(ck, config8, 2);
    const p = 'model.layers.2';
    expect(w.attn.indexer.weights_proj.fp8).toBe(false);
    const wp = fp8Raw.get(`${p}.self_attn.indexer.weights_proj.weight`)!;
    expect(wp.dtype).toBe('BF16');
    const wpGot = await values(w.attn.indexer.weights_proj.weight);
    for (let k = 0; k < 8 * 256; k += 97) expect(wpGot[k]).toBe(bf16At(wp.bytes, k));
    expect(w.ffn.kind).toBe('moe');
    if (w.ffn.kind !== 'moe') return;
    const m = w.ffn.moe;
    const gate = fp8Raw.get(`${p}.mlp.gate.weight`)!;
    expect(m.gate.weight.shape).toEqual([8, 256]);
    expect((await values(m.gate.weight))[300]).toBe(bf16At(gate.bytes, 300));
    const bias = fp8Raw.get(`${p}.mlp.gate.e_score_correction_bias`)!;
    expect(Array.from(await values(m.gate.bias!))).toEqual(Array.from({ length: 8 }, (_, k) => f32At(bias.bytes, k)));
    expect(m.experts.length).toBe(8);
    for (const j of [0, 7]) {
      const ex = m.experts[j]!;
      for (const [hf, lin] of [['gate_proj', ex.w1], ['down_proj', ex.w2], ['up_proj', ex.w3]] as const) {
        const o = dequantOracle(fp8Raw, `${p}.mlp.experts.${j}.${hf}`);
        expect(Array.from(await values(lin.weight)), `${j}.${hf}`).toEqual(Array.from(o.w));
      }
    }
    expect(m.shared).not.toBeNull();
    const sh = dequantOracle(fp8Raw, `${p}.mlp.shared_experts.down_proj`);
    expect(m.shared!.w2.weight.shape).toEqual([256, 128]);
    expect(Array.from(await values(m.shared!.w2.weight))).toEqual(Array.from(sh.w));
    // norms
    const norm = fp8Raw.get(`${p}.input_layernorm.weight`)!;
    expect((await values(w.attn_norm))[17]).toBe(f32At(norm.bytes, 17));
    const kn = fp8Raw.get(`${p}.self_attn.indexer.k_norm.bias`)!;
    expect((await values(w.attn.indexer.k_norm.bias))[5]).toBe(f32At(kn.bytes, 5));
    disposeLayerWeights(w);
    ck.close();
  });

  it('FP8 fixture: dense layer 0 maps gate/down/up_proj to w1/w2/w3', async () => {
    const ck = openCheckpoint(FP8);
    const w = loadLayerWeights(ck, config8, 0);
    expect(w.ffn.kind).toBe('dense');
    if (w.ffn.kind !== 'dense') return;
    for (const [hf, lin] of [['gate_proj', w.ffn.dense.w1], ['down_proj', w.ffn.dense.w2], ['up_proj', w.ffn.dense.w3]] as const) {
      const o = dequantOracle(fp8Raw, `model.layers.0.mlp.${hf}`);
      expect(lin.fp8).toBe(true);
      expect(Array.from(await values(lin.weight)), hf).toEqual(Array.from(o.w));
    }
    disposeLayerWeights(w);
    ck.close();
  });

  it('FP8 fixture: globals embed / norm / head', async () => {
    const ck = openCheckpoint(FP8);
    const g = loadGlobalWeights(ck, config8);
    expect(g.embed.shape).toEqual([512, 256]);
    expect(g.head.shape).toEqual([512, 256]);
    const head = fp8Raw.get('lm_head.weight')!;
    const emb = fp8Raw.get('model.embed_tokens.weight')!;
    expect((await values(g.head))[1234]).toBe(bf16At(head.bytes, 1234));
    expect((await values(g.embed))[4321]).toBe(bf16At(emb.bytes, 4321));
    expect((await values(g.norm))[255]).toBe(f32At(fp8Raw.get('model.norm.weight')!.bytes, 255));
    disposeGlobalWeights(g);
    ck.close();
  });

  it('FP32 fixture: every Linear loads with fp8 false and the stored values', async () => {
    const ck = openCheckpoint(FP32);
    for (let layer = 0; layer < config32.num_hidden_layers; layer++) {
      const w = loadLayerWeights(ck, config32, layer);
      const lins = layerTensors(w).length;
      expect(lins).toBeGreaterThan(10);
      expect([w.attn.wq_a, w.attn.wkv_a, w.attn.wkv_b, w.attn.wo, w.attn.indexer.weights_proj].every((l) => !l.fp8)).toBe(true);
      const raw = fp32Raw.get(`model.layers.${layer}.self_attn.kv_b_proj.weight`)!;
      const got = await values(w.attn.wkv_b.weight);
      for (let k = 0; k < got.length; k += 131) expect(got[k]).toBe(f32At(raw.bytes, k));
      disposeLayerWeights(w);
    }
    ck.close();
  });

  it('a sharded copy (3 shards + index) loads exactly like the single file', async () => {
    const d = newDir();
    rewrite(FP8, d, undefined, {
      'model-00001-of-00003.safetensors': (s) => s.includes('layers.0.') || !s.includes('layers.'),
      'model-00002-of-00003.safetensors': (s) => s.includes('layers.1.'),
      'model-00003-of-00003.safetensors': (s) => s.includes('layers.2.'),
    });
    const single = openCheckpoint(FP8);
    const sharded = openCheckpoint(d);
    expect(sharded.names().sort()).toEqual(single.names().sort());
    for (let layer = 0; layer < 3; layer++) {
      const a = loadLayerWeights(single, config8, layer);
      const b = loadLayerWeights(sharded, config8, layer);
      const ta = layerTensors(a);
      const tb = layerTensors(b);
      expect(tb.length).toBe(ta.length);
      for (let k = 0; k < ta.length; k++) expect(Array.from(await values(tb[k]!))).toEqual(Array.from(await values(ta[k]!)));
      disposeLayerWeights(a);
      disposeLayerWeights(b);
    }
    single.close();
    sharded.close();
  });

  it('loading and disposing leaks no tensor', async () => {
    const ck = openCheckpoint(FP8);
    await expectNoTensorLeak(() => disposeLayerWeights(loadLayerWeights(ck, config8, 1)), 1);
    await expectNoTensorLeak(() => disposeGlobalWeights(loadGlobalWeights(ck, config8)), 1);
    ck.close();
  });

  // --- Errors: the message names the tensor, the expected and the actual; nothing stays loaded ---

  function expectLoadError(dirOrCk: string, config: ModelConfig, layer: number, message: string | RegExp): void {
    const ck = openCheckpoint(dirOrCk);
    const before = tf.memory().numTensors;
    let err: unknown;
    try {
      loadLayerWeights(ck, config, layer);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as Error).message).toMatch(message);
    expect(tf.memory().numTensors).toBe(before); // the partial load was disposed
    ck.close();
  }

  it('missing tensor (late in the layer, after many loads)', () => {
    const d = newDir();
    rewrite(FP8, d, (name, t) => (name === 'model.layers.1.mlp.experts.7.up_proj.weight_scale_inv' ? null : t));
    expectLoadError(
      d,
      config8,
      1,
      'loadLayerWeights(layer 1): tensor "model.layers.1.mlp.experts.7.up_proj.weight_scale_inv": expected shape [1, 2] but got no such tensor in the checkpoint',
    );
  });

  it('missing gate bias with noaux_tc', () => {
    const d = newDir();
    rewrite(FP8, d, (name, t) => (name.endsWith('e_score_correction_bias') ? null : t));
    expectLoadError(d, config8, 2, /tensor "model.layers.2.mlp.gate.e_score_correction_bias": expected shape \[8\] but got no such tensor/);
  });

  it('wrong shape vs the config', () => {
    expectLoadError(
      FP8,
      { ...config8, qk_rope_head_dim: 16 },
      0,
      'loadLayerWeights(layer 0): tensor "model.layers.0.self_attn.q_b_proj.weight": expected shape [320, 128] but got [384, 128]',
    );
  });

  it('wrong scale shape', () => {
    const d = newDir();
    rewrite(FP8, d, (name, t) =>
      name === 'model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv'
        ? { dtype: 'F32', shape: [1, 2], data: new Float32Array([1, 1]) }
        : t,
    );
    expectLoadError(d, config8, 0, /tensor "model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv": expected shape \[2, 2\] but got \[1, 2\]/);
  });

  it('wrong dtype: an integer weight, an FP8 norm', () => {
    const d = newDir();
    rewrite(FP8, d, (name, t) => {
      if (name === 'model.layers.0.self_attn.o_proj.weight') return { dtype: 'I8', shape: t.shape, data: t.data };
      if (name === 'model.layers.1.input_layernorm.weight') return { dtype: 'F8_E4M3', shape: [256], data: new Uint8Array(256) };
      return t;
    });
    expectLoadError(d, config8, 0, /tensor "model.layers.0.self_attn.o_proj.weight": expected dtype F32 or BF16 or F16 or F64 or F8_E4M3 but got I8/);
    expectLoadError(d, config8, 1, /tensor "model.layers.1.input_layernorm.weight": expected dtype F32 or BF16 or F16 or F64 but got F8_E4M3/);
  });

  it('a weight_scale_inv next to a float weight is inconsistent', () => {
    const d = newDir();
    rewrite(FP8, d, (name, t) =>
      name === 'model.layers.0.self_attn.q_a_proj.weight' ? { dtype: 'F32', shape: [128, 256], data: new Float32Array(128 * 256) } : t,
    );
    expectLoadError(d, config8, 0, /tensor "model.layers.0.self_attn.q_a_proj.weight_scale_inv": expected no scale for a F32 weight but got a weight_scale_inv tensor/);
  });

  it('globals: wrong vocab and FP8 head are errors, nothing stays loaded', () => {
    const ck = openCheckpoint(FP8);
    const before = tf.memory().numTensors;
    expect(() => loadGlobalWeights(ck, { ...config8, vocab_size: 500 })).toThrow(
      'loadGlobalWeights(): tensor "model.embed_tokens.weight": expected shape [500, 256] but got [512, 256]',
    );
    expect(tf.memory().numTensors).toBe(before);
    ck.close();
    const d = newDir();
    rewrite(FP8, d, (name, t) => (name === 'lm_head.weight' ? { dtype: 'F8_E4M3', shape: [512, 256], data: new Uint8Array(512 * 256) } : t));
    const ck2 = openCheckpoint(d);
    expect(() => loadGlobalWeights(ck2, config8)).toThrow(/tensor "lm_head.weight": expected dtype F32 or BF16 or F16 or F64 but got F8_E4M3/);
    expect(tf.memory().numTensors).toBe(before);
    ck2.close();
  });

  it('a NaN or Infinity in a float weight is named by tensor, nothing stays loaded', () => {
    const d = newDir();
    const target = 'model.layers.0.self_attn.kv_a_layernorm.weight';
    rewrite(FP32, d, (name, t) => {
      if (name !== target) return t;
      const v = new Float32Array(t.data.slice().buffer);
      v[3] = NaN;
      v[5] = Infinity;
      return { ...t, data: new Uint8Array(v.buffer) };
    });
    expectLoadError(d, loadConfig(join(FP32, 'config.json')), 0, `loadLayerWeights(layer 0): tensor "${target}": expected finite values but got NaN at flat index 3 (2 non-finite of`);
  });

  it('an e4m3 NaN code in an FP8 weight is named by tensor', () => {
    const d = newDir();
    const target = 'model.layers.1.self_attn.kv_a_proj_with_mqa.weight';
    rewrite(FP8, d, (name, t) => (name === target ? { ...t, data: Uint8Array.from(t.data as Uint8Array, (b, i) => (i === 7 ? 0x7f : b)) } : t));
    expectLoadError(d, config8, 1, `tensor "${target}": expected finite values but got NaN at flat index 7 (1 non-finite of`);
  });

  it('layer index out of range (the MTP layer is not loaded)', () => {
    const ck = openCheckpoint(FP8);
    expect(() => loadLayerWeights(ck, config8, 3)).toThrow('loadLayerWeights(): layer must be an integer in [0, 3) but got 3');
    expect(() => loadLayerWeights(ck, config8, -1)).toThrow(RangeError);
    ck.close();
  });
});
