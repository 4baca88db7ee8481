/** `dsv32 info`: which tensor backend runs, its version, threads, and whether CUDA is in use. */
import { initBackend } from '../backend.ts';
import { runCommand, type CommandSpec } from './args.ts';

/** The option table of `dsv32 info` (src/cli/args.ts). */
export const INFO_COMMAND: CommandSpec = {
  name: 'info',
  usage: 'usage: dsv32 info [--json]\n',
  options: { json: { type: 'boolean' } },
  positionals: { min: 0, max: 0, name: 'argument' },
};

export async function run(argv: string[]): Promise<number> {
  return runCommand(INFO_COMMAND, argv, async (parsed) => {
    const info = await initBackend();
    return report(info, parsed.values.json === true);
  });
}

function report(info: Awaited<ReturnType<typeof initBackend>>, json: boolean): number {
  if (json) {
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
