// End-to-end steering at EVERY FP8 quantizer site (src/conformance/fp8/steer.ts), built on purpose: for
// each site, an element of its quantizer input that lies near an e4m3 midpoint in our run is rounded the
// other way to make an "official" run (as a machine with another float32 summation order could); its
// tensors become the recorded ones. The steered block must find exactly that element, decide it with the
// first recorded tensor it changes, and reproduce every recorded tensor (caches included: the next decode
// step reads the flipped cache). The sites of the shipped fixtures cover only a few of these.
import { it, expect, beforeAll, afterAll, beforeEach } from 'vitest';
import { resolve } from 'node:path';
import { tf } from '../src/backend.ts';
import type { ModelConfig } from '../src/config.ts';
import type { QuantSite } from '../src/fp8.ts';
import { createMlaCache, disposeMlaCache, type MlaCache } from '../src/mla.ts';
import { blockForward, embedTokens, type LayerTrace } from '../src/model.ts';
import { closeCase, openCase, type GoldenCase } from '../src/conformance/core/case.ts';
import { readGolden } from '../src/conformance/core/fixture.ts';
import { compareArrays, setsRow } from '../src/conformance/core/rows.ts';
import { E2E_WINDOW, MIDPOINT_TOL, flipKey, roundingProbe, type Flip } from '../src/conformance/fp8/midpoints.ts';
import { SEARCH_RTOL_FACTOR, steeredBlock, type LayerRecord } from '../src/conformance/fp8/steer.ts';
import { describeEachBackend } from './helpers/backends.ts';

// long synchronous checks: let the worker answer the runner's messages between tests (vitest RPC timeout)
beforeEach(() => new Promise<void>((resolve) => setImmediate(resolve)));

const T = 24;
const RTOL = 1e-4;
const ORDER = ['attn.qr', 'indexer.score', 'indexer.topk', 'attn.out', 'ffn.in', 'ffn.out'] as const;

interface Snap { [k: string]: Float32Array }

/** One block call (layer `layer` as the first block, prefill of T tokens, then one decode step) with the given flips. */
function run(c: GoldenCase, config: ModelConfig, layer: number, flips: Flip[], found?: Flip[]): { prefill: Snap; decode: Snap; cache: MlaCache } {
  const cache = createMlaCache();
  const snaps: Snap[] = [];
  for (const [start, n] of [[0, T], [T, 1]] as const) {
    const h = embedTokens(c.tokens.slice(start, start + n), c.weights.global.embed);
    let snap: Snap = {};
    const b = blockForward(h, null, c.weights.layers[layer]!, cache, start, {
      config, maxSeqLen: c.maxSeqLen, layer,
      probe: {
        layer: (_l, t: LayerTrace) => {
          const tensors = { 'attn.qr': t.qr, 'indexer.score': t.indexScores, 'indexer.topk': t.selected, 'attn.out': t.attnOut, 'ffn.in': t.ffnIn, 'ffn.out': t.ffnOut };
          snap = Object.fromEntries(Object.entries(tensors).map(([k, v]) => [k, Float32Array.from(v.dataSync())]));
        },
        // the flips apply to the prefill only (element indices are per call)
        rounding: start === 0 ? roundingProbe(flips, found, E2E_WINDOW * MIDPOINT_TOL) : undefined,
      },
    });
    tf.dispose([h, b.out, b.residual]);
    snaps.push(snap);
  }
  return { prefill: snaps[0]!, decode: snaps[1]!, cache };
}

/** The first tensor (in the block's order) on which two runs differ beyond the golden tolerance. */
function firstDiffering(a: Snap, b: Snap): (typeof ORDER)[number] | null {
  for (const t of ORDER) {
    if (t === 'indexer.topk') {
      const k = a[t]!.length / T;
      if (!setsRow('', t, null, null, a[t]!, b[t]!, k).pass) return t;
    } else if (!compareArrays(a[t]!, b[t]!, RTOL).pass) return t;
  }
  return null;
}

/** The recorded tensors of a block from a snapshot of the "official" run. */
function recordOf(o: Snap): LayerRecord {
  return {
    'attn.qr': o['attn.qr'], 'indexer.score': o['indexer.score'], 'indexer.topk': { data: o['indexer.topk']!, k: o['indexer.topk']!.length / T },
    'attn.out': o['attn.out'], 'ffn.in': o['ffn.in'], 'ffn.out': o['ffn.out'],
  };
}

