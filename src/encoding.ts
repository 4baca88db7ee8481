/**
 * The DeepSeek-V3.2 chat encoding: messages → prompt string, and a model completion → message.
 *
 * V3.2 ships no Jinja chat template; the official encoder is `encoding/encoding_dsv32.py` (`encode_messages`,
 * `parse_message_from_completion_text`), checked by its test vectors (`test_input.json` → `test_output.txt`).
 * Tool calls are written in DSML markup (`<｜DSML｜function_calls>` / `invoke` / `parameter`), tool results in
 * `<function_results>`; JSON inside the prompt is Python-`json.dumps`-shaped (see `pyjson.ts`).
 *
 * @module
 */
import { describeValue, findLastUserIndex, validateMessages, visibleContext, type ChatMessage, type ThinkingMode, type ToolCall, type ToolSpec } from './context.ts';
import { isPyObject, JsonDepthError, parsePyJson, pyJsonDumps, pyJsonString, PyDict, type PyJson } from './pyjson.ts';
import { checkArray, checkString } from './internal/contract.ts';

export { PyDict, PyFloat, parsePyJson, pyJsonDumps, pyFloatRepr, type PyJson } from './pyjson.ts';

// --- Format constants (official encoder; bytes pinned by test_output.txt) ---

/** Begin-of-sentence token, prepended to an encoded conversation without `context` (`encodeMessages` option `addDefaultBosToken`). */
export const BOS = '<｜begin▁of▁sentence｜>';
/** End-of-sentence token, closing every assistant message. */
export const EOS = '<｜end▁of▁sentence｜>';
/** Opens a user turn; a `developer` message opens with it too. */
export const USER = '<｜User｜>';
/** Follows every user / developer message: the assistant's turn starts. */
export const ASSISTANT = '<｜Assistant｜>';
/** Opens the reasoning: after the last user message (or its tool results) in thinking mode. */
export const THINK_START = '<think>';
/** Closes the reasoning; written alone where no reasoning is rendered (chat mode, earlier turns). */
export const THINK_END = '</think>';
/** The marker inside DSML tool-call tags, e.g. `<｜DSML｜invoke name="...">`. */
export const DSML = '｜DSML｜';

/** The "## Tools" block; `{tool_schemas}` = one JSON schema per line. Ends with a newline. */
export const TOOLS_TEMPLATE = `## Tools

You have access to a set of tools you can use to answer the user's question.
You can invoke functions by writing a "<${DSML}function_calls>" block like the following as part of your reply to the user:
<${DSML}function_calls>
<${DSML}invoke name="$FUNCTION_NAME">
<${DSML}parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</${DSML}parameter>
...
</${DSML}invoke>
<${DSML}invoke name="$FUNCTION_NAME2">
...
</${DSML}invoke>
</${DSML}function_calls>

String and scalar parameters should be specified as is without any escaping or quotes, while lists and objects should use JSON format. The "string" attribute should be set to "true" for string type parameters and "false" for other types (numbers, booleans, arrays, objects).

If the thinking_mode is enabled, then after function results you should strongly consider outputting a thinking block. Here is an example:

<${DSML}function_calls>
...
</${DSML}function_calls>

<function_results>
...
</function_results>

${THINK_START}...thinking about results${THINK_END}

Here are the functions available in JSONSchema format:
<functions>
{tool_schemas}
</functions>
`;

/** The "## Response Format:" block (official `response_format_template`). */
export const RESPONSE_FORMAT_PREFIX = '## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n';

// --- Blocks ---

/**
 * The tools block for OpenAI-style tools (official `tools_template`): {@link TOOLS_TEMPLATE} with `{tool_schemas}`
 * replaced by each `tool.function` as one `json.dumps(…, ensure_ascii=False)` line, in order.
 *
 * @param tools the tools of a system or developer message.
 * @returns the block, starting with `## Tools` and ending with `</functions>` and a newline.
 * @example
 * ```ts
 * const block = renderTools([{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }]);
 * block.startsWith('## Tools\n'); // => true
 * block.endsWith('<functions>\n{"name": "f", "parameters": {"type": "object"}}\n</functions>\n'); // => true
 * ```
 */
export function renderTools(tools: readonly ToolSpec[]): string {
  checkArray('renderTools', 'tools', tools);
  const schemas = tools.map((t) => pyJsonDumps(t.function)).join('\n');
  return TOOLS_TEMPLATE.replace('{tool_schemas}', () => schemas);
}

