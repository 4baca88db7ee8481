/**
 * Node-only: bundles the in-page code of src/browser/ with esbuild for the browser and lays out a
 * folder a static server (or any web host) can serve as it is. `npm run build` writes it to
 * `dist/pages/` ({@link PREBUILT_PAGES}, scripts/build-pages.ts), so the installed package (which has no
 * esbuild, a development dependency) serves those; run from the sources (`node bin/dsv32.js`, `tsx`,
 * the tests) it bundles the current sources instead ({@link pagesFolder}):
 *
 * ```
 * OUT/index.html        the explorer page
 * OUT/explorer.js       its bundle (dsv32 + TensorFlow.js with the webgpu, webgl, wasm and cpu backends)
 * OUT/runner.html       the conformance page (driven by `dsv32 conformance --backend`)
 * OUT/runner.js         its bundle (the conformance engine over an in-memory file table)
 * OUT/wasm/*.wasm       the wasm backend's binaries (loaded from here, never from a CDN)
 * ```
 *
 * The fixtures are not copied by {@link buildExplorer}: the local server maps `/fixtures/` to the
 * repository's `fixtures/` folder; the static build script (scripts/build-explorer.ts) copies them.
 *
 * @module
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type * as esbuild from 'esbuild';

/** Package root: the nearest folder above this file with a package.json (also from the compiled dist/). */
export const REPO_ROOT = ((): string => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  if (basename(dir) === 'dist') dir = dirname(dir);
  return dir;
})();

/**
 * The pages bundled by `npm run build` (scripts/build-pages.ts): `dist/pages/` of the package, used when
 * this module runs compiled (from dist/), never from the sources, whose pages may be newer.
 */
export const PREBUILT_PAGES = join(REPO_ROOT, 'dist', 'pages');

/** Is this module the compiled dist/ copy (the installed package), not the TypeScript source? */
const COMPILED = fileURLToPath(import.meta.url).endsWith('.js');

/**
 * The folder holding the pages to serve: the compiled package's {@link PREBUILT_PAGES}; from the sources,
 * a fresh bundle written to `scratch` by {@link buildExplorer}.
 *
 * @param scratch folder to bundle into when the pages must be built (created)
 * @param compiled serve the prebuilt pages (default: whether this module is the compiled copy)
 * @throws Error when the package's dist/pages/ is missing (a broken build) or, from the sources, a bundle does not build
 */
export async function pagesFolder(scratch: string, compiled = COMPILED): Promise<string> {
  if (!compiled) return (await buildExplorer(scratch)).outDir;
  if (!existsSync(join(PREBUILT_PAGES, 'runner.html'))) {
    throw new Error(`the browser pages are missing from ${PREBUILT_PAGES}: \`npm run build\` writes them (reinstall the package)`);
  }
  return PREBUILT_PAGES;
}

const WASM_FILES = ['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm'];

/**
 * Node built-ins in a page bundle: in the explorer, any is an error naming the importer (the page and
 * the library it uses are browser-safe); in the conformance page, `node:fs` and `node:path` resolve to
 * the in-memory file table of src/browser/memory_fs.ts (the engine reads fixtures as files) and any
 * other is an error.
 */
function nodeBuiltins(memoryFs: boolean): esbuild.Plugin {
  return {
    name: 'dsv32-node-builtins',
    setup(build) {
      if (memoryFs) build.onResolve({ filter: /^node:(fs|path)$/ }, () => ({ path: join(REPO_ROOT, 'src', 'browser', 'memory_fs.ts') }));
      build.onResolve({ filter: /^node:/ }, (args) => ({
        errors: [{ text: `${args.path} imported by ${args.importer}: Node built-ins cannot run in the page` }],
      }));
    },
  };
}

/** The esbuild API, or a one-line error saying it is a development dependency. */
async function loadEsbuild(): Promise<typeof esbuild> {
  try {
    return await import('esbuild');
  } catch {
    throw new Error('the browser pages are bundled with esbuild, a development dependency: run from a clone after `npm ci`, or `npm install esbuild`');
  }
}

/**
 * Bundles one page script for the browser (ESM, es2022, Node built-ins refused; with `memoryFs`,
 * `node:fs` and `node:path` resolve to src/browser/memory_fs.ts).
 *
 * @param entry the page's TypeScript entry; `outfile` the bundle written
 * @throws Error with esbuild's message when the bundle does not build
 */
export async function bundlePage(entry: string, outfile: string, opts: { memoryFs?: boolean; sourcemap?: boolean } = {}): Promise<void> {
  const bundler = await loadEsbuild();
  await bundler.build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    sourcemap: opts.sourcemap ?? true,
    logLevel: 'silent',
    define: { 'process.env.NODE_ENV': '"production"' },
    plugins: [nodeBuiltins(opts.memoryFs ?? false)],
  });
}

/** The pages {@link buildExplorer} writes: entry name (src/browser/NAME.ts → NAME.js), its HTML, in-memory files or not. */
const PAGES = [{ name: 'explorer', html: 'index.html', memoryFs: false }, { name: 'runner', html: 'runner.html', memoryFs: true }];

/**
 * Bundles the explorer (src/browser/explorer.ts) and the conformance page (src/browser/runner.ts) into
 * `outDir` with their HTML and the wasm binaries.
 *
 * @param outDir output folder (created)
 * @param opts `sourcemap` (default true)
 * @returns the files written, relative to `outDir`
 * @throws Error with esbuild's message when a bundle does not build
 */
export async function buildExplorer(outDir: string, opts: { sourcemap?: boolean } = {}): Promise<{ outDir: string; files: string[] }> {
  await loadEsbuild();
  mkdirSync(join(outDir, 'wasm'), { recursive: true });
  for (const page of PAGES) {
    await bundlePage(join(REPO_ROOT, 'src', 'browser', `${page.name}.ts`), join(outDir, `${page.name}.js`), { memoryFs: page.memoryFs, ...opts });
    writeFileSync(join(outDir, page.html), readFileSync(join(REPO_ROOT, 'src', 'browser', page.html)));
  }
  const require = createRequire(import.meta.url);
  const wasmDir = dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json'));
  for (const f of WASM_FILES) copyFileSync(join(wasmDir, 'dist', f), join(outDir, 'wasm', f));
  return { outDir, files: [...PAGES.flatMap((p) => [p.html, `${p.name}.js`]), ...WASM_FILES.map((f) => `wasm/${f}`)] };
}