/** The steered prefill of layer `layer` (T tokens, a fresh cache) against `record`; disposes what it made. */
function steerPrefill(c: GoldenCase, layer: number, record: LayerRecord, config: ModelConfig = c.config): ReturnType<typeof steeredBlock> {
  const cache = createMlaCache();
  const h = embedTokens(c.tokens.slice(0, T), c.weights.global.embed);
  const b = steeredBlock(h, null, c.weights.layers[layer]!, cache, 0, { config, maxSeqLen: c.maxSeqLen, layer }, record, RTOL, []);
  tf.dispose([h, b.out, b.residual]);
  disposeMlaCache(cache);
  return b;
}

const SITES: Array<{ input: QuantSite['input']; branch?: RegExp; layer: number; plainScales?: boolean }> = [
  { input: 'attn.in', layer: 0 },
  { input: 'attn.qr', layer: 0, plainScales: true }, // (with ue8m0 scales this input has no element near a midpoint here)
  { input: 'indexer.q', layer: 0 },
  { input: 'indexer.k', layer: 0 },
  { input: 'kv.latent', layer: 0 },
  { input: 'wo.in', layer: 0 },
  { input: 'ffn.in', layer: 0 }, // dense FFN (w1, w3)
  { input: 'ffn.act', branch: /^dense$/, layer: 0 }, // dense FFN (w2)
  { input: 'ffn.in', layer: 1 }, // every routed expert's and the shared expert's w1, w3
  { input: 'ffn.act', branch: /^expert \d+$/, layer: 1 },
  { input: 'ffn.act', branch: /^shared$/, layer: 1 },
];

describeEachBackend('e2e steering covers every FP8 quantizer site (synthetic midpoints)', () => {
  let c: GoldenCase;
  beforeAll(() => {
    c = openCase(readGolden({ name: 'public-fp8', dir: resolve('fixtures/golden/public-fp8') }));
  });
  afterAll(() => closeCase(c));

  it('wkv_b.in (MHA prefill) needs no steering: the cached latents are e4m3 values times their block scale, quantized again on the grid', () => {
    for (const plainScales of [false, true]) {
      const config: ModelConfig = plainScales ? { ...c.config, quantization_config: { ...c.config.quantization_config!, scale_fmt: null } } : c.config;
      const found: Flip[] = [];
      const plain = run(c, config, 0, [], found);
      disposeMlaCache(plain.cache);
      expect(found.filter((f) => f.input === 'attn.in').length).toBeGreaterThan(0); // the probe did look
      expect(found.filter((f) => f.input === 'wkv_b.in')).toEqual([]);
    }
  });

  for (const site of SITES) {
    const name = `${site.input}${site.branch ? ` (${site.branch.source})` : ''} in layer ${site.layer}${site.plainScales ? ', plain scales' : ''}`;
    it(`${name}: the steered block finds the flipped element, decides it with the first tensor it changes, and carries it forward`, () => {
      const before = tf.memory().numTensors;
      const config: ModelConfig = site.plainScales
        ? { ...c.config, quantization_config: { ...c.config.quantization_config!, scale_fmt: null } }
        : c.config;
      // our run, listing the elements near a midpoint at this site
      const found: Flip[] = [];
      const plain = run(c, config, site.layer, [], found);
      disposeMlaCache(plain.cache);
      const near = found.filter((f) => f.input === site.input && (!site.branch || site.branch.test(f.branch ?? ''))).sort((a, b) => Math.abs(b.y!) - Math.abs(a.y!));
      expect(near.length, 'elements of this site near an e4m3 midpoint').toBeGreaterThan(0);
      // the "official" run: the largest such element (largest e4m3 quantum) whose other rounding shows in a recorded tensor
      let chosen: { flip: Flip; official: ReturnType<typeof run>; decidedBy: (typeof ORDER)[number] } | null = null;
      for (const flip of near.slice(0, 16)) {
        const official = run(c, config, site.layer, [flip]);
        const decidedBy = firstDiffering(plain.prefill, official.prefill);
        if (decidedBy && decidedBy !== 'indexer.topk' && decidedBy !== 'ffn.in') {
          chosen = { flip, official, decidedBy };
          break;
        }
        disposeMlaCache(official.cache);
      }
      expect(chosen, 'a flip at this site that changes a recorded tensor').not.toBeNull();
      const { flip, official, decidedBy } = chosen!;
      disposeMlaCache(official.cache);
      const record = Object.fromEntries(ORDER.map((t) => [t, t === 'indexer.topk' ? { data: official.prefill[t]!, k: official.prefill[t]!.length / T } : official.prefill[t]!])) as LayerRecord;

      // the steered prefill, then a plain decode step on the cache it left
      const cache = createMlaCache();
      const h = embedTokens(c.tokens.slice(0, T), c.weights.global.embed);
      const b = steeredBlock(h, null, c.weights.layers[site.layer]!, cache, 0, { config, maxSeqLen: c.maxSeqLen, layer: site.layer }, record, RTOL);
      tf.dispose([h, b.out, b.residual]);
      expect(b.steers.map((s) => [s.decidedBy, s.flips.map(flipKey)]), JSON.stringify(b.steers)).toEqual([[decidedBy, [flipKey(flip)]]]);
      expect(b.steers[0]!.note).toMatch(new RegExp(`^steered at an FP8 midpoint: ${site.input.replace('.', '\\.')}.* token ${flip.token} element ${flip.element}, `));
      for (const t of ['attn.qr', 'indexer.score', 'attn.out', 'ffn.in', 'ffn.out'] as const) {
        const actual = { 'attn.qr': b.snap.qr, 'indexer.score': b.snap.indexScores, 'attn.out': b.snap.attnOut, 'ffn.in': b.snap.ffnIn, 'ffn.out': b.snap.ffnOut }[t];
        expect(compareArrays(actual, official.prefill[t]!, RTOL).pass, t).toBe(true);
      }
      // carried forward: the decode step on the steered cache reproduces the official decode step
      const h1 = embedTokens(c.tokens.slice(T, T + 1), c.weights.global.embed);
      let decodeOut: Float32Array | null = null;
      const d = blockForward(h1, null, c.weights.layers[site.layer]!, cache, T, {
        config, maxSeqLen: c.maxSeqLen, layer: site.layer,
        probe: { layer: (_l, t) => void (decodeOut = Float32Array.from(t.attnOut.dataSync())) },
      });
      tf.dispose([h1, d.out, d.residual]);
      disposeMlaCache(cache);
      expect(compareArrays(decodeOut!, official.decode['attn.out']!, RTOL).pass).toBe(true);
      expect(tf.memory().numTensors).toBe(before);
    });
  }
});

