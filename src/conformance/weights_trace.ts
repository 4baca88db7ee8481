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
 * Tolerance `1e−4 · max(1, max|b|)` (GOLDEN_RTOL), with the FP8-midpoint handling of the golden checks
 * (src/conformance/fp8_midpoints.ts; docs/deviations.md "MoE, Keep Routing, model").
 *
 * @module
 */
import { tf } from '../backend.ts';
import type { ResidentLayerWeights } from '../checkpoint.ts';
import { scaleFmt, type ModelConfig } from '../config.ts';
import { createMlaCache, disposeMlaCache, mlaCacheLength, mlaForward, type MlaCache } from '../mla.ts';
import { moe, swigluFfn, type LayerRouting } from '../moe.ts';
import type { AttentionHook, LayerTrace } from '../model.ts';
import type { SafetensorsFile } from '../safetensors.ts';
import { explainFfnByMidpoints, steerLatentMidpoints } from './fp8_midpoints.ts';
import { FixtureError, GOLDEN_RTOL, skippedRow } from './fixture.ts';
import { compareArrays, type CheckResult } from './types.ts';

type Explain = (row: CheckResult, expected: Float32Array, actual: ArrayLike<number>) => CheckResult;

/** Rows comparing one streamed run with an expect trace (see the module comment). */
export class TraceChecks {
  readonly rows: CheckResult[] = [];
  /** per chosen layer: the cache fed with the recorded `attn.in` of every step so far */
  private readonly teacherCaches = new Map<number, MlaCache>();
  /** FP8-midpoint note of the steered attention of the current step, per layer */
  private readonly steerNotes = new Map<number, string | null>();

  constructor(
    readonly trace: SafetensorsFile,
    readonly config: ModelConfig,
    readonly maxSeqLen: number,
    readonly name: string,
  ) {}

  private key(step: number, layer: number | null, what: string): string {
    return layer === null ? `step${step}.expected.${what}` : `step${step}.expected.layer${layer}.${what}`;
  }

  private compare(check: string, step: number, layer: number | null, actual: ArrayLike<number>, key: string, explain?: Explain): void {
    if (!this.trace.has(key)) return;
    const expected = this.trace.read(key) as Float32Array;
    const c = compareArrays(actual, expected, GOLDEN_RTOL);
    const r: CheckResult = { case: this.name, check, step, layer, pass: c.pass, max_abs_err: c.maxAbs, max_rel_err: c.maxRel, ...(c.reason ? { reason: c.reason } : {}) };
    this.rows.push(explain && !c.pass && !c.reason ? explain(r, expected, actual) : r);
  }

  /**
   * The attention hook of layer `layer` at step `step`: follows the recorded rounding at a verified FP8
   * midpoint of the KV latent (fp8_midpoints.ts), as the golden end-to-end check does.
   */
  attentionHook(step: number, layer: number, w: ResidentLayerWeights, call: Parameters<AttentionHook>[0]): tf.Tensor2D | null {
    const key = this.key(step, layer, 'attn.out');
    if (!this.trace.has(key)) return null;
    const s = steerLatentMidpoints(this.config, this.maxSeqLen, w.attn, call, this.trace.read(key) as Float32Array, GOLDEN_RTOL);
    this.steerNotes.set(layer, s?.note ?? null);
    return s?.out ?? null;
  }

  /** `stream.*` rows of a chosen layer from the block's internals. */
  streamed(step: number, layer: number, w: ResidentLayerWeights, t: LayerTrace): void {
    this.compare('stream.attn.in', step, layer, t.attnIn.dataSync(), this.key(step, layer, 'attn.in'));
    this.compare('stream.attn.out', step, layer, t.attnOut.dataSync(), this.key(step, layer, 'attn.out'));
    const note = this.steerNotes.get(layer);
    if (note && this.rows.at(-1)?.check === 'stream.attn.out') this.rows.at(-1)!.reason = note;
    this.steerNotes.delete(layer);
    this.compare('stream.ffn.out', step, layer, t.ffnOut.dataSync(), this.key(step, layer, 'ffn.out'), this.ffnExplainer(w, t.ffnIn, t.routing));
  }

  /** `stream.logits` of a step. */
  logits(step: number, values: Float32Array): void {
    this.compare('stream.logits', step, null, values, this.key(step, null, 'logits'));
  }

