// A conformance run over a checkpoint whose weight holds a NaN names that tensor (checked where the
// weights are loaded, src/checkpoint.ts), instead of surfacing later as "scores must not be NaN".
import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { openSafetensors, writeSafetensors } from '../src/node.ts';
import type { WritableTensor } from '../src/safetensors.ts';

const ROOT = resolve(__dirname, '..');
const SRC = join(ROOT, 'fixtures', 'golden', 'public-fp32');

describe('dsv32 conformance --weights on a checkpoint with a NaN weight', () => {
  it('fails with a row naming the tensor', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dsv32-nan-'));
    copyFileSync(join(SRC, 'config.json'), join(dir, 'config.json'));
    const target = 'model.layers.0.self_attn.indexer.wk.weight';
    const f = openSafetensors(join(SRC, 'model.safetensors'));
    expect(f.names()).toContain(target);
    const tensors: Record<string, WritableTensor> = {};
    for (const name of f.names()) {
      const r = f.readRaw(name);
      let data = r.bytes;
      if (name === target) {
        const v = new Float32Array(r.bytes.slice().buffer);
        v[0] = NaN;
        data = new Uint8Array(v.buffer);
      }
      tensors[name] = { dtype: r.dtype, shape: r.shape, data };
    }
    f.close();
    writeSafetensors(join(dir, 'model.safetensors'), tensors);
    const out = join(dir, 'rows.json');
    const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'dsv32.js'), 'conformance', '--weights', dir, '--layers', '0', '--json', out, '--quiet'], {
      encoding: 'utf8',
      cwd: ROOT,
      timeout: 120_000,
    });
    expect(r.status).toBe(1);
    const rows = JSON.parse(readFileSync(out, 'utf8')) as { pass: boolean; reason?: string }[];
    const failed = rows.filter((row) => !row.pass);
    expect(failed.length).toBeGreaterThan(0);
    expect(failed[0]!.reason).toMatch(new RegExp(`tensor "${target.replace(/\./g, '\\.')}": expected finite values but got NaN at flat index 0`));
    expect(r.stdout + r.stderr).not.toMatch(/scores must not be NaN/);
  });
});
