/**
 * The names of the tensors in a fixture's `trace.safetensors` (fixtures/golden/README.md, "Files"). No
 * import at all, so the in-page explorer (src/browser/) reads traces by the same names as the checks.
 */

/** What a trace records per step and layer (fixtures/golden/README.md, "Files"). */
export type TracedTensor =
  | 'attn.in' | 'attn.qr' | 'indexer.score' | 'indexer.topk' | 'attn.out' | 'ffn.in' | 'gate.weights' | 'gate.indices' | 'ffn.out';

/**
 * The name of a recorded tensor in `trace.safetensors`: `stepS.expected.layerL.T`, or `stepS.expected.logits`
 * for `layer` null.
 *
 * @example
 * ```ts
 * traceKey(1, 2, 'attn.out'); // => 'step1.expected.layer2.attn.out'
 * traceKey(0, null, 'logits'); // => 'step0.expected.logits'
 * ```
 */
export function traceKey(step: number, layer: number, tensor: TracedTensor): string;
export function traceKey(step: number, layer: null, tensor: 'logits'): string;
export function traceKey(step: number, layer: number | null, tensor: TracedTensor | 'logits'): string {
  return layer === null ? `step${step}.expected.logits` : `step${step}.expected.layer${layer}.${tensor}`;
}

/**
 * The RoPE-bug case's records (fixtures/golden/README.md): `stepS.interleaved_bug.layerL.indexer.topk`, the
 * selections of the pre-fix interleaved indexer RoPE. Returns {step, layer} of a record name, or null.
 *
 * @example
 * ```ts
 * ropeBugRecord('step1.interleaved_bug.layer2.indexer.topk'); // => { step: 1, layer: 2 }
 * ropeBugKey(1, 2); // => 'step1.interleaved_bug.layer2.indexer.topk'
 * ropeBugRecord('step1.expected.layer2.indexer.topk'); // => null
 * ```
 */
export function ropeBugRecord(name: string): { step: number; layer: number } | null {
  const m = /^step(\d+)\.interleaved_bug\.layer(\d+)\.indexer\.topk$/.exec(name);
  return m ? { step: Number(m[1]), layer: Number(m[2]) } : null;
}

/** The name of the RoPE-bug record of (step, layer) (see {@link ropeBugRecord}). */
export function ropeBugKey(step: number, layer: number): string {
  return `step${step}.interleaved_bug.layer${layer}.indexer.topk`;
}
