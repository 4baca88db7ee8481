/**
 * The comparisons of `dsv32 conformance --weights DIR --expect FILE` (src/conformance/weights.ts): a
 * streamed run of a released checkpoint against a trace in the golden fixture format
 * (fixtures/golden/README.md), at every step of the trace (the prefill, then each decode step).
 *
 * Per step S and chosen layer L:
 * - **streamed** (`stream.attn.in`, `stream.attn.out`, `stream.ffn.out`, and `stream.logits` per step
 *   when the run reaches the last layer): this run's own activations against `stepS.expected.…`;
 * - **teacher-forced** from the recorded inputs: `attn.qr`, `attn.out`, `indexer.topk` (as sets) from
 *   `attn.in` — through a cache of this layer that holds the recorded `attn.in` of the earlier steps, so
 *   a decode step sees what the official run's cache held — and `ffn.out`, `gate.indices` (as sets),
 *   `gate.weights` (matched by expert id) from `ffn.in`.
 *
 * Tolerance `1e−4 · max(1, max|b|)` (GOLDEN_RTOL), with the FP8-midpoint handling of the golden checks:
 * the streamed run is steered at verified midpoints (src/conformance/fp8/steer.ts), a teacher-forced miss
 * is re-examined by the flip search (src/conformance/fp8/midpoints.ts; docs/deviations.md "MoE, Keep
 * Routing, model").
 *
 * @module
 */
import { tf } from '../backend.ts';
import type { ResidentLayerWeights } from '../checkpoint.ts';
import { scaleFmt, type ModelConfig } from '../config.ts';
import type { RoundingProbe } from '../fp8.ts';
import { createMlaCache, disposeMlaCache, mlaCacheLength, mlaForward, truncateMlaCache, type MlaCache } from '../mla.ts';
import { moe, swigluFfn, type LayerRouting } from '../moe.ts';
import type { SafetensorsFile } from '../safetensors.ts';
import { explainByFlips } from './fp8/midpoints.ts';
import type { LayerRecord, LayerSnapshot, Steer } from './fp8/steer.ts';
import { compareArrays, setsRow, withNote, type CheckResult } from './core/rows.ts';
import { FixtureError, GOLDEN_RTOL, skippedRow } from './core/fixture.ts';
import { traceKey, type TracedTensor } from './core/trace_names.ts';
import { gateRows } from './checks/gate.ts';

type Explain = (row: CheckResult, expected: Float32Array, actual: ArrayLike<number>) => CheckResult;

/** Rows comparing one streamed run with an expect trace (see the module comment). */
export class TraceChecks {
  readonly rows: CheckResult[] = [];
  /** per chosen layer: the cache fed with the recorded `attn.in` of every step so far */
  private readonly teacherCaches = new Map<number, MlaCache>();

  constructor(
    readonly trace: SafetensorsFile,
    readonly config: ModelConfig,
    readonly maxSeqLen: number,
    readonly name: string,
  ) {}

  private compare(check: string, step: number, layer: number | null, actual: ArrayLike<number>, key: string, explain?: Explain): void {
    if (!this.trace.has(key)) return;
    const expected = this.trace.read(key) as Float32Array;
    const c = compareArrays(actual, expected, GOLDEN_RTOL);
    const r: CheckResult = { case: this.name, check, step, layer, pass: c.pass, max_abs_err: c.maxAbs, max_rel_err: c.maxRel, ...(c.reason ? { reason: c.reason } : {}) };
    this.rows.push(explain && !c.reason ? explain(r, expected, actual) : r);
  }

  /** The recorded tensors of a step and layer that decide steers of the streamed run (fp8/steer.ts). */
  record(step: number, layer: number): LayerRecord {
    const out: LayerRecord = {};
    for (const t of ['attn.qr', 'indexer.score', 'attn.out', 'ffn.in', 'ffn.out'] as const) {
      const k = traceKey(step, layer, t);
      if (this.trace.has(k)) out[t] = this.trace.read(k) as Float32Array;
    }
    const k = traceKey(step, layer, 'indexer.topk');
    if (this.trace.has(k)) out['indexer.topk'] = { data: Array.from(this.trace.read(k), Number), k: this.trace.info(k).shape.at(-1)! };
    return out;
  }

  /** `stream.*` rows of a chosen layer from the (steered) block's snapshot; steer notes on the rows they decided. */
  streamed(step: number, layer: number, snap: LayerSnapshot, steers: Steer[]): void {
    const note = (...tensors: Steer['decidedBy'][]): Explain => (r) => steers.filter((st) => tensors.includes(st.decidedBy)).reduce((row, st) => withNote(row, st.note), r);
    this.compare('stream.attn.in', step, layer, snap.attnIn, traceKey(step, layer, 'attn.in'));
    // the stream has no attn.qr / indexer.score rows: their steers are named on attn.out
    this.compare('stream.attn.out', step, layer, snap.attnOut, traceKey(step, layer, 'attn.out'), note('attn.qr', 'indexer.score', 'attn.out'));
    this.compare('stream.ffn.out', step, layer, snap.ffnOut, traceKey(step, layer, 'ffn.out'), note('ffn.out'));
  }

