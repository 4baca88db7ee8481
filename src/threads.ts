/**
 * Worker threads for the fast DSA kernels (Node only; src/sparse_fast.ts stays browser-safe and takes
 * the pool as an option). Each worker holds its own tfjs backend instance; inputs and outputs live in
 * SharedArrayBuffers; the calls are synchronous:
 *
 *   run(kernel, args, units): units [0, units) are cut into `threads` contiguous ranges; each worker
 *   receives its range (MessagePort, read with receiveMessageOnPort), runs the kernel of
 *   src/sparse_kernels.ts over it, replies, and acknowledges the call's sequence number in its own slot
 *   of a shared Int32Array (Atomics); the calling thread waits with Atomics.wait (allowed on Node's main
 *   thread) until every slot holds it. Messages and replies carry the sequence number, so a message that
 *   arrives late is waited for and a stale one is never taken for the current call.
 *
 * A unit does the same arithmetic on any thread, so results are bit-identical to one thread.
 * `DSV32_THREADS` sets the default thread count (default: every core, `os.availableParallelism()`).
 *
 * @example
 * ```ts
 * import { sparseAttentionMqaFast } from 'dsv32/sparse_fast';
 * const pool = await createKernelPool({ threads: 2 });
 * const selected = tf.tensor2d([[0, -1], [0, 1]], [2, 2], 'int32'); // query 0 sees key 0, query 1 keys 0 and 1
 * const o = sparseAttentionMqaFast(tf.ones([2, 1, 2]), tf.zeros([2, 1, 1]), tf.tensor2d([[1, 0], [0, 1]]), tf.zeros([2, 1]), selected, 0, 1, { pool });
 * o.arraySync(); // => [[[1, 0]], [[0.5, 0.5]]]
 * await pool.close();
 * ```
 * @module
 */
import os from 'node:os';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { tf, type BackendName } from './backend.ts';
import type { KernelPool } from './sparse_fast.ts';
import type { KernelArgs, KernelName } from './sparse_kernels.ts';
import { checkObject } from './internal/contract.ts';
import { receiveCall } from './internal/receive_call.ts';

/** Slots of the shared control array: the current call, the quit flag, then one acknowledgement per worker. */
export const CONTROL = { seq: 0, quit: 1, acks: 2 } as const;

/** The worker pool of {@link createKernelPool}: a {@link KernelPool} that must be closed. */
export interface NodeKernelPool extends KernelPool {
  /** Terminates the workers and frees their tensors; the pool cannot run afterwards. */
  close(): Promise<void>;
  /** tf.memory().numTensors of each worker (to check that calls leak nothing). */
  workerTensors(): number[];
}

/**
 * The default thread count: `DSV32_THREADS` if set (an integer ≥ 1), else every core.
 * @throws RangeError naming DSV32_THREADS when it is not an integer ≥ 1.
 */
export function defaultThreads(env: NodeJS.ProcessEnv = process.env): number {
  checkObject('defaultThreads', 'env', env);
  const v = env.DSV32_THREADS;
  if (v === undefined || v === '') return os.availableParallelism();
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`DSV32_THREADS must be an integer ≥ 1 but got '${v}'`);
  return n;
}

/** Whether this runtime can run the pool (worker threads, SharedArrayBuffer, Atomics.wait). */
export function threadsAvailable(): string | null {
  if (typeof SharedArrayBuffer !== 'function') return 'SharedArrayBuffer is not available';
  if (typeof Atomics?.wait !== 'function') return 'Atomics.wait is not available';
  if (typeof Worker !== 'function') return 'node:worker_threads is not available';
  return null;
}

interface WorkerHandle {
  worker: Worker;
  port: MessagePort;
}

/**
 * Starts `threads` workers (default {@link defaultThreads}), each with the tfjs backend `backend`
 * (default: the active one, so that results match the calling thread bit for bit).
 * @throws Error when threads are unavailable here or a worker fails to start.
 */
