/**
 * The picture of the tour (docs/img/selection-pattern.svg) is what scripts/selection-pattern.ts
 * draws from the golden model today, and the selection it shows is the official one.
 *
 * Runs on wasm only: the selections are integer sets that both backends reproduce exactly (the
 * script is also checked on cpu by hand: `DSV32_BACKEND=cpu npx tsx scripts/selection-pattern.ts`),
 * and one regeneration takes about a second.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { initBackend } from '../src/backend.ts';
import { openSafetensors } from '../src/node.ts';
import {
  DEFAULT_GOLDEN_DIR,
  DEFAULT_SVG_PATH,
  differences,
  renderSelectionSvg,
  selectionPattern,
  type LayerSelection,
} from '../scripts/selection-pattern.ts';

describe('selection pattern picture (wasm only)', () => {
  let result: ReturnType<typeof selectionPattern>;

  beforeAll(async () => {
    await initBackend('wasm');
    result = selectionPattern(DEFAULT_GOLDEN_DIR);
  });

  it('regenerating it in memory gives the committed docs/img/selection-pattern.svg byte for byte', () => {
    expect(result.svg).toBe(readFileSync(DEFAULT_SVG_PATH, 'utf8'));
  });

  it('our selections agree with the recorded official ones: 0 differing positions', () => {
    expect(result.differing).toBe(0);
    expect(result.layers.map(differences)).toEqual(result.layers.map(() => []));
  });

  it('the official rows compared are the trace itself, every layer and step (read here, independently of the script)', () => {
    const manifest = JSON.parse(readFileSync(join(DEFAULT_GOLDEN_DIR, 'manifest.json'), 'utf8')) as { steps: { step: number; length: number }[] };
    const trace = openSafetensors(join(DEFAULT_GOLDEN_DIR, 'trace.safetensors'));
    try {
      const rows = manifest.steps.reduce((a, st) => a + st.length, 0);
      expect(result.layers.length).toBeGreaterThan(0);
      for (const sel of result.layers) {
        expect(sel.ours.length).toBe(rows);
        const official: number[][] = [];
        for (const st of manifest.steps) {
          const name = `step${st.step}.expected.layer${sel.layer}.indexer.topk`;
          const width = trace.info(name).shape.at(-1)!;
          const flat = Array.from(trace.read(name) as ArrayLike<number | bigint>, Number);
          for (let i = 0; i < flat.length; i += width) official.push(flat.slice(i, i + width).filter((s) => s >= 0));
        }
        // as sets: |S_t| = min(k, t + 1), and the same positions
        sel.ours.forEach((row, t) => {
          expect(row.length, `layer ${sel.layer} row ${t}`).toBe(Math.min(result.info.topk, t + 1));
          expect([...row].sort((a, b) => a - b), `layer ${sel.layer} row ${t}`).toEqual([...official[t]!].sort((a, b) => a - b));
        });
      }
    } finally {
      trace.close();
    }
  });

  it('a differing position is counted and outlined in red (the check can fail)', () => {
    const sel = result.layers[0]!;
    const t = sel.ours.length - 1;
    const row = sel.ours[t]!;
    const unselected = Array.from({ length: t + 1 }, (_, s) => s).find((s) => !row.includes(s))!;
    const wrong: LayerSelection = { ...sel, ours: sel.ours.map((r, i) => (i === t ? [...r.slice(1), unselected] : r)) };
    expect(differences(wrong).map((d) => d.kind).sort()).toEqual(['official-only', 'ours-only']);
    const svg = renderSelectionSvg(result.info, [wrong, ...result.layers.slice(1)]);
    expect(svg).not.toBe(result.svg);
    const outlines = /<rect [^>]*fill="none" stroke="#d62728"/g;
    expect(svg.match(outlines)).toHaveLength(2);
    expect(result.svg.match(outlines)).toBeNull();
  });
});
