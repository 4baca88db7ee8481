/**
 * Node-only: bundles the in-page code of src/browser/ with esbuild for the browser and lays out a
 * folder a static server (or any web host) can serve as it is:
 *
 * ```
 * OUT/index.html        the explorer page
 * OUT/explorer.js       the bundle (dsv32 + TensorFlow.js with the webgpu, webgl, wasm and cpu backends)
 * OUT/wasm/*.wasm       the wasm backend's binaries (loaded from here, never from a CDN)
 * ```
 *
 * The fixtures are not copied by {@link buildExplorer}: the local server maps `/fixtures/` to the
 * repository's `fixtures/` folder; the static build script (scripts/build-explorer.ts) copies them.
 *
 * @module
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

/** Repository root (two folders above this file). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

const WASM_FILES = ['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm'];

/** Any Node built-in reaching the page bundle is an error naming the importer (the page must stay browser-safe). */
const noNodeBuiltins: esbuild.Plugin = {
  name: 'dsv32-no-node-builtins',
  setup(build) {
    build.onResolve({ filter: /^node:/ }, (args) => ({
      errors: [{ text: `${args.path} imported by ${args.importer}: Node built-ins cannot run in the page` }],
    }));
  },
};

/**
 * Bundles src/browser/explorer.ts into `outDir/explorer.js` and writes `index.html` and the wasm binaries.
 *
 * @param outDir output folder (created)
 * @returns the paths written
 * @throws Error with esbuild's message when the bundle does not build
 */
export async function buildExplorer(outDir: string): Promise<{ outDir: string; files: string[] }> {
  mkdirSync(join(outDir, 'wasm'), { recursive: true });
  await esbuild.build({
    entryPoints: [join(REPO_ROOT, 'src', 'browser', 'explorer.ts')],
    outfile: join(outDir, 'explorer.js'),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    sourcemap: true,
    minify: false,
    logLevel: 'silent',
    define: { 'process.env.NODE_ENV': '"production"' },
    plugins: [noNodeBuiltins],
  });
  const require = createRequire(import.meta.url);
  const wasmDir = dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json'));
  for (const f of WASM_FILES) copyFileSync(join(wasmDir, 'dist', f), join(outDir, 'wasm', f));
  writeFileSync(join(outDir, 'index.html'), readFileSync(join(REPO_ROOT, 'src', 'browser', 'index.html')));
  return { outDir, files: ['index.html', 'explorer.js', ...WASM_FILES.map((f) => `wasm/${f}`)] };
}