  /** Re-examines a failed FFN row for FP8 rounding midpoints (fp8_midpoints.ts). */
  private ffnExplainer(w: ResidentLayerWeights, x: tf.Tensor2D, routing: LayerRouting | null): Explain {
    return (row, expected, actual) => {
      const spec = w.ffn.kind === 'dense' ? w.ffn : { kind: 'moe' as const, experts: w.ffn.moe.experts, shared: w.ffn.moe.shared, routing: routing! };
      return explainFfnByMidpoints(row, x, spec, scaleFmt(this.config), actual, expected, GOLDEN_RTOL);
    };
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
    const key = (what: string) => this.key(step, layer, what);
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
    const key = (what: string) => this.key(step, layer, what);
    const x = this.recordedInput(key('attn.in'));
    try {
      const { config, maxSeqLen } = this;
      const a = mlaForward(x, w.attn, cache, startPos, { config, maxSeqLen });
      this.compare('attn.qr', step, layer, a.qr.dataSync(), key('attn.qr'));
      this.compare('attn.out', step, layer, a.out.dataSync(), key('attn.out'), (r, expected) => {
        const s = steerLatentMidpoints(config, maxSeqLen, w.attn, { x, att: a, cache, startPos }, expected, GOLDEN_RTOL);
        if (!s) return r;
        s.out.dispose();
        return { ...r, pass: true, reason: `FP8-midpoint elements exempted: ${s.flips}` };
      });
      if (this.trace.has(key('indexer.topk'))) this.topkRow(step, layer, a.topk, key('indexer.topk'));
      tf.dispose([a.out, a.qr, a.indexScores, a.topk]);
    } finally {
      x.dispose();
    }
  }

  private topkRow(step: number, layer: number, topk: tf.Tensor2D, key: string): void {
    const k = topk.shape[1];
    const got = topk.dataSync();
    const want = Array.from(this.trace.read(key), Number);
    const asSet = (v: ArrayLike<number>, r: number) => new Set(Array.from(v).slice(r * k, r * k + k).filter((p) => p >= 0));
    const bad = Array.from({ length: topk.shape[0] }, (_, r) => r).filter((r) => {
      const s1 = asSet(got, r);
      const s2 = asSet(want, r);
      return s1.size !== s2.size || [...s2].some((v) => !s1.has(v));
    });
    const pass = bad.length === 0 && want.length === got.length;
    this.rows.push({
      case: this.name, check: 'indexer.topk', step, layer, pass, max_abs_err: null, max_rel_err: null,
      ...(pass ? {} : { reason: bad.length ? `${bad.length} rows differ as sets (first: row ${bad[0]})` : `${got.length} ids, expected ${want.length}` }),
    });
  }

  private ffn(step: number, layer: number, w: ResidentLayerWeights): void {
    const key = (what: string) => this.key(step, layer, what);
    const x = this.recordedInput(key('ffn.in'));
    try {
      let y: tf.Tensor2D;
      let routing: LayerRouting | null = null;
      if (w.ffn.kind === 'dense') y = swigluFfn(x, w.ffn.dense, scaleFmt(this.config));
      else ({ out: y, routing } = moe(x, w.ffn.moe, this.config));
      this.compare('ffn.out', step, layer, y.dataSync(), key('ffn.out'), this.ffnExplainer(w, x, routing));
      y.dispose();
      if (routing && this.trace.has(key('gate.indices'))) this.gateRows(step, layer, routing, key);
    } finally {
      x.dispose();
    }
  }

  private gateRows(step: number, layer: number, routing: LayerRouting, key: (what: string) => string): void {
    const ids = Array.from(this.trace.read(key('gate.indices')), Number);
    const k = routing.experts;
    const aligned = new Float32Array(ids.length);
    let sameSets = ids.length === routing.indices.length;
    for (let i = 0; i < ids.length && sameSets; i++) {
      const t = Math.floor(i / k);
      const at = routing.indices.subarray(t * k, t * k + k).indexOf(ids[i]!);
      if (at < 0) sameSets = false;
      else aligned[i] = routing.weights[t * k + at]!;
    }
    this.rows.push({ case: this.name, check: 'gate.indices', step, layer, pass: sameSets, max_abs_err: null, max_rel_err: null, ...(sameSets ? {} : { reason: 'expert id sets differ' }) });
    if (sameSets) this.compare('gate.weights', step, layer, aligned, key('gate.weights'));
  }

  /** Frees the teacher caches. */
  dispose(): void {
    for (const c of this.teacherCaches.values()) disposeMlaCache(c);
    this.teacherCaches.clear();
  }
}
