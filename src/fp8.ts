/**
 * FP8 (e4m3fn) arithmetic of the official V3.2 inference code: the e4m3 codec, the per-128-block activation
 * quantizer `act_quant`, the block-scaled weight dequantizer `weight_dequant`, and `linear()`.
 *
 * e4m3fn ("fn" = finite, NaN only): 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits. No infinities;
 * codes 0x7F / 0xFF are NaN; the largest finite value is 448 = 1.75 · 2⁸; the smallest normal 2⁻⁶; the
 * smallest subnormal 2⁻⁹ [`torch.float8_e4m3fn`; docs/spec-notes.md#fp8-e4m3fn].
 *
 * Everything here is exact: the tensor functions use only float32 operations that are exact or correctly
 * rounded once (comparisons, multiplication and division by powers of two, `tf.round`, one float32
 * product or quotient), so wasm and cpu give bit-identical results.
 *
 * @module
 */
import { tf } from './backend.ts';
import { checkChoice, checkObject, checkTensors, defineContract, kindOf } from './internal/contract.ts';

const E4M3_ROUND = defineContract('e4m3Round', { x: '[...]' });
const ACT_QUANT = defineContract('actQuant', { x: '[..., N]' }, { N: 'a multiple of blockSize' });
const ACT_QUANT_DEQUANT = defineContract('actQuantDequant', { x: '[..., N]' }, { N: 'a multiple of blockSize' });
const WEIGHT_DEQUANT = defineContract('weightDequant', { w8: '[O, I]', scaleInv: '[⌈O/B⌉, ⌈I/B⌉]' }, { B: 'block' });
const LINEAR = defineContract('linear', { 'w.weight': '[Out, In]', x: '[..., In]' });
import { matMulWeightT, weightShape, type WeightMatrix } from './weight_matrix.ts';

/**
 * The `Linear` record of src/checkpoint.ts, structurally: `weight` [out, in] float32 (a tensor, or held
 * as stored and dequantized per use, src/weight_matrix.ts),
 * `fp8` true when the checkpoint stored the weight as F8_E4M3 (then activations are block-quantized first).
 */
export interface LinearLike {
  weight: WeightMatrix;
  fp8: boolean;
}

/** Activation scale format: `'ue8m0'` = power-of-two scales (the 671B config), `null` = plain amax/448. */
export type ScaleFmt = 'ue8m0' | null;

/**
 * Where an FP8 activation quantizer sits in the model (the seam of the model forward's `probe`, src/model.ts
 * `ForwardProbe`). `input` names the tensor being quantized; several linears that quantize the same
 * tensor share it (the official code quantizes it once per linear, with the same result):
 *
 * | input | quantized before | rows |
 * |---|---|---|
 * | `attn.in` | wq_a, wkv_a, indexer wk | tokens |
 * | `attn.qr` | wq_b, indexer wq_b | tokens |
 * | `kv.latent` | the latent's FP8 round trip (before caching) | tokens |
 * | `wkv_b.in` | wkv_b in MHA mode (the cached latents, quantized again) | cached positions |
 * | `wo.in` | wo | tokens |
 * | `indexer.q`, `indexer.k` | the indexer's q / k quantization (after the Hadamard) | tokens |
 * | `ffn.in` | w1, w3 of the dense FFN, of every routed expert and of the shared expert | tokens |
 * | `ffn.act` | w2 (the SwiGLU product of one `branch`) | tokens |
 */
export interface QuantSite {
  /** the quantized tensor (table above). */
  input: 'attn.in' | 'attn.qr' | 'kv.latent' | 'wkv_b.in' | 'wo.in' | 'indexer.q' | 'indexer.k' | 'ffn.in' | 'ffn.act';
  /** the consumer (`wq_a`, `indexer.wk`, `kv_norm`, `expert 3.w1`, ...). */
  linear: string;
  /** FFN branch: `dense`, `shared` or `expert E` (for `ffn.in` and `ffn.act`). */
  branch?: string;
  /** row r of the quantizer input holds token `tokens[r]` of the call (default: row r is token r). */
  tokens?: ArrayLike<number>;
  /** layer index (filled in by the model forward). */
  layer?: number;
}

