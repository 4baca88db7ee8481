/**
 * Reading the golden traces the way the explorer tests compare with them: recorded tensors as rows,
 * selections as sorted sets, and the check that a view of layer 0, step 0 of public-fp32 shows the
 * official index scores and selections (with the shipped and with the interleaved RoPE).
 */
import { expect } from 'vitest';
import type { SafetensorsFile } from '../../src/safetensors.ts';
import type { ExplorerView } from '../../src/browser/compute.ts';

/** A recorded tensor as rows of its last dimension. */
export function rowsOf(f: SafetensorsFile, name: string): number[][] {
  const shape = f.info(name).shape;
  const w = shape[shape.length - 1]!;
  const v = Array.from(f.read(name) as ArrayLike<number | bigint>, Number);
  return Array.from({ length: v.length / w }, (_, i) => v.slice(i * w, (i + 1) * w));
}

/** A selection row as a sorted set (−1 padding dropped). */
export const asSet = (r: number[]): number[] => r.filter((s) => s >= 0).sort((a, b) => a - b);

/**
 * The view of layer 0, step 0 equals the official trace: index scores on the causal part within
 * `max|a − b| ≤ 1e-4 · max(1, max|b|)` (fixtures/golden/README.md), selections and RoPE-bug selections as sets.
 */
export function expectLayer0Step0Official(v: ExplorerView, trace: SafetensorsFile, bugTrace: SafetensorsFile): void {
  const score = rowsOf(trace, 'step0.expected.layer0.indexer.score');
  let maxErr = 0;
  let maxRef = 0;
  v.scores.forEach((row, t) => row.slice(0, t + 1).forEach((x, s) => {
    maxErr = Math.max(maxErr, Math.abs(x - score[t]![s]!));
    maxRef = Math.max(maxRef, Math.abs(score[t]![s]!));
  }));
  expect(maxErr / Math.max(1, maxRef)).toBeLessThanOrEqual(1e-4);
  expect(v.topk.map(asSet)).toEqual(rowsOf(trace, 'step0.expected.layer0.indexer.topk').map(asSet));
  expect(v.bugTopk.map(asSet)).toEqual(rowsOf(bugTrace, 'step0.interleaved_bug.layer0.indexer.topk').map(asSet));
}
