/**
 * Golden checks of the lightning indexer and the top-k selection (paper §2.1 Eqs. 1–2;
 * docs/spec-notes.md#lightning-indexer, docs/spec-notes.md#selection) against a trace of the official
 * inference code (fixtures/golden/README.md).
 *
 * Teacher forcing: for every layer, the steps run in order on the RECORDED inputs of each step
 * (`stepS.expected.layerL.attn.in` = x, `.attn.qr` = qr), so the indexer cache of step S holds the keys
 * the earlier steps computed from their recorded inputs. Compared per step and layer:
 * - `indexer.score` [1, n, end_pos]: `max|a−b| ≤ 1e-4 · max(1, max|b|)`. An element whose query row or
 *   key column had a q/k value on an e4m3 rounding midpoint (../fp8/midpoints.ts `midpointRows`, one
 *   tolerance `MIDPOINT_TOL`; the q and k come from the model's rounding probe) is counted instead of
 *   failed: it must only stay within 1e-2 of the same scale (`explainScoresByMidpoints`; one e4m3 quantum
 *   moves a score by ~1e-3).
 * - `indexer.topk` [n, min(k, end_pos)]: as sets per row; a position may differ only where its
 *   recorded score equals the recorded k-th score within 1e-5 relative.
 *
 * The RoPE-bug case (a manifest without `steps` whose trace holds `stepS.interleaved_bug.layerL.indexer.topk`;
 * weights, config and recorded inputs come from the base folder `fx.weightsDir`):
 * - `rope_bug.interleaved_reproduces_bug` (layer 0 only): with the pre-fix interleaved RoPE, our
 *   selections equal the bug's. Only layer 0 can be teacher-forced from the base folder's inputs: its
 *   input (attn_norm of the embedding) precedes every indexer, whereas the bug run's later layers saw
 *   inputs changed by the bug's own layer-0 selections, which the trace does not record (checking them
 *   needs a full model forward with the interleaved indexer layout);
 * - `rope_bug.shipped_reproduces_base` (every layer): with the shipped layout, they equal the base folder's;
 * - `rope_bug.shipped_differs_from_bug` (every layer): the shipped selections are not the bug's.
 *
 * The folder is validated first (`validateGolden`); a malformed manifest gives NO row here: the
 * attention side (`checkGoldenAttention`, or the runner) reports it once. Likewise a layer that the
 * trace does not record at a step gives no row here (the attention side's `trace` row); the later
 * steps of that layer, and those after a step that could not run, are failed `skipped` rows.
 *
 * Nothing here throws: unreadable or inconsistent data become failed rows with a reason.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tf } from '../../backend.ts';
import { scaleFmt, type ModelConfig } from '../../config.ts';
import type { SafetensorsFile } from '../../safetensors.ts';
import { openSafetensors } from '../../node.ts';
import type { IndexerWeights } from '../../checkpoint.ts';
import type { RoundingProbe } from '../../fp8.ts';
import { createIndexerCache, disposeIndexerCache, indexerScores, type IndexerCache } from '../../indexer.ts';
import { selectTopK } from '../../topk.ts';
import type { GoldenCase } from '../core/case.ts';
import { GOLDEN_RTOL, layerTraced, parseSteps, skippedRow, type GoldenStep } from '../core/fixture.ts';
import { traceKey, type TracedTensor, ropeBugKey, ropeBugRecord } from '../core/trace_names.ts';
import { failure, numericRow, rowSetDiff, type CheckResult } from '../core/rows.ts';
import { explainScoresByMidpoints, midpointRows } from '../fp8/midpoints.ts';

/** Score tolerance of float32 weights (README): max|a−b| ≤ SCORE_RTOL · max(1, max|b|). */
export const SCORE_RTOL = GOLDEN_RTOL;
/** Top-k ties: a differing position must score within this relative distance of the k-th score. */
export const TOPK_TIE_RTOL = 1e-5;
/** Check family: the indexer rows (teacher-forced, or the RoPE-bug case's). */
export const indexerCheck = {
  name: 'indexer',
  appliesTo: (): boolean => true,
  run: checkIndexer,
};

/**
 * Runs every indexer check of one opened golden case (see the module doc). Never throws.
 *
 * @returns rows `indexer.score` / `indexer.topk` per step and layer, or the `rope_bug.*` rows.
 * @example
 * ```ts
 * // on a case opened once (core/case.ts `openCase`), as checks/golden.ts does:
 * // checkIndexer(openCase(readGolden({ name: 'public-fp32', dir: 'fixtures/golden/public-fp32' })));
 * ```
 */
