/**
 * `npm run explorer [-- --port N]`: `dsv32 explorer` from the sources (src/cli/explorer.ts): bundles the
 * explorer page (src/browser/) and serves it with the bundled fixtures on http://127.0.0.1 (loopback
 * only), printing the URL. Open it in a browser with WebGPU or WebGL; Ctrl-C stops the server.
 */
import { run } from '../src/cli/explorer.ts';

process.exitCode = await run(process.argv.slice(2));
