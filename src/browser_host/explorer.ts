/**
 * Node-only: serves the explorer page (src/browser/explorer.ts) with the package's golden fixtures on
 * the loopback interface. Used by `dsv32 explorer` (src/cli/explorer.ts) and `npm run explorer`
 * (scripts/explorer.ts). The installed package serves the pages `npm run build` bundled into
 * dist/pages/; from the sources they are bundled first (./build.ts `pagesFolder`).
 *
 * @module
 */
import { join } from 'node:path';
import { pagesFolder, REPO_ROOT } from './build.ts';
import { serveStatic, type StaticServer } from './server.ts';

/**
 * Starts the explorer's server: the pages at `/`, the package's `fixtures/` at `/fixtures/`.
 *
 * @param port port on 127.0.0.1 (0 = any free port)
 * @returns the server; its `url` is the page
 * @throws Error when the pages cannot be found or built, or the port cannot be bound
 */
export async function serveExplorer(port = 0): Promise<StaticServer> {
  const pages = await pagesFolder(join(REPO_ROOT, 'build', 'explorer'));
  return serveStatic({ '/': pages, '/fixtures/': join(REPO_ROOT, 'fixtures') }, port);
}

/** The lines printed when the server is up: the URL, the page's query options, how to stop. */
export function explorerBanner(server: StaticServer): string {
  return `dsv32 explorer: ${server.url}\n  (?backend=webgpu|webgl|wasm|cpu, ?fixture=public-fp32|public-fp8; Ctrl-C stops)\n`;
}