/**
 * A rounding probe of one quantizer: receives the quantizer input `x` [..., N], its e4m3 rounding `q`
 * [..., N] (e4m3 values as float32) and the block scales [..., N/B]; may return a replacement for `q` of
 * the same shape (some elements rounded to their other e4m3 neighbour), or nothing to keep `q`. The
 * tensors are valid during the call only; a returned tensor is owned by the quantizer.
 */
export type QuantProbe = (x: tf.Tensor, q: tf.Tensor, scale: tf.Tensor) => tf.Tensor | null | undefined;

/** A probe of every quantizer of a forward pass, told which {@link QuantSite} it is called at. */
export type RoundingProbe = (site: QuantSite, x: tf.Tensor, q: tf.Tensor, scale: tf.Tensor) => tf.Tensor | null | undefined;

/**
 * Binds a {@link RoundingProbe} to one site (undefined when there is no probe: the quantizer runs as usual).
 *
 * @example
 * ```ts
 * probeAt(undefined, { input: 'wo.in', linear: 'wo' }); // => undefined
 * ```
 */
export function probeAt(probe: RoundingProbe | undefined, site: QuantSite): QuantProbe | undefined {
  if (probe !== undefined && typeof probe !== 'function') throw new TypeError(`probeAt(): probe must be a function or undefined but got ${kindOf(probe)}`);
  if (probe !== undefined) checkObject('probeAt', 'site', site);
  return probe ? (x, q, scale) => probe(site, x, q, scale) : undefined;
}

/** Largest finite e4m3fn value (`torch.finfo(torch.float8_e4m3fn).max`). */
export const FP8_E4M3_MAX = 448;
/** Smallest positive normal e4m3fn value, 2⁻⁶. */
export const FP8_E4M3_MIN_NORMAL = 2 ** -6;
/** Smallest positive subnormal e4m3fn value, 2⁻⁹ (also the spacing of the subnormals). */
export const FP8_E4M3_MIN_SUBNORMAL = 2 ** -9;
/** Default block size of `act_quant` and of the weight scales (`weight_block_size` [128, 128]). */
export const FP8_BLOCK = 128;
/** float32(1/448): the official kernel multiplies by this rounded reciprocal instead of dividing by 448. */
export const FP8_E4M3_MAX_INV = Math.fround(1 / FP8_E4M3_MAX);

// --- Scalar codec ---

/**
 * Decodes one e4m3fn byte to its value.
 *
 * value = (−1)^s · 2^(e−7) · (1 + m/8) for e ≥ 1, (−1)^s · 2⁻⁹ · m for e = 0; 0x7F and 0xFF are NaN.
 * Code 0x80 decodes to −0.
 *
 * @param code integer 0..255
 * @throws RangeError when `code` is not an integer in 0..255
 * @example
 * ```ts
 * e4m3Decode(0x7e); // => 448
 * e4m3Decode(0x01); // => 0.001953125
 * Number.isNaN(e4m3Decode(0xff)); // => true
 * ```
 */
export function e4m3Decode(code: number): number {
  if (typeof code !== 'number') throw new TypeError(`e4m3Decode(): code must be an integer in 0..255 but got ${kindOf(code)}`);
  if (!Number.isInteger(code) || code < 0 || code > 255) {
    throw new RangeError(`e4m3Decode(): code must be an integer in 0..255 but got ${code}`);
  }
  const sign = code & 0x80 ? -1 : 1;
  const e = (code >> 3) & 0xf;
  const m = code & 0x7;
  if (e === 15 && m === 7) return NaN;
  if (e === 0) return sign * m * FP8_E4M3_MIN_SUBNORMAL;
  return sign * (1 + m / 8) * 2 ** (e - 7);
}

