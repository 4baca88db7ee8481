/**
 * Teacher-forced golden rows of the MoE / block / model side (fixtures/golden/README.md), per step S and
 * layer L, each module fed with the recorded inputs of that module:
 *
 * - `gate.indices` (as sets per token) and `gate.weights` (matched by expert id) from recorded `ffn.in`;
 * - `ffn.out` from recorded `ffn.in` (dense SwiGLU or MoE); a miss is re-examined by the FP8 flip search
 *   (../fp8/midpoints.ts `explainByFlips`): it passes only if rounding quantizer inputs on an e4m3
 *   midpoint the other way reproduces the whole recorded tensor, and the reason names them;
 * - `block.attn_in`: attn_norm of the residual stream rebuilt from the embedding and the recorded
 *   `attn.out` / `ffn.out` of the earlier layers (r ← r + a, r ← r + f) vs recorded `attn.in`;
 * - `block.ffn_in`: ffn_norm(recorded `attn.out` + that residual) vs recorded `ffn.in`;
 * - `logits`: final norm + head of the rebuilt residual stream vs recorded logits.
 *
 * Partial traces: a layer not recorded at a step gets no rows here (the attention side reports it once);
 * the residual stream cannot be rebuilt past it, so that step's later `block.*` rows and its `logits`
 * are not made; a recorded `attn.out` or `ffn.out` missing or misshapen in a traced layer is one failed
 * `block.residual` row instead.
 */
import { tf } from '../../backend.ts';
import type { LayerWeights } from '../../checkpoint.ts';
import { scaleFmt } from '../../config.ts';
import { embedTokens, headLogits } from '../../model.ts';
import { moe, swigluFfn, type LayerRouting } from '../../moe.ts';
import { rmsNorm } from '../../norms.ts';
import type { RoundingProbe } from '../../fp8.ts';
import { guard, recorded, recordedMatrix, type GoldenCase } from '../core/case.ts';
import { FixtureError, GOLDEN_RTOL, layerTraced } from '../core/fixture.ts';
import { traceKey, type TracedTensor } from '../core/trace_names.ts';
import { failure, numericRow, type CheckResult } from '../core/rows.ts';
import { explainByFlips } from '../fp8/midpoints.ts';
import { gateRows } from './gate.ts';

/** Check family: the teacher-forced model rows of a traced case. */
export const modelCheck = {
  name: 'model',
  appliesTo: (c: GoldenCase): boolean => c.steps.length > 0,
  run: teacherForced,
};

/**
 * The teacher-forced rows of one case (see the module doc).
 *
 * @example
 * ```ts
 * // on a case opened once (core/case.ts `openCase`), as checks/golden.ts does:
 * // teacherForced(openCase(readGolden({ name: 'public-fp8', dir: 'fixtures/golden/public-fp8' })));
 * ```
 */
