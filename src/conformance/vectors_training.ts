/**
 * Conformance checks of the training-side reference vectors (`fixtures/vectors/README.md`):
 * kinds `grpo`, `keep_sampling_mask` and `indexer_kl`. Tolerance: `max|a − b| ≤ rtol · max(1, max|b|)` with
 * rtol 1e-6 on values and 1e-5 on `grad_logp` (central differences); booleans and indices exactly.
 *
 * Never throws: a malformed file yields failed rows with a reason.
 */
import { tf } from '../backend.ts';
import { compareArrays, type CheckResult } from './core/rows.ts';
import { grpoLoss, grpoLossAndGrad, type GrpoInputs, type GrpoOptions } from '../grpo.ts';
import { keepSamplingLogProbs, tokenLogProbs } from '../sampling_mask.ts';
import { indexerTarget, indexerSelection, indexerKlDense, indexerKlSparse } from '../indexer_loss.ts';
import { nestedShape } from '../internal/contract.ts';

/** Relative tolerance on values. */
export const VALUE_RTOL = 1e-6;
/** Relative tolerance on `grad_logp` (the expected gradient is a float64 central difference). */
export const GRAD_RTOL = 1e-5;

class BadVector extends Error {}

function row(caseName: string, check: string, actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number): CheckResult {
  const c = compareArrays(actual, expected, rtol);
  return {
    case: caseName, check, step: null, layer: null, pass: c.pass, max_abs_err: c.maxAbs, max_rel_err: c.maxRel,
    reason: c.reason ?? (c.pass ? `rtol ${rtol}` : `max rel err ${c.maxRel.toExponential(3)} > rtol ${rtol}`),
  };
}

function exactRow(caseName: string, check: string, actual: ArrayLike<number>, expected: ArrayLike<number>): CheckResult {
  let bad = -1;
  if (actual.length !== expected.length) bad = Math.min(actual.length, expected.length);
  else for (let i = 0; i < actual.length && bad < 0; i++) if (actual[i] !== expected[i]) bad = i;
  const pass = bad < 0;
  return {
    case: caseName, check, step: null, layer: null, pass, max_abs_err: pass ? 0 : null, max_rel_err: pass ? 0 : null,
    reason: pass ? 'exact' : actual.length !== expected.length ? `length ${actual.length} ≠ expected ${expected.length}` : `differs at flat index ${bad}: ${actual[bad]} ≠ ${expected[bad]}`,
  };
}

function failed(caseName: string, check: string, reason: string): CheckResult {
  return { case: caseName, check, step: null, layer: null, pass: false, max_abs_err: null, max_rel_err: null, reason };
}

/** A rectangular numeric array of the given rank, flattened, with its shape; throws BadVector otherwise. */
function numeric(x: unknown, rank: number, what: string): { data: number[]; shape: number[] } {
  let shape: number[];
  try {
    shape = nestedShape(x, rank, what);
  } catch (e) {
    throw new BadVector((e as Error).message);
  }
  const data = (rank === 0 ? [x] : (x as unknown[]).flat(rank - 1)) as unknown[];
  const size = shape.reduce((a, b) => a * b, 1);
  if (data.length !== size || data.some((v) => typeof v !== 'number' && typeof v !== 'boolean')) {
    throw new BadVector(`${what} must be a rectangular array of numbers of shape [${shape}]`);
  }
  return { data: data.map(Number), shape };
}

function obj(x: unknown, what: string): Record<string, unknown> {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new BadVector(`${what} must be an object`);
  return x as Record<string, unknown>;
}