/**
 * DSML parameters of one tool call, one line per argument in key order: strings raw with `string="true"`, every
 * other value as Python JSON with `string="false"` (official `encode_arguments_to_dsml`).
 * Throws `TypeError` if `argumentsJson` is not a JSON object.
 *
 *   {"k": "v"}  →  <｜DSML｜parameter name="k" string="true">v</｜DSML｜parameter>
 *   {"k": 2.0}  →  <｜DSML｜parameter name="k" string="false">2.0</｜DSML｜parameter>
 *
 * Number kinds survive: `2.0` stays `2.0` and `1e5` becomes `100000.0` (Python floats), see `pyjson.ts`.
 *
 * @param argumentsJson a tool call's `function.arguments` (a JSON object as text).
 * @param where names the argument in the error message.
 * @returns the parameter lines joined by `\n` (empty for `{}`).
 * @example
 * ```ts
 * const lines = encodeArgumentsToDsml('{"city": "Paris", "days": 2.0}').split('\n');
 * lines[0]; // => '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>'
 * lines[1]; // => '<｜DSML｜parameter name="days" string="false">2.0</｜DSML｜parameter>'
 * encodeArgumentsToDsml('{}'); // => ''
 * ```
 */
export function encodeArgumentsToDsml(argumentsJson: string, where = 'encodeArgumentsToDsml(): arguments'): string {
  checkString('encodeArgumentsToDsml', 'argumentsJson', argumentsJson);
  let args: PyJson;
  try {
    args = parsePyJson(argumentsJson);
  } catch (e) {
    throw new TypeError(`${where} must be a JSON object string but got invalid JSON: ${(e as Error).message}`);
  }
  if (!isPyObject(args)) throw new TypeError(`${where} must be a JSON object string but got ${describeValue(argumentsJson)}`);
  const entries = args instanceof PyDict ? args.entries : Object.entries(args);
  return entries
    .map(([k, v]) => {
      const isStr = typeof v === 'string';
      return `<${DSML}parameter name="${k}" string="${isStr}">${isStr ? v : pyJsonDumps(v)}</${DSML}parameter>`;
    })
    .join('\n');
}

function renderToolCalls(calls: readonly ToolCall[], where: string): string {
  const invokes = calls.map(
    (c, j) =>
      `<${DSML}invoke name="${c.function.name}">\n${encodeArgumentsToDsml(c.function.arguments, `${where}.tool_calls[${j}].function.arguments`)}\n</${DSML}invoke>`,
  );
  return `\n\n<${DSML}function_calls>\n${invokes.join('\n')}\n</${DSML}function_calls>`;
}

/** Official truthiness of `tools` / `response_format`: absent, null, empty list and empty dict render nothing. */
function present(v: PyJson | undefined): boolean {
  if (v === undefined || v === null || v === false || v === '' || v === 0) return false;
  if (Array.isArray(v)) return v.length > 0;
  if (v instanceof PyDict) return v.entries.length > 0;
  if (isPyObject(v)) return Object.keys(v).length > 0;
  return true;
}

function systemExtras(m: ChatMessage): string {
  let out = '';
  if (m.tools && m.tools.length > 0) out += '\n\n' + renderTools(m.tools);
  if (present(m.response_format)) out += '\n\n' + RESPONSE_FORMAT_PREFIX + pyJsonDumps(m.response_format!);
  return out;
}

// --- One message ---

