#!/usr/bin/env node
/**
 * `dsv32` command line: info | conformance | check | encode | parse | bench | explorer.
 * Each subcommand lives in its own file under src/cli/ and exports `run(argv): Promise<number>`
 * returning the process exit code.
 */
const USAGE = `usage: dsv32 <command> [options]

commands:
  info                               backend, version, threads, CUDA
  conformance [DIR ...] [--json FILE] [--weights DIR ...]
                                     run golden fixtures and reference vectors
  check TRACE.safetensors --fixture DIR [--precision fp32|bf16] [--json FILE]
                                     judge another implementation's trace (bug or bf16 noise?)
  encode FILE.json [--thinking-mode thinking|chat] [--no-drop-thinking]
                                     V3.2 chat encoding of {"messages": [...], "tools"?: [...]}
  parse FILE.txt [--thinking-mode thinking|chat]
                                     parse a completion back into a message (JSON)
  bench [--quick] [--json FILE]      sparse vs dense attention benchmarks
  explorer [--port N]                serve the explorer page on 127.0.0.1 and print its URL
`;

const COMMANDS: Record<string, () => Promise<{ run: (argv: string[]) => Promise<number> }>> = {
  info: () => import('./info.ts'),
  conformance: () => import('./conformance.ts'),
  check: () => import('./check.ts'),
  encode: () => import('./encode.ts'),
  parse: () => import('./parse.ts'),
  bench: () => import('./bench.ts'),
  explorer: () => import('./explorer.ts'),
};

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  const load = COMMANDS[command];
  if (!load) {
    process.stderr.write(`dsv32: unknown command '${command}'\n${USAGE}`);
    return 2;
  }
  const mod = await load();
  return mod.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`dsv32: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
