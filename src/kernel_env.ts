/**
 * How the units of the fast DSA kernels (src/sparse_kernels.ts, src/sparse_units.ts) reach their big 2-D
 * operands: as tensors of the calling thread's backend, or, on a worker of src/threads.ts, as tensors the
 * worker built once from shared memory. Browser-safe: no Node import.
 */
import { tf } from './backend.ts';

/**
 * How a kernel reaches the big 2-D operands as tensors of its thread's backend. The caller's thread
 * uses the caller's tensors; a worker builds them once from shared memory and keeps them for the
 * next calls with the same `id` (the tensor's id in the calling thread).
 */
export interface TensorEnv {
  /** Rows [r0, r1) of the [rows, cols] matrix `data` (identified by `id`) as a tensor; the env owns it. */
  matrix(id: number, data: Float32Array | null, rows: number, cols: number, r0: number, r1: number): tf.Tensor2D;
  /** Forgets the tensors of `id` (a per-call operand); a no-op for the calling thread's own tensors. */
  release(id: number): void;
}

/** The env of the calling thread: its own tensors, whole (a unit asking for a row range gets a slice it must dispose). */
export function callerEnv(tensors: ReadonlyMap<number, tf.Tensor2D>): TensorEnv {
  return {
    matrix(id, _data, rows, _cols, r0, r1) {
      const t = tensors.get(id);
      if (!t) throw new Error(`callerEnv: no tensor with id ${id}`);
      if (r0 !== 0 || r1 !== rows) throw new Error(`callerEnv: rows [${r0}, ${r1}) of tensor ${id} are not the whole tensor`);
      return t;
    },
    release() {},
  };
}

/** The data of a float32 tensor, which is then disposed. */
export function readAndDispose(t: tf.Tensor): Float32Array {
  const data = t.dataSync() as Float32Array;
  t.dispose();
  return data;
}
