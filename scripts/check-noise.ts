/**
 * Measures the noise floors behind `dsv32 check`'s thresholds (src/check/thresholds.ts) and the signal of
 * each catalogue deviation, teacher-forced per module, and prints the tables of
 * docs/check-your-implementation.md.
 *
 *   npx tsx scripts/check-noise.ts [--backend wasm|cpu]
 *
 * Traces: the official bf16 runs in fixtures/traces/ (DeepSeek's code), and traces of dsv32's own forward
 * made here (bf16 mode, fp32, each catalogue switch), all judged with every threshold at +∞.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend, type BackendName } from '../src/backend.ts';
import { DEVIATION_IDS, type DeviationId } from '../src/deviations.ts';
import { writeTrace } from '../src/check/dump.ts';
import { judgeTrace, type JudgeFixture } from '../src/check/judge.ts';
import type { CheckRow } from '../src/check/report.ts';
import { openCheckFixture } from '../src/check/run.ts';
import { closeCase } from '../src/conformance/core/case.ts';
import type { Thresholds } from '../src/check/thresholds.ts';
import { LAYER_CHECKS } from '../src/check/names.ts';
import { openTrace } from '../src/check/trace.ts';
import type { Precision } from '../src/precision.ts';
import type { SafetensorsFile } from '../src/safetensors.ts';

const OPEN: Thresholds = {
  float: Object.fromEntries([...LAYER_CHECKS, 'logits'].map((c) => [c, { maxRel: Infinity, cosDiff: Infinity }])) as Thresholds['float'],
  topkGap: Infinity,
  gateGap: Infinity,
};
const CHECKS = [...LAYER_CHECKS, 'logits'];
const TRACES = 'fixtures/traces';

function judge(path: string, fixture: JudgeFixture, expected: SafetensorsFile): CheckRow[] {
  const trace = openTrace(path, expected, 'noise');
  if (trace.fatal) throw new Error(trace.problems[0]!.reason);
  return judgeTrace(fixture, trace, { caseName: 'noise', thresholds: OPEN });
}

const e = (x: number) => (x === 0 ? '0' : x.toExponential(1));

/** Worst value per check: max_rel_err and cos_diff (floats), min recall and max relative gap (selections). */
function worst(rows: CheckRow[], filter: (r: CheckRow) => boolean = () => true): Map<string, string> {
  const out = new Map<string, string>();
  for (const check of CHECKS) {
    const rs = rows.filter((r) => r.check === check && filter(r));
    if (!rs.length) continue;
    if (rs[0]!.recall !== null) {
      out.set(check, `recall ${Math.min(...rs.map((r) => r.recall!)).toFixed(3)}, gap ${e(Math.max(...rs.map((r) => r.max_rel_err!)))}`);
    } else {
      out.set(check, `${e(Math.max(...rs.map((r) => r.max_rel_err!)))} / ${e(Math.max(...rs.map((r) => r.cos_diff!)))}`);
    }
  }
  return out;
}

function table(title: string, columns: [string, Map<string, string>][]): void {
  console.log(`\n### ${title}\n`);
  console.log(`| tensor | ${columns.map((c) => c[0]).join(' | ')} |`);
  console.log(`|---|${columns.map(() => '---').join('|')}|`);
  for (const check of CHECKS) console.log(`| ${check} | ${columns.map((c) => c[1].get(check) ?? '—').join(' | ')} |`);
}

/** First row (forward order) whose error exceeds the worst official-noise value of its check by the largest factor. */
function signal(rows: CheckRow[], noise: CheckRow[]): string {
  let best = '';
  let ratio = 0;
  for (const r of rows) {
    const n = noise.filter((x) => x.check === r.check);
    if (!n.length) continue;
    const v = r.recall !== null ? r.max_rel_err! : r.cos_diff!;
    const floor = Math.max(...n.map((x) => (x.recall !== null ? x.max_rel_err! : x.cos_diff!)));
    const rel = r.recall === null ? r.max_rel_err! / Math.max(...n.map((x) => x.max_rel_err!)) : 0;
    const q = Math.max(floor > 0 ? v / floor : v > 0 ? Infinity : 0, rel);
    if (q > ratio) {
      ratio = q;
      best = `step ${r.step} layer ${r.layer} ${r.check}: ${r.recall !== null ? `gap ${e(v)}` : `max_rel ${e(r.max_rel_err!)}, cos_diff ${e(v)}`} (${ratio.toFixed(1)}× the worst noise)`;
    }
  }
  return best || 'no row above the noise';
}

async function main(): Promise<void> {
  const backend = (process.argv.includes('--backend') ? process.argv[process.argv.indexOf('--backend') + 1] : 'wasm') as BackendName;
  await initBackend(backend);
  const dir = mkdtempSync(join(tmpdir(), 'dsv32-noise-'));
  try {
    for (const name of ['public-fp8', 'public-fp32', 'public2-fp8']) {
      const fixture = openCheckFixture(`fixtures/golden/${name}`);
      const expected = fixture.trace;
      const own = (precision: Precision, deviations: DeviationId[] = []) => {
        const path = join(dir, `${name}.${precision}.${deviations.join('+') || 'spec'}.safetensors`);
        writeTrace(path, fixture, { precision, deviations: new Set(deviations) });
        return judge(path, fixture, expected);
      };
      const golden = judge(`fixtures/golden/${name}/trace.safetensors`, fixture, expected);
      const fp32 = own('fp32');
      const bf16 = own('bf16');
      const columns: [string, Map<string, string>][] = [
        ['golden fp32 trace', worst(golden)],
        ['dsv32 fp32', worst(fp32)],
        ['dsv32 bf16', worst(bf16)],
        ['dsv32 bf16, step 0', worst(bf16, (r) => r.step === 0)],
      ];
      let official: CheckRow[] = [];
      if (name === 'public-fp8') {
        official = judge(join(TRACES, 'public-fp8.bf16.official.safetensors'), fixture, expected);
        columns.push(['official bf16', worst(official)], ['official bf16, step 0', worst(official, (r) => r.step === 0)]);
      }
      table(`${name}: worst max_rel_err / cos_diff per tensor (selections: min recall, max gap / max|score|), teacher-forced`, columns);
      const noise = name === 'public-fp8' ? [...official, ...bf16] : bf16;
      console.log(`\n#### ${name}: deviation signals (largest multiple of the worst bf16 noise of the same tensor)\n`);
      if (name === 'public-fp8') {
        for (const id of ['indexer-rope-interleaved', 'softmax-no-mscale']) {
          console.log(`- official bf16 \`${id}\`: ${signal(judge(join(TRACES, `public-fp8.bf16.${id}.safetensors`), fixture, expected), noise)}`);
        }
      }
      for (const id of DEVIATION_IDS) console.log(`- dsv32 bf16 \`${id}\`: ${signal(own('bf16', [id]), noise)}`);
      closeCase(fixture);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
