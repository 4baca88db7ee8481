/**
 * Tensor backend selection.
 *
 * dsv32 computes with TensorFlow.js. Three backends can run it:
 *
 * | name         | package                                             | notes                                         |
 * |--------------|-----------------------------------------------------|-----------------------------------------------|
 * | `tensorflow` | `@tensorflow/tfjs-node-gpu`, else `@tensorflow/tfjs-node` | native libtensorflow, CUDA when present (optional dependency) |
 * | `wasm`       | `@tensorflow/tfjs-backend-wasm`                     | the embedded default: XNNPACK, SIMD           |
 * | `cpu`        | `@tensorflow/tfjs-backend-cpu`                      | plain JavaScript, slow, the most portable     |
 *
 * Selection: `DSV32_BACKEND` (`tensorflow` | `wasm` | `cpu`) if set, else the first of
 * tfjs-node-gpu → tfjs-node → wasm → cpu that loads. The native packages are optional: their
 * install downloads libtensorflow, which fails without internet, and npm then skips them.
 *
 * Gradients: the node build of `@tensorflow/tfjs-core` registers no gradient functions; the
 * `@tensorflow/tfjs` union package does, so this module imports it once for its side effect and
 * `tf.grad` works on every backend.
 *
 * @module
 */
import * as tf from '@tensorflow/tfjs-core';
// registers every gradient function (the tfjs-core node bundle alone registers none)
import '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import * as wasm from '@tensorflow/tfjs-backend-wasm';

export { tf };

/** Names accepted by `DSV32_BACKEND` and {@link initBackend}. */
export type BackendName = 'tensorflow' | 'wasm' | 'cpu';

/** What {@link initBackend} chose. */
export interface BackendInfo {
  /** dsv32 name of the backend. */
  name: BackendName;
  /** tfjs's own backend name (`tensorflow`, `wasm`, `cpu`). */
  tfjsBackend: string;
  /** the package that provides it. */
  package: string;
  /** version of that package. */
  version: string;
  /** threads the backend computes with (1 when it does not say). */
  threads: number;
  /** true when the native backend runs on a CUDA device. */
  cuda: boolean;
}

const BACKEND_NAMES: readonly BackendName[] = ['tensorflow', 'wasm', 'cpu'];

let current: BackendInfo | undefined;
let nativePackage: { name: string; version: string; cuda: boolean } | undefined;

async function loadNative(): Promise<boolean> {
  if (nativePackage) return true;
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      const mod: { version?: Record<string, string> } = await import(pkg);
      const version = mod.version?.['tfjs-node'] ?? tf.version_core;
      nativePackage = { name: pkg, version, cuda: pkg.endsWith('-gpu') };
      return true;
    } catch {
      // not installed, or libtensorflow missing: try the next one
    }
  }
  return false;
}

async function tryBackend(name: BackendName): Promise<BackendInfo | undefined> {
  if (name === 'tensorflow') {
    if (!(await loadNative())) return undefined;
    if (!(await tf.setBackend('tensorflow'))) return undefined;
    await tf.ready();
    const n = nativePackage!;
    return { name, tfjsBackend: 'tensorflow', package: n.name, version: n.version, threads: 1, cuda: n.cuda && cudaInUse() };
  }
  if (name === 'wasm') {
    if (!(await tf.setBackend('wasm'))) return undefined;
    await tf.ready();
    return {
      name, tfjsBackend: 'wasm', package: '@tensorflow/tfjs-backend-wasm', version: wasm.version_wasm,
      threads: wasm.getThreadsCount(), cuda: false,
    };
  }
  if (!(await tf.setBackend('cpu'))) return undefined;
  await tf.ready();
  return { name, tfjsBackend: 'cpu', package: '@tensorflow/tfjs-backend-cpu', version: tf.version_core, threads: 1, cuda: false };
}

/** tfjs-node-gpu exposes no direct query; the GPU build logs its device, and the backend's binding says. */
function cudaInUse(): boolean {
  try {
    const backend = tf.backend() as unknown as { binding?: { isUsingGpuDevice?: () => boolean } };
    return backend.binding?.isUsingGpuDevice?.() ?? true;
  } catch {
    return false;
  }
}

/**
 * Selects and initialises the tensor backend. Idempotent: a second call with the same
 * (or no) name returns the backend already chosen; a call with another name switches.
 *
 * @param name backend to use; default `process.env.DSV32_BACKEND`, else the first that loads
 *   of tensorflow → wasm → cpu.
 * @throws TypeError when `name` (or `DSV32_BACKEND`) is not a backend name.
 * @throws Error when the named backend cannot be loaded.
 * @example
 * ```ts
 * const info = await initBackend('cpu');
 * info.name; // => 'cpu'
 * ```
 */
export async function initBackend(name?: BackendName): Promise<BackendInfo> {
  // `process` is absent in a browser: there the default is the first backend that loads
  const fromEnv = typeof process === 'undefined' ? undefined : process.env?.DSV32_BACKEND;
  const requested = name ?? (fromEnv ? (fromEnv as BackendName) : undefined);
  if (requested !== undefined && !BACKEND_NAMES.includes(requested)) {
    throw new TypeError(
      `initBackend(): name (the backend) must be one of ${BACKEND_NAMES.join(', ')} (argument or DSV32_BACKEND) but got '${String(requested)}'`,
    );
  }
  if (current && (requested === undefined || requested === current.name) && tf.getBackend() === current.tfjsBackend) {
    return current;
  }
  if (requested) {
    const info = await tryBackend(requested);
    if (!info) {
      throw new Error(
        `initBackend(): backend '${requested}' could not be loaded` +
          (requested === 'tensorflow' ? ' (install @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node with network access)' : ''),
      );
    }
    current = info;
    return info;
  }
  for (const candidate of BACKEND_NAMES) {
    const info = await tryBackend(candidate);
    if (info) {
      current = info;
      return info;
    }
  }
  throw new Error('initBackend(): no tfjs backend could be loaded (tried tensorflow, wasm, cpu)');
}

/**
 * The backend chosen by the last {@link initBackend} call, or undefined before the first. Cheap and
 * synchronous: for logs and reports (the CLI prints it in every summary line), never a selection.
 *
 * @example
 * ```ts
 * await initBackend('cpu');
 * backendInfo()?.name; // => 'cpu'
 * backendInfo()?.package; // => '@tensorflow/tfjs-backend-cpu'
 * backendInfo()?.tfjsBackend === tf.getBackend(); // => true
 * ```
 */
export function backendInfo(): BackendInfo | undefined {
  return current;
}