export function checkIndexer(c: GoldenCase): CheckResult[] {
  try {
    if (c.steps.length > 0) return checkTraced(c);
    if (c.trace.names().some((n) => ropeBugRecord(n))) return checkRopeBug(c);
    return [failure(c.name, 'indexer', 'manifest.json has no `steps` and trace.safetensors holds no `stepS.interleaved_bug.layerL.indexer.topk`')];
  } catch (e) {
    return [failure(c.name, 'indexer', `check threw: ${(e as Error).message}`)];
  }
}

// --- Reading a folder ---

/** Reads `name` as [n, width] rows of numbers (float or integer dtypes). */
function readMatrix(trace: SafetensorsFile, name: string): { rows: number; cols: number; data: Float64Array } {
  const info = trace.info(name);
  const raw = trace.read(name);
  const data = Float64Array.from(raw as ArrayLike<number | bigint>, (v) => Number(v));
  const cols = info.shape[info.shape.length - 1] ?? 1;
  return { rows: data.length / cols, cols, data };
}

/** Recorded [1, n, dim] (or [n, dim]) input as a [n, dim] tensor, checked against n and dim. */
function readInput(trace: SafetensorsFile, name: string, n: number, dim: number): tf.Tensor2D {
  const info = trace.info(name);
  const size = info.shape.reduce((a, b) => a * b, 1);
  if (size !== n * dim || info.shape[info.shape.length - 1] !== dim) {
    throw new RangeError(`${name} must hold [1, ${n}, ${dim}] but has shape [${info.shape.join(', ')}]`);
  }
  return tf.tensor2d(trace.read(name) as Float32Array, [n, dim]);
}

// --- Comparisons ---

/**
 * Compares selections as sets per row. `tieScores` [n, S] (recorded scores where available) decide
 * whether a differing position is a tie with the k-th score. Returns the number of differing positions.
 */
function compareTopk(
  got: Int32Array,
  exp: Float64Array,
  n: number,
  width: number,
  expWidth: number,
  start: number,
  k: number,
  tieScores: ArrayLike<number>,
  S: number,
): { pass: boolean; differing: number; reason?: string } {
  if (expWidth !== width) return { pass: false, differing: NaN, reason: `recorded top-k width ${expWidth} ≠ min(k, end_pos) = ${width}` };
  let differing = 0;
  let untied = 0;
  const examples: string[] = [];
  for (let i = 0; i < n; i++) {
    const t = start + i;
    const { missing, extra } = rowSetDiff(got, width, exp, width, i);
    const diff = [...extra, ...missing];
    if (diff.length === 0) continue;
    differing += diff.length;
    const row = Array.from({ length: t + 1 }, (_, s) => tieScores[i * S + s]!);
    const kth = [...row].sort((x, y) => y - x)[Math.min(k, t + 1) - 1]!;
    for (const s of diff) {
      const tied = s >= 0 && s <= t && Math.abs(row[s]! - kth) <= TOPK_TIE_RTOL * Math.abs(kth);
      if (!tied) {
        untied++;
        if (examples.length < 3) examples.push(`t=${t} s=${s}`);
      }
    }
  }
  if (untied > 0) return { pass: false, differing, reason: `${untied} position(s) differ away from a k-th-score tie (${examples.join(', ')})` };
  return { pass: true, differing, reason: differing ? `${differing} position(s) differ at k-th-score ties` : undefined };
}

// --- Traced folders: teacher-forced indexer per step and layer ---

function checkTraced(fx: GoldenCase): CheckResult[] {
  const results: CheckResult[] = [];
  const { steps, maxSeqLen, config, trace } = fx;
  {
    {
      for (let L = 0; L < config.num_hidden_layers; L++) {
        // an untraced (step, layer) is the attention side's `trace` row; here it only ends teacher forcing
        const traced = steps.map((st) => layerTraced(trace, st.step, L));
        if (!traced[0]) {
          steps.forEach((st, i) => traced[i] && results.push(skippedRow(fx.name, 'indexer.score', st.step, L)));
          continue;
        }
        const weights = fx.weights.layers[L]!;
        const cache = createIndexerCache();
        const keyFlags: boolean[] = [];
        try {
          let ok = true; // the cache holds every earlier step's keys
          for (const [i, st] of steps.entries()) {
            if (!traced[i]) ok = false;
            else if (!ok) results.push(skippedRow(fx.name, 'indexer.score', st.step, L));
            else {
              const { rows, ran } = runStep(fx.name, trace, config, weights.attn.indexer, cache, keyFlags, st, L, maxSeqLen);
              results.push(...rows);
              ok = ran;
            }
          }
        } finally {
          disposeIndexerCache(cache);
        }
      }
    }
  }
  return results;
}

