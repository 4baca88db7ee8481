/** `dsv32 info`: which tensor backend runs, its version, threads, and whether CUDA is in use. */
import { initBackend } from '../backend.ts';

export async function run(argv: string[]): Promise<number> {
  const info = await initBackend();
  if (argv.includes('--json')) {
    process.stdout.write(JSON.stringify(info) + '\n');
    return 0;
  }
  process.stdout.write(
    [
      `backend: ${info.name} (tfjs '${info.tfjsBackend}')`,
      `package: ${info.package} ${info.version}`,
      `threads: ${info.threads}`,
      `cuda: ${info.cuda ? 'yes' : 'no'}`,
      `node: ${process.version}`,
    ].join('\n') + '\n',
  );
  return 0;
}
