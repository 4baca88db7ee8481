/**
 * Diagnosis of known deviations: when rows fail, the reference is re-run with each catalogue switch
 * (src/deviations.ts) on; a switch is reported for the layers where the trace's earliest failing row
 * passes with it and no row of that layer that passed under the spec fails with it. A deviation outside
 * the catalogue therefore still fails, with an empty diagnosis.
 *
 * @module
 */
import { DEVIATION_IDS, type DeviationId } from '../deviations.ts';
import { fmt } from './metrics.ts';
import type { CheckRow, Diagnosis } from './report.ts';
import { sortRows } from './report.ts';

/**
 * The checks whose reference each switch changes first (the module it edits). A switch can only explain a
 * layer whose earliest failing row is one of these, so the others are not re-run.
 */
export const FIRST_CHANGED: Readonly<Record<DeviationId, readonly string[]>> = {
  'indexer-rope-interleaved': ['indexer.score', 'indexer.topk'],
  'kv-latent-no-fp8-roundtrip': ['attn.out'],
  'softmax-no-mscale': ['attn.out'],
  'moe-bias-in-weights': ['gate.weights'],
  'indexer-weights-no-scale': ['indexer.score', 'indexer.topk'],
  'moe-group-fill-zero': ['gate.indices', 'gate.weights'],
};

/** Key of a row within one trace (its tensor). */
function rowKey(r: CheckRow): string {
  return `${r.step}/${r.layer}/${r.check}`;
}

/** Short summary of a row's numbers for the evidence text. */
function numbers(r: CheckRow): string {
  return r.recall !== null && r.cos_diff === null
    ? `recall ${fmt(r.recall)}`
    : `max_rel_err ${fmt(r.max_rel_err ?? NaN)}, cos_diff ${fmt(r.cos_diff ?? NaN)}`;
}

/**
 * Which catalogue switches explain the failing rows.
 *
 * @param spec rows of the judge with the spec reference
 * @param rerun rows of the judge with one switch on, for a switch id (only the layers up to the last
 *   failing one need to be judged)
 * @returns one entry per switch that explains at least one layer, in catalogue order
 * @example
 * ```ts
 * const r = (check: string, pass: boolean, cos: number) => ({ case: 'c', check, step: 0, layer: 0, pass, max_abs_err: 0, max_rel_err: 0, cos_diff: cos, recall: null, reason: '' });
 * const spec = [r('attn.in', true, 0), r('attn.out', false, 0.1)];
 * diagnose(spec, (id) => (id === 'softmax-no-mscale' ? [r('attn.in', true, 0), r('attn.out', true, 1e-5)] : spec)).map((d) => d.id); // => ['softmax-no-mscale']
 * ```
 */
export function diagnose(spec: readonly CheckRow[], rerun: (id: DeviationId) => readonly CheckRow[]): Diagnosis[] {
  const failing = sortRows(spec.filter((r) => !r.pass && r.layer !== null));
  if (failing.length === 0) return [];
  const layers = [...new Set(failing.map((r) => r.layer!))].sort((a, b) => a - b);
  const out: Diagnosis[] = [];
  const firstChecks = new Set(layers.map((l) => failing.find((r) => r.layer === l)!.check));
  for (const id of DEVIATION_IDS) {
    if (!FIRST_CHANGED[id].some((c) => firstChecks.has(c))) continue;
    const rows = new Map(rerun(id).map((r) => [rowKey(r), r]));
    const explained: number[] = [];
    const evidence: string[] = [];
    let fixedTotal = 0;
    for (const layer of layers) {
      const first = failing.find((r) => r.layer === layer)!;
      const now = rows.get(rowKey(first));
      const layerRows = spec.filter((r) => r.layer === layer);
      const broken = layerRows.some((r) => r.pass && rows.get(rowKey(r))?.pass === false);
      if (!now?.pass || broken) continue;
      const fixed = layerRows.filter((r) => !r.pass && rows.get(rowKey(r))?.pass).length;
      fixedTotal += fixed;
      explained.push(layer);
      if (evidence.length < 2) {
        evidence.push(`step ${first.step} layer ${layer} ${first.check}: ${numbers(first)} under the spec, ${numbers(now)} with the switch`);
      }
    }
    if (explained.length) {
      const total = failing.filter((r) => explained.includes(r.layer!)).length;
      out.push({ id, layers: explained, evidence: `${evidence.join('; ')}; ${fixedTotal} of ${total} failing rows of these layers pass with it` });
    }
  }
  return out;
}