export async function createKernelPool(opts: { threads?: number; backend?: BackendName } = {}): Promise<NodeKernelPool> {
  checkObject('createKernelPool', 'opts', opts);
  const threads = opts.threads ?? defaultThreads();
  if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`createKernelPool(): threads must be an integer ≥ 1 but got ${threads}`);
  const missing = threadsAvailable();
  if (missing) throw new Error(`createKernelPool(): worker threads are unavailable here: ${missing}`);
  const backend = opts.backend ?? (tf.getBackend() as BackendName);
  const control = new Int32Array(new SharedArrayBuffer(4 * (CONTROL.acks + threads)));
  // from the sources (tsx, vitest) the .mjs entry registers tsx; the compiled package runs threads_worker.js
  const workerUrl = new URL(import.meta.url.endsWith('.ts') ? './threads_worker.mjs' : './threads_worker.js', import.meta.url);
  const handles: WorkerHandle[] = [];
  try {
    for (let i = 0; i < threads; i++) {
      const { port1, port2 } = new MessageChannel();
      const worker = new Worker(workerUrl, { workerData: { backend, control, port: port2, index: i }, transferList: [port2] });
      handles.push({ worker, port: port1 });
    }
    await Promise.all(
      handles.map(
        ({ worker }, i) =>
          new Promise<void>((resolve, reject) => {
            worker.once('message', (m: { ready?: boolean; error?: string }) => (m.ready ? resolve() : reject(new Error(m.error ?? 'no ready message'))));
            worker.once('error', (e) => reject(e));
            worker.once('exit', (code) => reject(new Error(`worker ${i} exited with code ${code} before it was ready`)));
          }),
      ),
    );
  } catch (e) {
    await Promise.all(handles.map((h) => h.worker.terminate()));
    throw new Error(`createKernelPool(): a worker failed to start: ${(e as Error).message}`);
  }
  for (const h of handles) {
    h.worker.removeAllListeners();
    h.worker.unref(); // a pool that is never closed does not keep the process alive
    h.port.unref();
  }
  return makePool(threads, control, handles);
}

function makePool(threads: number, control: Int32Array, handles: WorkerHandle[]): NodeKernelPool {
  const shared = new WeakMap<tf.Tensor, Float32Array | Int32Array>();
  let closed = false;
  const share = <A extends Float32Array | Int32Array>(data: A): A => {
    const copy = (data instanceof Int32Array ? new Int32Array(new SharedArrayBuffer(data.byteLength)) : new Float32Array(new SharedArrayBuffer(data.byteLength))) as A;
    copy.set(data);
    return copy;
  };
  const call = (message: Record<string, unknown>): unknown[] => {
    if (closed) throw new Error('KernelPool.run(): the pool is closed');
    const seq = Atomics.load(control, CONTROL.seq) + 1; // the sequence number this call signals
    handles.forEach((h, i) => h.port.postMessage({ ...message, index: i, seq }));
    Atomics.store(control, CONTROL.seq, seq);
    Atomics.notify(control, CONTROL.seq);
    for (let i = 0; i < handles.length; i++) {
      for (;;) {
        const ack = Atomics.load(control, CONTROL.acks + i);
        if (ack >= seq) break;
        Atomics.wait(control, CONTROL.acks + i, ack, 1000);
      }
    }
    const replies = handles.map((h, i) => {
      const r = receiveCall<{ seq: number; error?: string; value?: unknown }>(h.port, seq, 'reply');
      return typeof r === 'string' ? { seq, error: `kernel worker ${i}: ${r}` } : r;
    });
    const failed = replies.find((r) => r.error);
    if (failed) throw new Error(failed.error);
    return replies.map((r) => r.value);
  };
  return {
    threads,
    shareTensor(t) {
      let data = shared.get(t);
      if (!data) {
        data = share(t.dataSync() as Float32Array | Int32Array);
        shared.set(t, data);
      }
      return data;
    },
    share,
    allocFloat32: (n) => new Float32Array(new SharedArrayBuffer(4 * n)),
    allocInt32: (n) => new Int32Array(new SharedArrayBuffer(4 * n)),
    run<N extends KernelName>(name: N, args: KernelArgs[N], units: number) {
      const per = Math.ceil(units / threads);
      const ranges = handles.map((_, i) => [Math.min(units, i * per), Math.min(units, (i + 1) * per)]);
      call({ kind: 'run', kernel: name, args, ranges });
    },
    workerTensors() {
      return call({ kind: 'memory' }) as number[];
    },
    async close() {
      if (closed) return;
      closed = true;
      Atomics.store(control, CONTROL.quit, 1);
      Atomics.add(control, CONTROL.seq, 1);
      Atomics.notify(control, CONTROL.seq);
      await Promise.all(handles.map((h) => h.worker.terminate()));
      for (const h of handles) h.port.close();
    },
  };
}
