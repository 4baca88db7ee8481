/**
 * Weights kept as the checkpoint stores them and dequantized only when used: the
 * {@link weight_matrix!DeferredMatrix} of a released checkpoint.
 *
 * - **resident**: the tensor's bytes (FP8 e4m3 codes, BF16, F16 or F32) are read once and held in JS
 *   memory, outside the WebAssembly heap; FP8 keeps its `weight_scale_inv` blocks beside them.
 * - **on demand**: nothing is held; each band is read from the shard at its byte offset when used
 *   (routed experts, which run only when the gate picks them; the embedding rows of the given tokens;
 *   the output head, read in vocabulary bands).
 *
 * Rows [r, r + n) dequantize exactly as the whole-tensor loader does (src/checkpoint.ts, official
 * `weight_dequant`): W[i, j] = e4m3(W₈[i, j]) · scale[⌊i/b₀⌋, ⌊j/b₁⌋], one float32 rounding per
 * product; BF16/F16/F32 values are exact in float32.
 *
 * A {@link MemoryMeter} counts the bytes held: weight bytes in JS plus the live backend tensors,
 * sampled whenever a band becomes a tensor (where a layer's memory peaks) and wherever the caller samples.
 *
 * @module
 */
import { tf } from './backend.ts';
import { decodeTensorBytes, DTYPE_BYTES, type Checkpoint, type Dtype } from './safetensors.ts';
import type { DeferredMatrix } from './weight_matrix.ts';
import { checkInteger, checkObject } from './internal/contract.ts';

/** float32 bytes one dequantized band may take (8 Mi elements). */
export const BAND_BYTES = 32 * 1024 * 1024;

/**
 * Rows per band for a matrix of `cols` columns: as many as fit {@link BAND_BYTES} in float32, a
 * multiple of the 128-row FP8 block when at least one block fits, at least 1.
 *
 * @example
 * ```ts
 * bandRowsFor(7168); // => 1152
 * bandRowsFor(16384); // => 512
 * ```
 */
export function bandRowsFor(cols: number): number {
  checkInteger('bandRowsFor', 'cols', cols, 0);
  const rows = Math.floor(BAND_BYTES / 4 / Math.max(1, cols));
  return rows >= 128 ? rows - (rows % 128) : Math.max(1, rows);
}

/**
 * Peak of (weight bytes held in JS + bytes of live backend tensors), over the samples taken.
 *
 * @example
 * ```ts
 * const m = new MemoryMeter();
 * m.hold(1000);
 * m.release(1000);
 * m.peak >= 1000; // => true
 * ```
 */
export class MemoryMeter {
  /** weight bytes held in JS now */
  held = 0;
  /** largest sample since construction or the last {@link MemoryMeter.restart} */
  peak = 0;

  /** counts `bytes` more held, then samples */
  hold(bytes: number): void {
    this.held += bytes;
    this.sample();
  }

  release(bytes: number): void {
    this.held -= bytes;
  }

  /** peak ← max(peak, held + backend tensor bytes) */
  sample(): void {
    this.peak = Math.max(this.peak, this.held + tf.memory().numBytes);
  }

  /** starts a new peak from the current sample; returns the previous peak */
  restart(): number {
    const p = this.peak;
    this.peak = 0;
    this.sample();
    return p;
  }
}

/** Where a stored matrix finds its bytes and how they decode. */
interface Stored {
  /** tensor name (for errors) */
  name: string;
  dtype: Dtype;
  shape: [number, number];
  /** FP8 block scales [⌈rows/b₀⌉, ⌈cols/b₁⌉] and block size, or null for a plain float tensor */
  scale: { read: () => Float32Array; block: [number, number] } | null;
  /** bytes of rows [first, first + count) */
  bytes: (first: number, count: number) => Uint8Array;
}

class StoredMatrix implements DeferredMatrix {
  readonly deferred = true;
  readonly shape: [number, number];
  readonly bandRows: number;
  private disposed = false;

  constructor(
    private readonly s: Stored,
    private readonly meter: MemoryMeter | null,
    private readonly onDispose: () => void,
  ) {
    this.shape = s.shape;
    this.bandRows = bandRowsFor(s.shape[1]);
  }

  rows(first: number, count: number): tf.Tensor2D {
    const [rows, cols] = this.shape;
    if (this.disposed) throw new Error(`${this.s.name}: rows() after dispose()`);
    if (!(Number.isSafeInteger(first) && Number.isSafeInteger(count) && first >= 0 && count >= 0 && first + count <= rows)) {
      throw new RangeError(`${this.s.name}: rows [${first}, ${first} + ${count}) must lie in [0, ${rows})`);
    }
    const values = decodeTensorBytes(this.s.dtype, this.s.bytes(first, count), this.s.name) as Float32Array;
    const w = this.s.scale ? dequantRows(values, this.s.scale.read(), this.s.scale.block, first, count, cols) : values;
    // weights must be finite: named here by tensor, as the float32 loader does (src/checkpoint.ts)
    for (let i = 0; i < w.length; i++) {
      if (!Number.isFinite(w[i]!)) {
        throw new RangeError(`tensor "${this.s.name}": expected finite values but got ${w[i]} at flat index ${first * cols + i} (row ${first + Math.floor(i / cols)})`);
      }
    }
    const t = tf.tensor2d(w, [count, cols], 'float32');
    this.meter?.sample();
    return t;
  }