function runStep(
  name: string,
  trace: SafetensorsFile,
  config: ModelConfig,
  w: IndexerWeights,
  cache: IndexerCache,
  keyFlags: boolean[],
  st: GoldenStep,
  L: number,
  maxSeqLen: number,
): { rows: CheckResult[]; ran: boolean } {
  const key = (t: TracedTensor) => traceKey(st.step, L, t);
  const n = st.length;
  const S = st.start_pos + n;
  let x: tf.Tensor2D | undefined;
  let qr: tf.Tensor2D | undefined;
  const quantized: Record<string, { values: Float32Array; scales: Float32Array }> = {};
  const probe: RoundingProbe = (site, xq, _q, scale) => {
    quantized[site.input] = { values: Float32Array.from(xq.dataSync() as Float32Array), scales: Float32Array.from(scale.dataSync() as Float32Array) };
    return null;
  };
  let scores: tf.Tensor2D | undefined;
  let selected: tf.Tensor2D | undefined;
  const out: CheckResult[] = [];
  let stage = 'indexer.score';
  try {
    x = readInput(trace, key('attn.in'), n, config.hidden_size);
    qr = readInput(trace, key('attn.qr'), n, config.q_lora_rank);
    scores = indexerScores(x, qr, w, cache, st.start_pos, { config, maxSeqLen, probe });
    const ue8m0 = scaleFmt(config) === 'ue8m0';
    const flags = (input: string) => (quantized[input] ? midpointRows(quantized[input].values, quantized[input].scales, n, ue8m0) : new Array<boolean>(n).fill(false));
    const rowFlag = flags('indexer.q');
    keyFlags.push(...flags('indexer.k'));
    const got = scores.dataSync() as Float32Array;

    let expScores: Float64Array | null = null;
    if (!trace.has(key('indexer.score'))) out.push(failure(name, 'indexer.score', `trace lacks ${key('indexer.score')}`, st.step, L));
    else {
      const e = readMatrix(trace, key('indexer.score'));
      if (e.data.length !== n * S) out.push(failure(name, 'indexer.score', `${key('indexer.score')} must hold ${n}×${S} values but holds ${e.data.length}`, st.step, L));
      else {
        expScores = e.data;
        const row = numericRow(name, 'indexer.score', st.step, L, got, e.data, SCORE_RTOL);
        out.push(row.reason?.startsWith('length') ? row : explainScoresByMidpoints(row, got, e.data, S, rowFlag, keyFlags, SCORE_RTOL));
      }
    }

    stage = 'indexer.topk';
    selected = selectTopK(scores, st.start_pos, config.index_topk);
    if (!trace.has(key('indexer.topk'))) out.push(failure(name, 'indexer.topk', `trace lacks ${key('indexer.topk')}`, st.step, L));
    else {
      const e = readMatrix(trace, key('indexer.topk'));
      const width = selected.shape[1];
      const c = compareTopk(selected.dataSync() as Int32Array, e.data, n, width, e.cols, st.start_pos, config.index_topk, expScores ?? got, S);
      out.push({ case: name, check: 'indexer.topk', step: st.step, layer: L, pass: c.pass, max_abs_err: c.differing, max_rel_err: null, reason: c.reason ?? 'as sets; max_abs_err = number of differing positions' });
    }
    return { rows: out, ran: true };
  } catch (e) {
    // keep the rows already made; once the scores exist the cache holds this step's keys
    out.push(failure(name, stage, `step ${st.step}: ${(e as Error).message}`, st.step, L));
    return { rows: out, ran: scores !== undefined };
  } finally {
    tf.dispose([x, qr, scores, selected].filter((t) => t !== undefined) as tf.Tensor[]);
  }
}

// --- The RoPE-layout regression case ---

