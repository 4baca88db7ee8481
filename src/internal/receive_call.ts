/**
 * The message-passing half of the kernel pool's handshake (src/threads.ts, src/threads_worker.ts; Node only,
 * not part of the package's API): every message and reply carries the sequence number of its call.
 */
import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';

/** A word nobody notifies: `Atomics.wait` on it is a 1 ms sleep. */
const pause = new Int32Array(new SharedArrayBuffer(4));

/** How long either side waits for a message that its sequence number says was posted. */
export const MESSAGE_WAIT_MS = 60_000;

/**
 * The message on `port` whose `seq` is `seq`, skipping older ones and waiting for it 1 ms at a time, so that
 * neither a stale message nor a late one is ever taken for the current call. Returns a one-line description
 * of what was found instead when it does not come within {@link MESSAGE_WAIT_MS}.
 */
export function receiveCall<M extends { seq: number }>(port: MessagePort, seq: number, what: string): M | string {
  const skipped: number[] = [];
  for (let waited = 0; waited < MESSAGE_WAIT_MS; ) {
    const got = receiveMessageOnPort(port)?.message as M | undefined;
    if (got && got.seq === seq) return got;
    if (got) {
      skipped.push(got.seq); // a stale message of an earlier call: never taken for this one
      continue;
    }
    Atomics.wait(pause, 0, 0, 1);
    waited++;
  }
  return `no ${what} for call ${seq} within ${MESSAGE_WAIT_MS / 1000} s${skipped.length ? ` (skipped calls ${skipped.join(', ')})` : ''}`;
}
