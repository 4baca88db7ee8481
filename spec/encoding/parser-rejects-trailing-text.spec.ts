/*---
id: encoding.parser-rejects-trailing-text
title: The completion parser rejects text after the tool calls and special tokens in content
official: encoding/encoding_dsv32.py parse_message_from_completion_text
description: nothing but EOS may follow the function_calls block; special tokens may not appear inside content or reasoning
---*/
import { expect, it } from 'vitest';
import { parseCompletion } from '../../src/encoding.ts';

it('text after </｜DSML｜function_calls> and special tokens in content are errors', () => {
  const block = '\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="f">\n\n</｜DSML｜invoke>\n</｜DSML｜function_calls>';
  expect(() => parseCompletion(`${block}more<｜end▁of▁sentence｜>`, { thinkingMode: 'chat' })).toThrow('unexpected text after the function_calls block');
  expect(() => parseCompletion('a</think>b<｜end▁of▁sentence｜>', { thinkingMode: 'chat' })).toThrow("special token '</think>' inside content");
});
