import { describe, it, expect } from 'vitest';
import { initBackend, backendInfo, tf } from '../src/backend.ts';

describe('backend selection (src/backend.ts)', () => {
  it('initialises the wasm backend by name and reports it', async () => {
    const info = await initBackend('wasm');
    expect(info.name).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(info.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(info.threads).toBeGreaterThanOrEqual(1);
    expect(info.cuda).toBe(false);
    expect(backendInfo()).toEqual(info);
  });

  it('switches to the cpu backend by name', async () => {
    const info = await initBackend('cpu');
    expect(info.name).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
  });

  it('rejects an unknown backend name with a message naming the function and the value', async () => {
    await expect(initBackend('gpu' as never)).rejects.toThrow(/initBackend\(\).*'gpu'/);
  });

  it('registers gradients (tf.grad works on every backend)', async () => {
    for (const b of ['wasm', 'cpu'] as const) {
      await initBackend(b);
      const g = tf.grad((x: tf.Tensor) => tf.sum(tf.square(x)));
      const dx = g(tf.tensor1d([1, -2, 3]));
      expect(Array.from(await dx.data())).toEqual([2, -4, 6]);
      dx.dispose();
    }
  });
});
