/**
 * `dsv32 parse FILE.txt [--thinking-mode thinking|chat]`: a model completion (the text generated after the prompt,
 * ending with EOS) parsed back into an assistant message, printed as JSON.
 */
import { readFileSync } from 'node:fs';
import { CompletionParseError, parseCompletion } from '../encoding.ts';
import { parseCliArgs } from './encode.ts';

const USAGE = 'usage: dsv32 parse FILE.txt [--thinking-mode thinking|chat]\n';

export async function run(argv: string[]): Promise<number> {
  const args = parseCliArgs(argv, []);
  if (typeof args === 'string') {
    process.stderr.write(`dsv32 parse: ${args}\n${USAGE}`);
    return 2;
  }
  let text: string;
  try {
    text = readFileSync(args.file, 'utf8');
  } catch (e) {
    process.stderr.write(`dsv32 parse: ${args.file}: cannot read file (${(e as Error).message})\n`);
    return 2;
  }
  try {
    const message = parseCompletion(text, { thinkingMode: args.thinkingMode });
    process.stdout.write(JSON.stringify(message, null, 2) + '\n');
    return 0;
  } catch (e) {
    if (e instanceof CompletionParseError) {
      process.stderr.write(`dsv32 parse: ${args.file}: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}
