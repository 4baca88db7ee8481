/**
 * Draws which past tokens each query attends under DeepSeek Sparse Attention: the lightning-indexer
 * selection S_t (paper Eq. 1–2) of the golden model, one panel per layer, query t down and key s
 * across, selected cells filled. Writes `docs/img/selection-pattern.svg` (hand-written SVG, no
 * dependency).
 *
 * The selection is RECOMPUTED with dsv32 (`indexerScores` of src/indexer.ts, then `selectTopK` of
 * src/topk.ts) from the golden folder's weights and its recorded indexer inputs (`attn.in`, `attn.qr`
 * of every step, teacher forcing as in src/conformance/checks/indexer.ts), and compared with the
 * selection the official code recorded (`stepS.expected.layerL.indexer.topk`). The picture shows ours;
 * a cell where the two differ would be outlined in red, and the caption states the agreement.
 *
 * Run: `npx tsx scripts/selection-pattern.ts [GOLDEN_DIR] [OUT.svg]`
 * (defaults: fixtures/golden/public-fp32, docs/img/selection-pattern.svg). Exits 1 when a position
 * differs from the official selection. As a module it exports {@link selectionPattern} (the same
 * picture, in memory), which test/selection-pattern.test.ts checks against the committed file.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend, tf } from '../src/backend.ts';
import type { SafetensorsFile } from '../src/safetensors.ts';
import { loadConfig, openCheckpoint, openSafetensors } from '../src/node.ts';
import { disposeLayerWeights, loadLayerWeights } from '../src/checkpoint.ts';
import { createIndexerCache, disposeIndexerCache, indexerScores } from '../src/indexer.ts';
import { selectTopK } from '../src/topk.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The selection of one layer over all positions of the trace: `rows[t]` = S_t (ascending). */
export interface LayerSelection {
  layer: number;
  /** ours, recomputed: S_t per absolute query position t. */
  ours: number[][];
  /** recorded by the official code, same layout. */
  official: number[][];
}

/** What the picture is about (for the caption). */
export interface PatternInfo {
  name: string;
  topk: number;
  /** query rows of the prefill (step 0); the later rows are decode steps. */
  prefill: number;
}

// --- Recomputing the selection (teacher forcing on the recorded inputs) ---

interface Step {
  step: number;
  start_pos: number;
  length: number;
}

function readRows(trace: SafetensorsFile, name: string): number[][] {
  const info = trace.info(name);
  const width = info.shape[info.shape.length - 1]!;
  const data = Array.from(trace.read(name) as ArrayLike<number | bigint>, Number);
  const rows: number[][] = [];
  for (let i = 0; i < data.length; i += width) rows.push(data.slice(i, i + width).filter((s) => s >= 0));
  return rows;
}

function readInput(trace: SafetensorsFile, name: string, n: number, dim: number): tf.Tensor2D {
  return tf.tensor2d(trace.read(name) as Float32Array, [n, dim]);
}

/**
 * Runs the indexer of every layer over the steps of a golden folder and returns ours and the
 * official selections per layer.
 *
 * @param dir a golden folder (manifest.json, config.json, model.safetensors, trace.safetensors).
 */
export function recomputeSelections(dir: string): { info: PatternInfo; layers: LayerSelection[] } {
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { name?: string; steps: Step[]; max_seq_len?: number };
  const config = loadConfig(join(dir, 'config.json'));
  const maxSeqLen = manifest.max_seq_len ?? config.max_position_embeddings;
  const ckpt = openCheckpoint(dir);
  const trace = openSafetensors(join(dir, 'trace.safetensors'));
  const layers: LayerSelection[] = [];
  try {
    for (let L = 0; L < config.num_hidden_layers; L++) {
      const weights = loadLayerWeights(ckpt, config, L);
      const cache = createIndexerCache();
      const sel: LayerSelection = { layer: L, ours: [], official: [] };
      try {
        for (const st of manifest.steps) {
          const p = `step${st.step}.expected.layer${L}`;
          tf.tidy(() => {
            const x = readInput(trace, `${p}.attn.in`, st.length, config.hidden_size); // [T, D]
            const qr = readInput(trace, `${p}.attn.qr`, st.length, config.q_lora_rank); // [T, Dq]
            const scores = indexerScores(x, qr, weights.attn.indexer, cache, st.start_pos, { config, maxSeqLen }); // [T, S]
            const idx = selectTopK(scores, st.start_pos, config.index_topk).arraySync() as number[][]; // [T, min(k, S)]
            sel.ours.push(...idx.map((row) => row.filter((s) => s >= 0)));
          });
          sel.official.push(...readRows(trace, `${p}.indexer.topk`));
        }
      } finally {
        disposeIndexerCache(cache);
        disposeLayerWeights(weights);
      }
      layers.push(sel);
    }
  } finally {
    trace.close();
    ckpt.close();
  }
  const first = manifest.steps[0];
  return { info: { name: manifest.name ?? dir, topk: config.index_topk, prefill: first ? first.length : 0 }, layers };
}

