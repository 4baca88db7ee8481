/**
 * Worker threads of the fast kernels (src/threads.ts over src/sparse_kernels.ts): on every backend, each
 * kernel gives bit-identical results on 3 threads (uneven ranges) and on the calling thread alone (same units, same
 * summation order), for prefill blocks and for decode (T = 1: head groups / key ranges); nothing leaks in
 * the calling thread or in the workers; a pool left open does not hold the process; failures and bad
 * settings give one clear error.
 */
import { it, expect, beforeAll, afterAll, vi } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { tf } from '../src/backend.ts';
import { denseAttentionMqaFast, indexerScoresFast, selectTopKFast, sparseAttentionMqaFast } from '../src/sparse_fast.ts';
import { createKernelPool, defaultThreads, type NodeKernelPool } from '../src/threads.ts';
import { describeEachBackend, expectNoTensorLeak } from './helpers/backends.ts';

/** Same bits (NaN included) element by element. */
function expectSameBits(a: tf.Tensor, b: tf.Tensor): void {
  expect(b.shape).toEqual(a.shape);
  expect(b.dtype).toBe(a.dtype);
  const x = a.dataSync();
  const y = b.dataSync();
  const differing: number[] = [];
  for (let i = 0; i < x.length; i++) if (!Object.is(x[i], y[i])) differing.push(i);
  expect(differing.slice(0, 5), `${differing.length} of ${x.length} elements differ`).toEqual([]);
}

/** Random inputs of one attention + indexer case; topk rows from the indexer scores. */
function inputs(T: number, S: number, H: number, C: number, R: number, HI: number, DI: number, k: number, seed: number) {
  const u = (shape: number[], s: number) => tf.randomUniform(shape, -2, 2, 'float32', seed * 31 + s);
  const scores = u([T, S], 1) as tf.Tensor2D;
  return {
    qL: u([T, H, C], 2) as tf.Tensor3D,
    qR: u([T, H, R], 3) as tf.Tensor3D,
    kv: u([S, C], 4) as tf.Tensor2D,
    pe: u([S, R], 5) as tf.Tensor2D,
    q: u([T, HI, DI], 6) as tf.Tensor3D,
    w: u([T, HI], 7) as tf.Tensor2D,
    keys: u([S, DI], 8) as tf.Tensor2D,
    keyScales: tf.randomUniform([S], 0.5, 1.5, 'float32', seed) as tf.Tensor1D,
    scores,
    selected: selectTopKFast(scores, S - T, k),
  };
}

const shapeCase = fc.record({
  T: fc.integer({ min: 1, max: 9 }),
  extra: fc.integer({ min: 0, max: 40 }),
  H: fc.integer({ min: 1, max: 5 }),
  C: fc.integer({ min: 1, max: 20 }),
  R: fc.integer({ min: 1, max: 4 }),
  HI: fc.integer({ min: 1, max: 4 }),
  DI: fc.integer({ min: 1, max: 9 }),
  k: fc.integer({ min: 1, max: 12 }),
  seed: fc.integer({ min: 0, max: 1 << 20 }),
});

