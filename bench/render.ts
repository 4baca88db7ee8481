/**
 * Renders docs/performance.md and its plot from saved `dsv32 bench --json` reports (measures nothing):
 *
 *   npm run bench:doc -- RUN.json [MORE.json ...] [LAYOUTS.json ...] [--doc docs/performance.md]
 *
 * The first report gives the tables and the plot; every further report (e.g. a second consecutive full
 * run) adds its own target summary, so each number in the doc names the run it came from. A saved run of
 * bench/sparse-layouts.ts (recognised by its `shipped_phases`) adds the section on sparse arrangements.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { BenchReport } from '../src/bench/report.ts';
import { performanceDoc, timePlot, type LayoutsReport } from './doc.ts';

function main(argv: string[]): number {
  let doc = 'docs/performance.md';
  const files: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--doc') doc = argv[++i] ?? doc;
    else files.push(argv[i]!);
  }
  if (files.length === 0) {
    process.stderr.write('usage: npm run bench:doc -- RUN.json [MORE.json ...] [--doc docs/performance.md]\n');
    return 2;
  }
  const reports: BenchReport[] = [];
  const benchFiles: string[] = [];
  const layouts: LayoutsReport[] = [];
  const layoutFiles: string[] = [];
  for (const f of files) {
    try {
      const r = JSON.parse(fs.readFileSync(f, 'utf8')) as BenchReport & Partial<LayoutsReport>;
      if (Array.isArray(r.shipped_phases) && Array.isArray(r.rows)) {
        layouts.push(r as unknown as LayoutsReport);
        layoutFiles.push(f);
        continue;
      }
      if (!Array.isArray(r.results) || !r.grid) throw new Error('not a dsv32 bench report (no results / grid) nor a bench/sparse-layouts.ts run');
      reports.push(r);
      benchFiles.push(f);
    } catch (e) {
      process.stderr.write(`bench:doc: ${f}: ${(e as Error).message}\n`);
      return 2;
    }
  }
  if (reports.length === 0) {
    process.stderr.write('bench:doc: give at least one dsv32 bench report\n');
    return 2;
  }
  const svgPath = doc.replace(/\.md$/, '') + '-time-vs-L.svg';
  fs.mkdirSync(path.dirname(path.resolve(doc)), { recursive: true });
  fs.writeFileSync(svgPath, timePlot(reports[0]!));
  fs.writeFileSync(doc, performanceDoc(reports[0]!, path.basename(svgPath), reports.slice(1), benchFiles, layouts, layoutFiles));
  process.stdout.write(`wrote ${doc} and ${svgPath}\n`);
  return 0;
}

process.exitCode = main(process.argv.slice(2));
