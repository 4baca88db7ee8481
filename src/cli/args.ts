/**
 * The one command-line parser of `dsv32`: Node's `util.parseArgs` (strict: unknown options, missing
 * values and stray positionals are errors) plus explicit validation of every value, driven by a
 * per-command option table ({@link CommandSpec}). Every subcommand parses its argv here, so a flag
 * means the same thing everywhere and a bad argument is always a {@link UsageError} (exit 2, the
 * command's usage line, no stack trace).
 *
 * Value kinds:
 * - `integer`: decimal digits only (`'3'`); `''`, `' '`, `'1.5'`, `'0x2'`, `'1e3'`, `'-1'` (unless `min < 0`) are errors;
 * - `integer-list`: comma-separated integers (`'0,3'`); an empty item (`'0,,2'`, `''`) or a repeated
 *   value (`'1,1'`) is an error;
 * - `choice`: one of `choices`; `string`: any non-empty text; `boolean`: a flag without a value.
 * Giving the same option twice is an error (no silent "last one wins").
 *
 * To add a flag to a command, add a row to that command's `options` table.
 * @module
 */
import { parseArgs } from 'node:util';

/** A bad command line: the message names the option and what was expected. Exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** One row of a command's option table. */
export interface OptionSpec {
  type: 'boolean' | 'string' | 'integer' | 'integer-list' | 'choice';
  /** one-letter alias (`-q`). */
  short?: string;
  /** allowed values of a `choice` option. */
  choices?: readonly string[];
  /** smallest allowed integer (default 0) of `integer` and `integer-list` options. */
  min?: number;
}

/** A command's option table and positional arguments. */
export interface CommandSpec {
  /** subcommand name, used as the message prefix (`dsv32 <name>: ...`). */
  name: string;
  /** the usage line(s) printed with every usage error and by `--help`. */
  usage: string;
  options: Record<string, OptionSpec>;
  /** positional arguments: how many, and what one is called in messages. */
  positionals: { min: number; max: number; name: string };
}

/** A parsed option value. */
export type OptionValue = boolean | string | number | number[];

/** The parsed command line: option values by long name (absent when not given) and positionals. */
export interface ParsedArgs {
  values: Record<string, OptionValue | undefined>;
  positionals: string[];
  /** `--help` or `-h` was given (every command accepts it). */
  help: boolean;
}

const DIGITS = /^[0-9]+$/;
/** A command-line value as the user typed it, quoted ('' shows an empty value). */
const quote = (s: string): string => `'${s}'`;
const SIGNED_DIGITS = /^-?[0-9]+$/;

/**
 * One integer from a command-line value, strictly: decimal digits only (a leading `-` when `min < 0`),
 * a safe integer, ≥ `min`. Throws a {@link UsageError} naming `what` otherwise.
 */
export function parseIntegerArg(text: string, what: string, min = 0): number {
  const ok = (min < 0 ? SIGNED_DIGITS : DIGITS).test(text);
  const n = ok ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`${what} must be an integer ≥ ${min} but got ${quote(text)} (decimal digits only)`);
  }
  return n;
}

/**
 * A comma-separated list of distinct integers ≥ `min` (`'0,3'`); whitespace around an item is allowed,
 * an empty item or a repeated value is an error.
 */
export function parseIntegerListArg(text: string, what: string, min = 0): number[] {
  const items = text.split(',').map((s) => s.trim());
  const out: number[] = [];
  items.forEach((item, i) => {
    if (item === '') {
      throw new UsageError(`${what} expects comma-separated integers ≥ ${min} (e.g. 0,3) but got ${quote(text)}: item ${i} is empty`);
    }
    if (!(min < 0 ? SIGNED_DIGITS : DIGITS).test(item) || !Number.isSafeInteger(Number(item)) || Number(item) < min) {
      throw new UsageError(`${what} expects comma-separated integers ≥ ${min} (e.g. 0,3) but got ${quote(text)}: item ${i} is ${quote(item)}`);
    }
    const n = Number(item);
    if (out.includes(n)) throw new UsageError(`${what} expects distinct integers but got ${quote(text)}: ${n} is repeated`);
    out.push(n);
  });
  return out;
}

/**
 * Parses `argv` against a command's option table. Throws a {@link UsageError} on an unknown option, a
 * missing or malformed value, a repeated option, or the wrong number of positionals.
 */