async function checkGrpo(name: string, json: Record<string, unknown>): Promise<CheckResult[]> {
  const inp = obj(json.inputs, 'inputs');
  const opt = obj(json.options, 'options');
  const exp = obj(json.expected, 'expected');
  const options: GrpoOptions = {
    advantage: opt.advantage as GrpoOptions['advantage'], stdEps: Number(opt.std_eps ?? 0),
    clipLow: Number(opt.clip_low), clipHigh: Number(opt.clip_high), beta: Number(opt.beta),
    kl: opt.kl as GrpoOptions['kl'], opsmDelta: opt.opsm_delta === null || opt.opsm_delta === undefined ? null : Number(opt.opsm_delta),
    aggregation: opt.aggregation as GrpoOptions['aggregation'],
  };
  // parse every array before creating a tensor, so a malformed field leaks nothing
  const arr2 = (k: string) => (inp[k] === undefined ? undefined : numeric(inp[k], 2, `inputs.${k}`));
  const r = numeric(inp.rewards, 1, 'inputs.rewards');
  const [mask, logp, logpOld, logpRef, logpSampler] = ['mask', 'logp', 'logp_old', 'logp_ref', 'logp_sampler'].map(arr2);
  if (!mask || !logp || !logpOld) throw new BadVector('inputs.mask, inputs.logp and inputs.logp_old are required');
  const t2 = (a: { data: number[]; shape: number[] } | undefined) => (a ? tf.tensor2d(a.data, a.shape as [number, number]) : undefined);
  const inputs: GrpoInputs = {
    rewards: tf.tensor1d(r.data), mask: t2(mask)!, logp: t2(logp)!, logpOld: t2(logpOld)!, logpRef: t2(logpRef), logpSampler: t2(logpSampler),
  };
  const rows: CheckResult[] = [];
  const owned: tf.Tensor[] = []; // outputs, disposed even when a malformed expected field throws
  try {
    const parts = grpoLoss(inputs, options);
    owned.push(...Object.values(parts).filter((x): x is tf.Tensor => x instanceof tf.Tensor));
    const { grad, value } = grpoLossAndGrad(inputs, options);
    owned.push(grad, value);
    const fields: [string, tf.Tensor | null][] = [
      ['advantages', parts.advantages], ['ratio', parts.ratio], ['kl', parts.kl],
      ['per_token_loss', parts.perTokenLoss], ['loss', parts.loss], ['opsm_seq_kl', parts.opsmSeqKl],
    ];
    for (const [key, t] of fields) {
      if (!(key in exp)) continue;
      const e = exp[key];
      if (e === null) {
        rows.push(t === null ? { ...exactRow(name, `grpo.${key}`, [], []), reason: 'null as expected (OPSM off)' } : failed(name, `grpo.${key}`, 'expected null but the implementation computed a value'));
      } else if (t === null) {
        rows.push(failed(name, `grpo.${key}`, 'expected a value but the implementation returned null'));
      } else {
        rows.push(row(name, `grpo.${key}`, t.dataSync(), numeric(e, t.rank, `expected.${key}`).data, VALUE_RTOL));
      }
    }
    if ('opsm_keep' in exp) rows.push(exactRow(name, 'grpo.opsm_keep', parts.opsmKeep.dataSync(), numeric(exp.opsm_keep, 1, 'expected.opsm_keep').data));
    if ('grad_logp' in exp) rows.push(row(name, 'grpo.grad_logp', grad.dataSync(), numeric(exp.grad_logp, 2, 'expected.grad_logp').data, GRAD_RTOL));
    if ('loss' in exp) rows.push(row(name, 'grpo.loss(valueAndGrad)', value.dataSync(), [Number(exp.loss)], VALUE_RTOL));
  } finally {
    tf.dispose(owned);
    tf.dispose(Object.values(inputs).filter((x): x is tf.Tensor => x instanceof tf.Tensor));
  }
  return rows;
}

