/**
 * The V3.2 reasoning-retention rule (paper §3.2.1; official drop_thinking_messages / find_last_user_index),
 * checked at every position of a hand-written conversation against a hand-written table.
 */
import { describe, expect, it } from 'vitest';
import { dropThinking, findLastUserIndex, validateMessages, visibleContext, type ChatMessage } from '../src/context.ts';
import { encodeMessages } from '../src/encoding.ts';

const tc = (name: string) => [{ id: name, type: 'function' as const, function: { name, arguments: '{}' } }];
// index:                                                         role
const conversation: ChatMessage[] = [
  { role: 'system', content: 'sys' }, //                           0
  { role: 'user', content: 'u1' }, //                              1
  { role: 'assistant', reasoning_content: 'r2', tool_calls: tc('a') }, // 2
  { role: 'tool', content: 't3' }, //                              3
  { role: 'assistant', reasoning_content: 'r4', tool_calls: tc('b') }, // 4
  { role: 'tool', content: 't5' }, //                              5
  { role: 'assistant', reasoning_content: 'r6', content: 'c6' }, // 6
  { role: 'user', content: 'u7' }, //                              7
  { role: 'assistant', reasoning_content: 'r8', tool_calls: tc('c') }, // 8
  { role: 'tool', content: 't9' }, //                              9
  { role: 'developer', content: 'd10' }, //                        10
  { role: 'assistant', reasoning_content: 'r11', content: 'c11' }, // 11
];
/** Hand-written: for the prefix conversation[0..n], which reasoning the model still sees (thinking mode). */
const keptAfterPrefix: Record<number, string[]> = {
  0: [], 1: [], 2: ['r2'], 3: ['r2'], 4: ['r2', 'r4'], 5: ['r2', 'r4'], 6: ['r2', 'r4', 'r6'],
  7: [], 8: ['r8'], 9: ['r8'], 10: [], 11: ['r11'],
};
const lastUserOfPrefix: Record<number, number> = { 0: -1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 7, 8: 7, 9: 7, 10: 10, 11: 10 };
const reasonings = (ms: ChatMessage[]) => ms.flatMap((m) => (m.reasoning_content ? [m.reasoning_content] : []));

describe('reasoning retention at every position', () => {
  for (let n = 0; n < conversation.length; n++) {
    it(`prefix ending at message ${n} (${conversation[n]!.role})`, () => {
      const prefix = conversation.slice(0, n + 1);
      const snapshot = structuredClone(prefix);
      expect(findLastUserIndex(prefix)).toBe(lastUserOfPrefix[n]);
      const seen = dropThinking(prefix);
      expect(reasonings(seen)).toEqual(keptAfterPrefix[n]);
      expect(reasonings(visibleContext(prefix, 'thinking'))).toEqual(keptAfterPrefix[n]);
      expect(reasonings(visibleContext(prefix, 'chat'))).toEqual([]);
      // tool calls, tool results, content and every non-assistant message are kept, in order; input untouched
      expect(seen).toHaveLength(prefix.length);
      seen.forEach((m, i) => {
        const { reasoning_content: _r, ...rest } = prefix[i]!;
        const { reasoning_content: _s, ...restSeen } = m;
        expect(restSeen).toEqual(rest);
      });
      expect(prefix).toEqual(snapshot);
      // the encoder renders exactly that reasoning
      const prompt = encodeMessages(prefix, { thinkingMode: 'thinking' });
      for (const r of ['r2', 'r4', 'r6', 'r8', 'r11']) expect(prompt.includes(`${r}</think>`)).toBe(keptAfterPrefix[n]!.includes(r));
      expect(prompt.match(/<function_results>/g)?.length ?? 0).toBe(prefix.filter((m) => m.role === 'tool').length);
    });
  }

  it('keeps a developer message that comes before the last user message (official code omits it)', () => {
    const ms: ChatMessage[] = [
      { role: 'developer', content: 'd' },
      { role: 'assistant', reasoning_content: 'r', content: 'a' },
      { role: 'user', content: 'u' },
    ];
    expect(dropThinking(ms)).toEqual([ms[0], { role: 'assistant', content: 'a' }, ms[2]]);
  });
});

describe('validateMessages', () => {
  it.each([
    ['not an array', { role: 'user' }, TypeError, 'f(): messages must be an array but got {"role": "user"}'],
    ['not an object', ['hi'], TypeError, 'f(): messages[0] must be an object but got "hi"'],
    ['unknown role', [{ role: 'function', content: 'x' }], RangeError, 'f(): messages[0].role must be one of system, developer, user, assistant, tool but got "function"'],
    ['content not a string', [{ role: 'system', content: 3 }], TypeError, 'f(): messages[0].content must be a string (or null) but got 3'],
    ['tool content missing', [{ role: 'tool' }], TypeError, "f(): messages[0].content must be a string for role 'tool' but got undefined"],
    ['developer content null', [{ role: 'developer', content: null }], RangeError, "f(): messages[0].content must be a non-empty string for role 'developer' but got null"],
    ['tools not an array', [{ role: 'system', tools: {} }], TypeError, 'f(): messages[0].tools must be an array but got {}'],
    ['tool without function', [{ role: 'system', tools: [{ type: 'function' }] }], TypeError, 'f(): messages[0].tools[0].function must be an object but got undefined'],
    ['tool_calls not an array', [{ role: 'assistant', tool_calls: 'x' }], TypeError, 'f(): messages[0].tool_calls must be an array but got "x"'],
    ['tool call name missing', [{ role: 'assistant', tool_calls: [{ function: { arguments: '{}' } }] }], TypeError, 'f(): messages[0].tool_calls[0].function.name must be a string but got undefined'],
  ])('%s', (_n, messages, ErrorType, message) => {
    expect(() => validateMessages(messages, 'f()')).toThrow(ErrorType);
    expect(() => validateMessages(messages, 'f()')).toThrow(message);
  });
});
