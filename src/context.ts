/**
 * Thinking context management of DeepSeek-V3.2 (paper §3.2.1 "Thinking Context Management"), over OpenAI-style
 * chat messages.
 *
 * The rule: historical reasoning is discarded only when a new user message arrives; while only tool messages are
 * appended, the reasoning of the current turn is retained across any number of tool rounds; tool calls and tool
 * results are never removed. In the official encoder (`encoding/encoding_dsv32.py`, `find_last_user_index`,
 * `drop_thinking_messages`) a `developer` message counts as a user message for this rule.
 *
 * @module
 */
import { isPyObject, pyJsonDumps, type PyJson } from './pyjson.ts';
import { checkArray } from './internal/contract.ts';

// --- Message types ---

export type Role = 'system' | 'developer' | 'user' | 'assistant' | 'tool';
/** Every {@link Role}, in the order of the official encoder's role checks. */
export const ROLES: readonly Role[] = ['system', 'developer', 'user', 'assistant', 'tool'];
export type ThinkingMode = 'thinking' | 'chat';

/** One OpenAI-style tool call; `function.arguments` is a JSON object *string*. `id` is not rendered. */
export interface ToolCall {
  id?: string | null;
  type?: 'function';
  function: { name: string; arguments: string };
}

/** One OpenAI-style tool: `function` (name, description, parameters JSON schema) is rendered as JSON. */
export interface ToolSpec {
  type?: 'function';
  function: PyJson;
}

/** An OpenAI-style chat message as the official encoder reads it. */
export interface ChatMessage {
  role: Role;
  content?: string | null;
  /** assistant only: the thinking text (rendered between the prompt's `<think>` and `</think>`) */
  reasoning_content?: string | null;
  /** assistant only */
  tool_calls?: ToolCall[] | null;
  /** tool only: not rendered; results are matched to calls by position, as in the official encoder */
  tool_call_id?: string | null;
  /** system or developer only: tools rendered as the "## Tools" block */
  tools?: ToolSpec[] | null;
  /** system or developer only: a JSON schema rendered as the "## Response Format:" block */
  response_format?: PyJson;
}

// --- The retention rule ---

/**
 * Index of the last `user` or `developer` message, −1 if there is none (official `find_last_user_index`):
 *
 *   lastUser(m) = max { i | m[i].role ∈ {user, developer} }   (−1 for the empty set)
 *
 * This index splits the conversation for the retention rule (paper §3.2.1): reasoning of assistant messages
 * before it is history, after it the current turn. A `developer` message counts as a user message.
 *
 * @param messages the conversation, oldest first.
 * @returns the index, or −1.
 * @example
 * ```ts
 * findLastUserIndex([{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }]); // => 0
 * findLastUserIndex([{ role: 'user', content: 'a' }, { role: 'developer', content: 'd' }]); // => 1
 * findLastUserIndex([{ role: 'system', content: 's' }]); // => -1
 * ```
 */
export function findLastUserIndex(messages: readonly ChatMessage[]): number {
  checkArray('findLastUserIndex', 'messages', messages);
  for (let i = messages.length - 1; i >= 0; i--) {
    const role = messages[i]!.role;
    if (role === 'user' || role === 'developer') return i;
  }
  return -1;
}

/**
 * The official `drop_thinking_messages` (thinking mode, `drop_thinking=True`): every assistant message *before* the
 * last user/developer message loses `reasoning_content`; everything else (content, tool calls, tool results, the
 * messages of the current turn) is returned unchanged. Pure: returns a new array, inputs are not mutated.
 *
 * @deviation The official function omits `developer` messages that come before the last user/developer message
 * (they match neither of its branches), which misaligns its message indices; here they are kept.
 *
 * Formally, with u = {@link findLastUserIndex}(messages): message i keeps `reasoning_content` iff it is not an
 * assistant message or i > u (paper §3.2.1: "historical reasoning content is discarded only when a new user
 * message is introduced").
 *
 * @param messages the conversation, oldest first.
 * @returns a new array of the same length; dropped messages are copies without the `reasoning_content` key.
 * @example
 * ```ts
 * const out = dropThinking([
 *   { role: 'user', content: 'q1' },
 *   { role: 'assistant', reasoning_content: 'r1', content: 'a1' },
 *   { role: 'user', content: 'q2' },
 *   { role: 'assistant', reasoning_content: 'r2', content: 'a2' },
 * ]);
 * out[1]; // => { role: 'assistant', content: 'a1' }
 * 'reasoning_content' in out[1]!; // => false
 * out[3]!.reasoning_content; // => 'r2'
 * ```
 */