  /** `stream.logits` of a step. */
  logits(step: number, values: Float32Array): void {
    this.compare('stream.logits', step, null, values, traceKey(step, null, 'logits'));
  }

  /** A recorded [1, n, D] input as [n, D]. @throws FixtureError when its last dimension is not D. */
  private recordedInput(key: string): tf.Tensor2D {
    const D = this.config.hidden_size;
    const { shape } = this.trace.info(key);
    if (shape[shape.length - 1] !== D) throw new FixtureError(`${key} must be [1, T, ${D}] (hidden_size ${D}) but is [${shape.join(', ')}]`);
    const v = this.trace.read(key) as Float32Array;
    return tf.tensor2d(v, [v.length / D, D]);
  }

  /**
   * Teacher-forced rows of a chosen layer at a step starting at `startPos` (weights loaded): attention
   * from the recorded `attn.in` through this layer's teacher cache, FFN and gate from `ffn.in`.
   */
  teacherForced(step: number, startPos: number, layer: number, w: ResidentLayerWeights): void {
    const key = (what: TracedTensor) => traceKey(step, layer, what);
    if (this.trace.has(key('attn.in'))) {
      if (startPos === 0) this.resetTeacherCache(layer);
      const cache = this.teacherCaches.get(layer);
      if (!cache || mlaCacheLength(cache) !== startPos) {
        this.rows.push(skippedRow(this.name, 'attn.out', step, layer));
        this.teacherCaches.delete(layer);
        if (cache) disposeMlaCache(cache);
      } else this.attention(step, startPos, layer, w, cache);
    }
    if (this.trace.has(key('ffn.in'))) this.ffn(step, layer, w);
  }

  private resetTeacherCache(layer: number): void {
    const old = this.teacherCaches.get(layer);
    if (old) disposeMlaCache(old);
    this.teacherCaches.set(layer, createMlaCache());
  }

  private attention(step: number, startPos: number, layer: number, w: ResidentLayerWeights, cache: MlaCache): void {
    const key = (what: TracedTensor) => traceKey(step, layer, what);
    const x = this.recordedInput(key('attn.in'));
    try {
      const { config, maxSeqLen } = this;
      const T = x.shape[0];
      // each run starts from the cache as the earlier steps left it; the last run is the kept one
      const attend = (probe?: RoundingProbe) => {
        truncateMlaCache(cache, startPos);
        const a = mlaForward(x, w.attn, cache, startPos, { config, maxSeqLen, ...(probe ? { probe } : {}) });
        const got = { qr: a.qr.dataSync() as Float32Array, out: a.out.dataSync() as Float32Array, selected: a.selected.dataSync() as Int32Array, k: a.selected.shape[1] };
        tf.dispose([a.out, a.qr, a.indexScores, a.selected]);
        return got;
      };
      const a = attend();
      this.compare('attn.qr', step, layer, a.qr, key('attn.qr'));
      this.compare('attn.out', step, layer, a.out, key('attn.out'), (r, expected) => explainByFlips(r, (probe) => attend(probe).out, expected, T, startPos, GOLDEN_RTOL, true));
      if (this.trace.has(key('indexer.topk'))) {
        const want = Array.from(this.trace.read(key('indexer.topk')), Number);
        this.rows.push(setsRow(this.name, 'indexer.topk', step, layer, a.selected, want, this.trace.info(key('indexer.topk')).shape.at(-1)!, a.k));
      }
    } finally {
      x.dispose();
    }
  }

  private ffn(step: number, layer: number, w: ResidentLayerWeights): void {
    const x = this.recordedInput(traceKey(step, layer, 'ffn.in'));
    try {
      let y: tf.Tensor2D;
      let routing: LayerRouting | null = null;
      if (w.ffn.kind === 'dense') y = swigluFfn(x, w.ffn.dense, scaleFmt(this.config));
      else ({ out: y, routing } = moe(x, w.ffn.moe, this.config));
      const actual = y.dataSync() as Float32Array;
      y.dispose();
      const fixed = routing as LayerRouting | null;
      const ffn = (probe: RoundingProbe) => {
        const out = w.ffn.kind === 'dense'
          ? swigluFfn(x, w.ffn.dense, scaleFmt(this.config), { probe })
          : moe(x, w.ffn.moe, this.config, { ...(fixed ? { routing: fixed, combine: 'replay' as const } : {}), probe }).out;
        const v = out.dataSync() as Float32Array;
        out.dispose();
        return v;
      };
      this.compare('ffn.out', step, layer, actual, traceKey(step, layer, 'ffn.out'), (r, expected) => explainByFlips(r, ffn, expected, x.shape[0], 0, GOLDEN_RTOL));
      if (fixed && this.trace.has(traceKey(step, layer, 'gate.indices'))) this.rows.push(...gateRows({ name: this.name, trace: this.trace }, '', step, layer, fixed));
    } finally {
      x.dispose();
    }
  }

  /** Frees the teacher caches. */
  dispose(): void {
    for (const c of this.teacherCaches.values()) disposeMlaCache(c);
    this.teacherCaches.clear();
  }
}
