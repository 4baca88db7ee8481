/**
 * Run one spec against every backend, as tfjs does with `describeWithFlags(…, ALL_ENVS)`.
 * `DSV32_TEST_BACKENDS=wasm` (comma list) narrows the set.
 */
import { describe, beforeAll, expect } from 'vitest';
import { initBackend, tf, type BackendName } from '../../src/backend.ts';

export const TEST_BACKENDS: BackendName[] = (process.env.DSV32_TEST_BACKENDS ?? 'wasm,cpu')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean) as BackendName[];

/** `describe(title [backend])` once per backend, with that backend active in its tests. */
export function describeEachBackend(title: string, body: (backend: BackendName) => void): void {
  for (const backend of TEST_BACKENDS) {
    describe(`${title} [${backend}]`, () => {
      beforeAll(async () => {
        await initBackend(backend);
      });
      body(backend);
    });
  }
}

/** Calls `fn` a few times and asserts that `tf.memory().numTensors` does not grow. */
export async function expectNoTensorLeak(fn: () => unknown | Promise<unknown>, calls = 3): Promise<void> {
  await fn(); // warm-up: lazily created constants may stay
  const before = tf.memory().numTensors;
  for (let i = 0; i < calls; i++) await fn();
  expect(tf.memory().numTensors).toBe(before);
}