/** Round half to even of a non-negative number. */
function roundHalfEven(y: number): number {
  const f = Math.floor(y);
  const d = y - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Largest power of two ≤ a (a > 0 finite), exact. */
function floorPow2Scalar(a: number): number {
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1;
  if (2 ** (e + 1) <= a) e += 1;
  return 2 ** e;
}

/**
 * Encodes a number to the nearest e4m3fn code: round to nearest, ties to even mantissa, on the e4m3 grid
 * including subnormals; |x| ≥ 448 (and ±∞) saturate to ±448 (the official code clamps to ±448 before the
 * cast); NaN → 0x7F; −0 → code 0 (the sign of a zero is dropped).
 *
 * The input is rounded as given (one rounding): pass float32 values to get float32 semantics.
 *
 * @deviation −0 encodes to code 0 (a torch cast keeps the sign, 0x80); the value is the same. RNE and
 * saturation are assumed for the TileLang cast (UNVERIFIED; docs/deviations.md).
 * @param x value to encode
 * @returns code 0..255
 * @example
 * ```ts
 * // 1.0625 is the midpoint of 1 and 1.125: ties go to the even mantissa (1 = 0x38)
 * e4m3Encode(1.0625); // => 0x38
 * e4m3Encode(1000); // => 0x7e
 * e4m3Encode(-0.3); // => 0xaa
 * ```
 */
export function e4m3Encode(x: number): number {
  if (typeof x !== 'number') throw new TypeError(`e4m3Encode(): x must be a number but got ${kindOf(x)}`);
  if (Number.isNaN(x)) return 0x7f;
  const sign = x < 0 ? 0x80 : 0;
  const a = Math.abs(x);
  if (a >= FP8_E4M3_MAX) return sign | 0x7e;
  if (a < FP8_E4M3_MIN_NORMAL) {
    // subnormal grid k · 2⁻⁹; k = 8 is the smallest normal, code 0x08, so the carry is free
    const k = roundHalfEven(a / FP8_E4M3_MIN_SUBNORMAL);
    return k === 0 ? 0 : sign | k;
  }
  const p = floorPow2Scalar(a); // 2^e, e in −6..8
  const e = Math.round(Math.log2(p));
  const m = roundHalfEven(a / (p / 8)); // 8..16; 16 carries into the exponent field
  return sign | (((e + 7) << 3) + (m - 8));
}

const DECODE_TABLE: Float32Array = (() => {
  const t = new Float32Array(256);
  for (let c = 0; c < 256; c++) t[c] = e4m3Decode(c);
  return t;
})();

/**
 * Decodes raw e4m3fn bytes (e.g. an `F8_E4M3` safetensors payload) to float32 values.
 *
 * @param bytes one code per byte
 * @returns the decoded values, same length (0x7F/0xFF → NaN, 0x80 → −0)
 * @example
 * ```ts
 * decodeE4m3Bytes(new Uint8Array([0x38, 0xc0, 0x7e])); // => [1, -2, 448]
 * ```
 */
export function decodeE4m3Bytes(bytes: Uint8Array): Float32Array {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`decodeE4m3Bytes(): bytes must be a Uint8Array but got ${kindOf(bytes)}`);
  const out = new Float32Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = DECODE_TABLE[bytes[i]!]!;
  return out;
}

// --- Exact powers of two with tensor ops ---

/** 2^k for k = −126..127 (every normal float32 power of two), for exact look-ups. */
const POW2_MIN = -126;
const POW2_TABLE: Float32Array = (() => {
  const t = new Float32Array(254);
  for (let k = 0; k < t.length; k++) t[k] = 2 ** (k + POW2_MIN);
  return t;
})();

/**
 * Largest power of two ≤ a, element-wise, exact for a in [2⁻¹²⁶, 2¹²⁸) (a ≤ 0 gives 2⁻¹²⁶).
 * floor(log2 a) from `tf.log` may be off by one near a power of two, on any backend, so the estimate
 * is only an index into a table of exact powers of two and is then corrected by exact comparisons.
 */
function floorPow2(a: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const est = tf.clipByValue(tf.floor(tf.mul(tf.log(a), 1 / Math.LN2)), POW2_MIN, 127);
    let p: tf.Tensor = tf.gather(tf.tensor1d(POW2_TABLE), tf.cast(tf.sub(est, POW2_MIN), 'int32'));
    p = tf.where(tf.greater(p, a), tf.mul(p, 0.5), p); // estimate one too high
    const p2 = tf.mul(p, 2);
    return tf.where(tf.lessEqual(p2, a), p2, p); // estimate one too low
  });
}

