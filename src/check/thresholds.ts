/**
 * Pass thresholds of `dsv32 check`, per precision and tensor, set from measured noise floors with a
 * documented margin (docs/check-your-implementation.md, "Noise floors and thresholds": the tables there
 * come from `npx tsx scripts/check-noise.ts`).
 *
 * A float row passes when `max_rel_err ≤ maxRel` and `cos_diff ≤ cosDiff`. A selection row passes when
 * every position where the trace and the reference differ has a reference score within `gap` of the
 * row's cut: for `indexer.topk` `gap = topkGap · max |score|` of the step's reference scores, for
 * `gate.indices` `gap = gateGap` (σ + b is O(1)).
 *
 * @module
 */
import type { Precision } from '../precision.ts';
import type { LayerCheck } from './names.ts';

/** Float checks (every check except the two selections). */
export type FloatCheck = Exclude<LayerCheck, 'indexer.topk' | 'gate.indices'> | 'logits';

/** Thresholds of one float tensor. */
export interface FloatThreshold {
  maxRel: number;
  cosDiff: number;
}

/** Every threshold of one precision. */
export interface Thresholds {
  float: Readonly<Record<FloatCheck, FloatThreshold>>;
  /** tolerance of a top-k swap, relative to max |index score| */
  topkGap: number;
  /** tolerance of an expert swap, absolute on σ + b */
  gateGap: number;
}

/**
 * Worst values measured by scripts/check-noise.ts (wasm), teacher-forced, over every step and layer of
 * public-fp8, public-fp32 and public2-fp8: bf16 = the official bf16 trace of public-fp8 and dsv32's bf16
 * mode on the three fixtures; fp32 = the golden float32 traces judged against dsv32's float32 reference.
 * `[max_rel_err, cos_diff]` per tensor.
 */
const MEASURED: Readonly<Record<FloatCheck, Record<Precision, [number, number]>>> = {
  'attn.in': { bf16: [7.0e-3, 5.7e-6], fp32: [6.4e-7, 1.9e-13] },
  'attn.qr': { bf16: [6.7e-3, 3.7e-6], fp32: [7.9e-7, 6.3e-14] },
  'indexer.score': { bf16: [6.5e-2, 9.6e-4], fp32: [4.8e-4, 7.8e-9] },
  'attn.out': { bf16: [7.8e-2, 2.4e-3], fp32: [1.4e-3, 7.4e-8] },
  'ffn.in': { bf16: [7.5e-3, 7.2e-6], fp32: [5.3e-7, 1.2e-13] },
  'gate.weights': { bf16: [3.3e-3, 4.5e-6], fp32: [3.3e-7, 3.5e-14] },
  'ffn.out': { bf16: [4.3e-2, 5.1e-4], fp32: [1.5e-4, 5.1e-10] },
  logits: { bf16: [5.2e-3, 8.6e-6], fp32: [8.7e-7, 8.3e-14] },
};

/**
 * Margin over the measured noise: twice the error amplitude. `max_rel_err` scales with the amplitude
 * (× 2), `cos_diff` with its square (× 4). The fp32 thresholds have floors (1e-3 relative, 1e-9 cos) so
 * that a tensor measured at exactly 0 (or float32 summation noise) is not held to an unreachable bound.
 */
const AMPLITUDE_MARGIN = 2;

function fromMeasured(precision: Precision, floorRel: number, floorCos: number): Record<FloatCheck, FloatThreshold> {
  const out = {} as Record<FloatCheck, FloatThreshold>;
  for (const [check, measured] of Object.entries(MEASURED) as [FloatCheck, Record<Precision, [number, number]>][]) {
    const [rel, cos] = measured[precision];
    out[check] = { maxRel: Math.max(floorRel, AMPLITUDE_MARGIN * rel), cosDiff: Math.max(floorCos, AMPLITUDE_MARGIN ** 2 * cos) };
  }
  return out;
}

/**
 * The thresholds. fp32: a trace of float32 activations (float32 summation order and FP8 rounding
 * midpoints are the only noise). bf16: bf16 activations, as a GPU engine runs them.
 *
 * Selections: top-k swaps measured up to 2.4e-2 · max|score| apart (bf16; fp32 traces never swap, and
 * their scores differ by up to 4.8e-4 relative); no expert swap was measured in either precision (the
 * official gate computes σ in float32 from the recorded input), so `gateGap` allows for an engine whose
 * router logits are bf16 (2⁻⁸ relative on logits of magnitude ≲ 2 moves σ by ≲ 2e-3; × 5).
 */
export const THRESHOLDS: Readonly<Record<Precision, Thresholds>> = {
  fp32: { float: fromMeasured('fp32', 1e-3, 1e-9), topkGap: 2 * 4.8e-4, gateGap: 1e-5 },
  bf16: { float: fromMeasured('bf16', 0, 0), topkGap: 2 * 2.4e-2, gateGap: 1e-2 },
};