describeEachBackend('kernel pool', (backend) => {
  const pools: NodeKernelPool[] = [];
  beforeAll(async () => {
    pools.push(await createKernelPool({ threads: 3, backend }));
  }, 120_000);
  afterAll(async () => {
    for (const p of pools) await p.close();
  });

  it('sparse, dense, indexer and top-k on 3 threads ≡ one thread, bit for bit (prefill and decode)', async () => {
    await fc.assert(
      fc.asyncProperty(shapeCase, async ({ T, extra, H, C, R, HI, DI, k, seed }) => {
        const S = T + extra;
        const x = inputs(T, S, H, C, R, HI, DI, k, seed);
        const scale = 0.3;
        const one = [
          sparseAttentionMqaFast(x.qL, x.qR, x.kv, x.pe, x.selected, S - T, scale),
          denseAttentionMqaFast(x.qL, x.qR, x.kv, x.pe, x.selected, S - T, scale),
          indexerScoresFast(x.q, x.w, x.keys, x.keyScales),
          selectTopKFast(x.scores, S - T, k),
        ];
        for (const pool of pools) {
          const many = [
            sparseAttentionMqaFast(x.qL, x.qR, x.kv, x.pe, x.selected, S - T, scale, { pool }),
            denseAttentionMqaFast(x.qL, x.qR, x.kv, x.pe, x.selected, S - T, scale, { pool }),
            indexerScoresFast(x.q, x.w, x.keys, x.keyScales, { pool }),
            selectTopKFast(x.scores, S - T, k, { pool }),
          ];
          one.forEach((o, i) => expectSameBits(o, many[i]!));
          tf.dispose(many);
        }
        tf.dispose([...one, ...Object.values(x)]);
      }),
      { numRuns: 15 },
    );
  }, 120_000);

  it('splits a long decode step (T = 1) over head groups and key ranges, bit-identical to one thread', () => {
    const S = 3000;
    const x = inputs(1, S, 6, 64, 8, 4, 32, 256, 7);
    const all = tf.tensor2d(Int32Array.from({ length: S }, (_, s) => s), [1, S], 'int32');
    const one = [denseAttentionMqaFast(x.qL, x.qR, x.kv, x.pe, all, S - 1, 0.2), indexerScoresFast(x.q, x.w, x.keys, x.keyScales)];
    for (const pool of pools) {
      const many = [denseAttentionMqaFast(x.qL, x.qR, x.kv, x.pe, all, S - 1, 0.2, { pool }), indexerScoresFast(x.q, x.w, x.keys, x.keyScales, { pool })];
      one.forEach((o, i) => expectSameBits(o, many[i]!));
      tf.dispose(many);
    }
    tf.dispose([...one, all, ...Object.values(x)]);
  });

  it('leaks no tensor in the calling thread or in the workers', async () => {
    const x = inputs(5, 70, 3, 16, 4, 2, 8, 9, 3);
    const pool = pools[0]!;
    const call = () =>
      tf.dispose([
        sparseAttentionMqaFast(x.qL, x.qR, x.kv, x.pe, x.selected, 65, 0.3, { pool }),
        denseAttentionMqaFast(x.qL, x.qR, x.kv, x.pe, x.selected, 65, 0.3, { pool }),
        indexerScoresFast(x.q, x.w, x.keys, x.keyScales, { pool }),
        selectTopKFast(x.scores, 65, 9, { pool }),
      ]);
    await expectNoTensorLeak(call);
    const before = pool.workerTensors();
    call();
    expect(pool.workerTensors()).toEqual(before);
    expect(before.every((n) => n === 0)).toBe(true); // cached operands are not counted; per-call tensors are all freed
    tf.dispose(Object.values(x));
  });

  it('reports a failing unit as one error naming the worker and the kernel', () => {
    const pool = pools[0]!;
    const bad = { T: 2, H: 1, C: 1, R: 1, S: 2, K: 1, startPos: 0, scale: 1, qL: new Float32Array(2), qR: new Float32Array(2), slots: new Int32Array([0, 1]), kv: null, pe: null, kvId: -1, peId: -2, keysT: null, keysTId: -1, Tb: 1, groups: 1, out: pool.allocFloat32(2) };
    expect(() => pool.run('dense', bad, 2)).toThrow(/^kernel worker \d \(dense\): no data for tensor -1/);
  });
});

it('a closed pool refuses to run; bad thread counts and missing shared memory are clear errors', async () => {
  const pool = await createKernelPool({ threads: 1 });
  await pool.close();
  expect(() => pool.run('topk', { T: 1, S: 1, k: 1, width: 1, startPos: 0, scores: new Float32Array(1), out: new Int32Array(1) }, 1)).toThrow(
    'KernelPool.run(): the pool is closed',
  );
  await expect(createKernelPool({ threads: 0 })).rejects.toThrow('createKernelPool(): threads must be an integer ≥ 1 but got 0');
  expect(() => defaultThreads({ DSV32_THREADS: 'many' })).toThrow("DSV32_THREADS must be an integer ≥ 1 but got 'many'");
  expect(defaultThreads({ DSV32_THREADS: '3' })).toBe(3);
  expect(defaultThreads({})).toBeGreaterThanOrEqual(1);
  vi.stubGlobal('SharedArrayBuffer', undefined);
  try {
    await expect(createKernelPool({ threads: 2 })).rejects.toThrow('createKernelPool(): worker threads are unavailable here: SharedArrayBuffer is not available');
  } finally {
    vi.unstubAllGlobals();
  }
}, 60_000);

it('a pool left open does not keep the process alive', () => {
  const root = resolve(__dirname, '..');
  const file = join(mkdtempSync(join(tmpdir(), 'dsv32-pool-')), 'open-pool.mts');
  writeFileSync(
    file,
    `import { createKernelPool } from ${JSON.stringify(join(root, 'src', 'threads.ts'))};\n` +
      `import { initBackend } from ${JSON.stringify(join(root, 'src', 'backend.ts'))};\n` +
      `await initBackend('cpu');\nconst pool = await createKernelPool({ threads: 2 });\nconsole.log('open pool of', pool.threads);\n`,
  );
  const r = spawnSync(process.execPath, ['--import', 'tsx', file], { encoding: 'utf8', cwd: root, timeout: 120_000 });
  expect(r.stdout).toContain('open pool of 2');
  expect(r.status).toBe(0); // a hang would end in the timeout with status null
}, 150_000);
