/*---
id: encoding.parse-inverts-encode
title: Parsing an encoded assistant turn returns the turn
official: encoding/test_encoding_dsv32.py (round-trip checks)
description: parsing the encoding of one assistant turn (earlier messages as context) gives the turn back, without tool-call ids
---*/
import { expect, it } from 'vitest';
import { encodeMessages, parseCompletion } from '../../src/encoding.ts';

it('reasoning, content and parallel tool calls survive encode → parse', () => {
  const turn = {
    role: 'assistant' as const,
    reasoning_content: '想一想 🌤️',
    content: 'Checking <both>.',
    tool_calls: [
      { type: 'function' as const, function: { name: 'w', arguments: '{"city": "杭州", "days": 2, "units": ["C"]}' } },
      { type: 'function' as const, function: { name: 'w', arguments: '{"city": "Beijing", "ratio": 0.5}' } },
    ],
  };
  const prompt = encodeMessages([{ ...turn, tool_calls: turn.tool_calls.map((c, i) => ({ id: `id${i}`, ...c })) }], {
    thinkingMode: 'thinking',
    context: [{ role: 'user', content: 'Q' }],
  });
  expect(parseCompletion(prompt, { thinkingMode: 'thinking' })).toEqual(turn);
});
