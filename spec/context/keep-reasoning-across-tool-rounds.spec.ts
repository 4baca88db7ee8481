/*---
id: context.keep-reasoning-across-tool-rounds
title: The current turn's reasoning is retained across any number of tool rounds
paper: §3.2.1, "Thinking Context Management"
official: encoding/encoding_dsv32.py render_message (assistant, tool)
info: |
  If only tool-related messages (e.g., tool outputs) are appended, the reasoning content is retained
  throughout the interaction.
description: while only tool messages are appended, the current turn's reasoning is retained (any number of tool rounds)
---*/
import { expect, it } from 'vitest';
import { visibleContext, type ChatMessage } from '../../src/context.ts';
import { encodeMessages } from '../../src/encoding.ts';

it('three tool rounds after the user message keep all three reasonings and re-open <think> after each result', () => {
  const call = { type: 'function' as const, function: { name: 'f', arguments: '{}' } };
  const messages: ChatMessage[] = [{ role: 'user', content: 'Q' }];
  for (const r of ['R1', 'R2', 'R3']) messages.push({ role: 'assistant', reasoning_content: r, tool_calls: [call] }, { role: 'tool', content: 'x' });
  expect(visibleContext(messages, 'thinking').map((m) => m.reasoning_content ?? null)).toEqual([null, 'R1', null, 'R2', null, 'R3', null]);
  const prompt = encodeMessages(messages, { thinkingMode: 'thinking' });
  for (const r of ['R1', 'R2', 'R3']) expect(prompt).toContain(`${r}</think>`);
  expect(prompt.split('</function_results>\n\n<think>').length - 1).toBe(3);
});