  dispose(): void {
    if (!this.disposed) this.onDispose();
    this.disposed = true;
  }
}

/** W[i, j] = W₈[i, j] · scale[⌊i/b₀⌋, ⌊j/b₁⌋] for rows first..first+count−1, in place (float32). */
function dequantRows(w8: Float32Array, scale: Float32Array, [b0, b1]: [number, number], first: number, count: number, cols: number): Float32Array {
  const sCols = Math.ceil(cols / b1);
  for (let r = 0; r < count; r++) {
    const sRow = Math.floor((first + r) / b0) * sCols;
    const base = r * cols;
    for (let j = 0; j < cols; j++) w8[base + j] = w8[base + j]! * scale[sRow + Math.floor(j / b1)]!;
  }
  return w8;
}

/** A tensor of the checkpoint as a matrix: its name, and its scale tensor when FP8. */
export interface StoredTensor {
  ckpt: Checkpoint;
  /** e.g. `model.layers.3.mlp.experts.7.up_proj.weight` ([rows, cols], already checked) */
  name: string;
  /** `<prefix>.weight_scale_inv` and the block size when the weight is F8_E4M3 */
  scale?: { name: string; block: [number, number] };
}

function describe(t: StoredTensor): Pick<Stored, 'name' | 'dtype' | 'shape'> {
  const info = t.ckpt.info(t.name);
  if (info.shape.length !== 2) throw new RangeError(`${t.name}: a weight matrix must be 2-D but has shape [${info.shape}]`);
  return { name: t.name, dtype: info.dtype, shape: [info.shape[0]!, info.shape[1]!] };
}

function floats(ckpt: Checkpoint, name: string): Float32Array {
  return ckpt.read(name) as Float32Array;
}

/**
 * A matrix whose stored bytes (and FP8 scales) are read now and held in JS memory until `dispose()`:
 * the weights a layer uses on every call (attention, shared expert, dense FFN).
 *
 * @param meter counts the held bytes (and samples when a band is dequantized)
 * @example
 * ```ts
 * import { openCheckpoint } from 'dsv32/node';
 * const ckpt = openCheckpoint('fixtures/golden/public-fp8');
 * const p = 'model.layers.0.self_attn.kv_a_proj_with_mqa';
 * const m = residentMatrix({ ckpt, name: `${p}.weight`, scale: { name: `${p}.weight_scale_inv`, block: [128, 128] } });
 * m.shape; // => [160, 256]
 * m.rows(0, 2).shape; // => [2, 256]
 * m.dispose();
 * ckpt.close();
 * ```
 */
export function residentMatrix(t: StoredTensor, meter: MemoryMeter | null = null): DeferredMatrix {
  checkObject('residentMatrix', 't', t);
  const d = describe(t);
  const bytes = t.ckpt.readRaw(t.name).bytes;
  const scale = t.scale ? floats(t.ckpt, t.scale.name) : null;
  const held = bytes.byteLength + (scale?.byteLength ?? 0);
  meter?.hold(held);
  const rowBytes = d.shape[1] * DTYPE_BYTES[d.dtype];
  return new StoredMatrix(
    {
      ...d,
      scale: scale && t.scale ? { read: () => scale, block: t.scale.block } : null,
      bytes: (first, count) => bytes.subarray(first * rowBytes, (first + count) * rowBytes),
    },
    meter,
    () => meter?.release(held),
  );
}

/**
 * A matrix read from its shard only when used: each `rows(r, n)` reads those rows at their byte offset
 * (and the FP8 scales), dequantizes them and lets the bytes go. For routed experts (read only when the
 * gate picks them), the embedding (only the rows of the given tokens) and the output head (in bands).
 *
 * @example
 * ```ts
 * import { openCheckpoint } from 'dsv32/node';
 * const ckpt = openCheckpoint('fixtures/golden/public-fp8');
 * const embed = onDemandMatrix({ ckpt, name: 'model.embed_tokens.weight' });
 * embed.rows(5, 1).shape; // => [1, 256]
 * ckpt.close();
 * ```
 */
export function onDemandMatrix(t: StoredTensor, meter: MemoryMeter | null = null): DeferredMatrix {
  checkObject('onDemandMatrix', 't', t);
  const d = describe(t);
  return new StoredMatrix(
    {
      ...d,
      scale: t.scale ? { read: () => floats(t.ckpt, t.scale!.name), block: t.scale.block } : null,
      bytes: (first, count) => {
        const raw = t.ckpt.readRawRows(t.name, first, count).bytes;
        meter?.hold(raw.byteLength); // the band's bytes, until it is decoded
        meter?.release(raw.byteLength);
        return raw;
      },
    },
    meter,
    () => {},
  );
}
