/*---
id: encoding.dsml-parameter-string-flag
title: DSML parameters carry string="true" for strings, string="false" with Python JSON otherwise
official: encoding/encoding_dsv32.py encode_arguments_to_dsml, TOOLS_SYSTEM_TEMPLATE
description: string arguments are written raw with string="true"; all other values as Python JSON with string="false"
---*/
import { expect, it } from 'vitest';
import { encodeArgumentsToDsml } from '../../src/encoding.ts';

it('string="true" only for JSON strings', () => {
  const p = (k: string, s: boolean, v: string) => `<｜DSML｜parameter name="${k}" string="${s}">${v}</｜DSML｜parameter>`;
  expect(encodeArgumentsToDsml('{"s": "a \\"q\\"", "n": 1.0, "i": 7, "b": false, "l": ["x", 2], "o": {"k": null}}')).toBe(
    [p('s', true, 'a "q"'), p('n', false, '1.0'), p('i', false, '7'), p('b', false, 'false'), p('l', false, '["x", 2]'), p('o', false, '{"k": null}')].join('\n'),
  );
});
