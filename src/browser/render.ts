/// <reference lib="dom" />
/**
 * Draws an {@link ExplorerView} into the page: the index-score heatmap with the causal mask and the
 * selections, the selected positions of the chosen query next to the official ones, the same with the
 * interleaved-RoPE bug, the attention weights of one head, and the MoE routing per token.
 *
 * Browser-only (DOM, canvas); no dsv32 math here.
 *
 * @module
 */
import type { ExplorerView } from './compute.ts';

/** Tolerance the page uses to mark a float comparison as matching (fixtures/golden/README.md). */
export const FLOAT_RTOL = 1e-4;

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const fmt = (v: number, digits = 4) => (Math.abs(v) >= 1e-3 || v === 0 ? v.toFixed(digits) : v.toExponential(2));
const ok = (pass: boolean, yes = 'match', no = 'differs') =>
  `<span class="${pass ? 'ok' : 'bad'}">${pass ? '✓' : '✗'} ${pass ? yes : no}</span>`;
const list = (xs: number[]) => xs.filter((v) => v >= 0).join(' ');

/** Perceptual colour ramp (dark blue → yellow) for v in [0, 1]. */
function ramp(v: number): string {
  const stops = [[30, 33, 80], [33, 110, 140], [60, 170, 110], [250, 220, 60]];
  const x = Math.min(1, Math.max(0, v)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const c = stops[i]!.map((a, k) => Math.round(a + f * (stops[i + 1]![k]! - a)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/**
 * The index-score matrix I[t,s] on a canvas: causal cells coloured by score (per-view min..max), future
 * cells (s > t, masked to −∞) white; positions dsv32 did not select in a grey ramp; a red square marks a
 * cell where dsv32 and the official selection disagree, an orange corner a position the
 * interleaved-RoPE bug selects.
 */
export function drawHeatmap(canvas: HTMLCanvasElement, v: ExplorerView, row: number): void {
  const cell = Math.max(6, Math.min(24, Math.floor(560 / v.S)));
  const rowH = v.T === 1 ? 28 : cell;
  canvas.width = v.S * cell;
  canvas.height = v.T * rowH;
  const g = canvas.getContext('2d')!;
  let lo = Infinity;
  let hi = -Infinity;
  v.scores.forEach((r, i) => r.slice(0, v.startPos + i + 1).forEach((x) => ((lo = Math.min(lo, x)), (hi = Math.max(hi, x)))));
  for (let i = 0; i < v.T; i++) {
    const t = v.startPos + i;
    const ours = new Set(v.topk[i]);
    const official = new Set(v.officialTopk[i]);
    const bug = new Set(v.bugTopk[i]);
    for (let s = 0; s < v.S; s++) {
      const x = s * cell;
      const y = i * rowH;
      const level = (v.scores[i]![s]! - lo) / (hi - lo || 1);
      // masked (s > t): white; selected: colour ramp; not selected: grey ramp
      g.fillStyle = s > t ? '#fff' : ours.has(s) ? ramp(level) : `hsl(0,0%,${(88 - 40 * level).toFixed(0)}%)`;
      g.fillRect(x, y, cell - 1, rowH - 1);
      if (s > t) continue;
      if (official.has(s) !== ours.has(s)) {
        g.strokeStyle = '#e00';
        g.lineWidth = 2;
        g.strokeRect(x + 1, y + 1, cell - 3, rowH - 3);
      }
      if (bug.has(s)) {
        const m = Math.max(4, Math.floor(cell / 2));
        g.fillStyle = '#ff7a00';
        g.beginPath();
        g.moveTo(x + cell - 1 - m, y);
        g.lineTo(x + cell - 1, y);
        g.lineTo(x + cell - 1, y + m);
        g.fill();
      }
    }
  }
  g.strokeStyle = '#000';
  g.lineWidth = 2;
  g.strokeRect(1, row * rowH + 1, v.S * cell - 2, rowH - 2);
  canvas.setAttribute('aria-label', `index scores of ${v.T} queries over ${v.S} positions; query row ${v.startPos + row} outlined`);
}

/** Selected positions of query row `row`: dsv32 vs official, and with the RoPE bug. */
export function selectionHtml(v: ExplorerView, row: number): string {
  const t = v.startPos + row;
  const matches = v.topkMatch.filter(Boolean).length;
  const officialBug = v.officialBugTopk?.[row];
  const bugMatches = v.officialBugTopk ? v.bugTopk.filter((r, i) => list(r) === list(v.officialBugTopk![i]!)).length : null;
  return `
    <h2>Selected positions, query t = ${t}</h2>
    <p class="sum">all rows: ${matches}/${v.T} equal the official selection (as sets);
      index scores max rel. error ${fmt(v.scoreRelErr)} ${ok(v.scoreRelErr <= FLOAT_RTOL, `≤ ${FLOAT_RTOL}`, `> ${FLOAT_RTOL}`)}</p>
    <dl class="sel">
      <dt>dsv32 (shipped RoPE)</dt><dd data-testid="topk" data-row="${t}">${list(v.topk[row]!)}</dd>
      <dt>official</dt><dd data-testid="official-topk">${list(v.officialTopk[row]!)} ${ok(v.topkMatch[row]!)}</dd>
      <dt>dsv32, interleaved-RoPE bug</dt><dd data-testid="bug-topk">${list(v.bugTopk[row]!)}
        <span class="${v.bugDiffers[row] ? 'warn' : 'ok'}">${v.bugDiffers[row] ? `${v.bugTopk[row]!.filter((s) => s >= 0 && !v.topk[row]!.includes(s)).length} positions differ from the shipped selection` : 'same set as shipped'}</span></dd>
      <dt>official bug run</dt><dd data-testid="official-bug-topk">${officialBug
        ? `${list(officialBug)} ${ok(list(officialBug) === list(v.bugTopk[row]!))} <small>(${bugMatches}/${v.T} rows)</small>`
        : '<small>compared at layer 0, step 0 of public-fp32 only: later layers of the bug run saw inputs changed by its own selections</small>'}</dd>
    </dl>`;
}

/** Attention weights of head h over the selected keys of query row `row`, as bars. */
export function attentionHtml(v: ExplorerView, row: number): string {
  const a = v.attention[row]!;
  const max = Math.max(...a.weights, 1e-12);
  const bars = a.positions.map((s, j) => `
      <div class="bar" role="listitem"><span class="k">s=${s}</span>
        <span class="b" style="width:${((a.weights[j]! / max) * 100).toFixed(1)}%"></span>
        <span class="w">${a.weights[j]!.toFixed(4)}</span></div>`).join('');
  return `
    <h2>Attention of head ${v.head}, query t = ${v.startPos + row}</h2>
    <p class="sum">softmax over the ${a.positions.length} selected keys only (Σ = ${a.weights.reduce((x, y) => x + y, 0).toFixed(4)}).
      Layer output vs official <code>attn.out</code>: max rel. error ${fmt(v.attnOutRelErr)}
      ${ok(v.attnOutRelErr <= FLOAT_RTOL, `≤ ${FLOAT_RTOL}`, `> ${FLOAT_RTOL}`)}${v.attnOutRelErr > FLOAT_RTOL
        ? ' <small>(an FP8 rounding midpoint of the KV latent: the conformance run follows the official rounding there; see docs/deviations.md)</small>' : ''}</p>
    <div class="bars" role="list" data-testid="attention">${bars}</div>`;
}

/** MoE routing per token: group scores (kept groups highlighted), chosen experts and combine weights. */
export function routingHtml(v: ExplorerView, firstDense: number): string {
  if (!v.routing) return `<h2>MoE routing</h2><p class="sum">layer ${v.layer} is a dense FFN layer (first_k_dense_replace = ${firstDense}): no routing. Pick a later layer.</p>`;
  const matches = v.routing.filter((r) => r.match).length;
  const body = v.routing.map((r, i) => {
    const max = Math.max(...r.groupScores, 1e-12);
    const groups = r.groupScores.map((s, g) => `<span class="g ${r.keptGroups.includes(g) ? 'kept' : 'masked'}" title="group ${g}: ${s.toFixed(4)}${r.keptGroups.includes(g) ? '' : ' (masked: −∞)'}" style="height:${Math.max(2, (s / max) * 18).toFixed(0)}px"></span>`).join('');
    const pairs = (ids: number[], ws: number[]) => ids.map((e, j) => `${e}:${ws[j]!.toFixed(3)}`).join(' ');
    return `<tr><td>${v.startPos + i}</td><td>${v.tokens[v.startPos + i]}</td><td class="groups">${groups} <small>kept ${r.keptGroups.join(',')}</small></td>
      <td data-testid="experts">${pairs(r.experts, r.weights)}</td><td>${pairs(r.officialExperts, r.officialWeights)}</td><td>${ok(r.match, '', '')}</td></tr>`;
  }).join('');
  return `<h2>MoE routing, layer ${v.layer}</h2>
    <p class="sum">${matches}/${v.routing.length} tokens choose the official experts. Group score = sum of the top-2 σ + b of the group; masked groups (grey) get −∞ before the top-k.</p>
    <table class="moe"><thead><tr><th>t</th><th>token</th><th>groups</th><th>dsv32 expert:weight</th><th>official</th><th></th></tr></thead><tbody>${body}</tbody></table>`;
}

/** The one-line description of the backend that computed the view. */
export function backendHtml(backend: string, adapter: string, ms: number): string {
  return `computed by dsv32 on <b data-testid="backend">${esc(backend)}</b> · <span data-testid="adapter">${esc(adapter)}</span> · ${ms.toFixed(0)} ms`;
}