export function dropThinking(messages: readonly ChatMessage[]): ChatMessage[] {
  checkArray('dropThinking', 'messages', messages);
  const lastUser = findLastUserIndex(messages);
  return messages.map((m, i) => {
    if (m.role !== 'assistant' || i >= lastUser || !('reasoning_content' in m)) return m;
    const { reasoning_content: _dropped, ...rest } = m;
    return rest;
  });
}

/**
 * The context the model sees for its next step: in `thinking` mode the reasoning of assistant turns before the last
 * user/developer message is removed and the reasoning after it (the current turn, any number of tool rounds) is
 * kept; in `chat` mode no reasoning is kept at all. Tool calls and tool results are always kept.
 * This is exactly the reasoning that {@link encoding!encodeMessages} renders.
 *
 *   thinking:  visibleContext(m) = {@link dropThinking}(m)
 *   chat:      visibleContext(m) = m with `reasoning_content` removed from every assistant message
 *
 * @param messages the conversation, oldest first. @param thinkingMode `thinking` or `chat`.
 * @returns a new array (inputs are not mutated).
 * @example
 * ```ts
 * const msgs: ChatMessage[] = [
 *   { role: 'user', content: 'q' },
 *   { role: 'assistant', reasoning_content: 'r', tool_calls: [{ function: { name: 'f', arguments: '{}' } }] },
 *   { role: 'tool', content: 'ok' },
 * ];
 * visibleContext(msgs, 'thinking')[1]!.reasoning_content; // => 'r'
 * visibleContext(msgs, 'chat')[1]!.reasoning_content; // => undefined
 * visibleContext([...msgs, { role: 'user', content: 'next' }], 'thinking')[1]!.reasoning_content; // => undefined
 * visibleContext(msgs, 'chat')[1]!.tool_calls!.length; // => 1
 * ```
 */
export function visibleContext(messages: readonly ChatMessage[], thinkingMode: ThinkingMode): ChatMessage[] {
  checkArray('visibleContext', 'messages', messages);
  if (thinkingMode === 'thinking') return dropThinking(messages);
  return messages.map((m) => {
    if (m.role !== 'assistant' || !('reasoning_content' in m)) return m;
    const { reasoning_content: _dropped, ...rest } = m;
    return rest;
  });
}

// --- Validation ---

/**
 * Short description of a received value for error messages: strings quoted (cut at 60 characters), arrays by their
 * length, objects as Python JSON (cut at 60 characters), bigints with `n`, everything else with `String`.
 *
 * @example
 * ```ts
 * describeValue('hi'); // => '"hi"'
 * describeValue([1, 2]); // => 'an array of length 2'
 * describeValue({ a: 1 }); // => '{"a": 1}'
 * describeValue(undefined); // => 'undefined'
 * ```
 */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? v.slice(0, 57) + '...' : v);
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  if (typeof v === 'object' && v !== null) {
    let s: string;
    try {
      s = pyJsonDumps(v as PyJson);
    } catch {
      return 'an object';
    }
    return s.length > 60 ? s.slice(0, 57) + '...' : s;
  }
  return typeof v === 'bigint' ? `${v}n` : String(v);
}

const isStringOrNone = (v: unknown): boolean => v === undefined || v === null || typeof v === 'string';