// The acceptance of a steer (src/conformance/fp8/steer.ts): the deciding tensor must match at the golden
// tolerance, and every recorded tensor before it must pass AS ITS OWN ROW JUDGES IT. For the index
// scores that row counts an element whose query row has an indexer q input near an e4m3 midpoint
// (within 1e-2), which a flip search cannot always reproduce (on the GPU backends other summation orders
// put other q/k inputs on their midpoints). Built here: the "official" run rounds an attn.qr element the
// other way (it changes the scores and the attention output), and its recorded scores also differ by
// 2e-3 · max|b| at one element no flip reproduces. Where that element lies in a flagged query row, the
// attention output must still steer; where it lies in a row with no midpoint, nothing may be kept.
describeEachBackend('steering: an index-score miss its row counts at a midpoint does not block the attention steer', () => {
  let c: GoldenCase;
  let config: ModelConfig;
  let flip: Flip;
  let official: Snap;
  let flagged: { yes: number; no: number };
  let key: number;
  beforeAll(() => {
    c = openCase(readGolden({ name: 'public-fp8', dir: resolve('fixtures/golden/public-fp8') }));
    config = { ...c.config, quantization_config: { ...c.config.quantization_config!, scale_fmt: null } };
    const found: Flip[] = [];
    const plain = run(c, config, 0, [], found);
    disposeMlaCache(plain.cache);
    // query rows flagged by the score row's rule (an indexer q input within the end-to-end window)
    const qRows = new Set(found.filter((f) => f.input === 'indexer.q').map((f) => f.token));
    const qr = found.filter((f) => f.input === 'attn.qr').sort((a, b) => Math.abs(b.y!) - Math.abs(a.y!));
    for (const f of qr.slice(0, 16)) {
      const o = run(c, config, 0, [f]);
      disposeMlaCache(o.cache);
      if (!compareArrays(plain.prefill['attn.out']!, o.prefill['attn.out']!, RTOL).pass) {
        flip = f;
        official = o.prefill;
        break;
      }
    }
    // the key column of the built miss: the first position whose indexer key has no input near a midpoint
    const kRows = new Set(found.filter((f) => f.input === 'indexer.k').map((f) => f.token));
    key = [...Array(T).keys()].find((t) => !kRows.has(t)) ?? T;
    const rows = [...Array(T).keys()].filter((t) => t !== flip?.token && t >= key);
    flagged = { yes: rows.find((t) => qRows.has(t)) ?? -1, no: rows.find((t) => !qRows.has(t)) ?? -1 };
  });
  afterAll(() => closeCase(c));

  const steerWithScoreMissAt = (row: number) => {
    const scores = Float32Array.from(official['indexer.score']!);
    const S = scores.length / T;
    let maxRef = 0;
    for (const v of scores) maxRef = Math.max(maxRef, Math.abs(v));
    scores[row * S + key] = scores[row * S + key]! + 2e-3 * Math.max(1, maxRef); // a key the query sees (key ≤ row)
    const before = tf.memory().numTensors;
    const b = steerPrefill(c, 0, { ...recordOf(official), 'indexer.score': scores }, config);
    const attnOut = compareArrays(b.snap.attnOut, official['attn.out']!, RTOL).pass;
    expect(tf.memory().numTensors).toBe(before);
    return { steers: b.steers.map((s) => [s.decidedBy, s.flips.map(flipKey)]), attnOut };
  };

  it('the setup: an attn.qr flip that changes attn.out, a key with no midpoint, a flagged query row and an unflagged one', () => {
    expect(flip).toBeDefined();
    expect(flagged.yes).toBeGreaterThanOrEqual(0);
    expect(flagged.no).toBeGreaterThanOrEqual(0);
  });

  it('miss in a query row with an indexer q input at a midpoint: attn.out steers with the attn.qr flip', () => {
    const r = steerWithScoreMissAt(flagged.yes);
    expect(r.steers).toEqual([['attn.out', [flipKey(flip)]]]);
    expect(r.attnOut).toBe(true);
  });

  it('miss in a row with no midpoint: no steer is kept and attn.out stays a miss', () => {
    const r = steerWithScoreMissAt(flagged.no);
    expect(r.steers).toEqual([]);
    expect(r.attnOut).toBe(false);
  });
});

