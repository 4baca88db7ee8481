/**
 * The package as a user gets it: build (`npm run build`, what `prepack` runs), `npm pack`, install the
 * tarball into a fresh temporary project offline from the npm cache, and there
 * (1) a plain Node ESM script imports three subpaths and computes the README's index-score example,
 * (2) a TypeScript consumer (`moduleResolution: nodenext`) type-checks against the shipped types,
 * (3) `npx dsv32 info` and `npx dsv32 conformance` run the compiled CLI with tsx absent,
 * (4) `import * as d from 'dsv32'` bundles for the browser (esbuild) with no Node built-in,
 * (5) `npx dsv32 conformance --backend webgl` and `npx dsv32 explorer` serve the browser pages bundled at
 *     build time (dist/pages/) with esbuild absent (it is a development dependency).
 *
 * Offline: a fresh project has no lockfile, and resolving version ranges needs the registry, so the
 * project gets a lockfile made from ours (the packages our `npm ci` installed, minus the dev-only
 * ones) and installs with `npm ci --offline`, from the tarballs in the npm cache. Optional packages
 * (the native tfjs-node-gpu, whose install downloads libtensorflow) are omitted: the CLI runs on wasm.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { browserBundleErrors } from './helpers/browser-bundle.ts';

const ROOT = join(import.meta.dirname, '..');
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

/** npm settings kept for the child npm: where the cache (and the user's npmrc) is. */
const KEEP = new Set(['npm_config_cache', 'npm_config_userconfig']);

/**
 * The environment without what `npm test` and the test runner add (npm_* settings of this project,
 * loaders in NODE_OPTIONS, the test's backend choice), so the consumer project runs as a user's would.
 */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    const dropped = (/^npm_/i.test(k) && !KEEP.has(k.toLowerCase())) || k === 'NODE_OPTIONS' || k.startsWith('VITEST') || k === 'DSV32_BACKEND';
    if (!dropped) env[k] = v;
  }
  return env;
}

interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command without blocking the test worker (a blocked worker misses the runner's heartbeats),
 * at low CPU priority (its children inherit it), so the build and install here slow down the test
 * files running beside it as little as possible.
 */
function run(cmd: string, args: string[], cwd: string, timeoutMs = 300_000): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      if (child.pid !== undefined) setPriority(child.pid, 15);
    } catch {
      // not permitted here: run at normal priority
    }
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${timeoutMs} ms)`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => (stderr += `\n${e.message}`));
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** The command's stdout; fails with its output when it did not exit 0. */
async function ok(pending: Promise<RunResult>, what: string): Promise<string> {
  const r = await pending;
  if (r.status !== 0) throw new Error(`${what} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

interface LockEntry {
  dev?: boolean;
  devOptional?: boolean;
  optional?: boolean;
  [key: string]: unknown;
}

/** A lockfile for a project depending on the tarball alone: our lock's non-dev packages at the same places. */
function consumerLock(tarball: string): object {
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const root = lock.packages['']!;
  const packages: Record<string, unknown> = {
    '': { name: 'consumer', dependencies: { dsv32: `file:${tarball}` } },
    'node_modules/dsv32': {
      version: root.version,
      resolved: `file:${tarball}`,
      license: root.license,
      dependencies: root.dependencies,
      optionalDependencies: root.optionalDependencies,
      bin: root.bin,
      engines: root.engines,
    },
  };
  for (const [path, entry] of Object.entries(lock.packages)) {
    if (path === '' || entry.dev) continue;
    // needed by the optional tree or by dev tools: optional here
    const { devOptional, ...rest } = entry;
    packages[path] = devOptional ? { ...rest, optional: true } : rest;
  }
  return { name: 'consumer', lockfileVersion: 3, requires: true, packages };
}

/** The README's index-score example (step 3 of the tour), as a plain ESM script; the expected values are the README's. */
const INDEX_SCORE_MJS = `
import { initBackend, tf } from 'dsv32/backend';
import { fp8Index } from 'dsv32/indexer';
import { selectTopK } from 'dsv32/topk';
const info = await initBackend();
const q = tf.tensor3d([[[1, 0], [0, 1]]]);          // [T, HI, DI]
const w = tf.tensor2d([[0.5, 2]]);                   // [T, HI]
const k = tf.tensor2d([[1, 1], [-1, 2], [3, -1]]);   // [S, DI]
const I = fp8Index(q, w, k, tf.tensor1d([1, 1, 1])); // [T, S]
console.log(JSON.stringify({ backend: info.name, I: I.arraySync(), top: selectTopK(I, 2, 2).arraySync() }));
`;

