/**
 * The explorer page in a real browser (headless Chromium from PATH or CHROMIUM_PATH, driven by
 * puppeteer-core), on the webgpu, webgl and wasm backends of TensorFlow.js:
 * - the page loads with no console error, no uncaught exception and no request outside the loopback server;
 * - the values it shows for layer 0, step 0 of public-fp32 (index scores, the selections of every query,
 *   the selections with the interleaved-RoPE bug) equal the official ones, read from the page through the
 *   DevTools protocol (its published state and its DOM), not from a screenshot;
 * - pressing `.` moves to layer 1, whose MoE routing equals the recorded gate;
 * - a screenshot per backend is written to test/.out/ for people to look at.
 *
 * CI installs Chromium (.ci/run); without it these tests fail with the message naming `apt-get install chromium`.
 */
import { it, expect, beforeAll, afterAll, describe } from 'vitest';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Browser, Page } from 'puppeteer-core';
import type { SafetensorsFile } from '../src/safetensors.ts';
import { openSafetensors } from '../src/node.ts';
import { buildExplorer, REPO_ROOT } from '../src/browser_host/build.ts';
import { serveStatic, type StaticServer } from '../src/browser_host/server.ts';
import { launchChromium } from '../src/browser_host/chromium.ts';
import type { ExplorerView } from '../src/browser/compute.ts';
import { asSet, expectLayer0Step0Official, rowsOf } from './helpers/explorer-golden.ts';

const OUT = resolve('test/.out');
const GOLDEN = resolve('fixtures/golden');

let server: StaticServer;
let browser: Browser;
let trace: SafetensorsFile;
let bugTrace: SafetensorsFile;

beforeAll(async () => {
  mkdirSync(OUT, { recursive: true });
  await buildExplorer(join(OUT, 'explorer-build'));
  server = await serveStatic({ '/': join(OUT, 'explorer-build'), '/fixtures/': join(REPO_ROOT, 'fixtures') });
  browser = await launchChromium();
  trace = openSafetensors(join(GOLDEN, 'public-fp32', 'trace.safetensors'));
  bugTrace = openSafetensors(join(GOLDEN, 'public-fp32-indexer-rope-bug', 'trace.safetensors'));
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
});


interface PageState { status: string; error?: string; backend?: string; adapter?: string; view?: ExplorerView }

/** Opens the page, recording console errors, uncaught exceptions and requests that leave the server. */
async function open(query: string): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on('console', (m) => {
    // WebGPU reports shader and pipeline validation errors as console warnings
    if (m.type() === 'error' || /WGSL|\[Invalid |validation error/i.test(m.text())) problems.push(`console.${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`uncaught: ${(e as Error).message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
  page.on('request', (r) => {
    if (!r.url().startsWith(server.url) && !r.url().startsWith('data:')) problems.push(`external request: ${r.url()}`);
  });
  await page.goto(`${server.url}?${query}`);
  return { page, problems };
}

async function settled(page: Page, layer: number): Promise<PageState> {
  await page.waitForFunction(
    (L: number) => {
      const s = (window as unknown as { dsv32Explorer?: PageState }).dsv32Explorer;
      return s && (s.status === 'error' || (s.status === 'ready' && s.view?.layer === L));
    },
    { timeout: 600_000, polling: 200 },
    layer,
  );
  return page.evaluate(() => (window as unknown as { dsv32Explorer: PageState }).dsv32Explorer);
}

for (const backend of ['webgpu', 'webgl', 'wasm']) {
  describe(`explorer page [${backend}]`, () => {
    let page: Page;
    let problems: string[];
    let state: PageState;

    beforeAll(async () => {
      ({ page, problems } = await open(`backend=${backend}&fixture=public-fp32&step=0&layer=0`));
      state = await settled(page, 0);
      await page.screenshot({ path: join(OUT, `explorer-${backend}.png`) });
    }, 600_000);
    afterAll(async () => page?.close());

    it('loads on this backend with no console error, exception or external request', () => {
      expect(state.error).toBeUndefined();
      expect(state.status).toBe('ready');
      expect(state.backend).toBe(backend);
      expect(state.adapter).toMatch({ webgpu: /^WebGPU adapter: \S/, webgl: /^WebGL 2: \S/, wasm: /^WebAssembly/ }[backend]!);
      expect(problems).toEqual([]);
    });

    it('layer 0, step 0 of public-fp32: the scores and selections it shows equal the official ones', async () => {
      const v = state.view!;
      expectLayer0Step0Official(v, trace, bugTrace);
      // what the DOM shows for the outlined query row (t = 39): dsv32's selection, the official one marked as matching
      const shown = await page.$eval('[data-testid="topk"]', (e) => ({ row: Number(e.getAttribute('data-row')), text: e.textContent ?? '' }));
      expect(shown.row).toBe(39);
      expect(shown.text.trim().split(/\s+/).map(Number)).toEqual(asSet(rowsOf(trace, 'step0.expected.layer0.indexer.topk')[39]!));
      expect(await page.$eval('[data-testid="official-topk"]', (e) => e.textContent)).toContain('✓ match');
    });

    it('the `.` key moves to layer 1, whose MoE routing equals the recorded gate', async () => {
      await page.focus('#heatmap');
      await page.keyboard.press('.');
      const v = (await settled(page, 1)).view!;
      expect(v.layer).toBe(1);
      expect(v.routing!.map((r) => r.experts)).toEqual(rowsOf(trace, 'step0.expected.layer1.gate.indices'));
      const weights = rowsOf(trace, 'step0.expected.layer1.gate.weights');
      v.routing!.forEach((r, t) => r.weights.forEach((w, j) => expect(Math.abs(w - weights[t]![j]!)).toBeLessThanOrEqual(1e-4)));
      expect(problems).toEqual([]);
      await page.screenshot({ path: join(OUT, `explorer-${backend}-layer1.png`) });
    }, 600_000);
  });
}

describe('static build (scripts/build-explorer.ts layout) [wasm]', () => {
  it('served alone, it loads public-fp8 and shows the official layer 0 selections', async () => {
    const dir = join(OUT, 'explorer-static');
    const { execFileSync } = await import('node:child_process');
    execFileSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'scripts', 'build-explorer.ts'), dir], { stdio: 'pipe' });
    const alone = await serveStatic({ '/': dir });
    try {
      const page = await browser.newPage();
      const problems: string[] = [];
      page.on('console', (m) => m.type() === 'error' && problems.push(m.text()));
      page.on('request', (r) => !r.url().startsWith(alone.url) && !r.url().startsWith('data:') && problems.push(`external request: ${r.url()}`));
      await page.goto(`${alone.url}?backend=wasm&fixture=public-fp8&layer=0`);
      const state = await settled(page, 0);
      await page.close();
      expect(state.error).toBeUndefined();
      expect(problems).toEqual([]);
      const fp8 = openSafetensors(join(GOLDEN, 'public-fp8', 'trace.safetensors'));
      expect(state.view!.fixture).toBe('public-fp8');
      expect(state.view!.topk.map(asSet)).toEqual(rowsOf(fp8, 'step0.expected.layer0.indexer.topk').map(asSet));
      expect(state.view!.officialBugTopk).toBeNull(); // the RoPE-bug trace belongs to public-fp32
    } finally {
      await alone.close();
    }
  }, 300_000);
});
