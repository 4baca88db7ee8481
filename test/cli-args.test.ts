// The one command-line parser (src/cli/args.ts): strict integers, lists, repeated options, token files,
// and every command's usage errors (exit 2, the usage line, no stack trace).
import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseCommandArgs, parseIntegerArg, parseIntegerListArg, parseTokenIds, UsageError, type CommandSpec } from '../src/cli/args.ts';
import { parseConformanceArgs } from '../src/cli/conformance.ts';

const ROOT = resolve(__dirname, '..');

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'dsv32.js'), ...args], { encoding: 'utf8', cwd: ROOT, timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('integer values', () => {
  it.each(['', ' ', '1.5', '0x2', '1e3', '-1', '+1', '١', 'NaN', '9007199254740993'])('rejects %j as an integer', (text) => {
    expect(() => parseIntegerArg(text, '--n')).toThrow(UsageError);
    expect(() => parseIntegerArg(text, '--n')).toThrow(/--n must be an integer ≥ 0 but got /);
  });

  it('accepts decimal digits, and a sign only when negatives are allowed', () => {
    expect(parseIntegerArg('0', '--n')).toBe(0);
    expect(parseIntegerArg('42', '--n')).toBe(42);
    expect(parseIntegerArg('-3', '--n', -10)).toBe(-3);
    expect(() => parseIntegerArg('0', '--n', 1)).toThrow(/≥ 1/);
  });

  it.each([
    ['', /item 0 is empty/],
    [' ', /item 0 is empty/],
    ['0,,2', /item 1 is empty/],
    ['0,', /item 1 is empty/],
    ['1,1', /1 is repeated/],
    ['0,1.5', /item 1 is '1.5'/],
    ['0x2', /item 0 is '0x2'/],
  ])('rejects the list %j', (text, message) => {
    expect(() => parseIntegerListArg(text, '--layers')).toThrow(message);
  });

  it('accepts a list with spaces around the items', () => {
    expect(parseIntegerListArg('0, 3', '--layers')).toEqual([0, 3]);
  });
});

describe('option tables', () => {
  const spec: CommandSpec = {
    name: 'demo',
    usage: 'usage: demo\n',
    options: { steps: { type: 'integer', min: 1 }, mode: { type: 'choice', choices: ['a', 'b'] }, flag: { type: 'boolean' }, out: { type: 'string' } },
    positionals: { min: 0, max: 1, name: 'FILE' },
  };

  it('parses every kind, with --x=v and --x v', () => {
    expect(parseCommandArgs(spec, ['--steps=3', '--mode', 'b', '--flag', 'f.txt']).values).toEqual({ steps: 3, mode: 'b', flag: true });
    expect(parseCommandArgs(spec, ['--out', 'o.json']).values).toEqual({ out: 'o.json' });
  });

  it.each([
    [['--steps', '2', '--steps', '3'], /--steps is given more than once/],
    [['--steps', '0'], /--steps must be an integer ≥ 1 but got '0'/],
    [['--steps='], /--steps must be an integer ≥ 1 but got ''/],
    [['--steps'], /--steps needs a value/],
    [['--steps', '--flag'], /--steps needs a value/],
    [['--mode', 'c'], /--mode must be 'a' or 'b' but got 'c'/],
    [['--flag=yes'], /--flag does not take a value/],
    [['--out', ''], /--out needs a non-empty value/],
    [['--nope'], /unknown option '--nope'/],
    [['a', 'b'], /expected at most 1 FILE/],
  ])('rejects %j', (argv, message) => {
    expect(() => parseCommandArgs(spec, argv)).toThrow(message);
  });
});

describe('token files', () => {
  it('reads a single integer, a JSON array and whitespace-separated integers', () => {
    expect(parseTokenIds('5', 'f')).toEqual([5]);
    expect(parseTokenIds('5\n', 'f')).toEqual([5]);
    expect(parseTokenIds('[0, 1, 2]', 'f')).toEqual([0, 1, 2]);
    expect(parseTokenIds(' 3 4\n5\t6 ', 'f')).toEqual([3, 4, 5, 6]);
  });

  it.each([
    ['', /is empty/],
    ['[]', /non-empty JSON array/],
    ['[1, -2]', /item 1 must be an integer ≥ 0 but got -2/],
    ['[1, 2.5]', /item 1 must be an integer ≥ 0 but got 2.5/],
    ['[1, 2', /invalid JSON array/],
    ['{"a": 1}', /item 0 is "\{/],
    ['1 2.5', /item 1 is "2.5"/],
    ['1 0x2', /item 1 is "0x2"/],
    ['"5"', /item 0 is/],
  ])('rejects %j naming the file', (text, message) => {
    expect(() => parseTokenIds(text, 'toks.txt')).toThrow(/--tokens file toks\.txt/);
    expect(() => parseTokenIds(text, 'toks.txt')).toThrow(message);
  });
});

describe('conformance arguments', () => {
  it.each(['', ' ', '0,,2', '1.5', '0x2', '0,0'])('--layers %j is a usage error', (layers) => {
    expect(() => parseConformanceArgs(['--weights', 'w', '--layers', layers])).toThrow(UsageError);
  });
});

describe('every command: usage errors exit 2 with the usage line and no stack trace', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dsv32-args-'));
  const tokens = join(dir, 'tokens.txt');
  writeFileSync(tokens, '1 2.5');
  it.each([
    [['conformance', '--weights', 'w', '--layers', ''], /--layers expects .* but got '': item 0 is empty/, /usage: dsv32 conformance/],
    [['conformance', '--weights', join(ROOT, 'fixtures', 'golden', 'public-fp32'), '--tokens', tokens], /--tokens file .* item 1 is "2.5"/, /usage: dsv32 conformance/],
    [['conformance', '--json', 'a.json', '--json', 'b.json'], /--json is given more than once/, /usage: dsv32 conformance/],
    [['encode', 'a.json', 'b.json'], /expected at most 1 FILE/, /usage: dsv32 encode/],
    [['parse', '--thinking-mode', 'x', 'f.txt'], /--thinking-mode must be 'thinking' or 'chat'/, /usage: dsv32 parse/],
    [['info', 'extra'], /unexpected argument 'extra'/, /usage: dsv32 info/],
    [['bench', '--backends', 'wasm,,cpu'], /unknown backend ''/, /usage: dsv32 bench/],
    [['explorer', '--port', '8o'], /--port must be an integer ≥ 0 but got '8o'/, /usage: dsv32 explorer/],
    [['explorer', '--port', '70000'], /--port must be an integer in \[0, 65535\] but got '70000'/, /usage: dsv32 explorer/],
  ])('%j', (argv, message, usage) => {
    const r = cli(argv);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toMatch(usage);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
