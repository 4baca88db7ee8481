/**
 * `dsv32 explorer [--port N]`: serves the explorer page with the bundled golden fixtures on
 * http://127.0.0.1 (loopback only) and prints the URL; open it in a browser with WebGPU or WebGL.
 * Runs until interrupted (Ctrl-C). The installed package serves the pages bundled at build time
 * (dist/pages/); no development dependency is needed.
 */
import { explorerBanner, serveExplorer } from '../browser_host/explorer.ts';
import { runCommand, UsageError, type CommandSpec } from './args.ts';

/** The option table of `dsv32 explorer` (src/cli/args.ts). */
export const EXPLORER_COMMAND: CommandSpec = {
  name: 'explorer',
  usage: 'usage: dsv32 explorer [--port N]\n',
  options: { port: { type: 'integer' } },
  positionals: { min: 0, max: 0, name: 'argument' },
};

export async function run(argv: string[]): Promise<number> {
  return runCommand(EXPLORER_COMMAND, argv, async (parsed) => {
    const port = (parsed.values.port as number | undefined) ?? 0;
    if (port > 65535) throw new UsageError(`--port must be an integer in [0, 65535] but got '${port}'`);
    let server;
    try {
      server = await serveExplorer(port);
    } catch (e) {
      process.stderr.write(`dsv32 explorer: ${(e as Error).message.split('\n')[0]}\n`);
      return 1;
    }
    process.stdout.write(explorerBanner(server));
    await new Promise<void>((stop) => {
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
    await server.close();
    return 0;
  });
}
