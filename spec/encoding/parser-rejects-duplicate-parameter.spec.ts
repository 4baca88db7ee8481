/*---
id: encoding.parser-rejects-duplicate-parameter
title: The completion parser rejects a repeated parameter name
official: encoding/encoding_dsv32.py parse_tool_calls ("Duplicate parameter name")
description: a completion whose invoke repeats a parameter name is rejected
---*/
import { expect, it } from 'vitest';
import { CompletionParseError, parseCompletion } from '../../src/encoding.ts';

it('duplicate parameter → CompletionParseError', () => {
  const p = (v: string) => `<｜DSML｜parameter name="city" string="true">${v}</｜DSML｜parameter>`;
  const text = `r</think>\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="w">\n${p('A')}\n${p('B')}\n</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>`;
  expect(() => parseCompletion(text, { thinkingMode: 'thinking' })).toThrow(CompletionParseError);
  expect(() => parseCompletion(text, { thinkingMode: 'thinking' })).toThrow('duplicate parameter "city" in invoke "w"');
});
