/**
 * One kernel worker of src/threads.ts: initialises its own tfjs backend, then waits on the shared
 * control array for work, runs the requested kernel of src/sparse_kernels.ts over its range of units,
 * replies (error or value) on its port and acknowledges the call in its slot of the control array. Big
 * operands are turned into tensors once per calling-thread tensor id and kept (least recently used first
 * out, ≤ 1 GiB per worker).
 * @module
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { initBackend, tf, type BackendName } from './backend.ts';
import { type TensorEnv } from './kernel_env.ts';
import { KERNELS, type KernelName } from './sparse_kernels.ts';
import { receiveCall } from './internal/receive_call.ts';
import { CONTROL } from './threads.ts';

const { backend, control, port, index } = workerData as { backend: BackendName; control: Int32Array; port: MessagePort; index: number };
const CACHE_BYTES = 2 ** 30;
const cache = new Map<string, tf.Tensor2D>();
let cachedBytes = 0;

const env: TensorEnv = {
  matrix(id, data, rows, cols, r0, r1) {
    const key = `${id}:${r0}:${r1}`;
    const hit = cache.get(key);
    if (hit) {
      cache.delete(key); // most recently used goes last
      cache.set(key, hit);
      return hit;
    }
    if (!data) throw new Error(`no data for tensor ${id} (${rows}×${cols})`);
    const t = tf.tensor2d(data.subarray(r0 * cols, r1 * cols), [r1 - r0, cols]);
    cachedBytes += 4 * t.size;
    for (const [k, old] of cache) {
      if (cachedBytes <= CACHE_BYTES) break;
      cache.delete(k);
      cachedBytes -= 4 * old.size;
      old.dispose();
    }
    cache.set(key, t);
    return t;
  },
  release(id) {
    for (const [key, t] of cache) {
      if (!key.startsWith(`${id}:`)) continue;
      cache.delete(key);
      cachedBytes -= 4 * t.size;
      t.dispose();
    }
  },
};

interface Message {
  kind: 'run' | 'memory';
  kernel?: KernelName;
  args?: unknown;
  ranges?: [number, number][];
  index: number;
  /** the value of the control array's sequence number that signals this call */
  seq: number;
}

function serve(): void {
  let last = Atomics.load(control, CONTROL.seq);
  parentPort!.postMessage({ ready: true });
  for (;;) {
    Atomics.wait(control, CONTROL.seq, last); // sleeps while no new call is signalled
    if (Atomics.load(control, CONTROL.quit)) break;
    const seq = Atomics.load(control, CONTROL.seq);
    const got = receiveCall<Message>(port, seq, 'message');
    const message = typeof got === 'string' ? undefined : got;
    let reply: { seq: number; error?: string; value?: unknown } = { seq };
    try {
      if (!message) throw new Error(got as string);
      if (message.kind === 'memory') reply = { seq, value: tf.memory().numTensors - cache.size };
      else {
        const [u0, u1] = message.ranges![message.index]!;
        const kernel = KERNELS[message.kernel!] as (a: unknown, e: TensorEnv, u0: number, u1: number) => void;
        if (u1 > u0) kernel(message.args, env, u0, u1);
      }
    } catch (e) {
      reply = { seq, error: `kernel worker ${index} (${message?.kernel ?? message?.kind ?? 'call'}): ${(e as Error).message}` };
    }
    port.postMessage(reply);
    Atomics.store(control, CONTROL.acks + index, seq);
    Atomics.notify(control, CONTROL.acks + index);
    last = seq;
  }
  for (const t of cache.values()) t.dispose();
  cache.clear();
}

initBackend(backend).then(serve, (e: unknown) => parentPort!.postMessage({ error: `backend ${backend}: ${(e as Error).message}` }));