/** Uses the types: a wrong one must be an error (so types that silently became any fail the check). */
const CONSUMER_TS = `
import { initBackend, tf, type BackendInfo } from 'dsv32/backend';
import { fp8Index } from 'dsv32/indexer';
import { selectTopK } from 'dsv32/topk';
import { loadConfig, openCheckpoint, writeSafetensors } from 'dsv32/node';
import { CONFIG_671B, parseConfig, safetensorsFromBytes, serializeSafetensors, type ModelConfig } from 'dsv32';
// @ts-expect-error only the subpaths of package.json exports resolve (this file exists in dist/ but is not one)
import * as cliMain from 'dsv32/cli/main';

export async function main(): Promise<unknown[]> {
  const info: BackendInfo = await initBackend('cpu');
  const I: tf.Tensor2D = fp8Index(tf.tensor3d([[[1, 0]]]), tf.tensor2d([[1]]), tf.tensor2d([[2, 0]]), tf.tensor1d([1]));
  const config: ModelConfig = parseConfig({ ...CONFIG_671B });
  const fromFile: ModelConfig = loadConfig('config.json');
  const names: string[] = openCheckpoint('dir').names().concat(safetensorsFromBytes(serializeSafetensors({})).names());
  writeSafetensors('out.safetensors', { x: { dtype: 'F32', shape: [1], data: new Float32Array([info.threads]) } });
  // @ts-expect-error a ModelConfig is not a number
  const wrong: number = config;
  // @ts-expect-error selectTopK takes the scores, the query position and k
  selectTopK(I, 0, 'two');
  return [fromFile.hidden_size, names.length, wrong, cliMain];
}
`;

const TSCONFIG = {
  compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, noEmit: true, skipLibCheck: true },
  files: ['consumer.ts'],
};

