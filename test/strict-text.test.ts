// Strict text input: invalid UTF-8 is reported by byte offset (never replaced by U+FFFD), JSON deeper than
// MAX_JSON_DEPTH is an error naming the file and the path (never "Maximum call stack size exceeded"),
// and a file above the size limit is refused with the limit in the message.
import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { decodeUtf8, firstInvalidUtf8, readTextFile, TextInputError } from '../src/cli/read.ts';
import { JsonDepthError, MAX_JSON_DEPTH, parsePyJson, pyJsonDumps } from '../src/pyjson.ts';
import { encodeMessages } from '../src/encoding.ts';

const ROOT = resolve(__dirname, '..');
const dir = mkdtempSync(join(tmpdir(), 'dsv32-text-'));

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'dsv32.js'), ...args], { encoding: 'utf8', cwd: ROOT, timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A message file whose tool parameters nest `depth` arrays. */
function deepMessage(depth: number): string {
  const params = '['.repeat(depth) + ']'.repeat(depth);
  return `{"messages": [{"role": "system", "content": "s", "tools": [{"type": "function", "function": {"name": "f", "parameters": ${params}}}]}, {"role": "user", "content": "hi"}]}`;
}

describe('UTF-8 validation', () => {
  it.each([
    [[0x61, 0xff, 0x62], 1],
    [[0x61, 0x62, 0xc0, 0x80], 2], // overlong NUL
    [[0xe2, 0x82], 0], // truncated 3-byte sequence
    [[0xed, 0xa0, 0x80], 0], // a UTF-16 surrogate
    [[0xf4, 0x90, 0x80, 0x80], 0], // above U+10FFFF
    [[0x68, 0x69, 0x80], 2], // a lone continuation byte
  ])('finds the first invalid sequence in %j at byte %i', (bytes, offset) => {
    expect(firstInvalidUtf8(Uint8Array.from(bytes))).toBe(offset);
    expect(() => decodeUtf8(Uint8Array.from(bytes))).toThrow(new RegExp(`invalid byte sequence at byte offset ${offset} `));
  });

  it('accepts valid text of every length class, a BOM kept', () => {
    const text = '\ufeffa é € 😀 ｜DSML｜';
    const bytes = new TextEncoder().encode(text);
    expect(firstInvalidUtf8(bytes)).toBe(-1);
    expect(decodeUtf8(bytes)).toBe(text);
  });

  it('dsv32 parse: a completion with invalid bytes exits 2 naming the file and the offset', () => {
    const file = join(dir, 'bad.txt');
    writeFileSync(file, Buffer.concat([Buffer.from('Hello '), Buffer.from([0xc3, 0x28]), Buffer.from('</think>done<｜end▁of▁sentence｜>')]));
    const r = cli(['parse', file, '--thinking-mode', 'chat']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/dsv32 parse: .*bad\.txt: not valid UTF-8: invalid byte sequence at byte offset 6 \(0xc3 0x28/);
    expect(r.stdout).toBe('');
  });

  it('dsv32 encode: a message file with invalid bytes exits 2 naming the file and the offset', () => {
    const file = join(dir, 'bad.json');
    writeFileSync(file, Buffer.concat([Buffer.from('{"messages": [{"role": "user", "content": "'), Buffer.from([0xe9]), Buffer.from('"}]}')]));
    const r = cli(['encode', file]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/dsv32 encode: .*bad\.json: not valid UTF-8: invalid byte sequence at byte offset 43 \(0xe9 0x22/);
  });

  it('a file above the size limit is refused with the limit', () => {
    const file = join(dir, 'big.txt');
    writeFileSync(file, 'x'.repeat(2000));
    expect(() => readTextFile(file, 1024)).toThrow(TextInputError);
    expect(() => readTextFile(file, 1024)).toThrow('file is 2000 bytes, more than the limit of 1024 bytes');
  });
});

describe('JSON nesting depth', () => {
  it('parsePyJson reads MAX_JSON_DEPTH levels and names the path one level deeper', () => {
    expect(() => parsePyJson('['.repeat(MAX_JSON_DEPTH) + ']'.repeat(MAX_JSON_DEPTH))).not.toThrow();
    const deep = `{"a": [{"b c": ${'['.repeat(MAX_JSON_DEPTH)}${']'.repeat(MAX_JSON_DEPTH)}}]}`;
    expect(() => parsePyJson(deep)).toThrow(JsonDepthError);
    expect(() => parsePyJson(deep)).toThrow(/^parsePyJson\(\): JSON nests deeper than 512 levels at \$\.a\[0\]\["b c"\]\[0\]×509 \(position \d+\)$/);
  });

  it('pyJsonDumps and encodeMessages refuse a deeper value by path instead of overflowing the stack', () => {
    let v: unknown = [];
    for (let d = 0; d < 5000; d++) v = { k: v };
    expect(() => pyJsonDumps(v as never)).toThrow(/^pyJsonDumps\(\): value nests deeper than 512 levels at \$\.k×512$/);
    const messages = [{ role: 'system', content: 's', tools: [{ type: 'function', function: { name: 'f', parameters: v } }] }, { role: 'user', content: 'hi' }];
    expect(() => encodeMessages(messages as never, { thinkingMode: 'chat' })).toThrow(/pyJsonDumps\(\): value nests deeper than 512 levels/);
  });

  it.each([3000, 10_000])('dsv32 encode: tool parameters nested %i deep exit 2 with the file and the path', (depth) => {
    const file = join(dir, `deep-${depth}.json`);
    writeFileSync(file, deepMessage(depth));
    const r = cli(['encode', file]);
    expect(r.status).toBe(2);
    expect(r.stderr).not.toMatch(/Maximum call stack|invalid JSON/);
    expect(r.stderr).toMatch(new RegExp(`^dsv32 encode: .*deep-${depth}\\.json: parsePyJson\\(\\): JSON nests deeper than 512 levels at \\$\\.messages\\[0\\]\\.tools\\[0\\]\\.function\\.parameters\\[0\\]×506 \\(position`));
  });
});
