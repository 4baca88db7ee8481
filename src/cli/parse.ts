/**
 * `dsv32 parse FILE.txt [--thinking-mode thinking|chat]`: a model completion (the text generated after the prompt,
 * ending with EOS) parsed back into an assistant message, printed as JSON.
 */
import { CompletionParseError, parseCompletion } from '../encoding.ts';
import type { ThinkingMode } from '../context.ts';
import { runCommand, type CommandSpec } from './args.ts';
import { readTextFile, TextInputError } from './read.ts';

const USAGE = 'usage: dsv32 parse FILE.txt [--thinking-mode thinking|chat]\n';

/** The option table of `dsv32 parse` (src/cli/args.ts). */
export const PARSE_COMMAND: CommandSpec = {
  name: 'parse',
  usage: USAGE,
  options: { 'thinking-mode': { type: 'choice', choices: ['thinking', 'chat'] } },
  positionals: { min: 1, max: 1, name: 'FILE' },
};

export async function run(argv: string[]): Promise<number> {
  return runCommand(PARSE_COMMAND, argv, (parsed) => parseFile(parsed.positionals[0]!, (parsed.values['thinking-mode'] ?? 'thinking') as ThinkingMode));
}

async function parseFile(file: string, thinkingMode: ThinkingMode): Promise<number> {
  let text: string;
  try {
    text = readTextFile(file);
  } catch (e) {
    if (!(e instanceof TextInputError)) throw e;
    process.stderr.write(`dsv32 parse: ${file}: ${e.message}\n`);
    return 2;
  }
  try {
    const message = parseCompletion(text, { thinkingMode: thinkingMode });
    process.stdout.write(JSON.stringify(message, null, 2) + '\n');
    return 0;
  } catch (e) {
    if (e instanceof CompletionParseError) {
      process.stderr.write(`dsv32 parse: ${file}: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}
