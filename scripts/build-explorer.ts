/**
 * `npm run build:explorer [-- OUT]`: writes a self-contained static copy of the explorer page to OUT
 * (default build/explorer-static): index.html, the bundle, the wasm binaries and the golden fixtures
 * it loads. Any static web host serves it as it is; the page makes no request outside its own folder.
 */
import { cpSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { buildExplorer, REPO_ROOT } from '../src/browser_host/build.ts';

const FIXTURES = ['public-fp32', 'public-fp8', 'public-fp32-indexer-rope-bug'];

const out = resolve(process.argv[2] ?? join(REPO_ROOT, 'build', 'explorer-static'));
rmSync(out, { recursive: true, force: true });
const { files } = await buildExplorer(out);
for (const f of FIXTURES) {
  cpSync(join(REPO_ROOT, 'fixtures', 'golden', f), join(out, 'fixtures', 'golden', f), { recursive: true });
}
process.stdout.write(`explorer written to ${out} (${files.length} files + fixtures ${FIXTURES.join(', ')})\n`);