/**
 * Smallest power of two ≥ s for normal float32 s > 0: the official ue8m0 rounding
 * `2^(exponent − 127 + (mantissa ≠ 0))` read from the float32 bits, expressed without bit casts.
 */
function ceilPow2(s: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const p = floorPow2(s);
    return tf.where(tf.less(p, s), tf.mul(p, 2), p);
  });
}

// --- Tensor rounding to e4m3 ---

/**
 * Rounds every element to the nearest e4m3fn value (ties to even, saturating at ±448), returned as float32:
 * the values that `x.to(torch.float8_e4m3fn)` after a clamp to ±448 would hold. NaN stays NaN.
 *
 * Method (all steps exact in float32): a = min(|x|, 448); the binade 2^e = largest power of two ≤ max(a, 2⁻⁶);
 * the e4m3 spacing there is ulp = 2^(e−3) (2⁻⁹ for subnormals); q = round_half_even(a / ulp) · ulp.
 * `tf.round` is round-half-to-even on wasm and cpu (tested).
 *
 * @param x any shape, float32
 * @returns same shape, float32 values on the e4m3 grid
 * @example
 * ```ts
 * e4m3Round(tf.tensor1d([0.3, 1.0625, 500, -17])); // => [0.3125, 1, 448, -16]
 * ```
 */
export function e4m3Round(x: tf.Tensor): tf.Tensor {
  checkTensors(E4M3_ROUND, { x });
  return tf.tidy(() => {
    const xf = tf.cast(x, 'float32');
    const nan = tf.isNaN(xf);
    // minimum/maximum propagate NaN on every backend; clipByValue does not on wasm, hence the mask
    const a = tf.minimum(tf.where(nan, tf.zerosLike(xf), tf.abs(xf)), FP8_E4M3_MAX);
    const binade = floorPow2(tf.maximum(a, FP8_E4M3_MIN_NORMAL)); // 2^e, e in −6..8
    const ulp = tf.mul(binade, 1 / 8);
    const q = tf.mul(tf.round(tf.div(a, ulp)), ulp);
    const signed = tf.where(tf.less(xf, 0), tf.neg(q), q);
    return tf.where(nan, xf, signed);
  });
}

// --- act_quant (per-block activation quantization) ---

function checkScaleFmt(fn: string, scaleFmt: unknown): void {
  if (scaleFmt !== null && scaleFmt !== 'ue8m0') {
    throw new TypeError(`${fn}(): scaleFmt must be 'ue8m0' or null but got ${JSON.stringify(scaleFmt)}`);
  }
}

function checkBlock(fn: string, name: string, block: number): void {
  if (!Number.isInteger(block) || block < 1) {
    throw new RangeError(`${fn}(): ${name} must be a positive integer but got ${block}`);
  }
}

/**
 * Block-wise FP8 quantization of activations: the official `act_quant` [`kernel.py` `act_quant_kernel`;
 * docs/spec-notes.md#activation-quantization].
 *
 * For each contiguous block of `blockSize` elements along the last dim:
 * - amax = max(max|x_i|, 1e−4);
 * - s = amax × float32(1/448) in float32 (a product with the rounded reciprocal, NOT amax/448 — they differ
 *   in the last bit for some amax); with `ue8m0`, s is rounded UP to a power of two (2^ceil(log2 s) from the
 *   float32 bits);
 * - q_i = e4m3(clamp(x_i / s, −448, 448)) with the division in float32 and round-to-nearest-even.
 *
 * @deviation the TileLang cast's rounding mode is not documented; RNE assumed (docs/deviations.md).
 * @param x [..., N] float32, N divisible by `blockSize`
 * @param scaleFmt `'ue8m0'` (power-of-two scales) or `null`
 * @param blockSize block length along the last dim (default 128)
 * @param probe optional: sees x, q and the scales and may return a replacement q ({@link QuantProbe}); the
 *   conformance suite uses it to follow the official rounding at an e4m3 midpoint
 * @returns q [..., N] e4m3 values as float32, scale [..., N/blockSize] float32
 * @throws RangeError when N is not divisible by `blockSize`, or x is a scalar
 * @throws TypeError when `scaleFmt` is not 'ue8m0' or null
 * @example
 * ```ts
 * const { q, scale } = actQuant(tf.fill([1, 128], 0.5), 'ue8m0');
 * // 0.5 × float32(1/448) = 0.001116 rounded up to a power of two: 2⁻⁹
 * scale; // => [[0.001953125]]
 * q.dataSync()[0]; // => 256
 * ```
 */
