/*---
id: context.developer-counts-as-user
title: A developer message counts as a user turn for the retention rule
official: encoding/encoding_dsv32.py find_last_user_index, render_message (developer)
description: a developer message is a user turn for the retention rule and opens <think> when last
---*/
import { expect, it } from 'vitest';
import { findLastUserIndex } from '../../src/context.ts';
import { encodeMessages } from '../../src/encoding.ts';

it('the developer message is the last user message; its content follows "# The user\'s message is: "', () => {
  const messages = [
    { role: 'user' as const, content: 'Q' },
    { role: 'assistant' as const, reasoning_content: 'R-OLD', content: 'A' },
    { role: 'developer' as const, content: 'D' },
  ];
  expect(findLastUserIndex(messages)).toBe(2);
  const prompt = encodeMessages(messages, { thinkingMode: 'thinking' });
  expect(prompt.endsWith("<｜User｜>\n\n# The user's message is: D<｜Assistant｜><think>")).toBe(true);
  expect(prompt).not.toContain('R-OLD');
});
