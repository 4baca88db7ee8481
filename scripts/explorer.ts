/**
 * `npm run explorer [-- --port N]`: builds the explorer page (src/browser/) and serves it with the
 * bundled fixtures on http://127.0.0.1 (loopback only), printing the URL. Open it in a browser with
 * WebGPU or WebGL; Ctrl-C stops the server.
 */
import { join } from 'node:path';
import { buildExplorer, REPO_ROOT } from '../src/browser_host/build.ts';
import { serveStatic } from '../src/browser_host/server.ts';

const at = process.argv.indexOf('--port');
const port = at >= 0 ? Number(process.argv[at + 1]) : 0;
if (!(Number.isInteger(port) && port >= 0 && port < 65536)) {
  process.stderr.write(`explorer: --port must be an integer in [0, 65535] but got '${process.argv[at + 1]}'\n`);
  process.exit(2);
}
const out = join(REPO_ROOT, 'build', 'explorer');
await buildExplorer(out);
const server = await serveStatic({ '/': out, '/fixtures/': join(REPO_ROOT, 'fixtures') }, port);
process.stdout.write(`dsv32 explorer: ${server.url}\n  (?backend=webgpu|webgl|wasm|cpu, ?fixture=public-fp32|public-fp8; Ctrl-C stops)\n`);
process.on('SIGINT', () => void server.close().then(() => process.exit(0)));