// A flip at an attention input can move the attention output by LESS than the golden tolerance and still
// move the FFN's quantizer inputs across their midpoints (measured on WebGL at public2-fp8 step 0 layer 0:
// `wo.in` token 28 element 185 moved attn.out by 1.5e-5 relative and ffn.out by 4.0e-3; docs/deviations.md).
// So the steering searches at SEARCH_RTOL_FACTOR · 1e-4 (src/conformance/fp8/steer.ts), and `ffn.out`
// may also flip the attention's inputs when its own sites explain nothing. Built here on public2-fp8
// layer 0 from the 24 `wo.in` elements closest to a midpoint: the "official" run rounds one of them the
// other way, (a) one that moves attn.out by 1e-5…1e-4 relative and ffn.out beyond 1e-4: attn.out decides
// it; (b) one that moves attn.out by ≤ 1e-5 and ffn.out by more: ffn.out decides it.
describeEachBackend('steering: flips that attn.out tolerates', () => {
  let c: GoldenCase;
  let plain: Snap;
  let near: Flip[];
  const rel = (a: Float32Array, b: Float32Array) => compareArrays(a, b, RTOL).maxRel;
  beforeAll(() => {
    c = openCase(readGolden({ name: 'public2-fp8', dir: resolve('fixtures/golden/public2-fp8') }));
    const found: Flip[] = [];
    const r = run(c, c.config, 0, [], found);
    disposeMlaCache(r.cache);
    plain = r.prefill;
    near = found.filter((f) => f.input === 'wo.in').sort((a, b) => a.dist - b.dist).slice(0, 24);
  });
  afterAll(() => closeCase(c));

  const steerTo = (want: (attnRel: number, ffnRel: number) => boolean, decidedBy: 'attn.out' | 'ffn.out') => {
    let chosen: { flip: Flip; official: ReturnType<typeof run> } | null = null;
    for (const flip of near) {
      const official = run(c, c.config, 0, [flip]);
      if (want(rel(official.prefill['attn.out']!, plain['attn.out']!), rel(official.prefill['ffn.out']!, plain['ffn.out']!))) {
        chosen = { flip, official };
        break;
      }
      disposeMlaCache(official.cache);
    }
    expect(chosen, 'a wo.in flip of this kind among the 24 closest').not.toBeNull();
    const { flip, official } = chosen!;
    disposeMlaCache(official.cache);
    const o = official.prefill;
    const before = tf.memory().numTensors;
    const b = steerPrefill(c, 0, recordOf(o));
    if (decidedBy === 'attn.out') {
      expect(b.steers.map((s) => [s.decidedBy, s.flips.map(flipKey)])).toEqual([[decidedBy, [flipKey(flip)]]]);
      expect(b.steers[0]!.note).toMatch(new RegExp(`^steered at an FP8 midpoint: wo\\.in \\(quantized before wo\\) token ${flip.token} element ${flip.element}, .* reproduces the recorded attn\\.out`));
    } else {
      // the wo.in flip acts on the FFN by moving an FFN input of the same token across its midpoint, and
      // ffn.out tries its own sites first: that FFN input is an equivalent explanation (same recorded tensors)
      expect(b.steers.map((s) => [s.decidedBy, s.flips.length, s.flips[0]!.token])).toEqual([['ffn.out', 1, flip.token]]);
      expect([flipKey(flip), 'ffn.in', 'ffn.act']).toContain(b.steers[0]!.flips[0]!.input === 'wo.in' ? flipKey(b.steers[0]!.flips[0]!) : b.steers[0]!.flips[0]!.input);
    }
    expect(rel(b.snap.attnOut, o['attn.out']!)).toBeLessThanOrEqual(RTOL * SEARCH_RTOL_FACTOR);
    expect(rel(b.snap.ffnOut, o['ffn.out']!)).toBeLessThanOrEqual(RTOL * SEARCH_RTOL_FACTOR);
    expect(tf.memory().numTensors).toBe(before);
  };
  const bound = RTOL * SEARCH_RTOL_FACTOR;

  it('(a) attn.out within the golden tolerance, above the search bound, ffn.out beyond: attn.out decides it', () => {
    steerTo((a, f) => a > bound && a <= RTOL && f > RTOL, 'attn.out');
  });

  it('(b) attn.out within the search bound, ffn.out above it: ffn.out decides it (its own FFN input first, else the attention site)', () => {
    steerTo((a, f) => a <= bound && f > bound, 'ffn.out');
  });
});

