/** `dsv32 encode` / `dsv32 parse` through the real entry point (node bin/dsv32.js), stdout compared byte for byte. */
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = mkdtempSync(path.join(tmpdir(), 'dsv32-cli-encode-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const BOS = '<｜begin▁of▁sentence｜>';
const EOS = '<｜end▁of▁sentence｜>';
const D = '｜DSML｜';

function cli(args: string[], file?: { name: string; text: string }) {
  const argv = [...args];
  if (file) {
    const p = path.join(tmp, file.name);
    writeFileSync(p, file.text, 'utf8');
    argv.splice(1, 0, p);
  }
  const r = spawnSync(process.execPath, [path.join(repoRoot, 'bin', 'dsv32.js'), ...argv], { cwd: repoRoot, encoding: 'buffer' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr.toString('utf8') };
}

describe('dsv32 encode', () => {
  it('writes the prompt byte for byte; top-level tools go to messages[0]; float literals and key order survive', () => {
    const input = `{
      "tools": [{"type": "function", "function": {"name": "f", "parameters": {"properties": {"b": {"minimum": 0.0}, "1": {}}}}}],
      "messages": [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "é?"},
        {"role": "assistant", "reasoning_content": "r", "tool_calls": [{"id": null, "type": "function", "function": {"name": "f", "arguments": "{\\"b\\": 2.0}"}}]}
      ]
    }`;
    const r = cli(['encode'], { name: 'in.json', text: input });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const tail =
      'Here are the functions available in JSONSchema format:\n<functions>\n' +
      '{"name": "f", "parameters": {"properties": {"b": {"minimum": 0.0}, "1": {}}}}\n</functions>\n' +
      `<｜User｜>é?<｜Assistant｜><think>r</think>\n\n<${D}function_calls>\n<${D}invoke name="f">\n` +
      `<${D}parameter name="b" string="false">2.0</${D}parameter>\n</${D}invoke>\n</${D}function_calls>${EOS}`;
    const out = r.stdout.toString('utf8');
    expect(out.startsWith(`${BOS}S\n\n## Tools\n\n`)).toBe(true);
    expect(out.endsWith(tail)).toBe(true);
    expect(r.stdout.equals(Buffer.from(out, 'utf8'))).toBe(true); // no stray bytes, no added newline
  });

  const official = path.resolve(repoRoot, '..', 'shared', 'encoding');
  const haveOfficial = existsSync(path.join(official, 'test_input.json'));
  if (!haveOfficial) console.warn(`[cli-encode] skipped the official-vector CLI check: ${official} not found`);
  it.skipIf(!haveOfficial)('official test_input.json → test_output.txt through the CLI (after trim)', () => {
    const r = cli(['encode', path.join(official, 'test_input.json')]);
    expect(r.code).toBe(0);
    expect(r.stdout.toString('utf8').trim()).toBe(readFileSync(path.join(official, 'test_output.txt'), 'utf8').trim());
  });

  it('--thinking-mode chat and --no-drop-thinking', () => {
    const input = JSON.stringify({ messages: [{ role: 'user', content: 'Q' }, { role: 'assistant', reasoning_content: 'r', content: 'A' }] });
    const r = cli(['encode', '--thinking-mode', 'chat', '--no-drop-thinking'], { name: 'chat.json', text: input });
    expect(r.code).toBe(0);
    expect(r.stdout.equals(Buffer.from(`${BOS}<｜User｜>Q<｜Assistant｜></think>A${EOS}`, 'utf8'))).toBe(true);
  });

  it.each([
    ['invalid JSON', '{"messages": [}', 'invalid JSON: unexpected character at position 14'],
    ['no messages array', '{"msgs": []}', 'expected a "messages" array at the top level'],
    ['unknown role', '{"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "x"}]}', 'encodeMessages(): messages[1].role must be one of'],
    ['tools with a user first message', '{"tools": [], "messages": [{"role": "user", "content": "q"}]}', 'must be a system or developer message but got role "user"'],
  ])('bad file (%s): exit 2 and a message naming the problem', (_n, text, message) => {
    const r = cli(['encode'], { name: 'bad.json', text });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('bad.json: ');
    expect(r.stderr).toContain(message);
    expect(r.stdout.length).toBe(0);
  });

  it('missing file and bad arguments: exit 2', () => {
    const missing = cli(['encode', path.join(tmp, 'nope.json')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('cannot read file');
    const badMode = cli(['encode', 'x.json', '--thinking-mode', 'fast']);
    expect(badMode.code).toBe(2);
    expect(badMode.stderr).toContain("--thinking-mode must be 'thinking' or 'chat' but got 'fast'");
  });
});

describe('dsv32 parse', () => {
  it('prints the parsed message as JSON; a malformed completion exits 2', () => {
    const ok = cli(['parse', '--thinking-mode', 'thinking'], { name: 'c.txt', text: `why</think>Hi${EOS}` });
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout.toString('utf8'))).toEqual({ role: 'assistant', content: 'Hi', reasoning_content: 'why', tool_calls: [] });
    const bad = cli(['parse'], { name: 'bad.txt', text: `why</think>Hi${EOS}\n` });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('(whitespace, e.g. a trailing newline, counts)');
  });
});
