/**
 * Node-only: `dsv32 conformance --backend webgpu|webgl [DIR ...]`, the conformance suite run in headless
 * Chromium on a GPU backend of TensorFlow.js. The cases are found in Node (`discoverCases`), their
 * files are served from a loopback server, and the conformance page (src/browser/runner.ts) runs the
 * same engine on them in the browser: the same rows, the same `--json` contract.
 *
 * WebGPU needs a window: tfjs-backend-webgpu reads values synchronously (`dataSync`, which the
 * checks and `selectTopK` use) by drawing a WebGPU canvas into a 2D canvas, and headless Chromium on
 * SwiftShader returns zeros there (measured). So for webgpu Chromium runs with a window: on the
 * `DISPLAY` given (a desktop: its own GPU), else on a virtual display of its own (`Xvfb`, Debian's
 * `xvfb` package) with WebGPU on SwiftShader's Vulkan. WebGL runs headless.
 *
 * @module
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import type { Browser, Page } from 'puppeteer-core';
import { discoverCases, type Case } from '../conformance/run.ts';
import { failure } from '../conformance/core/rows.ts';
import type { CheckResult } from '../conformance/core/rows.ts';
import { pagesFolder } from './build.ts';
import { ChromiumError, launchChromiumFor, type Xvfb } from './chromium.ts';
import { serveStatic, type StaticServer } from './server.ts';

/** The GPU backends `--backend` accepts. */
export const BROWSER_BACKENDS = ['webgpu', 'webgl'] as const;
export type BrowserBackend = (typeof BROWSER_BACKENDS)[number];

/** What {@link runConformanceInBrowser} returns: the rows and what computed them. */
export interface BrowserRun {
  rows: CheckResult[];
  backend: string;
  adapter: string;
}

/** Files of a case, as `[folder, file names]` pairs (a golden case: its folder and, for a derived case, its weights folder). */
function caseFolders(c: Case): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const files = (dir: string) => readdirSync(dir).filter((f) => statSync(join(dir, f)).isFile());
  if (c.type === 'vector') {
    out.set(dirname(c.file), [basename(c.file)]);
    return out;
  }
  out.set(c.dir, files(c.dir));
  try {
    const manifest = JSON.parse(readFileSync(join(c.dir, 'manifest.json'), 'utf8')) as { weights?: unknown };
    if (typeof manifest.weights === 'string') {
      const target = resolve(c.dir, manifest.weights);
      if (existsSync(join(target, 'config.json'))) out.set(target, files(target));
    }
  } catch {
    // an unreadable manifest is reported by the engine in the page
  }
  return out;
}

/** Environment variable with the per-case time limit of {@link runConformanceInBrowser}, in minutes. */
export const CASE_LIMIT_ENV = 'DSV32_BROWSER_CASE_MINUTES';

/**
 * The per-case time limit in minutes: `DSV32_BROWSER_CASE_MINUTES`, default 180. A guard against a page
 * that hangs, not a speed bound: the slowest bundled case (`public2-fp8` on WebGL under SwiftShader,
 * whose end-to-end steering reads back thousands of tensors synchronously) ran past 30 min on a loaded
 * machine (docs/backends.md).
 */
export function caseLimitMinutes(env: NodeJS.ProcessEnv = process.env): number {
  const v = env[CASE_LIMIT_ENV];
  if (v === undefined || v === '') return 180;
  const n = Number(v);
  if (!(Number.isFinite(n) && n > 0)) throw new ChromiumError(`${CASE_LIMIT_ENV} must be a positive number of minutes but is '${v}'`);
  return n;
}

/**
 * Runs every case under `dirs` in Chromium on `backend`. Each case runs in the page within
 * {@link caseLimitMinutes}; a case that crashes the page, loses the GPU device or runs over is one
 * failed `run` row, and the next case gets a fresh page.
 *
 * @param backend 'webgpu' or 'webgl'
 * @param dirs folders or files to search for cases (as `dsv32 conformance DIR ...`)
 * @param onProgress called before and after each case
 * @param opts `families`: run only these golden check families (src/conformance/run.ts `runGoldenCase`; the tests)
 * @throws ChromiumError when no Chromium (or, for webgpu without DISPLAY, no Xvfb) is available, or the
 *   backend does not start in it
 */
