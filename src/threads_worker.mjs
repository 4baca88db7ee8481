// Entry of a kernel worker thread (src/threads.ts): loads the TypeScript worker through tsx, a runtime
// dependency, as bin/dsv32.js does for the command line.
import { register } from 'tsx/esm/api';

register();
await import('./threads_worker.ts');