function renderMessage(index: number, all: readonly ChatMessage[], mode: ThinkingMode, lastUser: number, at: string): string {
  const m = all[index]!;
  const fn = 'encodeMessages()';
  switch (m.role) {
    case 'system':
      return (m.content ?? '') + systemExtras(m);
    case 'user':
    case 'developer': {
      const body = m.role === 'user' ? m.content! : `${systemExtras(m)}\n\n# The user's message is: ${m.content}`;
      return USER + body + ASSISTANT + (index === lastUser && mode === 'thinking' ? THINK_START : THINK_END);
    }
    case 'tool': {
      let prev = index - 1;
      while (prev >= 0 && all[prev]!.role === 'tool') prev--;
      const calls = prev >= 0 && all[prev]!.role === 'assistant' ? (all[prev]!.tool_calls ?? []) : [];
      const order = index - prev;
      if (calls.length < order) {
        const got = prev < 0 ? 'no message before it' : `${all[prev]!.role} message with ${calls.length} tool call(s) ${index - prev} message(s) before`;
        throw new RangeError(`${fn}: ${at} (role 'tool') must follow an assistant message with at least ${order} tool call(s) but got ${got}`);
      }
      let out = (order === 1 ? '\n\n<function_results>' : '') + `\n<result>${m.content}</result>`;
      if (order === calls.length) {
        out += '\n</function_results>\n\n' + (index >= lastUser && mode === 'thinking' ? THINK_START : THINK_END);
      }
      return out;
    }
    case 'assistant': {
      const calls = m.tool_calls ?? [];
      let thinking = '';
      if (mode === 'thinking' && index > lastUser) {
        if (!m.reasoning_content && calls.length === 0) {
          throw new RangeError(
            `${fn}: ${at} (assistant after the last user message, thinking mode) must have reasoning_content or tool_calls but got neither`,
          );
        }
        thinking = (m.reasoning_content ?? '') + THINK_END;
      }
      const toolCalls = calls.length > 0 ? renderToolCalls(calls, `${fn}: ${at}`) : '';
      return thinking + (m.content ?? '') + toolCalls + EOS;
    }
  }
}

// --- Conversation ---

export interface EncodeOptions {
  /** `thinking`: the last user turn opens `<think>` and reasoning of the current turn is rendered; `chat`: no reasoning */
  thinkingMode: ThinkingMode;
  /** apply the retention rule (context.ts `dropThinking`) first; default true (only meaningful in thinking mode) */
  dropThinking?: boolean;
  /** earlier messages: they decide the indices (last user message, tool-call order) but are not rendered */
  context?: readonly ChatMessage[];
  /** start with BOS when `context` is empty; default true */
  addDefaultBosToken?: boolean;
}

/**
 * The V3.2 prompt for `messages` (official `encode_messages`): BOS (if no context), then per message
 * - system: content, then the tools block and the response-format block (each after a blank line);
 * - user: `<｜User｜>content<｜Assistant｜>` + `<think>` if it is the last user/developer message in thinking mode,
 *   else `</think>`; developer: the same with the tools/response-format blocks and "# The user's message is: " before content;
 * - assistant: `reasoning</think>` (thinking mode, after the last user message only) + content + DSML tool calls + EOS;
 * - tool: results in `<function_results>`, closed after the last result of the call group, followed by `\n\n<think>`
 *   (thinking mode, current turn: reasoning continues) or `\n\n</think>`.
 *
 * Semantics easy to get wrong: `developer` counts as a user message; reasoning before the last user message is never
 * rendered, so `dropThinking: false` changes the prompt only through that rule's data (it renders the same); tool
 * results are matched to calls by position, not by `tool_call_id`.
 * Throws `TypeError`/`RangeError` naming the message (`context[i]` or `messages[i]`), the field, expected and received.
 *
 * @deviation user/tool content must be a string (the official code formats `None` as the text "None"); a tool message
 * with no assistant before it is a `RangeError`; developer messages before the last user message are kept (see
 * `dropThinking`). JSON numbers follow `pyjson.ts` (docs/deviations.md "Chat encoding and context management").
 *
 * @param messages the messages to render, oldest first.
 * @param options thinking mode, retention rule, context, BOS.
 * @returns the prompt string.
 * @example
 * ```ts
 * import type { ChatMessage } from 'dsv32/context';
 * encodeMessages([{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello' }], { thinkingMode: 'chat' }); // => '<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜></think>Hello<｜end▁of▁sentence｜>'
 * // thinking mode: the last user turn opens <think>; earlier reasoning is dropped (paper §3.2.1)
 * const turns: ChatMessage[] = [
 *   { role: 'user', content: 'a' },
 *   { role: 'assistant', reasoning_content: 'r', content: 'b' },
 *   { role: 'user', content: 'c' },
 * ];
 * encodeMessages(turns, { thinkingMode: 'thinking' }); // => '<｜begin▁of▁sentence｜><｜User｜>a<｜Assistant｜></think>b<｜end▁of▁sentence｜><｜User｜>c<｜Assistant｜><think>'
 * ```
 */