export function actQuant(
  x: tf.Tensor,
  scaleFmt: ScaleFmt,
  blockSize = FP8_BLOCK,
  probe?: QuantProbe,
): { q: tf.Tensor; scale: tf.Tensor } {
  return quantize(ACT_QUANT, x, scaleFmt, blockSize, probe);
}

function quantize(contract: typeof ACT_QUANT, x: tf.Tensor, scaleFmt: ScaleFmt, blockSize: number, probe?: QuantProbe): { q: tf.Tensor; scale: tf.Tensor } {
  const fn = contract.fn;
  const { N: n } = checkTensors(contract, { x }) as Record<'N', number>;
  checkScaleFmt(fn, scaleFmt);
  checkBlock(fn, 'blockSize', blockSize);
  if (n % blockSize !== 0) {
    throw new RangeError(`${fn}(): x must be [..., N] with N a multiple of blockSize ${blockSize} but got [${x.shape.join(', ')}]`);
  }
  return tf.tidy(() => {
    const lead = x.shape.slice(0, -1);
    const xb = tf.reshape(tf.cast(x, 'float32'), [...lead, n / blockSize, blockSize]); // [..., N/B, B]
    const amax = tf.maximum(tf.max(tf.abs(xb), -1), 1e-4); // [..., N/B]
    let scale = tf.mul(amax, tf.scalar(FP8_E4M3_MAX_INV)); // float32 product
    if (scaleFmt === 'ue8m0') scale = ceilPow2(scale);
    // e4m3Round saturates at ±448, which is the official clamp before the cast
    const q = tf.reshape(e4m3Round(tf.div(xb, tf.expandDims(scale, -1))), x.shape); // [..., N]
    const replaced = probe?.(x, q, scale);
    if (replaced && replaced.shape.join() !== x.shape.join()) {
      throw new RangeError(`${fn}(): a probe must return q of shape [${x.shape}] but returned [${replaced.shape}]`);
    }
    return { q: replaced ?? q, scale };
  });
}

/**
 * The FP8 round trip of activations: `actQuant` then q · s per block, float32. This is what an FP8 Linear
 * effectively sees as input, and what V3.2 applies to the normalized KV latent before caching
 * [`inference/model.py` `MLA.forward`; docs/spec-notes.md#mla].
 *
 * @param x [..., N] float32, N divisible by `blockSize`
 * @param scaleFmt `'ue8m0'` or `null`
 * @param blockSize default 128
 * @param probe optional rounding probe ({@link QuantProbe})
 * @returns [..., N] dequantized values
 * @example
 * ```ts
 * // s = 2⁻¹⁰; 0.3 / s = 307.2 rounds to the e4m3 value 320; 320 · 2⁻¹⁰ = 0.3125
 * actQuantDequant(tf.fill([128], 0.3), 'ue8m0').dataSync()[0]; // => 0.3125
 * ```
 */
export function actQuantDequant(x: tf.Tensor, scaleFmt: ScaleFmt, blockSize = FP8_BLOCK, probe?: QuantProbe): tf.Tensor {
  const { q, scale } = quantize(ACT_QUANT_DEQUANT, x, scaleFmt, blockSize, probe);
  return tf.tidy(() => {
    const n = x.shape[x.rank - 1]!;
    const lead = x.shape.slice(0, -1);
    const qb = tf.reshape(q, [...lead, n / blockSize, blockSize]);
    const out = tf.reshape(tf.mul(qb, tf.expandDims(scale, -1)), x.shape);
    q.dispose();
    scale.dispose();
    return out;
  });
}

// --- weight_dequant (128×128 weight blocks) ---

