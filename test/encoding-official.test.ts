/**
 * The official DeepSeek-V3.2 encoding vectors (encoding/test_encoding_dsv32.py), read from ../shared/encoding when
 * present (never copied into this repository): byte-exact prompt after trimming, and the two round trips.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeMessages, parseCompletion } from '../src/encoding.ts';
import type { ChatMessage } from '../src/context.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = path.resolve(repoRoot, '..', 'shared', 'encoding');
const have = existsSync(path.join(dir, 'test_input.json')) && existsSync(path.join(dir, 'test_output.txt'));
if (!have) console.warn(`[encoding-official] skipped: official vectors not found in ${dir}`);

const options = { thinkingMode: 'thinking', dropThinking: true, addDefaultBosToken: true } as const;

function load(): ChatMessage[] {
  const input = JSON.parse(readFileSync(path.join(dir, 'test_input.json'), 'utf8'));
  const messages = input.messages as ChatMessage[];
  messages[0]!.tools = input.tools; // as the official test does
  return messages;
}

describe.skipIf(!have)('official encoding vectors (test_encoding_dsv32.py)', () => {
  it('test_input.json → test_output.txt byte-exact (after trim)', () => {
    const gold = readFileSync(path.join(dir, 'test_output.txt'), 'utf8').trim();
    expect(encodeMessages(load(), options).trim()).toBe(gold);
  });

  it('round trip 1: messages[4] (reasoning + parallel tool calls) with context messages[:4]', () => {
    const messages = load();
    const original = structuredClone(messages[4]!);
    const prompt = encodeMessages([messages[4]!], { ...options, context: messages.slice(0, 4) });
    const parsed: Partial<ReturnType<typeof parseCompletion>> = parseCompletion(prompt, { thinkingMode: 'thinking' });
    delete parsed.content;
    for (const call of original.tool_calls!) delete call.id;
    expect(parsed).toEqual(original);
  });

  it('round trip 2: messages[-6] (reasoning + content) with context messages[:-6]', () => {
    const messages = load();
    const original = messages.at(-6)!;
    const prompt = encodeMessages([original], { ...options, context: messages.slice(0, -6) });
    const parsed: Partial<ReturnType<typeof parseCompletion>> = parseCompletion(prompt, { thinkingMode: 'thinking' });
    delete parsed.tool_calls;
    expect(parsed).toEqual(original);
  });

  const searchInputs = have ? readdirSync(dir).filter((f) => /^test_input_search_.*\.json$/.test(f)) : [];
  if (searchInputs.length === 0) console.warn(`[encoding-official] no test_input_search_*.json in ${dir}: search vectors not run`);
  for (const input of searchInputs) {
    const output = input.replace('test_input_', 'test_output_').replace(/\.json$/, '.txt');
    it.skipIf(!existsSync(path.join(dir, output)))(`${input} → ${output} byte-exact (after trim)`, () => {
      const messages = JSON.parse(readFileSync(path.join(dir, input), 'utf8')).messages as ChatMessage[];
      const gold = readFileSync(path.join(dir, output), 'utf8').trim();
      expect(encodeMessages(messages, options).trim()).toBe(gold);
    });
  }
});
