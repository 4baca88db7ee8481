/** A small log-log line plot as standalone SVG (no dependencies), for time against context length. */

/** One line of the plot. */
export interface PlotSeries {
  label: string;
  color: string;
  dashed?: boolean;
  /** [x, y] points, x and y > 0. */
  points: ReadonlyArray<readonly [number, number]>;
}

const W = 760;
const Hgt = 480;
const M = { left: 70, right: 230, top: 40, bottom: 55 };

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function fmtL(x: number): string {
  return x >= 1024 ? `${x / 1024}K` : String(x);
}

function fmtMs(y: number): string {
  if (y >= 1000) return `${y / 1000} s`;
  return y >= 1 ? `${y} ms` : `${y * 1000} µs`;
}

/**
 * Renders the series on log₂ x and log₁₀ y axes (ticks at powers of two and of ten).
 *
 * @example
 * ```ts
 * plotLogLog('t vs L', 'L', 'ms', [{ label: 'a', color: '#000', points: [[1024, 1], [2048, 4]] }]).startsWith('<svg'); // true
 * ```
 */
export function plotLogLog(title: string, xLabel: string, yLabel: string, series: readonly PlotSeries[]): string {
  const all = series.flatMap((s) => s.points).filter(([x, y]) => x > 0 && y > 0);
  const xs = all.map(([x]) => x);
  const ys = all.map(([, y]) => y);
  const x0 = Math.log2(Math.min(...xs, 1024));
  const x1 = Math.log2(Math.max(...xs, 2048));
  const y0 = Math.floor(Math.log10(Math.min(...ys, 1)));
  const y1 = Math.ceil(Math.log10(Math.max(...ys, 10)));
  const pw = W - M.left - M.right;
  const ph = Hgt - M.top - M.bottom;
  const px = (x: number) => M.left + ((Math.log2(x) - x0) / (x1 - x0 || 1)) * pw;
  const py = (y: number) => M.top + ph - ((Math.log10(y) - y0) / (y1 - y0 || 1)) * ph;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${Hgt}" viewBox="0 0 ${W} ${Hgt}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${Hgt}" fill="white"/>`,
    `<text x="${M.left + pw / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`,
  ];
  for (let e = Math.ceil(x0); e <= Math.floor(x1); e++) {
    const x = px(2 ** e);
    out.push(`<line x1="${x}" y1="${M.top}" x2="${x}" y2="${M.top + ph}" stroke="#ddd"/>`);
    out.push(`<text x="${x}" y="${M.top + ph + 18}" text-anchor="middle">${fmtL(2 ** e)}</text>`);
  }
  for (let e = y0; e <= y1; e++) {
    const y = py(10 ** e);
    out.push(`<line x1="${M.left}" y1="${y}" x2="${M.left + pw}" y2="${y}" stroke="#ddd"/>`);
    out.push(`<text x="${M.left - 6}" y="${y + 4}" text-anchor="end">${fmtMs(10 ** e)}</text>`);
  }
  out.push(`<rect x="${M.left}" y="${M.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${M.left + pw / 2}" y="${Hgt - 12}" text-anchor="middle">${esc(xLabel)}</text>`);
  out.push(`<text x="16" y="${M.top + ph / 2}" text-anchor="middle" transform="rotate(-90 16 ${M.top + ph / 2})">${esc(yLabel)}</text>`);
  series.forEach((s, i) => {
    const pts = s.points.filter(([x, y]) => x > 0 && y > 0);
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    if (pts.length > 1) {
      const d = pts.map(([x, y], j) => `${j ? 'L' : 'M'}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ');
      out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${dash}/>`);
    }
    for (const [x, y] of pts) out.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3" fill="${s.color}"/>`);
    const ly = M.top + 10 + i * 20;
    const lx = M.left + pw + 14;
    out.push(`<line x1="${lx}" y1="${ly}" x2="${lx + 26}" y2="${ly}" stroke="${s.color}" stroke-width="2"${dash}/>`);
    out.push(`<text x="${lx + 32}" y="${ly + 4}">${esc(s.label)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