export function encodeMessages(messages: readonly ChatMessage[], options: EncodeOptions): string {
  checkArray('encodeMessages', 'messages', messages);
  const fn = 'encodeMessages()';
  const { thinkingMode, dropThinking = true, context = [], addDefaultBosToken = true } = options ?? ({} as EncodeOptions);
  if (thinkingMode !== 'thinking' && thinkingMode !== 'chat') {
    throw new RangeError(`${fn}: options.thinkingMode must be 'thinking' or 'chat' but got ${describeValue(thinkingMode)}`);
  }
  const label = (i: number): string => (i < context.length ? `context[${i}]` : `messages[${i - context.length}]`);
  let full: ChatMessage[] = [...context, ...messages];
  validateMessages(full, fn, label);
  if (thinkingMode === 'thinking' && dropThinking) full = visibleContext(full, 'thinking');
  const lastUser = findLastUserIndex(full);
  let prompt = addDefaultBosToken && context.length === 0 ? BOS : '';
  for (let i = context.length; i < full.length; i++) prompt += renderMessage(i, full, thinkingMode, lastUser, label(i));
  return prompt;
}

// --- Parsing a completion ---

/** A completion that does not follow the V3.2 output format. */
export class CompletionParseError extends Error {
  override name = 'CompletionParseError';
}

/** The message {@link parseCompletion} returns (official `parse_message_from_completion_text`). */
export interface ParsedMessage {
  role: 'assistant';
  content: string;
  reasoning_content: string;
  tool_calls: { type: 'function'; function: { name: string; arguments: string } }[];
}

const TOOL_CALLS_START = `\n\n<${DSML}function_calls`;
const TOOL_CALLS_END = `</${DSML}function_calls>`;
const INVOKE_START = `<${DSML}invoke`;
const INVOKE_END = `</${DSML}invoke`;
const PARAM_START = `<${DSML}parameter`;
const PARAM_END = `/${DSML}parameter`;
const SPECIAL_TOKENS = [BOS, EOS, THINK_START, THINK_END, DSML];

/** Official `_read_until_stop`: text from `from` up to the earliest stop string; `end` is just past that stop. */
function readUntil(text: string, from: number, stops: readonly string[]): { end: number; body: string; stop: string | null } {
  let best = text.length;
  let stop: string | null = null;
  for (const s of stops) {
    const pos = text.indexOf(s, from);
    if (pos !== -1 && pos < best) {
      best = pos;
      stop = s;
    }
  }
  return stop === null ? { end: text.length, body: text.slice(from), stop } : { end: best + stop.length, body: text.slice(from, best), stop };
}

/**
 * A model completion (the text generated after the prompt) back into an assistant message (official
 * `parse_message_from_completion_text`): in thinking mode the reasoning up to the mandatory `</think>`, then the
 * content up to EOS or `\n\n<｜DSML｜function_calls`, then the invokes; each tool call's `arguments` is rebuilt as
 * `{"key": value, ...}` (string parameters JSON-encoded, others inserted as written). Strict: a duplicate parameter,
 * text after the function_calls block, text after EOS, an unclosed block, a non-string parameter that is not JSON, or a
 * special token inside content/reasoning throws {@link CompletionParseError} naming the problem and its offset.
 *
 * @deviation Stricter than the official parser: it also rejects unclosed `invoke`/`function_calls` blocks at the end
 * of the text and `string="false"` values that are not JSON (the official parser accepts both and returns unusable
 * arguments).
 *
 * @param text the completion, exactly as generated (ends with EOS). @param options the thinking mode of the prompt.
 * @returns the assistant message; `encodeMessages` renders it back to `text` (tested round trip).
 * @throws CompletionParseError as described; TypeError / RangeError for bad arguments.
 * @example
 * ```ts
 * parseCompletion('ok</think>Hi<｜end▁of▁sentence｜>', { thinkingMode: 'thinking' }); // => { role: 'assistant', content: 'Hi', reasoning_content: 'ok', tool_calls: [] }
 * const call = 'Let me look.\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="get">\n<｜DSML｜parameter name="id" string="false">7</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls><｜end▁of▁sentence｜>';
 * parseCompletion(call, { thinkingMode: 'chat' }).tool_calls; // => [{ type: 'function', function: { name: 'get', arguments: '{"id": 7}' } }]
 * ```
 */