describe('the packed package, installed in a fresh project', () => {
  let project = '';
  let files: string[] = [];

  beforeAll(async () => {
    project = mkdtempSync(join(tmpdir(), 'dsv32-consumer-'));
    await ok(run('npm', ['run', 'build'], ROOT), 'npm run build');
    // the build just ran; --ignore-scripts keeps `npm pack` from running it twice more (prepack, prepare)
    const packed = JSON.parse(await ok(run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', project], ROOT), 'npm pack')) as {
      filename: string;
      files: { path: string }[];
    }[];
    const tarball = packed[0]!.filename;
    files = packed[0]!.files.map((f) => f.path);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module', dependencies: { dsv32: `file:${tarball}` } }));
    writeFileSync(join(project, 'package-lock.json'), JSON.stringify(consumerLock(tarball)));
    await ok(run('npm', ['ci', '--offline', '--omit=optional', '--no-audit', '--no-fund'], project), 'npm ci --offline in the consumer project');
  }, 600_000);

  afterAll(() => {
    if (project) rmSync(project, { recursive: true, force: true });
  });

  it('the tarball holds dist/, src/, fixtures/, README.md, LICENSE, package.json and nothing else', () => {
    const tops = new Set(files.map((f) => (f.includes('/') ? `${f.split('/')[0]}/` : f)));
    expect([...tops].sort()).toEqual(['LICENSE', 'README.md', 'dist/', 'fixtures/', 'package.json', 'src/']);
    expect(files).toContain('dist/index.js');
    expect(files).toContain('dist/index.d.ts');
    expect(files).toContain('dist/index.js.map');
    expect(files).toContain('dist/cli/main.js');
    expect(files).toContain('fixtures/golden/public-fp8/model.safetensors');
    // the browser pages, bundled by `npm run build` (scripts/build-pages.ts)
    const pages = ['index.html', 'explorer.js', 'runner.html', 'runner.js', 'wasm/tfjs-backend-wasm.wasm', 'wasm/tfjs-backend-wasm-simd.wasm'];
    expect(files).toEqual(expect.arrayContaining(pages.map((f) => `dist/pages/${f}`)));
    expect(files.filter((f) => /\.test\.ts$|\.spec\.ts$|tsconfig|vitest|typedoc/.test(f))).toEqual([]);
  });

  it('(1) a plain Node ESM script imports three subpaths and computes the README index-score example', async () => {
    writeFileSync(join(project, 'index-score.mjs'), INDEX_SCORE_MJS);
    const out = JSON.parse((await ok(run(process.execPath, ['index-score.mjs'], project), 'node index-score.mjs')).trim().split('\n').pop()!);
    // README: I.arraySync() => [[2.5, 4, 1.5]]; selectTopK(I, 2, 2) => [[0, 1]]
    expect(out).toEqual({ backend: 'wasm', I: [[2.5, 4, 1.5]], top: [[0, 1]] });
  });

  it('(2) a TypeScript consumer with moduleResolution nodenext type-checks against the shipped .d.ts', async () => {
    writeFileSync(join(project, 'consumer.ts'), CONSUMER_TS);
    writeFileSync(join(project, 'tsconfig.json'), JSON.stringify(TSCONFIG));
    await ok(run(process.execPath, [TSC, '-p', '.'], project), 'tsc -p . (the consumer)');
  });

  it('(3) npx dsv32 info and npx dsv32 conformance run the compiled CLI, with tsx absent', async () => {
    expect(existsSync(join(project, 'node_modules', 'tsx'))).toBe(false);
    expect(realpathSync(join(project, 'node_modules', '.bin', 'dsv32'))).toBe(realpathSync(join(project, 'node_modules', 'dsv32', 'dist', 'cli', 'main.js')));
    const info = await ok(run('npx', ['--offline', 'dsv32', 'info'], project), 'npx dsv32 info');
    expect(info).toMatch(/^backend: wasm \(tfjs 'wasm'\)$/m);
    const conformance = await ok(run('npx', ['--offline', 'dsv32', 'conformance'], project), 'npx dsv32 conformance');
    const summary = /^backend wasm: (\d+) passed, (\d+) failed$/m.exec(conformance);
    expect(summary, conformance.slice(-2000)).not.toBeNull();
    expect(Number(summary![1])).toBeGreaterThan(50);
    expect(summary![2]).toBe('0');
  }, 600_000); // a guard against a hang, not a timing assertion: the whole conformance suite runs here

  it("(4) import * as d from 'dsv32' bundles for the browser (esbuild) with no Node built-in; 'dsv32/node' does not", async () => {
    expect(await browserBundleErrors(`import * as d from 'dsv32';\nconsole.log(d);`, project)).toEqual([]);
    const node = await browserBundleErrors(`import * as n from 'dsv32/node';\nconsole.log(n);`, project);
    expect(node.some((e) => /node_modules\/dsv32\/dist\/node\.js:\d+: Could not resolve "node:fs"/.test(e))).toBe(true);
  });

  it('(5) npx dsv32 conformance --backend webgl and npx dsv32 explorer serve the bundled pages, with esbuild absent', async () => {
    expect(existsSync(join(project, 'node_modules', 'esbuild'))).toBe(false);
    const vector = join('node_modules', 'dsv32', 'fixtures', 'vectors', 'numerics-rope.json');
    const gpu = await ok(run('npx', ['--offline', 'dsv32', 'conformance', '--backend', 'webgl', vector], project), 'npx dsv32 conformance --backend webgl');
    const summary = /^backend webgl \(WebGL 2: \S.*\): (\d+) passed, (\d+) failed$/m.exec(gpu);
    expect(summary, gpu.slice(-2000)).not.toBeNull();
    expect(Number(summary![1])).toBeGreaterThan(0);
    expect(summary![2]).toBe('0');

    const child = spawn(process.execPath, [join(project, 'node_modules', 'dsv32', 'dist', 'cli', 'main.js'), 'explorer'], { cwd: project, env: cleanEnv() });
    try {
      let out = '';
      let err = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
      const url = await new Promise<string>((found, fail) => {
        child.stdout.setEncoding('utf8').on('data', (d: string) => {
          out += d;
          const m = /^dsv32 explorer: (http:\/\/127\.0\.0\.1:\d+\/)$/m.exec(out);
          if (m) found(m[1]!);
        });
        child.on('close', (code) => fail(new Error(`dsv32 explorer exited ${code}: ${out}${err}`)));
      });
      for (const path of ['', 'explorer.js', 'wasm/tfjs-backend-wasm.wasm', 'fixtures/golden/public-fp32/config.json']) {
        expect((await fetch(new URL(path, url))).status, path).toBe(200);
      }
      const html = await (await fetch(url)).text();
      expect(html).toContain('explorer.js');
    } finally {
      const closed = new Promise((done) => child.once('close', done));
      child.kill('SIGINT');
      await closed;
    }
    expect(child.exitCode).toBe(0);
  }, 600_000); // a guard against a hang, not a timing assertion
});
