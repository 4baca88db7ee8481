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
import { loadConfig, openSafetensors } from '../node.ts';
import { FixtureError, maxSeqLenOf, parseSteps, readTokens, type GoldenStep } from './fixture.ts';
import type { CheckResult } from './types.ts';

/**
 * One golden fixture folder, as found on disk. `steps`, `maxSeqLen` and `tokens` are filled in by
 * {@link validateGolden} (which {@link openGolden} calls); a hand-built fixture may leave them out and
 * each check validates it on entry.
 */
export interface GoldenFixture {
  /** folder name, used as the case name. */
  name: string;
  /** absolute folder path. */
  dir: string;
  /** parsed `manifest.json`. */
  manifest: Record<string, unknown>;
  /** folder that holds `config.json` and `model.safetensors` (the fixture's own, or `manifest.weights`). */
  weightsDir: string;
  /** manifest `steps`, validated (contiguous from position 0, length ≥ 1); empty for the RoPE-bug case (no `steps`). */
  steps?: GoldenStep[];
  /** manifest `max_seq_len`, else the config's `max_position_embeddings` (see `maxSeqLenOf`). */
  maxSeqLen?: number;
  /** `input.tokens`, covering every step; empty for the RoPE-bug case. */
  tokens?: number[];
}

/** A golden fixture whose manifest and tokens passed {@link validateGolden}. */
export type ValidGolden = GoldenFixture & { steps: GoldenStep[]; maxSeqLen: number; tokens: number[] };

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

/** A failed check carrying a reason (unreadable case, unknown kind, exception). */
export function failure(caseName: string, check: string, reason: string, step: number | null = null, layer: number | null = null): CheckResult {
  return { case: caseName, check, step, layer, pass: false, max_abs_err: null, max_rel_err: null, reason };
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
 * Validates a golden folder once for every check: `steps` (parseSteps), `max_seq_len` (maxSeqLenOf)
 * and `input.tokens` (readTokens). A manifest without `steps` is the RoPE-bug case: `steps` and
 * `tokens` are empty and `max_seq_len` comes from its own manifest, else the base folder's, else the
 * config. Returns `fx` itself when it is already validated.
 *
 * @throws FixtureError for a malformed manifest or tokens; other errors (unreadable config or trace) as they come.
 * @example
 * ```ts
 * const dir = 'fixtures/golden/public-fp32';
 * validateGolden({ name: 'fp32', dir, weightsDir: dir, manifest: { max_seq_len: 64, steps: [{ step: 0, start_pos: 0, length: 3 }] } }).tokens.length; // => 44
 * try {
 *   validateGolden({ name: 'fp32', dir, weightsDir: dir, manifest: { steps: [{ step: 0, start_pos: 0, length: 0 }] } });
 * } catch (e) {
 *   (e as Error).message; // => 'manifest.json steps[0].length must be ≥ 1 but got 0'
 * }
 * ```
 */
export function validateGolden(fx: GoldenFixture): ValidGolden {
  if (fx.steps && fx.maxSeqLen !== undefined && fx.tokens) return fx as ValidGolden;
  const config = loadConfig(join(fx.weightsDir, 'config.json'));
  if (fx.manifest.steps === undefined) {
    let manifest = fx.manifest;
    const baseManifest = join(fx.weightsDir, 'manifest.json');
    if (manifest.max_seq_len === undefined && fx.weightsDir !== fx.dir && existsSync(baseManifest)) {
      manifest = JSON.parse(readFileSync(baseManifest, 'utf8')) as Record<string, unknown>;
    }
    return { ...fx, steps: [], maxSeqLen: maxSeqLenOf(manifest, config), tokens: [] };
  }
  const steps = parseSteps(fx.manifest.steps);
  const maxSeqLen = maxSeqLenOf(fx.manifest, config, steps);
  const trace = openSafetensors(join(fx.dir, 'trace.safetensors'));
  try {
    return { ...fx, steps, maxSeqLen, tokens: readTokens(trace, steps, config) };
  } finally {
    trace.close();
  }
}

/**
 * Reads a golden folder's manifest, resolves its weights folder and validates it ({@link validateGolden}).
 *
 * @throws FixtureError for a malformed manifest; other errors for an unreadable manifest, config or trace.
 */
export function openGolden(c: Extract<Case, { type: 'golden' }>): ValidGolden {
  return validateGolden(readGolden(c));
}

function readGolden(c: Extract<Case, { type: 'golden' }>): GoldenFixture {
  const manifest = JSON.parse(readFileSync(join(c.dir, 'manifest.json'), 'utf8')) as Record<string, unknown>;
  if (typeof manifest !== 'object' || manifest === null || Array.isArray(manifest)) {
    throw new TypeError(`manifest.json must be a JSON object`);
  }
  // `weights` is a folder pointer in derived cases (`"../public-fp32"`) and a plain description
  // (`"float32"`) in base cases: it counts as a pointer only when it names a folder with weights.
  let weightsDir = c.dir;
  if (typeof manifest.weights === 'string') {
    const target = resolve(c.dir, manifest.weights);
    if (existsSync(join(target, 'config.json'))) weightsDir = target;
  }
  return { name: c.name, dir: c.dir, manifest, weightsDir };
}

/**
 * Runs every check of one golden folder: attention side, then MoE / model side. The folder is
 * validated once first: a malformed manifest is ONE failed `manifest` row and no check runs.
 */
export async function runGoldenCase(c: Extract<Case, { type: 'golden' }>): Promise<CheckResult[]> {
  let raw: GoldenFixture;
  try {
    raw = readGolden(c);
  } catch (e) {
    return [failure(c.name, 'read', `cannot read ${join(c.dir, 'manifest.json')}: ${(e as Error).message}`)];
  }
  let fx: ValidGolden;
  try {
    fx = validateGolden(raw);
  } catch (e) {
    if (e instanceof FixtureError) return [failure(c.name, 'manifest', e.message)];
    return [failure(c.name, 'read', `cannot read ${c.dir}: ${(e as Error).message}`)];
  }
  const results: CheckResult[] = [];
  try {
    const attention = await import('./golden_attention.ts');
    results.push(...(await attention.checkGoldenAttention(fx)));
  } catch (e) {
    results.push(failure(c.name, 'attention', `check threw: ${(e as Error).message}`));
  }
  try {
    const model = await import('./golden_model.ts');
    results.push(...(await model.checkGoldenModel(fx)));
  } catch (e) {
    results.push(failure(c.name, 'model', `check threw: ${(e as Error).message}`));
  }
  return results;
}
