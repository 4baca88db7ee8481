/**
 * The WebAssembly SIMD kernels of sparse MQA attention (src/wasm/sparse_mqa.c), loaded on the memory of
 * tfjs-backend-wasm so that they read the latent cache tensors where the backend keeps them: the gather of
 * the k selected rows is fused into both GEMMs (no gathered copy, no transpose), as in FlashMLA's sparse
 * kernels. src/sparse_units.ts runs them for `sparseAttentionMqaFast` on wasm; every other backend, and a
 * wasm backend whose memory is shared (its threaded build, in browsers) or lacks SIMD, takes the XNNPACK path.
 *
 * Every argument of a kernel is a byte offset into that memory (of a tensor of the backend) or a size; the
 * kernels write only their output tensor. Layouts and the order of summation: src/wasm/sparse_mqa.c.
 * Where the module cannot be compiled synchronously (a browser's main thread) the XNNPACK path runs too.
 *
 * Browser-safe: no Node import.
 */
import { tf } from './backend.ts';
import { SPARSE_MQA_WASM_BASE64 } from './wasm/sparse_mqa.wasm.ts';

/** The two kernels, on the memory of the current tfjs-backend-wasm instance. */
export interface SparseMqaKernel {
  /**
   * zᵀ [n, Hp] = [kv ; pe][pos] · qᵀ for the n slots `pos` (int32 [n]) and the Hp heads packed in
   * qP [Hp/8][C + R][8]; Hp a multiple of 8.
   */
  scores(kv: number, pe: number, pos: number, n: number, C: number, R: number, qP: number, Hp: number, zT: number): void;
  /** o [Hp, C] = pᵀ · kv[pos] with p packed as pP [Hp/4][n][4]; Hp a multiple of 4. */
  weighted(kv: number, pos: number, n: number, C: number, pP: number, Hp: number, o: number): void;
}

/** How tfjs-backend-wasm 4.x exposes its Emscripten module (`BackendWasm.wasm`), whose `asm.memory` is the memory. */
interface EmscriptenBackend {
  wasm?: { asm?: { memory?: unknown } };
}

const kernels = new WeakMap<WebAssembly.Memory, SparseMqaKernel | null>();
let compiled: WebAssembly.Module | null | undefined;

/**
 * The compiled module (once per thread), or null where it cannot be compiled synchronously: a WebAssembly
 * without SIMD, or a browser's main thread, where Chromium refuses to compile a module over 4 KB synchronously.
 */
function sparseMqaModule(): WebAssembly.Module | null {
  if (compiled === undefined) {
    const bytes = Uint8Array.from(atob(SPARSE_MQA_WASM_BASE64), (c) => c.charCodeAt(0));
    try {
      compiled = WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

/**
 * The kernels on the current backend's memory when the backend is tfjs-backend-wasm with an unshared
 * memory and this WebAssembly has SIMD; else null (the caller takes the XNNPACK path).
 */
export function sparseMqaKernel(): SparseMqaKernel | null {
  if (tf.getBackend() !== 'wasm') return null;
  const memory = (tf.backend() as unknown as EmscriptenBackend).wasm?.asm?.memory;
  if (!(memory instanceof WebAssembly.Memory)) return null;
  if (typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer) return null;
  let kernel = kernels.get(memory);
  if (kernel === undefined) {
    const module = sparseMqaModule();
    kernel = null;
    if (module) {
      const exports = new WebAssembly.Instance(module, { env: { memory } }).exports as {
        sparse_scores: SparseMqaKernel['scores'];
        sparse_weighted: SparseMqaKernel['weighted'];
      };
      kernel = { scores: exports.sparse_scores, weighted: exports.sparse_weighted };
    }
    kernels.set(memory, kernel);
  }
  return kernel;
}