export function teacherForced(c: GoldenCase): CheckResult[] {
  const { config, weights } = c;
  const D = config.hidden_size;
  const eps = config.rms_norm_eps;
  const rows: CheckResult[] = [];
  for (const s of c.steps) {
    const n = s.length;
    const p = (l: number, what: TracedTensor) => traceKey(s.step, l, what);
    // the residual stream rebuilt from the recorded attn.out / ffn.out; null once a layer cannot be
    // rebuilt (not traced, or a recorded output missing): the rows that need it are then not made
    let residual: tf.Tensor2D | null = embedTokens(c.tokens.slice(s.start_pos, s.start_pos + n), weights.global.embed);
    /** r ← r + recorded `what`; on a missing or misshapen tensor one failed `block.residual` row, and null. */
    const addRecorded = (l: number, what: TracedTensor): void => {
      if (!residual) return;
      const r0: tf.Tensor2D = residual;
      residual = null;
      try {
        const a = recordedMatrix(c.trace, p(l, what), n, D);
        residual = tf.add(r0, a) as tf.Tensor2D;
        a.dispose();
      } catch (e) {
        const why = e instanceof FixtureError ? e.message : (e as Error).message;
        rows.push(failure(c.name, 'block.residual', `residual stream not rebuilt past layer ${l}: ${why}; later block.* and logits rows of step ${s.step} not checked`, s.step, l));
      } finally {
        r0.dispose();
      }
    };
    try {
      for (let l = 0; l < config.num_hidden_layers; l++) {
        const w = weights.layers[l]!;
        if (!layerTraced(c.trace, s.step, l)) {
          // reported once by the attention side; the stream cannot be rebuilt past this layer
          (residual as tf.Tensor2D | null)?.dispose();
          residual = null;
          continue;
        }
        // attn_norm of the rebuilt residual stream
        const r0 = residual as tf.Tensor2D | null;
        if (r0) rows.push(...normRow(c, 'block.attn_in', s.step, l, r0, w.attn_norm, eps, p(l, 'attn.in')));
        // r ← r + attn.out; ffn_norm
        addRecorded(l, 'attn.out');
        const r1 = residual as tf.Tensor2D | null;
        if (r1) rows.push(...normRow(c, 'block.ffn_in', s.step, l, r1, w.ffn_norm, eps, p(l, 'ffn.in')));
        // gate and FFN from the recorded ffn.in
        rows.push(...ffnFromRecorded(c, s.step, l, n, w));
        // r ← r + ffn.out
        addRecorded(l, 'ffn.out');
      }
      // final norm + head of the last position, from the rebuilt stream
      const last = residual as tf.Tensor2D | null;
      if (last) {
        rows.push(...guard(c.name, 'logits', s.step, null, () => {
          const zero = tf.zerosLike(last) as tf.Tensor2D;
          const logits = headLogits(zero, last, weights.global, eps);
          zero.dispose();
          try {
            return [numericRow(c.name, 'logits', s.step, null, logits.dataSync(), recorded(c.trace, traceKey(s.step, null, 'logits')), GOLDEN_RTOL)];
          } finally {
            logits.dispose();
          }
        }));
      }
    } finally {
      (residual as tf.Tensor2D | null)?.dispose();
    }
  }
  return rows;
}

/** rmsNorm(r) vs the recorded norm output `name`. */
function normRow(c: GoldenCase, check: string, step: number, layer: number, r: tf.Tensor2D, weight: tf.Tensor1D, eps: number, name: string): CheckResult[] {
  return guard(c.name, check, step, layer, () => {
    const a = tf.tidy(() => rmsNorm(r, weight, eps));
    try {
      return [numericRow(c.name, check, step, layer, a.dataSync(), recorded(c.trace, name), GOLDEN_RTOL)];
    } finally {
      a.dispose();
    }
  });
}


/**
 * The FFN of one layer on x [T, D] with a rounding probe: dense SwiGLU, or MoE with the routing fixed
 * (the gate is not quantized, so a flip cannot change it).
 */
function ffnWith(x: tf.Tensor2D, w: LayerWeights, c: GoldenCase, routing: LayerRouting | null, probe?: RoundingProbe): tf.Tensor2D {
  if (w.ffn.kind === 'dense') return swigluFfn(x, w.ffn.dense, scaleFmt(c.config), probe ? { probe } : {});
  return moe(x, w.ffn.moe, c.config, { ...(routing ? { routing, combine: 'replay' as const } : {}), ...(probe ? { probe } : {}) }).out;
}

/** `ffn.out` (and for a MoE layer `gate.*`, in their own rows) from the recorded `ffn.in`. */
function ffnFromRecorded(c: GoldenCase, step: number, l: number, n: number, w: LayerWeights): CheckResult[] {
  let routing: LayerRouting | null = null;
  const rows = guard(c.name, 'ffn.out', step, l, () => {
    const x = recordedMatrix(c.trace, traceKey(step, l, 'ffn.in'), n, c.config.hidden_size);
    try {
      let y: tf.Tensor2D;
      if (w.ffn.kind === 'dense') y = ffnWith(x, w, c, null);
      else ({ out: y, routing } = moe(x, w.ffn.moe, c.config)); // routing = the gate's ids and combine weights
      const actual = y.dataSync() as Float32Array;
      y.dispose();
      const expected = recorded(c.trace, traceKey(step, l, 'ffn.out'));
      const row = numericRow(c.name, 'ffn.out', step, l, actual, expected, GOLDEN_RTOL);
      const evaluate = (probe: RoundingProbe) => {
        const out = ffnWith(x, w, c, routing, probe);
        const v = out.dataSync() as Float32Array;
        out.dispose();
        return v;
      };
      return [explainByFlips(row, evaluate, expected, n, 0, GOLDEN_RTOL)];
    } finally {
      x.dispose();
    }
  });
  const r = routing as LayerRouting | null;
  return r ? [...gateRows(c, '', step, l, r), ...rows] : rows;
}
