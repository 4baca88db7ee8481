/**
 * The names of a trace's tensors for `dsv32 check`: the per-layer checks in forward order, the tensor name
 * of a check, and back.
 *
 * @module
 */
import { traceKey, type TracedTensor } from '../conformance/core/trace_names.ts';

/** What a trace records per step and layer, in forward order (the fixture's names, src/conformance/core/fixture.ts). */
export const LAYER_CHECKS: readonly TracedTensor[] = [
  'attn.in',
  'attn.qr',
  'indexer.score',
  'indexer.topk',
  'attn.out',
  'ffn.in',
  'gate.weights',
  'gate.indices',
  'ffn.out',
];

/** One per-layer check name. */
export type LayerCheck = TracedTensor;

/** Every check name of a row: the per-layer ones, the per-step `logits`, and `trace` / `input.tokens` for the file itself. */
export type CheckName = LayerCheck | 'logits' | 'trace' | 'input.tokens';

/**
 * Name of a traced tensor (`traceKey` of src/conformance/core/fixture.ts) for a layer's check or, with
 * `layer` null, the step's `logits`.
 *
 * @example
 * ```ts
 * traceName(1, 2, 'attn.out'); // => 'step1.expected.layer2.attn.out'
 * traceName(0, null, 'logits'); // => 'step0.expected.logits'
 * ```
 */
export function traceName(step: number, layer: number | null, check: LayerCheck | 'logits'): string {
  return layer === null || check === 'logits' ? traceKey(step, null, 'logits') : traceKey(step, layer, check);
}

/** `{step, layer, check}` of a trace name, or null when it does not follow the naming scheme. */
export function parseName(name: string): { step: number; layer: number | null; check: LayerCheck | 'logits' } | null {
  const m = /^step(\d+)\.expected\.(?:layer(\d+)\.)?([a-z.]+)$/.exec(name);
  if (!m) return null;
  const check = m[3] as LayerCheck | 'logits';
  if (m[2] === undefined ? check !== 'logits' : !(LAYER_CHECKS as readonly string[]).includes(check)) return null;
  return { step: Number(m[1]), layer: m[2] === undefined ? null : Number(m[2]), check };
}