function checkRopeBug(fx: GoldenCase): CheckResult[] {
  const bugTrace = fx.trace;
  const results: CheckResult[] = [];
  const base = fx.weightsDir;
  if (base === fx.dir || !existsSync(join(base, 'manifest.json')) || !existsSync(join(base, 'trace.safetensors'))) {
    return [failure(fx.name, 'rope_bug', 'manifest.json `weights` must name a base golden folder (manifest.json, trace.safetensors, config.json, weights)')];
  }
  const baseManifest = JSON.parse(readFileSync(join(base, 'manifest.json'), 'utf8')) as Record<string, unknown>;
  const config = fx.config;
  const steps = parseSteps(baseManifest.steps);
  const maxSeqLen = fx.maxSeqLen; // its own manifest's, else the base folder's (validateGolden)
  const bugNames = bugTrace.names();
  const lastStep = Math.max(...bugNames.map((nm) => ropeBugRecord(nm)?.step ?? -1));
  const baseTrace = openSafetensors(join(base, 'trace.safetensors'));
  try {
    // the bug trace's tokens must be a prefix of the base run's tokens
    if (bugTrace.has('input.tokens') && baseTrace.has('input.tokens')) {
      const a = Array.from(bugTrace.read('input.tokens') as ArrayLike<number | bigint>, Number);
      const b = Array.from(baseTrace.read('input.tokens') as ArrayLike<number | bigint>, Number);
      const same = a.every((v, i) => v === b[i]);
      results.push({ case: fx.name, check: 'rope_bug.tokens', step: null, layer: null, pass: same, max_abs_err: null, max_rel_err: null, reason: same ? 'bug tokens are a prefix of the base tokens' : 'input.tokens differ from the base folder’s' });
    }
    for (let L = 0; L < config.num_hidden_layers; L++) {
      const weights = fx.weights.layers[L]!;
      const shipped = createIndexerCache();
      const buggy = createIndexerCache();
      try {
        for (const st of steps.filter((s) => s.step <= lastStep)) {
          results.push(...ropeBugStep(fx.name, bugTrace, baseTrace, config, weights.attn.indexer, shipped, buggy, st, L, maxSeqLen));
        }
      } catch (e) {
        results.push(failure(fx.name, 'rope_bug', `layer ${L}: ${(e as Error).message}`, null, L));
      } finally {
        disposeIndexerCache(shipped);
        disposeIndexerCache(buggy);
      }
    }
  } finally {
    baseTrace.close();
  }
  return results;
}

function ropeBugStep(
  name: string,
  bugTrace: SafetensorsFile,
  baseTrace: SafetensorsFile,
  config: ModelConfig,
  w: IndexerWeights,
  shipped: IndexerCache,
  buggy: IndexerCache,
  st: GoldenStep,
  L: number,
  maxSeqLen: number,
): CheckResult[] {
  const key = (t: TracedTensor) => traceKey(st.step, L, t);
  const bugName = ropeBugKey(st.step, L);
  const n = st.length;
  const S = st.start_pos + n;
  const k = config.index_topk;
  const owned: tf.Tensor[] = [];
  const own = <T extends tf.Tensor>(t: T): T => (owned.push(t), t);
  try {
    const x = own(readInput(baseTrace, key('attn.in'), n, config.hidden_size));
    const qr = own(readInput(baseTrace, key('attn.qr'), n, config.q_lora_rank));
    const good = own(indexerScores(x, qr, w, shipped, st.start_pos, { config, maxSeqLen }));
    const bad = own(indexerScores(x, qr, w, buggy, st.start_pos, { config, maxSeqLen, ropeInterleaved: true }));
    if (!bugTrace.has(bugName)) return []; // steps without a bug record only fill the caches
    const goodSel = own(selectTopK(good, st.start_pos, k)).dataSync() as Int32Array;
    const badSel = own(selectTopK(bad, st.start_pos, k)).dataSync() as Int32Array;
    const width = Math.min(k, S);
    const bug = readMatrix(bugTrace, bugName);
    const row = (check: string, c: { pass: boolean; differing: number; reason?: string }, note: string): CheckResult => ({
      case: name, check, step: st.step, layer: L, pass: c.pass, max_abs_err: c.differing, max_rel_err: null, reason: c.reason ?? note,
    });
    const out: CheckResult[] = [];
    const badScores = bad.dataSync();
    if (L === 0) out.push(row('rope_bug.interleaved_reproduces_bug', compareTopk(badSel, bug.data, n, width, bug.cols, st.start_pos, k, badScores, S), 'interleaved indexer RoPE gives the recorded bug selections'));
    if (baseTrace.has(key('indexer.topk'))) {
      const baseSel = readMatrix(baseTrace, key('indexer.topk'));
      const tie = baseTrace.has(key('indexer.score')) ? readMatrix(baseTrace, key('indexer.score')).data : good.dataSync();
      out.push(row('rope_bug.shipped_reproduces_base', compareTopk(goodSel, baseSel.data, n, width, baseSel.cols, st.start_pos, k, tie, S), 'shipped (non-interleaved) RoPE gives the base folder’s selections'));
    } else out.push(failure(name, 'rope_bug.shipped_reproduces_base', `base trace lacks ${key('indexer.topk')}`, st.step, L));
    // the case must discriminate: the shipped selections are not the bug's in at least one row
    const vsBug = compareTopk(goodSel, bug.data, n, width, bug.cols, st.start_pos, k, new Float64Array(n * S).fill(NaN), S);
    out.push({
      case: name, check: 'rope_bug.shipped_differs_from_bug', step: st.step, layer: L, pass: vsBug.differing > 0,
      max_abs_err: vsBug.differing, max_rel_err: null,
      reason: vsBug.differing > 0
        ? `${vsBug.differing} selected position(s) differ between the layouts`
        : (vsBug.reason ?? 'shipped layout selects exactly the bug’s positions'),
    });
    return out;
  } finally {
    tf.dispose(owned);
  }
}
