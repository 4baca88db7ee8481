/**
 * `npx tsx scripts/swiglu-error.ts [--backends webgpu,cpu] [--fixture public-fp8 --step 0 --layer 2 --token 19 --slot 0 --element 91]`
 *
 * Which op of a SwiGLU expert branch adds the error on a TensorFlow.js backend: runs the branch in
 * Chromium (scripts/swiglu-error.page.ts) on each backend and compares every intermediate
 * (x̂ = the FP8 round trip of the expert's input, W1 x̂, W3 x̂, sigmoid, silu, the product, and y = product/s
 * entering the FP8 quantizer before W2) with
 * - the cpu backend (float32, the reference backend of the tests), and
 * - a float64 oracle: each op evaluated in float64 on the SAME float32 inputs the backend's op received
 *   ("op error": what this op adds), and the whole chain in float64 from x̂ ("chain error").
 *
 * Errors are in float32 ulps of the value (ulp(v) = 2^(⌊log2|v|⌋ − 23)). Prints one table per backend,
 * the measured element in detail, and its distance from the nearest e4m3 rounding midpoint.
 * The default element decides the WebGPU `public-fp8` `ffn.out` row of step 0, layer 2 (docs/deviations.md).
 * Chromium as for `dsv32 conformance --backend` (webgpu gets a window on Xvfb).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundlePage, buildExplorer, REPO_ROOT } from '../src/browser_host/build.ts';
import { launchChromiumFor } from '../src/browser_host/chromium.ts';
import { serveStatic } from '../src/browser_host/server.ts';
import { midpoint } from '../src/conformance/fp8/midpoints.ts';
import type { SwigluMeasurement, SwigluParams } from './swiglu-error.page.ts';

function arg(name: string, fallback: string): string {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? process.argv[at + 1]! : fallback;
}

const params: SwigluParams = {
  fixture: arg('fixture', 'public-fp8'),
  step: Number(arg('step', '0')),
  layer: Number(arg('layer', '2')),
  token: Number(arg('token', '19')),
  slot: Number(arg('slot', '0')),
  element: Number(arg('element', '91')),
  backends: arg('backends', 'webgpu,cpu').split(','),
};

/** float32 ulp at v. */
export function ulp(v: number): number {
  const a = Math.abs(Math.fround(v));
  if (a < 2 ** -126) return 2 ** -149;
  return 2 ** (Math.floor(Math.log2(a)) - 23);
}

/** |a − b| in float32 ulps of b. */
const ulps = (a: number, b: number) => Math.abs(a - b) / ulp(b);
const sigmoid64 = (h: number) => 1 / (1 + Math.exp(-h));

/** A dot product of float32 rows in float64. */
function dot64(a: number[], ai: number, b: number[], bi: number, n: number): number {
  let s = 0;
  for (let k = 0; k < n; k++) s += a[ai + k]! * b[bi + k]!;
  return s;
}

/** Σ|a_k b_k| in float64. */
function abs64(a: number[], ai: number, b: number[], bi: number, n: number): number {
  let s = 0;
  for (let k = 0; k < n; k++) s += Math.abs(a[ai + k]! * b[bi + k]!);
  return s;
}

/** float32 dot products in a few summation orders (products rounded to float32 unless fused). */
const SUMMATION: Record<string, (a: number[], ai: number, b: number[], bi: number, n: number) => number> = {
  sequential: (a, ai, b, bi, n) => {
    let s = 0;
    for (let k = 0; k < n; k++) s = Math.fround(s + Math.fround(a[ai + k]! * b[bi + k]!));
    return s;
  },
  'sequential fma': (a, ai, b, bi, n) => {
    let s = 0;
    for (let k = 0; k < n; k++) s = Math.fround(s + a[ai + k]! * b[bi + k]!);
    return s;
  },
  'vec4 lanes': (a, ai, b, bi, n) => {
    const lane = [0, 0, 0, 0];
    for (let k = 0; k < n; k++) lane[k % 4] = Math.fround(lane[k % 4]! + Math.fround(a[ai + k]! * b[bi + k]!));
    return Math.fround(Math.fround(Math.fround(lane[0]! + lane[1]!) + lane[2]!) + lane[3]!);
  },
  'vec4 dot per step': (a, ai, b, bi, n) => {
    let s = 0;
    for (let k = 0; k < n; k += 4) {
      let d = 0;
      for (let j = 0; j < 4; j++) d = Math.fround(d + Math.fround(a[ai + k + j]! * b[bi + k + j]!));
      s = Math.fround(s + d);
    }
    return s;
  },
};

