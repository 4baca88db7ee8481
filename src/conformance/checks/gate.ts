/**
 * The MoE gate rows, shared by the teacher-forced (`gate.*`) and end-to-end (`e2e.gate.*`) checks:
 * `gate.indices` compared as sets per token, `gate.weights` matched by expert id (the gate's order of
 * equal-scored experts may differ), each its own row.
 */
import type { LayerRouting } from '../../moe.ts';
import { guard, recorded, type GoldenCase } from '../core/case.ts';
import { GOLDEN_RTOL } from '../core/fixture.ts';
import { traceKey } from '../core/trace_names.ts';
import { failure, numericRow, setsRow, type CheckResult } from '../core/rows.ts';

/**
 * `gate.indices` and `gate.weights` of one step and layer, with `prefix` ('' or 'e2e.').
 *
 * @example
 * ```ts
 * // checks/model.ts: rows.push(...gateRows(c, '', step, layer, routing));
 * ```
 */
export function gateRows(c: Pick<GoldenCase, 'name' | 'trace'>, prefix: string, step: number, layer: number, r: LayerRouting): CheckResult[] {
  let expectedIds: number[] | null = null;
  const out = guard(c.name, `${prefix}gate.indices`, step, layer, () => {
    expectedIds = Array.from(recorded(c.trace, traceKey(step, layer, 'gate.indices')), Number);
    return [setsRow(c.name, `${prefix}gate.indices`, step, layer, r.indices, expectedIds, r.experts)];
  });
  out.push(
    ...guard(c.name, `${prefix}gate.weights`, step, layer, () => {
      const aligned = expectedIds && alignWeights(r, expectedIds);
      if (!aligned) return [failure(c.name, `${prefix}gate.weights`, 'expert ids differ or are missing (see gate.indices): weights not comparable', step, layer)];
      return [numericRow(c.name, `${prefix}gate.weights`, step, layer, aligned, recorded(c.trace, traceKey(step, layer, 'gate.weights')), GOLDEN_RTOL)];
    }),
  );
  return out;
}

/** Gate weights matched by expert id; null when the id sets differ. */
function alignWeights(r: LayerRouting, expectedIds: ArrayLike<number>): Float32Array | null {
  const k = r.experts;
  if (expectedIds.length !== r.tokens * k) return null;
  const out = new Float32Array(expectedIds.length);
  for (let t = 0; t < r.tokens; t++) {
    for (let j = 0; j < k; j++) {
      const id = Number(expectedIds[t * k + j]);
      const at = r.indices.subarray(t * k, t * k + k).indexOf(id);
      if (at < 0) return null;
      out[t * k + j] = r.weights[t * k + at]!;
    }
  }
  return out;
}