/**
 * Dequantizes a block-scaled FP8 weight: W[i, j] = W₈[i, j] · scale[⌊i/B⌋, ⌊j/B⌋] [docs/spec-notes.md#fp8-weights; official
 * `weight_dequant`]. `weight_scale_inv` is a multiplier despite its name. The last row/column block may be
 * partial (e.g. wkv_a's 576 rows: 5 row blocks, the last covering 64 rows).
 *
 * @param w8 [out, in] e4m3 values as float32 (decode the codes first)
 * @param scaleInv [ceil(out/B), ceil(in/B)] float32
 * @param block B, default 128
 * @returns [out, in] float32
 * @throws RangeError on rank or shape mismatch
 * @example
 * ```ts
 * // row 1, columns 126..129: the last two fall in the partial second column block
 * weightDequant(tf.ones([2, 130]), tf.tensor2d([[0.5, 4]]), 128).dataSync().slice(256, 260); // => [0.5, 0.5, 4, 4]
 * ```
 */
export function weightDequant(w8: tf.Tensor, scaleInv: tf.Tensor, block = FP8_BLOCK): tf.Tensor {
  checkBlock('weightDequant', 'block', block);
  const { O: rows, I: cols } = checkTensors(WEIGHT_DEQUANT, { w8, scaleInv }, { B: block }) as Record<'O' | 'I', number>;
  const rowBlock = Int32Array.from({ length: rows }, (_, i) => Math.floor(i / block));
  const colBlock = Int32Array.from({ length: cols }, (_, j) => Math.floor(j / block));
  return tf.tidy(() => {
    const s = tf.gather(tf.gather(tf.cast(scaleInv, 'float32'), rowBlock, 0), colBlock, 1); // [out, in]
    return tf.mul(tf.cast(w8, 'float32'), s);
  });
}

// --- linear() ---

/**
 * The official `linear()`: y = x · Wᵀ, where an FP8-stored weight first makes the activations go through the
 * FP8 round trip (`act_quant` with `scaleFmt`, block 128).
 *
 * @deviation the official FP8 path is `fp8_gemm` (FP8 operands, per-128-k-block fp32 accumulation scaled by
 * s_x · s_W, bf16 output); here the dequantized operands x̂, Ŵ are multiplied in float32 — equal up to
 * float32 summation order, no bf16 output rounding.
 * @param x [..., in] float32 (in divisible by 128 when `w.fp8`)
 * @param w `{ weight: [out, in], fp8 }` (the `Linear` record of src/checkpoint.ts)
 * @param scaleFmt activation scale format when `w.fp8`
 * @param probe optional rounding probe of the activation quantizer ({@link QuantProbe}; conformance seam)
 * @returns [..., out]
 * @throws RangeError when the last dim of x is not `in`
 * @example
 * ```ts
 * linear(tf.tensor2d([[1, 2]]), { weight: tf.tensor2d([[1, 0], [1, 1]]), fp8: false }, null); // => [[1, 3]]
 * ```
 */
export function linear(x: tf.Tensor, w: LinearLike, scaleFmt: ScaleFmt, probe?: QuantProbe): tf.Tensor {
  checkObject('linear', 'w', w);
  const { Out: out, In: inDim } = checkTensors(LINEAR, { x, w }) as Record<'Out' | 'In', number>;
  checkChoice('linear', 'w.fp8', w.fp8, [true, false]);
  if (w.fp8) {
    checkScaleFmt('linear', scaleFmt);
    if (inDim % FP8_BLOCK !== 0) {
      throw new RangeError(`linear(): x must be [..., In] with In a multiple of ${FP8_BLOCK} (an FP8 weight quantizes x in blocks) but got [${x.shape.join(', ')}]`);
    }
  }
  return tf.tidy(() => {
    const xin = w.fp8 ? actQuantDequant(x, scaleFmt, FP8_BLOCK, probe) : x;
    const y = matMulWeightT(tf.reshape(xin, [-1, inDim]) as tf.Tensor2D, w.weight); // [M, out]
    return tf.reshape(y, [...x.shape.slice(0, -1), out]);
  });
}
