/**
 * encodeMessages / parseCompletion / Python-json on hand-written cases. Every expected prompt below is written out
 * by hand from the V3.2 format rules (official `encoding/encoding_dsv32.py` `encode_messages`,
 * `render_message`), not produced by the encoder.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  CompletionParseError,
  encodeMessages,
  parseCompletion,
  parsePyJson,
  pyFloatRepr,
  pyJsonDumps,
  PyDict,
  PyFloat,
} from '../src/encoding.ts';
import type { ChatMessage, ToolSpec } from '../src/context.ts';

// Special strings, typed here independently of src/.
const BOS = '<｜begin▁of▁sentence｜>';
const EOS = '<｜end▁of▁sentence｜>';
const U = '<｜User｜>';
const A = '<｜Assistant｜>';
const D = '｜DSML｜';
const toolsBlock = (schemaLines: string): string =>
  '## Tools\n\n' +
  "You have access to a set of tools you can use to answer the user's question.\n" +
  `You can invoke functions by writing a "<${D}function_calls>" block like the following as part of your reply to the user:\n` +
  `<${D}function_calls>\n<${D}invoke name="$FUNCTION_NAME">\n` +
  `<${D}parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</${D}parameter>\n...\n</${D}invoke>\n` +
  `<${D}invoke name="$FUNCTION_NAME2">\n...\n</${D}invoke>\n</${D}function_calls>\n\n` +
  'String and scalar parameters should be specified as is without any escaping or quotes, while lists and objects should use JSON format. ' +
  'The "string" attribute should be set to "true" for string type parameters and "false" for other types (numbers, booleans, arrays, objects).\n\n' +
  'If the thinking_mode is enabled, then after function results you should strongly consider outputting a thinking block. Here is an example:\n\n' +
  `<${D}function_calls>\n...\n</${D}function_calls>\n\n<function_results>\n...\n</function_results>\n\n` +
  '<think>...thinking about results</think>\n\n' +
  'Here are the functions available in JSONSchema format:\n<functions>\n' +
  schemaLines +
  '\n</functions>\n';
const call = (name: string, args: string, id = 'c') => ({ id, type: 'function' as const, function: { name, arguments: args } });
const calls = (...invokes: string[]) => `\n\n<${D}function_calls>\n${invokes.join('\n')}\n</${D}function_calls>`;
const invoke = (name: string, ...params: string[]) => `<${D}invoke name="${name}">\n${params.join('\n')}\n</${D}invoke>`;
const param = (k: string, str: boolean, v: string) => `<${D}parameter name="${k}" string="${str}">${v}</${D}parameter>`;

const weatherTool: ToolSpec = {
  type: 'function',
  function: { name: 'weather', description: 'Weather of a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
};
const weatherLine =
  '{"name": "weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}';

describe('encodeMessages: hand-written prompts', () => {
  it('chat mode: no <think>, every user turn closes with </think>, reasoning never rendered', () => {
    const messages: ChatMessage[] = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', reasoning_content: 'greet', content: 'Hello' },
      { role: 'user', content: 'Bye' },
      { role: 'assistant', reasoning_content: 'farewell', content: 'Ciao' },
    ];
    expect(encodeMessages(messages, { thinkingMode: 'chat' })).toBe(
      `${BOS}Be brief.${U}Hi${A}</think>Hello${EOS}${U}Bye${A}</think>Ciao${EOS}`,
    );
  });

  it('thinking mode, one tool round: reasoning of the current turn kept, <think> re-opened after the results', () => {
    const messages: ChatMessage[] = [
      { role: 'system', content: 'S', tools: [weatherTool] },
      { role: 'user', content: 'Weather in Oslo?' },
      { role: 'assistant', reasoning_content: 'need tool', tool_calls: [call('weather', '{"city": "Oslo"}')] },
      { role: 'tool', tool_call_id: 'c', content: 'rain' },
      { role: 'assistant', reasoning_content: 'got it', content: 'Rainy.' },
    ];
    expect(encodeMessages(messages, { thinkingMode: 'thinking' })).toBe(
      `${BOS}S\n\n${toolsBlock(weatherLine)}${U}Weather in Oslo?${A}<think>` +
        `need tool</think>${calls(invoke('weather', param('city', true, 'Oslo')))}${EOS}` +
        `\n\n<function_results>\n<result>rain</result>\n</function_results>\n\n<think>` +
        `got it</think>Rainy.${EOS}`,
    );
  });

  it('thinking mode, several tool rounds and a second user turn: old reasoning dropped, tool history kept', () => {
    const messages: ChatMessage[] = [
      { role: 'user', content: 'Q1' },
      { role: 'assistant', reasoning_content: 'r1', tool_calls: [call('f', '{"a": "1"}')] },
      { role: 'tool', content: 'x1' },
      { role: 'assistant', reasoning_content: 'r2', tool_calls: [call('f', '{"a": "2"}')] },
      { role: 'tool', content: 'x2' },
      { role: 'assistant', reasoning_content: 'r3', content: 'A1' },
      { role: 'user', content: 'Q2' },
      { role: 'assistant', reasoning_content: 'r4', tool_calls: [call('f', '{"a": "3"}')] },
      { role: 'tool', content: 'x3' },
      { role: 'assistant', reasoning_content: 'r5', tool_calls: [call('f', '{"a": "4"}')] },
      { role: 'tool', content: 'x4' },
    ];
    const f = (v: string) => calls(invoke('f', param('a', true, v)));
    const results = (x: string, open: string) => `\n\n<function_results>\n<result>${x}</result>\n</function_results>\n\n${open}`;
    expect(encodeMessages(messages, { thinkingMode: 'thinking' })).toBe(
      `${BOS}${U}Q1${A}</think>` +
        `${f('1')}${EOS}${results('x1', '</think>')}` +
        `${f('2')}${EOS}${results('x2', '</think>')}` +
        `A1${EOS}` +
        `${U}Q2${A}<think>` +
        `r4</think>${f('3')}${EOS}${results('x3', '<think>')}` +
        `r5</think>${f('4')}${EOS}${results('x4', '<think>')}`,
    );
  });

  it('parallel tool calls: one function_calls block, results grouped in one <function_results>', () => {
    const messages: ChatMessage[] = [
      { role: 'user', content: 'Q' },
      { role: 'assistant', reasoning_content: 'two', tool_calls: [call('f', '{"a": "x"}', 'c1'), call('g', '{}', 'c2')] },
      { role: 'tool', tool_call_id: 'c1', content: 'X' },
      { role: 'tool', tool_call_id: 'c2', content: 'Y' },
    ];
    expect(encodeMessages(messages, { thinkingMode: 'thinking' })).toBe(
      `${BOS}${U}Q${A}<think>two</think>` +
        `\n\n<${D}function_calls>\n<${D}invoke name="f">\n${param('a', true, 'x')}\n</${D}invoke>\n` +
        `<${D}invoke name="g">\n\n</${D}invoke>\n</${D}function_calls>${EOS}` +
        `\n\n<function_results>\n<result>X</result>\n<result>Y</result>\n</function_results>\n\n<think>`,
    );
  });

  it('developer message carrying tools and a response format counts as the user turn', () => {
    const messages: ChatMessage[] = [
      { role: 'developer', content: 'Find it.', tools: [weatherTool], response_format: { type: 'json_object' } },
      { role: 'assistant', reasoning_content: 'plan', content: '{}' },
    ];
    expect(encodeMessages(messages, { thinkingMode: 'thinking' })).toBe(
      `${BOS}${U}\n\n${toolsBlock(weatherLine)}` +
        '\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n{"type": "json_object"}' +
        `\n\n# The user's message is: Find it.${A}<think>plan</think>{}${EOS}`,
    );
  });

  it('response format on a system message (float literal kept as Python float)', () => {
    const schema = parsePyJson('{"type": "object", "properties": {"score": {"type": "number", "maximum": 1.0}}}');
    const messages: ChatMessage[] = [{ role: 'system', content: 'S', response_format: schema }, { role: 'user', content: 'go' }];
    expect(encodeMessages(messages, { thinkingMode: 'chat' })).toBe(
      `${BOS}S\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n` +
        `{"type": "object", "properties": {"score": {"type": "number", "maximum": 1.0}}}${U}go${A}</think>`,
    );
  });

  it('non-string argument values: Python json.dumps of numbers, objects, arrays, booleans, null; unicode raw', () => {
    const args = '{"n": 3, "f": 1.0, "e": 1e-7, "big": 12345678901234567890, "o": {"k": [1, "é\\n"]}, "b": true, "z": null, "u": "日本 \\"q\\"", "x": 1E400, "m": -0}';
    const messages: ChatMessage[] = [{ role: 'user', content: 'Q' }, { role: 'assistant', tool_calls: [call('t', args)] }];
    expect(encodeMessages(messages, { thinkingMode: 'chat', context: [] })).toBe(
      `${BOS}${U}Q${A}</think>` +
        calls(
          invoke(
            't',
            param('n', false, '3'),
            param('f', false, '1.0'),
            param('e', false, '1e-07'),
            param('big', false, '12345678901234567890'),
            param('o', false, '{"k": [1, "é\\n"]}'),
            param('b', false, 'true'),
            param('z', false, 'null'),
            param('u', true, '日本 "q"'),
            param('x', false, 'Infinity'),
            param('m', false, '0'),
          ),
        ) +
        EOS,
    );
  });

  it('argument keys keep source order, integer-like keys included; duplicate keys keep first position, last value', () => {
    const messages: ChatMessage[] = [{ role: 'user', content: 'Q' }, { role: 'assistant', tool_calls: [call('t', '{"b": 1, "2": 2, "b": 3}')] }];
    expect(encodeMessages(messages, { thinkingMode: 'chat' })).toBe(
      `${BOS}${U}Q${A}</think>${calls(invoke('t', param('b', false, '3'), param('2', false, '2')))}${EOS}`,
    );
  });

  it('context: no BOS, indices continue; addDefaultBosToken=false drops BOS', () => {
    const context: ChatMessage[] = [{ role: 'user', content: 'Q' }];
    expect(encodeMessages([{ role: 'assistant', reasoning_content: 'r', content: 'a' }], { thinkingMode: 'thinking', context })).toBe(
      `r</think>a${EOS}`,
    );
    expect(encodeMessages(context, { thinkingMode: 'thinking', addDefaultBosToken: false })).toBe(`${U}Q${A}<think>`);
  });

  it('dropThinking=false renders the same prompt (reasoning before the last user message is never rendered)', () => {
    const messages: ChatMessage[] = [
      { role: 'user', content: 'Q1' },
      { role: 'assistant', reasoning_content: 'old', content: 'A1' },
      { role: 'user', content: 'Q2' },
    ];
    const expected = `${BOS}${U}Q1${A}</think>A1${EOS}${U}Q2${A}<think>`;
    expect(encodeMessages(messages, { thinkingMode: 'thinking', dropThinking: false })).toBe(expected);
    expect(encodeMessages(messages, { thinkingMode: 'thinking' })).toBe(expected);
  });
});

describe('encodeMessages: invalid messages', () => {
  const enc = (messages: unknown[], mode: 'thinking' | 'chat' = 'thinking') => () =>
    encodeMessages(messages as ChatMessage[], { thinkingMode: mode });
  it.each([
    ['unknown role', [{ role: 'bot', content: 'x' }], RangeError, `encodeMessages(): messages[0].role must be one of system, developer, user, assistant, tool but got "bot"`],
    ['tool without a preceding tool call', [{ role: 'user', content: 'q' }, { role: 'tool', content: 'r' }], RangeError,
      `encodeMessages(): messages[1] (role 'tool') must follow an assistant message with at least 1 tool call(s) but got user message with 0 tool call(s) 1 message(s) before`],
    ['more tool results than calls', [{ role: 'user', content: 'q' }, { role: 'assistant', tool_calls: [call('f', '{}')] }, { role: 'tool', content: 'a' }, { role: 'tool', content: 'b' }], RangeError,
      `encodeMessages(): messages[3] (role 'tool') must follow an assistant message with at least 2 tool call(s) but got assistant message with 1 tool call(s) 2 message(s) before`],
    ['developer with empty content', [{ role: 'developer', content: '' }], RangeError, `encodeMessages(): messages[0].content must be a non-empty string for role 'developer' but got ""`],
    ['assistant without reasoning or tool calls after the last user message', [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }], RangeError,
      `encodeMessages(): messages[1] (assistant after the last user message, thinking mode) must have reasoning_content or tool_calls but got neither`],
    ['arguments not valid JSON', [{ role: 'user', content: 'q' }, { role: 'assistant', tool_calls: [call('f', '{"a": }')] }], TypeError,
      `encodeMessages(): messages[1].tool_calls[0].function.arguments must be a JSON object string but got invalid JSON: unexpected character at position 6`],
    ['arguments a JSON array', [{ role: 'user', content: 'q' }, { role: 'assistant', tool_calls: [call('f', '[1]')] }], TypeError,
      `encodeMessages(): messages[1].tool_calls[0].function.arguments must be a JSON object string but got "[1]"`],
    ['arguments not a string', [{ role: 'user', content: 'q' }, { role: 'assistant', tool_calls: [{ function: { name: 'f', arguments: { a: 1 } } }] }], TypeError,
      `encodeMessages(): messages[1].tool_calls[0].function.arguments must be a JSON object string but got {"a": 1}`],
    ['user content not a string', [{ role: 'user', content: null }], TypeError, `encodeMessages(): messages[0].content must be a string for role 'user' but got null`],
  ] as const)('%s', (_name, messages, ErrorType, message) => {
    expect(enc(messages as unknown as unknown[])).toThrow(ErrorType);
    expect(enc(messages as unknown as unknown[])).toThrow(message);
  });

  it('names context messages as context[i] and rejects a bad thinkingMode', () => {
    expect(() => encodeMessages([], { thinkingMode: 'chat', context: [{ role: 'x' } as never] })).toThrow(
      'encodeMessages(): context[0].role must be one of',
    );
    expect(() => encodeMessages([], { thinkingMode: 'fast' as never })).toThrow(
      new RangeError(`encodeMessages(): options.thinkingMode must be 'thinking' or 'chat' but got "fast"`),
    );
  });
});

describe('parseCompletion', () => {
  it('thinking mode: reasoning, content and tool calls with arguments rebuilt as Python JSON', () => {
    const text =
      `plan</think>Let me check.\n\n<${D}function_calls>\n<${D}invoke name="f">\n` +
      `${param('q', true, 'a "b"\n')}\n${param('n', false, '[1, 2.50]')}\n</${D}invoke>\n</${D}function_calls>${EOS}`;
    expect(parseCompletion(text, { thinkingMode: 'thinking' })).toEqual({
      role: 'assistant',
      content: 'Let me check.',
      reasoning_content: 'plan',
      tool_calls: [{ type: 'function', function: { name: 'f', arguments: '{"q": "a \\"b\\"\\n", "n": [1, 2.50]}' } }],
    });
  });

  it('chat mode: content only; a tool-call completion may end without EOS', () => {
    expect(parseCompletion(`Hello${EOS}`, { thinkingMode: 'chat' })).toEqual({ role: 'assistant', content: 'Hello', reasoning_content: '', tool_calls: [] });
    const noEos = `\n\n<${D}function_calls>\n<${D}invoke name="g">\n\n</${D}invoke>\n</${D}function_calls>`;
    expect(parseCompletion(noEos, { thinkingMode: 'chat' }).tool_calls).toEqual([{ type: 'function', function: { name: 'g', arguments: '{}' } }]);
  });

  const block = (...params: string[]) => `\n\n<${D}function_calls>\n${invoke('f', ...params)}\n</${D}function_calls>`;
  it.each([
    ['duplicate parameter', `r</think>${block(param('a', true, '1'), param('a', true, '2'))}${EOS}`, 'duplicate parameter "a" in invoke "f"'],
    ['text after the function_calls block', `r</think>${block(param('a', true, '1'))}oops${EOS}`, 'unexpected text after the function_calls block: "oops"'],
    ['special token in content', `r</think>a<think>b${EOS}`, `special token '<think>' inside content is not allowed`],
    ['special token in reasoning', `r${EOS}x</think>a${EOS}`, `special token '${EOS}' inside reasoning_content is not allowed`],
    ['missing </think> in thinking mode', `just text${EOS}`, `thinking mode: the reasoning must end with '</think>' but got the end of the text`],
    ['missing EOS', `r</think>no end`, `the content must end with '${EOS}' or a function_calls block but got the end of the text`],
    ['text after EOS', `r</think>a${EOS}\n`, `unexpected text after '${EOS}' (whitespace, e.g. a trailing newline, counts)`],
    ['string="false" value that is not JSON', `r</think>${block(param('a', false, 'Paris'))}${EOS}`, 'parameter "a" of invoke "f" has string="false" but its value is not JSON'],
    ['unclosed function_calls block', `r</think>\n\n<${D}function_calls>\n${invoke('f', param('a', true, '1'))}\n`, 'the function_calls block is not closed'],
    ['bad parameter markup', `r</think>${block(`<${D}parameter name="a">1</${D}parameter>`)}${EOS}`, `parameter of invoke "f" must be ' name="KEY" string="true|false">VALUE</${D}parameter>'`],
  ])('rejects %s', (_name, text, message) => {
    expect(() => parseCompletion(text, { thinkingMode: 'thinking' })).toThrow(CompletionParseError);
    expect(() => parseCompletion(text, { thinkingMode: 'thinking' })).toThrow(`parseCompletion(): ${message}`);
  });

  it('rejects a bad thinkingMode and a non-string text', () => {
    expect(() => parseCompletion('x', { thinkingMode: 'deep' as never })).toThrow(
      new RangeError(`parseCompletion(): options.thinkingMode must be 'thinking' or 'chat' but got "deep"`),
    );
    expect(() => parseCompletion(3 as never, { thinkingMode: 'chat' })).toThrow(new TypeError('parseCompletion(): text must be a string but got 3'));
  });
});

describe('Python json (json.loads / json.dumps(ensure_ascii=False))', () => {
  it.each([
    [1, '1.0'], [0.1, '0.1'], [1e-7, '1e-07'], [1e16, '1e+16'], [1e15, '1000000000000000.0'], [0.0001, '0.0001'],
    [0.00001, '1e-05'], [123456789012345678, '1.2345678901234568e+17'], [-0, '-0.0'], [1.5e300, '1.5e+300'],
    [5e-324, '5e-324'], [1.7976931348623157e308, '1.7976931348623157e+308'], [100, '100.0'], [1e22, '1e+22'],
    [123.456, '123.456'], [1 / 3, '0.3333333333333333'], [2.5e-5, '2.5e-05'], [-2.5, '-2.5'], [Infinity, 'Infinity'], [NaN, 'NaN'],
  ])('repr(float(%s)) = %s', (x, repr) => {
    expect(pyFloatRepr(x)).toBe(repr);
  });

  it('dumps: separators, escapes, non-ASCII raw, ints vs floats, PyDict order', () => {
    expect(pyJsonDumps('a\u0001\u001f\u007f"\\/é\u2028\n\t\b\f\r')).toBe('"a\\u0001\\u001f\u007f\\"\\\\/é\u2028\\n\\t\\b\\f\\r"');
    expect(pyJsonDumps({ a: [1, new PyFloat(2), 2.5, 1e21, 12345678901234567890n], b: {}, c: [] })).toBe(
      '{"a": [1, 2.0, 2.5, 1000000000000000000000, 12345678901234567890], "b": {}, "c": []}',
    );
    expect(pyJsonDumps(new PyDict([['b', 1], ['2', 2]]))).toBe('{"b": 1, "2": 2}');
  });

  it('loads: keeps number kinds and key order as Python does', () => {
    expect(pyJsonDumps(parsePyJson('{"b": 1, "2": 2, "b": 3, "x": -0, "y": 1E400, "z": [1e5, 12345678901234567890, -0.0, NaN, -Infinity]}'))).toBe(
      '{"b": 3, "2": 2, "x": 0, "y": Infinity, "z": [100000.0, 12345678901234567890, -0.0, NaN, -Infinity]}',
    );
    expect(parsePyJson(' {"a": "\\u00e9\\ud83d\\ude00"} ')).toEqual({ a: 'é😀' });
  });

  it.each([['{"a": 1,}', 'expected a property name in double quotes at position 8'], ['[01]', "expected ',' or ']' at position 2"],
    ['"a\nb"', 'invalid control character in string at position 2'], ['{} x', 'extra data after the JSON value at position 3'],
    ['"\\x"', 'invalid escape at position 1'], ['', 'unexpected end of input at position 0']])('loads rejects %j', (text, message) => {
    expect(() => parsePyJson(text)).toThrow(SyntaxError);
    expect(() => parsePyJson(text)).toThrow(message);
  });
});

describe('property: parseCompletion(encodeMessages([m], context)) = m', () => {
  const DSML_FREE = (s: string) => ![BOS, EOS, '<think>', '</think>', D].some((t) => s.includes(t));
  const text = fc.string({ unit: fc.constantFrom('a', 'Z', ' ', '\n', '<', '>', '"', '\\', '/', 'é', '日', '😀', '|', '｜', 'think'), maxLength: 12 }).filter(DSML_FREE);
  const key = fc.stringMatching(/^[a-z_][a-z0-9_]{0,6}$/);
  const leaf = fc.oneof(
    text,
    fc.integer({ min: -1e6, max: 1e6 }),
    fc.double({ noNaN: true, noDefaultInfinity: true }).map((x) => new PyFloat(x)),
    fc.boolean(),
    fc.constant(null),
  );
  const value = fc.letrec<{ v: unknown }>((tie) => ({
    v: fc.oneof({ depthSize: 'small' }, leaf, fc.array(tie('v'), { maxLength: 3 }), fc.dictionary(key, tie('v'), { maxKeys: 3 })),
  })).v;
  const toolCall = fc.record({ name: key, args: fc.dictionary(key, value, { maxKeys: 4 }) }).map(({ name, args }) => ({
    type: 'function' as const,
    function: { name, arguments: pyJsonDumps(args as never) },
  }));
  const turn = fc.record({ content: text, reasoning_content: text, tool_calls: fc.array(toolCall, { maxLength: 3 }) });

  it.each(['thinking', 'chat'] as const)('%s mode', (mode) => {
    fc.assert(
      fc.property(turn, (t) => {
        fc.pre(mode === 'chat' || t.reasoning_content !== '' || t.tool_calls.length > 0);
        const m = { role: 'assistant' as const, ...t, reasoning_content: mode === 'chat' ? '' : t.reasoning_content };
        const prompt = encodeMessages([m], { thinkingMode: mode, context: [{ role: 'user', content: 'q' }] });
        expect(parseCompletion(prompt, { thinkingMode: mode })).toEqual(m);
      }),
      { numRuns: 300 },
    );
  });
});
