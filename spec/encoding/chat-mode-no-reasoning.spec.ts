/*---
id: encoding.chat-mode-no-reasoning
title: Non-thinking mode renders no reasoning and closes every think block
official: encoding/encoding_dsv32.py render_message (thinking_mode == "chat")
description: in non-thinking (chat) mode no reasoning is rendered and every user turn and tool-result group ends with </think>
---*/
import { expect, it } from 'vitest';
import { encodeMessages } from '../../src/encoding.ts';

it('chat mode closes the think block at once', () => {
  const prompt = encodeMessages(
    [
      { role: 'user', content: 'Q' },
      { role: 'assistant', reasoning_content: 'HIDDEN', tool_calls: [{ type: 'function', function: { name: 'f', arguments: '{}' } }] },
      { role: 'tool', content: 'x' },
    ],
    { thinkingMode: 'chat' },
  );
  expect(prompt).not.toContain('HIDDEN');
  expect(prompt).not.toContain('<think>');
  expect(prompt.startsWith('<｜begin▁of▁sentence｜><｜User｜>Q<｜Assistant｜></think>\n\n<｜DSML｜function_calls>')).toBe(true);
  expect(prompt.endsWith('</function_results>\n\n</think>')).toBe(true);
});
