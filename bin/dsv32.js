#!/usr/bin/env node
// Development launcher: runs the TypeScript CLI (src/cli/main.ts) through tsx (a dev dependency), so the
// tests and `node bin/dsv32.js ...` in a clone always run the current sources, without a build.
// The published `dsv32` command (package.json `bin`) is the compiled dist/cli/main.js, which
// `npm install` / `npm run build` produce; this file is not part of the package.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);
const here = dirname(fileURLToPath(import.meta.url));
const tsxCli = require.resolve('tsx/cli');
const result = spawnSync(process.execPath, [tsxCli, join(here, '..', 'src', 'cli', 'main.ts'), ...process.argv.slice(2)], {
  stdio: 'inherit',
});
process.exit(result.status ?? 1);
