/**
 * `npm run build` (after tsc): bundles the browser pages (the explorer and the conformance page of
 * src/browser/, TensorFlow.js with its webgpu, webgl, wasm and cpu backends, the wasm binaries) into
 * dist/pages/, so the installed package runs `dsv32 conformance --backend webgpu|webgl` and
 * `dsv32 explorer` without esbuild, a development dependency (src/browser_host/build.ts `pagesFolder`).
 * No source maps: they would double the package's size.
 */
import { rmSync } from 'node:fs';
import { buildExplorer, PREBUILT_PAGES } from '../src/browser_host/build.ts';

rmSync(PREBUILT_PAGES, { recursive: true, force: true });
const { files } = await buildExplorer(PREBUILT_PAGES, { sourcemap: false });
process.stdout.write(`browser pages bundled into ${PREBUILT_PAGES}: ${files.join(', ')}\n`);
