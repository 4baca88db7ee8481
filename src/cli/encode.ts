/**
 * `dsv32 encode FILE.json [--thinking-mode thinking|chat] [--no-drop-thinking]`: the V3.2 prompt of
 * `{"messages": [...], "tools"?: [...]}` on stdout, byte for byte (no added newline).
 * A top-level `tools` array is attached to `messages[0]` (a system or developer message), as the official test does.
 * The file is read with Python's JSON semantics (float literals such as `1.0` stay floats, key order is kept).
 */
import { encodeMessages } from '../encoding.ts';
import { isPyObject, JsonDepthError, parsePyJson, PyDict, type PyJson } from '../pyjson.ts';
import { readTextFile, TextInputError } from './read.ts';
import type { ThinkingMode } from '../context.ts';
import { runCommand, type CommandSpec } from './args.ts';

const USAGE = 'usage: dsv32 encode FILE.json [--thinking-mode thinking|chat] [--no-drop-thinking]\n';

/** Shallow: a PyDict (object whose key order a JS object would change) as a plain object, for field access. */
function plain(v: PyJson | undefined): PyJson | undefined {
  return v instanceof PyDict ? Object.fromEntries(v.entries) : v;
}

/** The option table of `dsv32 encode` (src/cli/args.ts). */
export const ENCODE_COMMAND: CommandSpec = {
  name: 'encode',
  usage: USAGE,
  options: {
    'thinking-mode': { type: 'choice', choices: ['thinking', 'chat'] },
    'no-drop-thinking': { type: 'boolean' },
  },
  positionals: { min: 1, max: 1, name: 'FILE' },
};

export async function run(argv: string[]): Promise<number> {
  return runCommand(ENCODE_COMMAND, argv, (parsed) => encodeFile(parsed.positionals[0]!, (parsed.values['thinking-mode'] ?? 'thinking') as ThinkingMode, parsed.values['no-drop-thinking'] !== true));
}

async function encodeFile(file: string, thinkingMode: ThinkingMode, dropThinking: boolean): Promise<number> {
  const fail = (msg: string): number => {
    process.stderr.write(`dsv32 encode: ${file}: ${msg}\n`);
    return 2;
  };
  let root: PyJson;
  try {
    root = parsePyJson(readTextFile(file));
  } catch (e) {
    if (e instanceof TextInputError || e instanceof JsonDepthError) return fail((e as Error).message);
    return fail(`invalid JSON: ${(e as Error).message}`);
  }
  const top = plain(root);
  if (!isPyObject(top) || Array.isArray(top)) return fail('expected a JSON object {"messages": [...], "tools"?: [...]}');
  const obj = top as Record<string, PyJson>;
  if (!Array.isArray(obj.messages)) return fail('expected a "messages" array at the top level');
  const messages = obj.messages.map((m) => {
    const msg = plain(m);
    if (!isPyObject(msg)) return msg;
    const out = { ...(msg as Record<string, PyJson>) };
    if (Array.isArray(out.tools)) out.tools = out.tools.map(plain) as PyJson[];
    if (Array.isArray(out.tool_calls)) {
      out.tool_calls = out.tool_calls.map((c) => {
        const call = plain(c);
        return isPyObject(call) ? { ...(call as Record<string, PyJson>), function: plain((call as Record<string, PyJson>).function) ?? null } : call;
      }) as PyJson[];
    }
    return out;
  });
  if (obj.tools !== undefined) {
    if (!Array.isArray(obj.tools)) return fail('"tools" must be an array');
    const first = messages[0] as Record<string, PyJson> | undefined;
    if (!first || !isPyObject(first) || (first.role !== 'system' && first.role !== 'developer')) {
      return fail(`a top-level "tools" array is attached to messages[0], which must be a system or developer message but got ${first === undefined ? 'no message' : `role ${JSON.stringify(first.role ?? null)}`}`);
    }
    if (first.tools !== undefined && first.tools !== null) return fail('both a top-level "tools" array and messages[0].tools are given');
    first.tools = obj.tools.map(plain) as PyJson[];
  }
  let prompt: string;
  try {
    prompt = encodeMessages(messages as never, {
      thinkingMode,
      dropThinking,
    });
  } catch (e) {
    if (e instanceof TypeError || e instanceof RangeError) return fail(e.message);
    throw e;
  }
  process.stdout.write(prompt);
  return 0;
}