/** Positions in one set and not the other, over all rows of a layer. */
export function differences(sel: LayerSelection): { t: number; s: number; kind: 'ours-only' | 'official-only' }[] {
  const out: { t: number; s: number; kind: 'ours-only' | 'official-only' }[] = [];
  sel.ours.forEach((row, t) => {
    const off = new Set(sel.official[t] ?? []);
    const mine = new Set(row);
    for (const s of row) if (!off.has(s)) out.push({ t, s, kind: 'ours-only' });
    for (const s of off) if (!mine.has(s)) out.push({ t, s, kind: 'official-only' });
  });
  return out;
}

// --- Drawing ---

const CELL = 6;
const GAP = 36;
const MARGIN = { left: 34, top: 58, right: 12, bottom: 64 };
const COLORS = { selected: '#1f4e9c', causal: '#e4e8ef', future: '#ffffff', diff: '#d62728', grid: '#b9c0cc', text: '#1b1b1b', decode: '#f28e2b' };

/** Maximal runs of consecutive positions, as [first, last] pairs (one rect per run keeps the file small). */
function runs(positions: readonly number[]): [number, number][] {
  const out: [number, number][] = [];
  for (const s of [...positions].sort((a, b) => a - b)) {
    const last = out[out.length - 1];
    if (last && s === last[1] + 1) last[1] = s;
    else out.push([s, s]);
  }
  return out;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * The SVG picture: one panel per layer, rows = query positions t, columns = key positions s;
 * filled = s ∈ S_t (ours), light = s ≤ t not selected, white = future; red outline = differs
 * from the official selection; an orange mark separates the prefill rows from the decode steps.
 */
export function renderSelectionSvg(info: PatternInfo, layers: LayerSelection[]): string {
  const n = Math.max(0, ...layers.map((l) => l.ours.length));
  const panel = n * CELL;
  const width = MARGIN.left + layers.length * panel + (layers.length - 1) * GAP + MARGIN.right;
  const height = MARGIN.top + panel + MARGIN.bottom;
  const diffs = layers.map(differences);
  const rowsSame = layers.reduce((a, l, i) => a + l.ours.filter((_, t) => !diffs[i]!.some((d) => d.t === t)).length, 0);
  const rowsAll = layers.reduce((a, l) => a + l.ours.length, 0);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="11" fill="${COLORS.text}">`);
  out.push(`<title>${esc(`Lightning-indexer selection S_t on the golden model ${info.name}`)}</title>`);
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(`<text x="${MARGIN.left}" y="18" font-size="13" font-weight="bold">${esc(`DSA selection S_t (k = ${info.topk}) on the golden model "${info.name}": which keys s each query t attends`)}</text>`);
  out.push(`<text x="${MARGIN.left}" y="34">${esc(`recomputed with indexerScores + selectTopK; equal to the official trace in ${rowsSame} of ${rowsAll} rows`)}</text>`);
  layers.forEach((sel, i) => {
    const x0 = MARGIN.left + i * (panel + GAP);
    const y0 = MARGIN.top;
    out.push(`<g transform="translate(${x0},${y0})">`);
    out.push(`<text x="${panel / 2}" y="-8" text-anchor="middle" font-weight="bold">layer ${sel.layer}</text>`);
    const cells: string[] = [];
    for (let t = 0; t < n; t++) {
      cells.push(`<rect x="0" y="${t * CELL}" width="${(t + 1) * CELL}" height="${CELL}" fill="${COLORS.causal}"/>`);
      for (const [a, b] of runs(sel.ours[t] ?? [])) {
        cells.push(`<rect x="${a * CELL}" y="${t * CELL}" width="${(b - a + 1) * CELL}" height="${CELL}" fill="${COLORS.selected}"/>`);
      }
    }
    out.push(...cells);
    for (const d of diffs[i]!) {
      out.push(`<rect x="${d.s * CELL + 0.5}" y="${d.t * CELL + 0.5}" width="${CELL - 1}" height="${CELL - 1}" fill="none" stroke="${COLORS.diff}" stroke-width="1"/>`);
    }
    out.push(`<rect x="0" y="0" width="${panel}" height="${panel}" fill="none" stroke="${COLORS.grid}"/>`);
    if (info.prefill > 0 && info.prefill < n) {
      const y = info.prefill * CELL;
      out.push(`<line x1="-4" y1="${y}" x2="${panel + 4}" y2="${y}" stroke="${COLORS.decode}" stroke-width="1.2"/>`);
    }
    for (let v = 0; v < n; v += 10) {
      out.push(`<text x="${v * CELL + CELL / 2}" y="${panel + 12}" text-anchor="middle" font-size="9">${v}</text>`);
      out.push(`<text x="-4" y="${v * CELL + CELL}" text-anchor="end" font-size="9">${v}</text>`);
    }
    out.push(`<text x="${panel / 2}" y="${panel + 26}" text-anchor="middle">key position s</text>`);
    if (i === 0) out.push(`<text transform="translate(-24,${panel / 2}) rotate(-90)" text-anchor="middle">query position t</text>`);
    out.push('</g>');
  });
  const ly = MARGIN.top + panel + 42;
  const legend: [string, string, string][] = [
    [COLORS.selected, 'none', 's ∈ S_t (selected)'],
    [COLORS.causal, 'none', 's ≤ t, not selected'],
    ['#ffffff', COLORS.diff, 'differs from the official selection'],
  ];
  let lx = MARGIN.left;
  for (const [fill, stroke, label] of legend) {
    out.push(`<rect x="${lx}" y="${ly - 9}" width="10" height="10" fill="${fill}" stroke="${stroke === 'none' ? COLORS.grid : stroke}"/>`);
    out.push(`<text x="${lx + 14}" y="${ly}">${esc(label)}</text>`);
    lx += 16 + label.length * 6;
  }
  out.push(`<line x1="${lx}" y1="${ly - 4}" x2="${lx + 14}" y2="${ly - 4}" stroke="${COLORS.decode}" stroke-width="1.5"/>`);
  out.push(`<text x="${lx + 18}" y="${ly}">${esc(`prefill rows (t < ${info.prefill}) above, one decode step per row below`)}</text>`);
  out.push(`<text x="${MARGIN.left}" y="${ly + 16}" font-size="10">${esc(`rows t < k select every s ≤ t (dense); later rows exactly k. Generated by scripts/selection-pattern.ts.`)}</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

// --- The picture of a golden folder ---

/** The bundled golden folder the committed picture is drawn from. */
export const DEFAULT_GOLDEN_DIR = join(ROOT, 'fixtures', 'golden', 'public-fp32');
/** Where the committed picture lives. */
export const DEFAULT_SVG_PATH = join(ROOT, 'docs', 'img', 'selection-pattern.svg');

/**
 * Recomputes the selections of a golden folder and draws them: the SVG text (what the command
 * writes), the selections, and the number of positions that differ from the official selection
 * (0 when dsv32 selects exactly what the official code selected). Runs on the current backend
 * (call `initBackend` first); writes nothing. test/selection-pattern.test.ts compares the result
 * with the committed docs/img/selection-pattern.svg.
 *
 * @param dir a golden folder; default fixtures/golden/public-fp32.
 */
export function selectionPattern(dir: string = DEFAULT_GOLDEN_DIR): {
  svg: string;
  info: PatternInfo;
  layers: LayerSelection[];
  differing: number;
} {
  const { info, layers } = recomputeSelections(dir);
  const differing = layers.reduce((a, sel) => a + differences(sel).length, 0);
  return { svg: renderSelectionSvg(info, layers), info, layers, differing };
}

// --- Command line ---

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dir = resolve(process.argv[2] ?? DEFAULT_GOLDEN_DIR);
  const outPath = resolve(process.argv[3] ?? DEFAULT_SVG_PATH);
  await initBackend(process.env.DSV32_BACKEND === 'cpu' ? 'cpu' : undefined);
  const { svg, layers, differing } = selectionPattern(dir);
  mkdirSync(dirname(outPath), { recursive: true });
  writeFileSync(outPath, svg);
  for (const sel of layers) {
    const d = differences(sel);
    process.stdout.write(`layer ${sel.layer}: ${sel.ours.length} query rows, ${d.length} position(s) differ from the official selection\n`);
  }
  process.stdout.write(`wrote ${relative(process.cwd(), outPath)}\n`);
  if (differing > 0) process.exitCode = 1;
}
