/*---
id: context.keep-tool-history-when-dropping
title: Tool calls and tool results stay in the context when reasoning is removed
paper: §3.2.1, "Thinking Context Management"
info: |
  When reasoning traces are removed, the history of tool calls and their results remains preserved in
  the context.
description: when reasoning is removed, tool calls and tool results of earlier turns stay in the context
---*/
import { expect, it } from 'vitest';
import { dropThinking, type ChatMessage } from '../../src/context.ts';
import { encodeMessages } from '../../src/encoding.ts';

it('an earlier turn keeps its DSML tool call and its <function_results>, closed with </think>', () => {
  const messages: ChatMessage[] = [
    { role: 'user', content: 'Q1' },
    { role: 'assistant', reasoning_content: 'gone', tool_calls: [{ type: 'function', function: { name: 'lookup', arguments: '{"k": "v"}' } }] },
    { role: 'tool', content: 'RESULT' },
    { role: 'assistant', reasoning_content: 'gone too', content: 'A1' },
    { role: 'user', content: 'Q2' },
  ];
  const kept = dropThinking(messages);
  expect(kept[1]!.tool_calls).toEqual(messages[1]!.tool_calls);
  expect(kept[2]).toBe(messages[2]);
  const prompt = encodeMessages(messages, { thinkingMode: 'thinking' });
  expect(prompt).toContain('<｜DSML｜invoke name="lookup">');
  expect(prompt).toContain('<function_results>\n<result>RESULT</result>\n</function_results>\n\n</think>A1');
  expect(prompt).not.toContain('gone');
});