export function parseCompletion(text: string, options: { thinkingMode: ThinkingMode }): ParsedMessage {
  const fn = 'parseCompletion()';
  if (typeof text !== 'string') throw new TypeError(`${fn}: text must be a string but got ${describeValue(text)}`);
  const mode = options?.thinkingMode;
  if (mode !== 'thinking' && mode !== 'chat') {
    throw new RangeError(`${fn}: options.thinkingMode must be 'thinking' or 'chat' but got ${describeValue(mode)}`);
  }
  const fail = (what: string, at: number): never => {
    throw new CompletionParseError(`${fn}: ${what} (at offset ${at}: ${JSON.stringify(text.slice(at, at + 40))})`);
  };
  let index = 0;
  let reasoning = '';
  if (mode === 'thinking') {
    const r = readUntil(text, 0, [THINK_END, TOOL_CALLS_START]);
    if (r.stop !== THINK_END) fail(`thinking mode: the reasoning must end with '${THINK_END}' but got ${r.stop === null ? 'the end of the text' : 'a function_calls block'}`, r.end - (r.stop?.length ?? 0));
    reasoning = r.body;
    index = r.end;
  }
  const c = readUntil(text, index, [EOS, TOOL_CALLS_START]);
  const content = c.body;
  if (c.stop === null) fail(`the content must end with '${EOS}' or a function_calls block but got the end of the text`, text.length);
  index = c.end;
  const toolCalls: ParsedMessage['tool_calls'] = [];
  if (c.stop === TOOL_CALLS_START) {
    for (;;) {
      const head = readUntil(text, index, [INVOKE_START, TOOL_CALLS_END]);
      if (head.body !== '>\n') fail(`expected '>\\n' before the next invoke or '${TOOL_CALLS_END}' but got ${JSON.stringify(head.body.slice(0, 40))}`, index);
      if (head.stop === null) fail(`the function_calls block is not closed with '${TOOL_CALLS_END}'`, index);
      index = head.end;
      if (head.stop === TOOL_CALLS_END) break;
      let r = readUntil(text, index, [PARAM_START, INVOKE_END]);
      const name = /^\s*name="([\s\S]*?)">\n\n?$/.exec(r.body);
      if (!name) fail(`invoke must start with ' name="NAME">\\n' but got ${JSON.stringify(r.body.slice(0, 40))}`, index);
      const toolName = name![1]!;
      index = r.end;
      const params: [string, string][] = [];
      while (r.stop === PARAM_START) {
        const p = readUntil(text, index, [PARAM_END]);
        const kv = /^ name="([\s\S]*?)" string="(true|false)">([\s\S]*?)<$/.exec(p.body);
        if (p.stop === null || !kv) fail(`parameter of invoke "${toolName}" must be ' name="KEY" string="true|false">VALUE</${DSML}parameter>'`, index);
        const [, key, isStr, value] = kv! as unknown as [string, string, string, string];
        if (params.some(([k]) => k === key)) fail(`duplicate parameter "${key}" in invoke "${toolName}"`, index);
        if (isStr === 'true') params.push([key, pyJsonString(value)]);
        else {
          try {
            parsePyJson(value);
          } catch (e) {
            if (e instanceof JsonDepthError) fail(`parameter "${key}" of invoke "${toolName}": ${e.message}`, index);
            fail(`parameter "${key}" of invoke "${toolName}" has string="false" but its value is not JSON (${(e as Error).message})`, index);
          }
          params.push([key, value]);
        }
        index = p.end;
        r = readUntil(text, index, [PARAM_START, INVOKE_END]);
        if (r.body !== '>\n') fail(`expected '>\\n' after parameter "${key}" but got ${JSON.stringify(r.body.slice(0, 40))}`, index);
        index = r.end;
      }
      if (r.stop !== INVOKE_END) fail(`invoke "${toolName}" is not closed with '${INVOKE_END}>'`, index);
      const args = `{${params.map(([k, v]) => `${pyJsonString(k)}: ${v}`).join(', ')}}`;
      toolCalls.push({ type: 'function', function: { name: toolName, arguments: args } });
    }
    const tail = readUntil(text, index, [EOS]);
    if (tail.body !== '') fail(`unexpected text after the function_calls block: ${JSON.stringify(tail.body.slice(0, 40))}`, index);
    index = tail.end;
  }
  if (index !== text.length) {
    const rest = text.slice(index);
    fail(`unexpected text after '${EOS}'${/^\s+$/.test(rest) ? ' (whitespace, e.g. a trailing newline, counts)' : ''}`, index);
  }
  for (const [field, s] of [['content', content], ['reasoning_content', reasoning]] as const) {
    for (const tok of SPECIAL_TOKENS) {
      if (s.includes(tok)) throw new CompletionParseError(`${fn}: special token '${tok}' inside ${field} is not allowed (${field} = ${describeValue(s)})`);
    }
  }
  return { role: 'assistant', content, reasoning_content: reasoning, tool_calls: toolCalls };
}
