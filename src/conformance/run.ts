/**
 * The conformance runner: finds every case under the given directories and runs every check it
 * knows for it.
 *
 * - A **golden fixture** is a folder with `manifest.json` and `trace.safetensors` (weights in the
 *   folder's `model.safetensors`, or in the folder named by `manifest.weights`). A manifest with
 *   `indexer_rope: "interleaved-bug"`-style content (a `weights` pointer and only `interleaved_bug`
 *   tensors) is the RoPE-layout regression case.
 * - A **vector file** is a `*.json` file with a `kind` field.
 *
 * A case that cannot be read is one failed check with the reason; nothing here throws.
 */
import { readdirSync, readFileSync, statSync, existsSync } from 'node:fs';
import { join, basename, resolve } from 'node:path';
import { withCase } from './core/case.ts';
import { readGolden, type GoldenFixture } from './core/fixture.ts';
import { GOLDEN_CHECKS, runGoldenChecks } from './checks/golden.ts';
import { failure, type CheckResult } from './core/rows.ts';

/** A case found by {@link discoverCases}. */
export type Case =
  | { type: 'golden'; name: string; dir: string }
  | { type: 'vector'; name: string; file: string };

const SKIP_DIRS = new Set(['node_modules', '.git']);

/** Walks `roots` (folders or files) and lists golden folders and vector files, sorted by path. */
export function discoverCases(roots: string[]): { cases: Case[]; errors: CheckResult[] } {
  const cases: Case[] = [];
  const errors: CheckResult[] = [];
  const seen = new Set<string>();
  const visit = (path: string, depth: number): void => {
    const abs = resolve(path);
    if (seen.has(abs) || depth > 12) return;
    seen.add(abs);
    let st;
    try {
      st = statSync(abs);
    } catch (e) {
      errors.push(failure(basename(abs), 'discover', `cannot read ${abs}: ${(e as Error).message}`));
      return;
    }
    if (st.isFile()) {
      if (!abs.endsWith('.json')) return;
      const kind = vectorKind(abs);
      if (kind === 'vector') cases.push({ type: 'vector', name: basename(abs, '.json'), file: abs });
      else if (kind !== 'other') errors.push(failure(basename(abs, '.json'), 'read', kind.error));
      return;
    }
    if (!st.isDirectory()) return;
    if (existsSync(join(abs, 'manifest.json')) && existsSync(join(abs, 'trace.safetensors'))) {
      cases.push({ type: 'golden', name: basename(abs), dir: abs });
      return;
    }
    let entries: string[];
    try {
      entries = readdirSync(abs).sort();
    } catch (e) {
      errors.push(failure(basename(abs), 'discover', `cannot list ${abs}: ${(e as Error).message}`));
      return;
    }
    for (const entry of entries) {
      if (SKIP_DIRS.has(entry) || entry === 'manifest.json' || entry === 'config.json') continue;
      visit(join(abs, entry), depth + 1);
    }
  };
  for (const root of roots) visit(root, 0);
  return { cases, errors };
}

/** A vector file is a JSON object with a string `kind`; a non-string `kind` or broken JSON is a failure; other valid JSON is not a case. */
function vectorKind(file: string): 'vector' | 'other' | { error: string } {
  let json: unknown;
  try {
    if (statSync(file).size > 256 * 1024 * 1024) return { error: `${file} is larger than 256 MiB; not read` };
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    return { error: `cannot parse ${file}: ${(e as Error).message}` };
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json) || !('kind' in json)) return 'other';
  const kind = (json as { kind: unknown }).kind;
  if (typeof kind !== 'string') return { error: `${file}: \`kind\` must be a string naming the vector kind but got ${JSON.stringify(kind)}` };
  return 'vector';
}

const NUMERIC_KINDS = new Set(['fp8_codec', 'act_quant', 'weight_dequant', 'hadamard', 'rope']);
const TRAINING_KINDS = new Set(['grpo', 'keep_sampling_mask', 'indexer_kl']);

/** Runs every check of one vector file. */
export async function runVectorCase(c: Extract<Case, { type: 'vector' }>): Promise<CheckResult[]> {
  let json: { kind: string } & Record<string, unknown>;
  try {
    json = JSON.parse(readFileSync(c.file, 'utf8'));
  } catch (e) {
    return [failure(c.name, 'read', `cannot parse ${c.file}: ${(e as Error).message}`)];
  }
  try {
    if (NUMERIC_KINDS.has(json.kind)) {
      const { checkNumericsVector } = await import('./vectors_numerics.ts');
      return await checkNumericsVector(c.name, json);
    }
    if (TRAINING_KINDS.has(json.kind)) {
      const { checkTrainingVector } = await import('./vectors_training.ts');
      return await checkTrainingVector(c.name, json);
    }
    return [failure(c.name, json.kind, `unknown vector kind '${json.kind}' (known: ${[...NUMERIC_KINDS, ...TRAINING_KINDS].join(', ')})`)];
  } catch (e) {
    return [failure(c.name, json.kind, `check threw: ${(e as Error).message}`)];
  }
}

/**
 * Runs every check of one golden folder: the folder is opened once (config, trace, weights) and validated
 * once — a malformed manifest is ONE failed `manifest` row and no check runs — then every family of
 * `GOLDEN_CHECKS` (checks/golden.ts) that applies runs on it (only those named in `families`, when given:
 * `indexer`, `attention`, `model`, `e2e`, `rope_bug`).
 */
export async function runGoldenCase(c: Extract<Case, { type: 'golden' }>, families?: readonly string[]): Promise<CheckResult[]> {
  let raw: GoldenFixture;
  try {
    raw = readGolden(c);
  } catch (e) {
    return [failure(c.name, 'read', `cannot read ${join(c.dir, 'manifest.json')}: ${(e as Error).message}`)];
  }
  const checks = families ? GOLDEN_CHECKS.filter((f) => families.includes(f.name)) : GOLDEN_CHECKS;
  return withCase(raw, (golden) => runGoldenChecks(golden, checks));
}
