/// <reference lib="dom" />
/**
 * Page of scripts/swiglu-error.ts (bundled by it; not part of the package): one SwiGLU expert branch of a
 * golden fixture, op by op, on the TensorFlow.js backends of this browser, against a float64 oracle.
 *
 * `window.swigluError.measure(params)` loads the fixture (src/browser/load.ts), runs the layer's MoE from
 * the recorded `ffn.in` on each backend with a rounding probe that captures the branch's quantizer inputs
 * (`ffn.in` rows of the expert, and the SwiGLU product entering `ffn.act`), recomputes the branch's
 * intermediates with the library's own ops (`linear`, `tf.sigmoid`, `tf.mul`, as src/moe.ts `swigluFfn`),
 * and returns every intermediate as float32 arrays. The Node side computes the errors.
 *
 * @module
 */
import { tf } from '../src/backend.ts';
import '@tensorflow/tfjs-backend-webgpu';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { loadFixture } from '../src/browser/load.ts';
import { describeAdapter } from '../src/browser/adapter.ts';
import { actQuantDequant, linear, type RoundingProbe } from '../src/fp8.ts';
import { scaleFmt } from '../src/config.ts';
import { moe } from '../src/moe.ts';
import { materialize } from '../src/weight_matrix.ts';
import { traceKey } from '../src/conformance/core/trace_names.ts';

/** What to measure: fixture, step, layer, token, which of its routed experts (slot), element of the product. */
export interface SwigluParams {
  fixture: string;
  step: number;
  layer: number;
  token: number;
  slot: number;
  element: number;
  backends: string[];
}

/** One backend's intermediates of the branch ([n_e, F] row-major unless said), as plain arrays. */
export interface BackendIntermediates {
  backend: string;
  adapter: string;
  /** the product entering the ffn.act quantizer in the MoE run itself, and its block scales */
  gatedInRun: number[];
  scalesInRun: number[];
  /** its e4m3 rounding (q = e4m3(product/s)) in the run */
  qInRun: number[];
  /** x̂ = actQuantDequant(x_e) [n_e, D], W1 x̂, W3 x̂, sigmoid(W1 x̂), silu, the product */
  xq: number[];
  h1: number[];
  h3: number[];
  sig: number[];
  silu: number[];
  gated: number[];
  /** W1 x̂ and the product of the token's row computed alone (x_e row as a [1, D] matrix) */
  h1Alone: number[];
  gatedAlone: number[];
}

/** The measurement: the branch (expert, its tokens), the weights, and each backend's intermediates. */
export interface SwigluMeasurement {
  expert: number;
  tokens: number[];
  row: number;
  D: number;
  F: number;
  w1: number[];
  w3: number[];
  runs: BackendIntermediates[];
}

async function measure(p: SwigluParams): Promise<SwigluMeasurement> {
  const fx = await loadFixture(p.fixture, location.href);
  const D = fx.config.hidden_size;
  const xValues = fx.trace.read(traceKey(p.step, p.layer, 'ffn.in')) as Float32Array;
  const T = xValues.length / D;
  const fmt = scaleFmt(fx.config);
  let w1: number[] = [];
  let w3: number[] = [];
  const runs: BackendIntermediates[] = [];
  let expert = -1;
  let tokens: number[] = [];
  const read = (t: tf.Tensor) => Array.from(t.dataSync());
  for (const backend of p.backends) {
    if (!(await tf.setBackend(backend))) throw new Error(`backend ${backend} does not start here`);
    await tf.ready();
    const w = (await loadFixture(p.fixture, location.href)).layer(p.layer); // weights on this backend
    if (w.ffn.kind !== 'moe') throw new Error(`layer ${p.layer} of ${p.fixture} is not a MoE layer`);
    const captured: { xe?: tf.Tensor; gated?: number[]; scales?: number[]; q?: number[] } = {};
    const x = tf.tensor2d(xValues, [T, D]);
    let branch = '';
    const probe: RoundingProbe = (site, xs, q, scale) => {
      if (site.branch !== branch) return null;
      if (site.input === 'ffn.in' && !captured.xe) captured.xe = tf.keep(tf.clone(xs));
      if (site.input === 'ffn.act') {
        captured.gated = read(xs);
        captured.scales = read(scale);
        captured.q = read(q);
      }
      return null;
    };
    // the routing first (the gate is not quantized), then the run with the probe on the chosen branch
    const first = moe(x, w.ffn.moe, fx.config);
    first.out.dispose();
    const E = first.routing.experts;
    const e = first.routing.indices[p.token * E + p.slot]!;
    if (expert >= 0 && e !== expert) throw new Error(`backend ${backend} routes token ${p.token} slot ${p.slot} to expert ${e}, not ${expert}`);
    expert = e;
    tokens = [];
    for (let i = 0; i < first.routing.indices.length; i++) if (first.routing.indices[i] === e) tokens.push(Math.floor(i / E));
    branch = `expert ${e}`;
    moe(x, w.ffn.moe, fx.config, { routing: first.routing, combine: 'replay', probe }).out.dispose();
    const ew = w.ffn.moe.experts[e]!;
    const xe = captured.xe!;
    const out = tf.tidy(() => {
      const h1 = linear(xe, ew.w1, fmt);
      const h3 = linear(xe, ew.w3, fmt);
      const sig = tf.sigmoid(h1); // the ops of swigluFfn: tf.mul(tf.mul(h1, tf.sigmoid(h1)), h3)
      const silu = tf.mul(h1, sig);
      const gated = tf.mul(silu, h3);
      // the token's row alone ([1, D]), as the earlier flip search recomputed it
      const alone = tf.slice(xe, [tokens.indexOf(p.token), 0], [1, D]);
      const a1 = linear(alone, ew.w1, fmt);
      const gatedAlone = tf.mul(tf.mul(a1, tf.sigmoid(a1)), linear(alone, ew.w3, fmt));
      return {
        xq: read(actQuantDequant(xe, fmt)), h1: read(h1), h3: read(h3), sig: read(sig), silu: read(silu), gated: read(gated),
        h1Alone: read(a1), gatedAlone: read(gatedAlone),
      };
    });
    w1 = read(materialize(ew.w1.weight));
    w3 = read(materialize(ew.w3.weight));
    xe.dispose();
    x.dispose();
    runs.push({ backend, adapter: await describeAdapter(backend), gatedInRun: captured.gated!, scalesInRun: captured.scales!, qInRun: captured.q!, ...out });
  }
  return { expert, tokens, row: tokens.indexOf(p.token), D, F: fx.config.moe_intermediate_size, w1, w3, runs };
}

setWasmPaths(new URL('./wasm/', location.href).href);
(window as unknown as { swigluError: { measure: typeof measure } }).swigluError = { measure };
