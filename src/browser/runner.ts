/// <reference lib="dom" />
/**
 * The conformance page (entry of the runner bundle): runs the conformance engine of src/conformance/
 * unchanged, in the browser, on the TensorFlow.js backend named in the URL (`?backend=webgpu|webgl|wasm|cpu`).
 * `dsv32 conformance --backend webgpu|webgl` (src/browser_host/conformance.ts) drives it through the
 * DevTools protocol:
 *
 * 1. it waits for `window.dsv32Runner.status === 'ready'` (backend started; `backend`, `adapter` set);
 * 2. for each case it calls `load(files)` (the page fetches each `{url, path}` from the loopback server
 *    and registers the bytes at `path` in the in-memory file table of memory_fs.ts), then
 *    `runCase(c)`, which returns the case's rows exactly as the Node run would (`runCase(c, families)`:
 *    only the golden check families named, as src/conformance/run.ts `runGoldenCase`).
 *
 * @module
 */
import { tf } from '../backend.ts';
import '@tensorflow/tfjs-backend-webgpu';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { runGoldenCase, runVectorCase, type Case } from '../conformance/run.ts';
import type { CheckResult } from '../conformance/core/rows.ts';
import { registerFile } from './memory_fs.ts';
import { describeAdapter } from './adapter.ts';

interface RunnerState {
  status: 'starting' | 'ready' | 'error';
  error?: string;
  backend?: string;
  adapter?: string;
  load(files: { url: string; path: string }[]): Promise<void>;
  runCase(c: Case, families?: string[]): Promise<CheckResult[]>;
}

const state: RunnerState = {
  status: 'starting',
  async load(files) {
    await Promise.all(files.map(async ({ url, path }) => {
      const res = await fetch(url);
      if (!res.ok) throw new Error(`cannot load ${url}: HTTP ${res.status}`);
      registerFile(path, new Uint8Array(await res.arrayBuffer()));
    }));
  },
  async runCase(c, families) {
    return c.type === 'golden' ? runGoldenCase(c, families) : runVectorCase(c);
  },
};
(window as unknown as { dsv32Runner: RunnerState }).dsv32Runner = state;

/**
 * tfjs-backend-webgpu 4.22 reads a tensor synchronously (`dataSync`) through three NEW 256×256
 * OffscreenCanvases (two with WebGPU contexts) per read; the GPU process keeps their textures while the
 * page runs, and a long synchronous check (the end-to-end steering reads thousands of times) never
 * returns to the event loop: on `public2-fp8` the GPU process grew by 20–25 MB/s until the tab was lost
 * (measured; a forced garbage collection every 256 reads did not stop it; docs/backends.md). So the
 * conformance page hands every read the same three canvases: while the backend's `readSync` runs,
 * `OffscreenCanvas` is a pool that returns them in the order the read creates them.
 */
function reuseReadCanvases(): void {
  const backend = tf.backend() as unknown as { readSync?: (id: unknown) => unknown };
  if (tf.getBackend() !== 'webgpu' || !backend.readSync) return;
  const original = globalThis.OffscreenCanvas;
  const pool: OffscreenCanvas[] = [];
  let next = 0;
  const pooled = function (width: number, height: number): OffscreenCanvas {
    const c = pool[next] ?? (pool[next] = new original(width, height));
    next++;
    return c;
  } as unknown as typeof OffscreenCanvas;
  const readSync = backend.readSync.bind(backend);
  backend.readSync = (id: unknown) => {
    next = 0;
    globalThis.OffscreenCanvas = pooled;
    try {
      return readSync(id);
    } finally {
      globalThis.OffscreenCanvas = original;
    }
  };
}

async function main(): Promise<void> {
  setWasmPaths(new URL('./wasm/', location.href).href);
  const backend = new URL(location.href).searchParams.get('backend') ?? 'webgpu';
  if (!(await tf.setBackend(backend))) throw new Error(`the ${backend} backend could not start in this browser`);
  await tf.ready();
  reuseReadCanvases();
  state.backend = backend;
  state.adapter = await describeAdapter(backend);
  state.status = 'ready';
}

main().catch((e: unknown) => {
  state.status = 'error';
  state.error = (e as Error).message ?? String(e);
});
