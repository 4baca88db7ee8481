// Entry of a kernel worker thread (src/threads.ts) when dsv32 runs from its TypeScript sources (a clone,
// tsx or vitest): loads the TypeScript worker through tsx (a devDependency), as bin/dsv32.js does for the
// command line. The compiled package (dist/) starts dist/threads_worker.js directly.
import { register } from 'tsx/esm/api';

register();
await import('./threads_worker.ts');
