/*---
id: context.drop-reasoning-on-new-user-turn
title: Reasoning of earlier turns is discarded when a new user message arrives
paper: §3.2.1, "Thinking Context Management"
official: encoding/encoding_dsv32.py drop_thinking_messages
info: |
  Historical reasoning content is discarded only when a new user message is introduced to the
  conversation.
description: reasoning of assistant turns before a new user message is discarded from the context
---*/
import { expect, it } from 'vitest';
import { dropThinking } from '../../src/context.ts';
import { encodeMessages } from '../../src/encoding.ts';

it('a new user message drops the earlier turn\'s reasoning, in the message list and in the prompt', () => {
  const messages = [
    { role: 'user', content: 'Q1' },
    { role: 'assistant', reasoning_content: 'OLD-REASONING', content: 'A1' },
    { role: 'user', content: 'Q2' },
  ] as const;
  expect(dropThinking([...messages])[1]).toEqual({ role: 'assistant', content: 'A1' });
  const prompt = encodeMessages([...messages], { thinkingMode: 'thinking' });
  expect(prompt).not.toContain('OLD-REASONING');
  expect(prompt).toContain('<｜Assistant｜></think>A1<｜end▁of▁sentence｜>');
});