/**
 * Checks the shape of every message; throws `TypeError` (wrong type) or `RangeError` (wrong value) naming `fn`, the
 * message (`label(i)`, e.g. `messages[2]`), the field, what was expected and what was received.
 * Order-dependent checks (tool results after tool calls, the thinking-mode assistant requirement) are done by the
 * encoder on the messages it renders, as the official encoder does.
 *
 * @param messages the value to check. @param fn the caller's name for the message, e.g. `encodeMessages()`.
 * @param label names message i in the message (default `messages[i]`).
 * @throws TypeError / RangeError as described.
 * @example
 * ```ts
 * validateMessages([{ role: 'user', content: 'hi' }], 'f()'); // passes: returns nothing
 * let message = '';
 * try { validateMessages([{ role: 'bot' }], 'f()'); } catch (e) { message = (e as Error).message; }
 * message; // => "f(): messages[0].role must be one of system, developer, user, assistant, tool but got \"bot\""
 * ```
 */
export function validateMessages(messages: unknown, fn: string, label: (i: number) => string = (i) => `messages[${i}]`): asserts messages is ChatMessage[] {
  if (typeof fn !== 'string') fn = 'validateMessages()';
  if (!Array.isArray(messages)) throw new TypeError(`${fn}: messages must be an array but got ${describeValue(messages)}`);
  messages.forEach((m: unknown, i) => {
    const at = label(i);
    if (!isPyObject(m) || Array.isArray(m)) throw new TypeError(`${fn}: ${at} must be an object but got ${describeValue(m)}`);
    const msg = m as Record<string, unknown>;
    if (!ROLES.includes(msg.role as Role)) {
      throw new RangeError(`${fn}: ${at}.role must be one of ${ROLES.join(', ')} but got ${describeValue(msg.role)}`);
    }
    for (const field of ['content', 'reasoning_content'] as const) {
      if (!isStringOrNone(msg[field])) {
        throw new TypeError(`${fn}: ${at}.${field} must be a string (or null) but got ${describeValue(msg[field])}`);
      }
    }
    if ((msg.role === 'user' || msg.role === 'tool') && typeof msg.content !== 'string') {
      throw new TypeError(`${fn}: ${at}.content must be a string for role '${msg.role}' but got ${describeValue(msg.content)}`);
    }
    if (msg.role === 'developer' && !msg.content) {
      throw new RangeError(`${fn}: ${at}.content must be a non-empty string for role 'developer' but got ${describeValue(msg.content)}`);
    }
    if (msg.tools !== undefined && msg.tools !== null) {
      if (!Array.isArray(msg.tools)) throw new TypeError(`${fn}: ${at}.tools must be an array but got ${describeValue(msg.tools)}`);
      msg.tools.forEach((t: unknown, j) => {
        if (!isPyObject(t) || !isPyObject((t as Record<string, unknown>).function)) {
          throw new TypeError(`${fn}: ${at}.tools[${j}].function must be an object but got ${describeValue(isPyObject(t) ? (t as Record<string, unknown>).function : t)}`);
        }
      });
    }
    if (msg.tool_calls !== undefined && msg.tool_calls !== null) {
      if (!Array.isArray(msg.tool_calls)) {
        throw new TypeError(`${fn}: ${at}.tool_calls must be an array but got ${describeValue(msg.tool_calls)}`);
      }
      msg.tool_calls.forEach((c: unknown, j) => {
        const f = isPyObject(c) ? (c as Record<string, unknown>).function : undefined;
        if (!isPyObject(f)) throw new TypeError(`${fn}: ${at}.tool_calls[${j}].function must be an object but got ${describeValue(f)}`);
        const { name, arguments: args } = f as Record<string, unknown>;
        if (typeof name !== 'string') {
          throw new TypeError(`${fn}: ${at}.tool_calls[${j}].function.name must be a string but got ${describeValue(name)}`);
        }
        if (typeof args !== 'string') {
          throw new TypeError(`${fn}: ${at}.tool_calls[${j}].function.arguments must be a JSON object string but got ${describeValue(args)}`);
        }
      });
    }
  });
}