export async function runConformanceInBrowser(
  backend: BrowserBackend,
  dirs: string[],
  onProgress?: (done: number, total: number, label: string) => void,
  opts: { families?: string[] } = {},
): Promise<BrowserRun> {
  const { cases, errors } = discoverCases(dirs);
  const rows: CheckResult[] = [...errors];
  if (cases.length === 0 && errors.length === 0) {
    rows.push(failure(dirs.join(','), 'discover', 'no golden fixture folder (manifest.json + trace.safetensors) or vector file (*.json with "kind") found'));
  }
  const work = mkdtempSync(join(tmpdir(), 'dsv32-browser-'));
  const folders = new Map<string, string>(); // folder → URL prefix
  for (const c of cases) for (const dir of caseFolders(c).keys()) if (!folders.has(dir)) folders.set(dir, `/f${folders.size}/`);
  let xvfb: Xvfb | undefined;
  let browser: Browser | undefined;
  let server: StaticServer | undefined;
  try {
    const pages = await pagesFolder(work);
    server = await serveStatic({ '/': pages, ...Object.fromEntries([...folders].map(([dir, prefix]) => [prefix, dir])) });
    ({ browser, xvfb } = await launchChromiumFor(backend, { protocolTimeout: 0 }));
    const open = async (): Promise<{ page: Page; state: { backend?: string; adapter?: string } }> => {
      const page = await browser!.newPage();
      await page.goto(`${server!.url}runner.html?backend=${backend}`);
      await page.waitForFunction('window.dsv32Runner && window.dsv32Runner.status !== "starting"', { timeout: 120_000 });
      const state = await page.evaluate(() => {
        const s = (window as unknown as { dsv32Runner: { status: string; error?: string; backend?: string; adapter?: string } }).dsv32Runner;
        return { status: s.status, error: s.error, backend: s.backend, adapter: s.adapter };
      });
      if (state.status !== 'ready') throw new ChromiumError(`the ${backend} backend did not start in Chromium: ${state.error}`);
      return { page, state };
    };
    let { page, state } = await open();
    const limit = caseLimitMinutes();
    let done = 0;
    for (const c of cases) {
      onProgress?.(done, cases.length, c.name);
      const files = [...caseFolders(c)].flatMap(([dir, names]) => names.map((f) => ({ url: `${folders.get(dir)}${encodeURIComponent(f)}`, path: join(dir, f) })));
      let timer: NodeJS.Timeout | undefined;
      try {
        const evaluation = page.evaluate(async (fs: { url: string; path: string }[], kase: Case, families: string[] | null) => {
          const r = (window as unknown as { dsv32Runner: { load(f: typeof fs): Promise<void>; runCase(c: Case, f?: string[]): Promise<CheckResult[]> } }).dsv32Runner;
          await r.load(fs);
          return r.runCase(kase, families ?? undefined);
        }, files, c, opts.families ?? null);
        const overtime = new Promise<never>((_, fail) => {
          timer = setTimeout(() => fail(new Error(`did not finish within ${limit} min (${CASE_LIMIT_ENV} sets the limit per case)`)), limit * 60_000);
        });
        const caseRows = await Promise.race([evaluation, overtime]);
        rows.push(...(caseRows.length > 0 ? caseRows : [failure(c.name, 'run', 'no check applies to this case')]));
      } catch (e) {
        rows.push(failure(c.name, 'run', `the page failed on this case: ${(e as Error).message.split('\n')[0]}`));
        // a lost, crashed or overtime page: the next case gets a fresh one
        await page.close().catch(() => undefined);
        ({ page, state } = await open());
      } finally {
        clearTimeout(timer);
      }
      onProgress?.(++done, cases.length, c.name);
    }
    return { rows, backend: state.backend!, adapter: state.adapter! };
  } finally {
    await browser?.close();
    await server?.close();
    xvfb?.process.kill();
    rmSync(work, { recursive: true, force: true });
  }
}
