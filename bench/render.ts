/**
 * Renders docs/performance.md and its plot from saved `dsv32 bench --json` reports (measures nothing):
 *
 *   npm run bench:doc -- RUN.json [MORE.json ...] [--doc docs/performance.md]
 *
 * The first report gives the tables and the plot; every further report (e.g. a second consecutive full
 * run) adds its own target summary, so each number in the doc names the run it came from.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { BenchReport } from '../src/bench/report.ts';
import { performanceDoc, timePlot } from './doc.ts';

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
  for (const f of files) {
    try {
      const r = JSON.parse(fs.readFileSync(f, 'utf8')) as BenchReport;
      if (!Array.isArray(r.results) || !r.grid) throw new Error('not a dsv32 bench report (no results / grid)');
      reports.push(r);
    } catch (e) {
      process.stderr.write(`bench:doc: ${f}: ${(e as Error).message}\n`);
      return 2;
    }
  }
  const svgPath = doc.replace(/\.md$/, '') + '-time-vs-L.svg';
  fs.mkdirSync(path.dirname(path.resolve(doc)), { recursive: true });
  fs.writeFileSync(svgPath, timePlot(reports[0]!));
  fs.writeFileSync(doc, performanceDoc(reports[0]!, path.basename(svgPath), reports.slice(1), files));
  process.stdout.write(`wrote ${doc} and ${svgPath}\n`);
  return 0;
}

process.exitCode = main(process.argv.slice(2));