export function parseCommandArgs(spec: CommandSpec, argv: readonly string[]): ParsedArgs {
  const options: Record<string, { type: 'boolean' | 'string'; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const [name, o] of Object.entries(spec.options)) {
    options[name] = { type: o.type === 'boolean' ? 'boolean' : 'string', ...(o.short ? { short: o.short } : {}) };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: [...argv], options, strict: true, allowPositionals: true, tokens: true });
  } catch (e) {
    throw new UsageError(rephrase((e as Error).message));
  }
  const seen = new Set<string>();
  for (const token of parsed.tokens ?? []) {
    if (token.kind !== 'option') continue;
    if (seen.has(token.name)) throw new UsageError(`option --${token.name} is given more than once`);
    seen.add(token.name);
  }
  const values: Record<string, OptionValue | undefined> = {};
  for (const [name, o] of Object.entries(spec.options)) {
    const raw = parsed.values[name] as string | boolean | undefined;
    if (raw === undefined) continue;
    const what = `--${name}`;
    if (o.type === 'boolean') values[name] = raw === true;
    else if (typeof raw !== 'string') throw new UsageError(`${what} needs a value`);
    else if (o.type === 'integer') values[name] = parseIntegerArg(raw, what, o.min ?? 0);
    else if (o.type === 'integer-list') values[name] = parseIntegerListArg(raw, what, o.min ?? 0);
    else if (o.type === 'choice') {
      if (!o.choices!.includes(raw)) throw new UsageError(`${what} must be ${o.choices!.map((c) => `'${c}'`).join(' or ')} but got ${quote(raw)}`);
      values[name] = raw;
    } else {
      if (raw === '') throw new UsageError(`${what} needs a non-empty value`);
      values[name] = raw;
    }
  }
  const help = parsed.values.help === true;
  const { min, max, name } = spec.positionals;
  if (!help) {
    if (parsed.positionals.length < min) throw new UsageError(`missing ${name}`);
    if (parsed.positionals.length > max) {
      throw new UsageError(max === 0 ? `unexpected argument '${parsed.positionals[0]}'` : `expected at most ${max} ${name} but got ${parsed.positionals.map((p) => `'${p}'`).join(' and ')}`);
    }
    for (const p of parsed.positionals) if (p === '') throw new UsageError(`${name} must not be empty`);
  }
  return { values, positionals: parsed.positionals, help };
}

/** util.parseArgs messages in the words the commands have always used. */
function rephrase(message: string): string {
  const option = /'(-[^' ]+)/.exec(message)?.[1];
  if (/argument missing|argument is ambiguous/.test(message) && option) return `${option} needs a value`;
  if (/^Unknown option/.test(message) && option) return `unknown option '${option}'`;
  if (/does not take an argument/.test(message) && option) return `${option} does not take a value`;
  return message;
}

/**
 * Runs a command body with its parsed arguments: `--help` prints the usage (exit 0); a
 * {@link UsageError} from parsing or from the body prints `dsv32 <name>: message` and the usage
 * line (exit 2).
 */
export async function runCommand(spec: CommandSpec, argv: readonly string[], body: (args: ParsedArgs) => Promise<number> | number): Promise<number> {
  try {
    const args = parseCommandArgs(spec, argv);
    if (args.help) {
      process.stdout.write(spec.usage);
      return 0;
    }
    return await body(args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`dsv32 ${spec.name}: ${e.message}\n${spec.usage}`);
    return 2;
  }
}

/**
 * Token ids from the text of a `--tokens` file: a JSON array of integers ≥ 0, a single integer, or
 * integers separated by whitespace. Throws a {@link UsageError} naming the file and the first bad item.
 */
export function parseTokenIds(text: string, file: string): number[] {
  const what = `--tokens file ${file}`;
  const body = text.trim();
  if (body === '') throw new UsageError(`${what} must hold token ids (a JSON array, one integer, or whitespace-separated integers ≥ 0) but is empty`);
  if (body.startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch (e) {
      throw new UsageError(`${what}: invalid JSON array (${(e as Error).message})`);
    }
    if (!Array.isArray(parsed) || parsed.length === 0) throw new UsageError(`${what} must hold a non-empty JSON array of token ids`);
    parsed.forEach((t, i) => {
      if (!Number.isSafeInteger(t) || (t as number) < 0) throw new UsageError(`${what}: item ${i} must be an integer ≥ 0 but got ${JSON.stringify(t)}`);
    });
    return parsed as number[];
  }
  return body.split(/\s+/).map((item, i) => {
    if (!DIGITS.test(item) || !Number.isSafeInteger(Number(item))) {
      throw new UsageError(`${what} must hold a JSON array, one integer, or whitespace-separated integers ≥ 0 but item ${i} is ${JSON.stringify(item.slice(0, 40))}`);
    }
    return Number(item);
  });
}