interface Stats { max: number; at: number; mean: number }
function stats(errs: number[]): Stats {
  let max = -1;
  let at = -1;
  let sum = 0;
  errs.forEach((e, i) => {
    sum += e;
    if (e > max) [max, at] = [e, i];
  });
  return { max, at, mean: sum / errs.length };
}

function analyse(m: SwigluMeasurement): void {
  const { D, F, row } = m;
  const n = m.tokens.length;
  const cpu = m.runs.find((r) => r.backend === 'cpu');
  const i0 = row * F + params.element;
  process.stdout.write(`${params.fixture} step ${params.step} layer ${params.layer}: token ${params.token} slot ${params.slot} → expert ${m.expert} ` +
    `(${n} tokens routed to it, token ${params.token} is row ${row}); element ${params.element} of the product (D = ${D}, F = ${F})\n\n`);
  for (const r of m.runs) {
    // the chain in float64 from this backend's x̂ (identical on every backend: checked below)
    const h1c = new Array<number>(n * F);
    const h3c = new Array<number>(n * F);
    const op: Record<string, number[]> = { 'W1 x̂ (matMul)': [], 'W3 x̂ (matMul)': [], 'sigmoid(h1)': [], 'h1·sigmoid (mul)': [], 'silu·h3 (mul)': [] };
    const chain: Record<string, number[]> = { h1: [], h3: [], sigmoid: [], silu: [], product: [] };
    for (let t = 0; t < n; t++) {
      for (let f = 0; f < F; f++) {
        const i = t * F + f;
        h1c[i] = dot64(r.xq, t * D, m.w1, f * D, D);
        h3c[i] = dot64(r.xq, t * D, m.w3, f * D, D);
        op['W1 x̂ (matMul)']!.push(ulps(r.h1[i]!, h1c[i]!));
        op['W3 x̂ (matMul)']!.push(ulps(r.h3[i]!, h3c[i]!));
        op['sigmoid(h1)']!.push(ulps(r.sig[i]!, sigmoid64(r.h1[i]!)));
        op['h1·sigmoid (mul)']!.push(ulps(r.silu[i]!, r.h1[i]! * r.sig[i]!));
        op['silu·h3 (mul)']!.push(ulps(r.gated[i]!, r.silu[i]! * r.h3[i]!));
        const s64 = sigmoid64(h1c[i]!);
        chain.h1!.push(ulps(r.h1[i]!, h1c[i]!));
        chain.h3!.push(ulps(r.h3[i]!, h3c[i]!));
        chain.sigmoid!.push(ulps(r.sig[i]!, s64));
        chain.silu!.push(ulps(r.silu[i]!, h1c[i]! * s64));
        chain.product!.push(ulps(r.gated[i]!, h1c[i]! * s64 * h3c[i]!));
      }
    }
    const sameAsRun = r.gated.every((v, i) => Object.is(v, r.gatedInRun[i]));
    process.stdout.write(`[${r.backend}] ${r.adapter}\n  recomputed product ${sameAsRun ? 'bit-identical to' : 'DIFFERS from'} the one the MoE run quantized\n`);
    if (cpu && cpu !== r) process.stdout.write(`  x̂ bit-identical to cpu: ${r.xq.every((v, i) => Object.is(v, cpu.xq[i]))}\n`);
    // the e4m3 rounding the run made of the product, against the nearest e4m3 value of ITS float32 y = product/s
    const notNearest = r.qInRun.filter((q, i) => {
      const y = Math.fround(r.gatedInRun[i]! / r.scalesInRun[Math.floor(i / 128)]!);
      return Math.abs(q - y) > Math.abs(midpoint(y).other - y);
    }).length;
    process.stdout.write(`  e4m3 roundings of the product in the run that are not to the nearest e4m3 value of its y: ${notNearest}\n`);
    // which float32 summation order the backend's matMul follows (bit-exact matches over all elements)
    const orders = Object.entries(SUMMATION).map(([name, sum]) => {
      let same = 0;
      for (let t = 0; t < n; t++) for (let f = 0; f < F; f++) if (Object.is(sum(r.xq, t * D, m.w1, f * D, D), r.h1[t * F + f])) same++;
      return `${name} ${same}/${n * F}`;
    });
    process.stdout.write(`  W1 x̂ bit-identical to a float32 summation order: ${orders.join(', ')}\n`);
    const cond = op['W1 x̂ (matMul)']!.map((_, i) => Math.abs(r.h1[i]! - h1c[i]!) / (2 ** -24 * abs64(r.xq, Math.floor(i / F) * D, m.w1, (i % F) * D, D)));
    process.stdout.write(`  W1 x̂ error in units of u·Σ|x̂_k w_k| (u = 2⁻²⁴; recursive summation is bounded by ≈ K = ${D}): max ${stats(cond).max.toFixed(2)}, mean ${stats(cond).mean.toFixed(3)}\n`);
    process.stdout.write('  op error (this op, float64 on the float32 inputs it received), ulps over all elements: max (element) mean; at the measured element\n');
    for (const [k, errs] of Object.entries(op)) {
      const s = stats(errs);
      process.stdout.write(`    ${k.padEnd(18)} max ${s.max.toFixed(2).padStart(8)} ([${Math.floor(s.at / F)}, ${s.at % F}])  mean ${s.mean.toFixed(3)}   here ${errs[i0]!.toFixed(2)}\n`);
    }
    process.stdout.write('  chain error (float64 from x̂), ulps: max  mean; at the measured element\n');
    for (const [k, errs] of Object.entries(chain)) {
      const s = stats(errs);
      process.stdout.write(`    ${k.padEnd(18)} max ${s.max.toFixed(2).padStart(8)}  mean ${s.mean.toFixed(3)}   here ${errs[i0]!.toFixed(2)}\n`);
    }
    const s = r.scalesInRun[Math.floor(i0 / 128)] ?? r.scalesInRun[0]!;
    const y = Math.fround(r.gated[i0]! / s);
    const y64 = (h1c[i0]! * sigmoid64(h1c[i0]!) * h3c[i0]!) / s;
    const mp = midpoint(y);
    process.stdout.write(`  here: h1 ${r.h1[i0]} h3 ${r.h3[i0]} sigmoid ${r.sig[i0]} silu ${r.silu[i0]} product ${r.gated[i0]}  s ${s}\n`);
    process.stdout.write(`        y = product/s = ${y}, float64 chain ${y64}; |y − midpoint| = ${mp.dist.toExponential(3)} (float64: ${midpoint(y64).dist.toExponential(3)})\n`);
    const alone = Math.fround(r.gatedAlone[params.element]! / s);
    const sameH1 = r.h1Alone.every((v, f) => Object.is(v, r.h1[row * F + f]));
    process.stdout.write(`        the token's row alone ([1, D]): W1 x̂ ${sameH1 ? 'bit-identical to' : 'DIFFERS from'} the batched row; y = ${alone}, |y − midpoint| = ${midpoint(alone).dist.toExponential(3)}\n`);
    if (cpu && cpu !== r) {
      const parts = (['h1', 'h3', 'sig', 'silu', 'gated'] as const).map((k) => `${k} ${(r[k][i0]! - cpu[k][i0]!).toExponential(2)} (${ulps(r[k][i0]!, cpu[k][i0]!).toFixed(1)} ulp)`);
      process.stdout.write(`        minus cpu: ${parts.join(', ')}\n`);
    }
    process.stdout.write('\n');
  }
}

