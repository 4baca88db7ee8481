/**
 * The browser-safe core: the root entry `dsv32` and every public subpath except the Node-only
 * `dsv32/node` and `dsv32/threads` (worker threads for the fast kernels) bundle for the browser (esbuild, platform browser) without a Node built-in.
 * The same check on the installed package is in test/package-install.test.ts.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { browserBundleErrors } from './helpers/browser-bundle.ts';
import { publicSources } from './helpers/package-exports.ts';

const ROOT = join(import.meta.dirname, '..');
const NODE_ONLY = ['./node', './threads'];

/** package.json `exports`: subpath → its source file (src/X.ts, compiled to dist/X.js). */
function packageSources(): Map<string, string> {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { exports: Record<string, unknown> };
  return publicSources(pkg.exports);
}

describe('browser-safe core', () => {
  it('every public subpath but dsv32/node and dsv32/threads bundles for the browser with no Node built-in', async () => {
    const sources = packageSources();
    expect(sources.get('.')).toBe(join(ROOT, 'src', 'index.ts'));
    const browser = [...sources].filter(([subpath]) => !NODE_ONLY.includes(subpath));
    expect(browser.length).toBeGreaterThan(20);
    const code = browser.map(([, file], i) => `import * as m${i} from ${JSON.stringify(file)};\nconsole.log(m${i});`).join('\n');
    expect(await browserBundleErrors(code, ROOT)).toEqual([]);
  });

  it('the check can fail: dsv32/node imports node:fs', async () => {
    const errors = await browserBundleErrors(`import * as n from ${JSON.stringify(join(ROOT, 'src', 'node.ts'))};\nconsole.log(n);`, ROOT);
    expect(errors.some((e) => /src\/node\.ts:\d+: Could not resolve "node:fs"/.test(e))).toBe(true);
  });
});
