/**
 * The golden check families, in the order they report, and the entry points per family. A family is
 * `{ name, appliesTo(case), run(case) }` over a case opened once (../core/case.ts):
 *
 * | family | file | rows |
 * |---|---|---|
 * | indexer | indexer.ts | `indexer.score`, `indexer.topk` (teacher-forced); `rope_bug.*` for the RoPE-bug case |
 * | attention | attention.ts | `attn.qr`, `attn.out` (teacher-forced), `trace`, `attn.in` |
 * | model | model.ts | `block.*`, `gate.*`, `ffn.out`, `logits` (teacher-forced) |
 * | e2e | e2e.ts | `e2e.*` (end to end, steered at verified FP8 midpoints) |
 * | rope_bug | rope_bug.ts | `e2e.rope_bug.interleaved_reproduces_bug` |
 */
import type { MlaOptions } from '../../mla.ts';
import { withCase, type GoldenCase } from '../core/case.ts';
import type { GoldenFixture } from '../core/fixture.ts';
import { failure, type CheckResult } from '../core/rows.ts';
import { attentionCheck } from './attention.ts';
import { e2eCheck } from './e2e.ts';
import { checkIndexer, indexerCheck } from './indexer.ts';
import { modelCheck } from './model.ts';
import { ropeBugCheck } from './rope_bug.ts';

/** One check family. */
export interface GoldenCheck {
  name: string;
  appliesTo(c: GoldenCase): boolean;
  run(c: GoldenCase): CheckResult[];
}

/** Every golden check family, in report order. */
export const GOLDEN_CHECKS: readonly GoldenCheck[] = [indexerCheck, attentionCheck(), modelCheck, e2eCheck, ropeBugCheck];

/**
 * Runs `checks` on an opened case; a family that throws is one failed row (`check threw`), the others run.
 *
 * @example
 * ```ts
 * // run.ts `runGoldenCase`: withCase(readGolden(c), (golden) => runGoldenChecks(golden))
 * ```
 */
export function runGoldenChecks(c: GoldenCase, checks: readonly GoldenCheck[] = GOLDEN_CHECKS): CheckResult[] {
  const rows: CheckResult[] = [];
  for (const check of checks) {
    if (!check.appliesTo(c)) continue;
    try {
      rows.push(...check.run(c));
    } catch (e) {
      rows.push(failure(c.name, check.name, `check threw: ${(e as Error).message}`));
    }
  }
  return rows;
}

/**
 * The attention side of one golden folder: the indexer rows, then `attn.qr` / `attn.out` per step and
 * layer (`opts.attention`: the `mlaForward` attention checked, default 'sparse'). Never throws.
 *
 * @example
 * ```ts
 * import { readFileSync } from 'node:fs';
 * const dir = 'fixtures/golden/public-fp32-indexer-rope-bug';
 * const manifest = JSON.parse(readFileSync(`${dir}/manifest.json`, 'utf8'));
 * const rows = await checkGoldenAttention({ name: 'rope-bug', dir, weightsDir: 'fixtures/golden/public-fp32', manifest });
 * rows.some((r) => r.check.startsWith('attn.')); // => false
 * ```
 */
export async function checkGoldenAttention(fx: GoldenFixture | GoldenCase, opts: Pick<MlaOptions, 'attention'> = {}): Promise<CheckResult[]> {
  return withCase(fx, (c) => runGoldenChecks(c, [indexerCheck, attentionCheck(opts.attention)]));
}

/**
 * The indexer rows of one golden folder (checks/indexer.ts). Never throws.
 *
 * @example
 * ```ts
 * import { readFileSync } from 'node:fs';
 * const dir = 'fixtures/golden/public-fp32';
 * const fx = { name: 'public-fp32', dir, weightsDir: dir, manifest: JSON.parse(readFileSync(`${dir}/manifest.json`, 'utf8')) };
 * (await checkGoldenIndexer(fx)).every((r) => r.pass); // => true
 * ```
 */
export async function checkGoldenIndexer(fx: GoldenFixture | GoldenCase): Promise<CheckResult[]> {
  return withCase(fx, checkIndexer);
}

/**
 * The model side of one golden folder: teacher-forced rows, then the end-to-end rows (or the RoPE-bug
 * case's). Never throws.
 *
 * @example
 * ```ts
 * import { readFileSync } from 'node:fs';
 * const dir = 'fixtures/golden/public-fp32';
 * const fx = { name: 'public-fp32', dir, weightsDir: dir, manifest: JSON.parse(readFileSync(`${dir}/manifest.json`, 'utf8')) };
 * (await checkGoldenModel(fx)).every((r) => r.pass); // => true
 * ```
 */
export async function checkGoldenModel(fx: GoldenFixture | GoldenCase): Promise<CheckResult[]> {
  return withCase(fx, (c) => runGoldenChecks(c, [modelCheck, e2eCheck, ropeBugCheck]));
}
