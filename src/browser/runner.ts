/**
 * The conformance page (entry of the runner bundle): runs the conformance engine of src/conformance/
 * unchanged, in the browser, on the TensorFlow.js backend named in the URL (`?backend=webgpu|webgl|wasm|cpu`).
 * `dsv32 conformance --backend webgpu|webgl` (src/browser_host/conformance.ts) drives it through the
 * DevTools protocol:
 *
 * 1. it waits for `window.dsv32Runner.status === 'ready'` (backend started; `backend`, `adapter` set);
 * 2. for each case it calls `load(files)` (the page fetches each `{url, path}` from the loopback server
 *    and registers the bytes at `path` in the in-memory file table of memory_fs.ts), then
 *    `runCase(c)`, which returns the case's rows exactly as the Node run would.
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
  runCase(c: Case): Promise<CheckResult[]>;
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
  async runCase(c) {
    const rows = c.type === 'golden' ? await runGoldenCase(c) : await runVectorCase(c);
    return rows;
  },
};
(window as unknown as { dsv32Runner: RunnerState }).dsv32Runner = state;

async function main(): Promise<void> {
  setWasmPaths(new URL('./wasm/', location.href).href);
  const backend = new URL(location.href).searchParams.get('backend') ?? 'webgpu';
  if (!(await tf.setBackend(backend))) throw new Error(`the ${backend} backend could not start in this browser`);
  await tf.ready();
  state.backend = backend;
  state.adapter = await describeAdapter(backend);
  state.status = 'ready';
}

main().catch((e: unknown) => {
  state.status = 'error';
  state.error = (e as Error).message ?? String(e);
});