async function checkKeepSamplingMask(name: string, json: Record<string, unknown>): Promise<CheckResult[]> {
  const inp = obj(json.inputs, 'inputs');
  const exp = obj(json.expected, 'expected');
  const z = numeric(inp.logits, 2, 'inputs.logits');
  const zo = numeric(inp.logits_old, 2, 'inputs.logits_old');
  const k = numeric(inp.kept, 2, 'inputs.kept');
  const tok = numeric(inp.tokens, 1, 'inputs.tokens');
  const rows: CheckResult[] = [];
  const tensors = [
    tf.tensor2d(z.data, z.shape as [number, number]), tf.tensor2d(zo.data, zo.shape as [number, number]),
    tf.tensor2d(k.data, k.shape as [number, number]), tf.tensor1d(tok.data, 'int32'),
  ] as const;
  const [logits, logitsOld, kept, tokens] = tensors;
  try {
    const actual = tf.tidy(() => {
      const logp = keepSamplingLogProbs(logits, kept, tokens);
      const logpOld = keepSamplingLogProbs(logitsOld, kept, tokens);
      return { logp, logp_old: logpOld, ratio: tf.exp(tf.sub(logp, logpOld)), logp_unmasked: tokenLogProbs(logits, tokens) };
    });
    for (const [key, t] of Object.entries(actual)) {
      if (key in exp) rows.push(row(name, `keep_sampling_mask.${key}`, t.dataSync(), numeric(exp[key], 1, `expected.${key}`).data, VALUE_RTOL));
    }
    tf.dispose(Object.values(actual));
  } finally {
    tf.dispose([...tensors]);
  }
  return rows;
}

async function checkIndexerKl(name: string, json: Record<string, unknown>): Promise<CheckResult[]> {
  const inp = obj(json.inputs, 'inputs');
  const exp = obj(json.expected, 'expected');
  const a = numeric(inp.attention_probs, 3, 'inputs.attention_probs');
  const s = numeric(inp.index_scores, 2, 'inputs.index_scores');
  const topk = Number(inp.topk);
  const probs = tf.tensor3d(a.data, a.shape as [number, number, number]);
  const scores = tf.tensor2d(s.data, s.shape as [number, number]);
  const rows: CheckResult[] = [];
  try {
    const compute: [string, () => tf.Tensor, boolean][] = [
      ['target', () => indexerTarget(probs), false],
      ['selected', () => indexerSelection(scores, topk), true],
      ['loss_dense', () => indexerKlDense(probs, scores), false],
      ['loss_sparse', () => indexerKlSparse(probs, scores, topk), false],
    ];
    for (const [key, f, exact] of compute) {
      if (!(key in exp)) continue;
      try {
        const t = f();
        const e = numeric(exp[key], t.rank, `expected.${key}`).data;
        rows.push(exact ? exactRow(name, `indexer_kl.${key}`, t.dataSync(), e) : row(name, `indexer_kl.${key}`, t.dataSync(), e, VALUE_RTOL));
        t.dispose();
      } catch (err) {
        rows.push(failed(name, `indexer_kl.${key}`, (err as Error).message));
      }
    }
  } finally {
    tf.dispose([probs, scores]);
  }
  return rows;
}

/**
 * Runs every check of one training vector (`grpo`, `keep_sampling_mask`, `indexer_kl`) on the active backend.
 * @param caseName the file name without `.json`. @param json the parsed file.
 * @returns one row per expected field (`grpo.loss`, `grpo.grad_logp`, `indexer_kl.selected`, …); failed rows
 *   with a reason for a malformed vector or an implementation error (never throws).
 * @example
 * ```ts
 * const rows = await checkTrainingVector('tiny', { kind: 'indexer_kl', expected: { loss_dense: 0 },
 *   inputs: { attention_probs: [[[1, 0], [0.5, 0.5]]], index_scores: [[0, 0], [0, 0]], topk: 2 } });
 * rows.map((r) => r.pass); // => [true]
 * ```
 */
export async function checkTrainingVector(caseName: string, json: any): Promise<CheckResult[]> {
  const kind = typeof json === 'object' && json !== null ? String(json.kind) : 'unknown';
  try {
    const j = obj(json, 'the vector');
    if (kind === 'grpo') return await checkGrpo(caseName, j);
    if (kind === 'keep_sampling_mask') return await checkKeepSamplingMask(caseName, j);
    if (kind === 'indexer_kl') return await checkIndexerKl(caseName, j);
    return [failed(caseName, kind, `not a training vector kind: '${kind}' (expected grpo, keep_sampling_mask or indexer_kl)`)];
  } catch (err) {
    const why = err instanceof BadVector ? `malformed vector: ${err.message}` : `check failed: ${(err as Error).message}`;
    return [failed(caseName, kind, why)];
  }
}