// Three FFN inputs of three tokens, each rounded the other way in the "official" run (as at public2-fp8
// step 0 layer 3 on the GPU backends: tokens 11, 17 and 24). One subset of ≤ 3 of the 24 candidates in
// ≤ 96 tries cannot reach such a triple, but a token's FFN reads only that token's quantizer inputs, so
// ffn.out is searched token by token first: three steers, one per token, and the whole tensor matches.
describeEachBackend('steering: ffn.out flips at several tokens are found token by token', () => {
  let c: GoldenCase;
  beforeAll(() => {
    c = openCase(readGolden({ name: 'public-fp8', dir: resolve('fixtures/golden/public-fp8') }));
  });
  afterAll(() => closeCase(c));

  it('three tokens, one ffn.in flip each: three ffn.out steers, every recorded tensor reproduced', () => {
    const found: Flip[] = [];
    const plain = run(c, c.config, 0, [], found);
    disposeMlaCache(plain.cache);
    // per token, the closest ffn.in element whose flip moves ffn.out beyond the search bound
    const picked: Flip[] = [];
    for (const f of found.filter((x) => x.input === 'ffn.in').sort((a, b) => a.dist - b.dist)) {
      if (picked.length === 3) break;
      if (picked.some((p) => p.token === f.token)) continue;
      const o = run(c, c.config, 0, [f]);
      disposeMlaCache(o.cache);
      if (!compareArrays(o.prefill['ffn.out']!, plain.prefill['ffn.out']!, RTOL * SEARCH_RTOL_FACTOR).pass) picked.push(f);
    }
    expect(picked.length, 'three tokens with an ffn.in element near a midpoint that shows in ffn.out').toBe(3);
    const official = run(c, c.config, 0, picked);
    disposeMlaCache(official.cache);
    const o = official.prefill;
    const before = tf.memory().numTensors;
    const b = steerPrefill(c, 0, recordOf(o));
    expect(b.steers.every((s) => s.decidedBy === 'ffn.out' && s.flips.length === 1)).toBe(true);
    expect(b.steers.map((s) => s.flips[0]!.token).sort((x, y) => x - y)).toEqual(picked.map((p) => p.token).sort((x, y) => x - y));
    expect(compareArrays(b.snap.ffnOut, o['ffn.out']!, RTOL * SEARCH_RTOL_FACTOR).pass).toBe(true);
    expect(tf.memory().numTensors).toBe(before);
  });
});