const work = mkdtempSync(join(tmpdir(), 'dsv32-swiglu-'));
const server = await serveStatic({ '/': work, '/fixtures/': join(REPO_ROOT, 'fixtures') });
const gpu = params.backends.includes('webgpu') ? 'webgpu' : params.backends[0]!;
const { browser, xvfb } = await launchChromiumFor(gpu);
try {
  await buildExplorer(work); // the wasm binaries
  await bundlePage(join(REPO_ROOT, 'scripts', 'swiglu-error.page.ts'), join(work, 'swiglu.js'));
  writeFileSync(join(work, 'swiglu.html'), '<!doctype html><meta charset="utf-8"><script type="module" src="./swiglu.js"></script>');
  const page = await browser.newPage();
  page.on('console', (msg) => msg.type() === 'error' && process.stderr.write(`page: ${msg.text()}\n`));
  await page.goto(`${server.url}swiglu.html`);
  await page.waitForFunction('window.swigluError !== undefined');
  const m = await page.evaluate((p: SwigluParams) => (window as unknown as { swigluError: { measure(q: SwigluParams): Promise<SwigluMeasurement> } }).swigluError.measure(p), params);
  analyse(m);
} finally {
  await browser.close();
  await server.close();
  xvfb?.process.kill();
  rmSync(work, { recursive: true, force: true });
}
