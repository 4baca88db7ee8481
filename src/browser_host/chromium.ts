/**
 * Node-only: finds the system Chromium and starts it headless through `puppeteer-core` (which never
 * downloads a browser), with the flags that give TensorFlow.js its GPU backends on a machine without a
 * GPU: WebGPU on SwiftShader (`--enable-unsafe-webgpu`) and WebGL2 through ANGLE on SwiftShader
 * (`--enable-unsafe-swiftshader`; the implicit software fallback is deprecated). On a machine with a
 * GPU the same flags let Chromium use it.
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import puppeteer, { type Browser } from 'puppeteer-core';

/** Executable names looked up on PATH, in order. */
export const CHROMIUM_NAMES = ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'];

/** No Chromium could be found or started; the message says how to install one. */
export class ChromiumError extends Error {
  override name = 'ChromiumError';
}

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The Chromium to drive: `CHROMIUM_PATH` when set, else the first of {@link CHROMIUM_NAMES} on PATH.
 *
 * @param env environment to read (default `process.env`)
 * @throws ChromiumError naming `CHROMIUM_PATH` or the names searched, and `apt-get install chromium`
 */
export function findChromium(env: NodeJS.ProcessEnv = process.env): string {
  const forced = env.CHROMIUM_PATH;
  if (forced) {
    if (executable(forced)) return forced;
    throw new ChromiumError(`CHROMIUM_PATH=${forced} is not an executable file; install Chromium (Debian/Ubuntu: \`apt-get install chromium\`) or fix CHROMIUM_PATH`);
  }
  for (const dir of (env.PATH ?? '').split(delimiter).filter(Boolean)) {
    for (const name of CHROMIUM_NAMES) {
      const path = join(dir, name);
      if (executable(path)) return path;
    }
  }
  throw new ChromiumError(
    `no Chromium found (looked for ${CHROMIUM_NAMES.join(', ')} on PATH; CHROMIUM_PATH is not set); ` +
      'install it with `apt-get install chromium` (Debian/Ubuntu) or set CHROMIUM_PATH to a Chromium or Chrome executable',
  );
}

/** Flags every launch uses (headless, no sandbox as root, no background traffic, software GPU allowed). */
export const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-dev-shm-usage',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--disable-default-apps',
  '--disable-extensions',
  '--enable-unsafe-webgpu',
  '--enable-unsafe-swiftshader',
];

/**
 * Starts Chromium (a fresh temporary profile, removed on close), headless unless told otherwise.
 *
 * @param opts `executablePath` (default {@link findChromium}), `width`/`height` of the window (default
 *   1280×800), `headless` (default true), `display` (X display for a window, e.g. `:99`), `extraArgs`,
 *   `protocolTimeout` (ms per DevTools call, default 30 min; 0 = none, the caller keeps its own limit)
 * @throws ChromiumError when none is found or it does not start
 */
export async function launchChromium(
  opts: { executablePath?: string; width?: number; height?: number; headless?: boolean; display?: string; extraArgs?: string[]; protocolTimeout?: number } = {},
): Promise<Browser> {
  const executablePath = opts.executablePath ?? findChromium();
  const width = opts.width ?? 1280;
  const height = opts.height ?? 800;
  try {
    return await puppeteer.launch({
      executablePath,
      headless: opts.headless ?? true,
      args: [...CHROMIUM_FLAGS, `--window-size=${width},${height}`, ...(opts.extraArgs ?? [])],
      defaultViewport: { width, height },
      protocolTimeout: opts.protocolTimeout ?? 1_800_000,
      ...(opts.display ? { env: { ...process.env, DISPLAY: opts.display } } : {}),
    });
  } catch (e) {
    throw new ChromiumError(`could not start ${executablePath}: ${(e as Error).message.split('\n')[0]}`);
  }
}

/** A virtual X display started by {@link launchChromiumFor}: its name (`:90`) and process (kill it when done). */
export interface Xvfb {
  display: string;
  process: ChildProcess;
}

/** Starts `Xvfb` on a free display number; resolves once its socket exists. */
async function startXvfb(): Promise<Xvfb> {
  let n = 90;
  while (existsSync(`/tmp/.X${n}-lock`) || existsSync(`/tmp/.X11-unix/X${n}`)) n++;
  const child = spawn('Xvfb', [`:${n}`, '-screen', '0', '1280x1024x24', '-nolisten', 'tcp'], { stdio: 'ignore' });
  const failed = new Promise<never>((_, fail) => child.once('error', (e) => fail(new ChromiumError(
    `--backend webgpu needs a display: set DISPLAY, or install Xvfb (\`apt-get install xvfb\`) (${(e as Error).message})`,
  ))));
  const ready = (async () => {
    for (let i = 0; i < 100 && !existsSync(`/tmp/.X11-unix/X${n}`); i++) await new Promise((ok) => setTimeout(ok, 50));
    if (!existsSync(`/tmp/.X11-unix/X${n}`)) throw new ChromiumError(`Xvfb did not start on display :${n}`);
  })();
  await Promise.race([ready, failed]);
  return { display: `:${n}`, process: child };
}

/**
 * Starts Chromium as a TensorFlow.js backend needs it. WebGPU needs a window: tfjs-backend-webgpu reads
 * values synchronously (`dataSync`) by drawing a WebGPU canvas into a 2D canvas, and headless Chromium on
 * SwiftShader returns zeros there (measured; docs/backends.md). So for `webgpu` Chromium gets a window on
 * the `DISPLAY` given (a desktop: its own GPU), else on a virtual display of its own (`Xvfb`) with WebGPU
 * on SwiftShader's Vulkan. Every other backend runs headless.
 *
 * @param backend a TensorFlow.js backend name (`webgpu`, `webgl`, `wasm`, `cpu`)
 * @param opts `protocolTimeout` as {@link launchChromium}
 * @returns the browser and the Xvfb started for it, if any (close the browser, then kill Xvfb)
 * @throws ChromiumError when no Chromium (or, for webgpu without DISPLAY, no Xvfb) is available
 */
export async function launchChromiumFor(backend: string, opts: { protocolTimeout?: number } = {}): Promise<{ browser: Browser; xvfb?: Xvfb }> {
  if (backend !== 'webgpu') return { browser: await launchChromium(opts) };
  const xvfb = process.env.DISPLAY ? undefined : await startXvfb();
  try {
    const browser = await launchChromium({
      ...opts,
      headless: false,
      display: xvfb?.display ?? process.env.DISPLAY!,
      extraArgs: xvfb ? ['--enable-features=Vulkan', '--use-vulkan=swiftshader', '--use-webgpu-adapter=swiftshader'] : [],
    });
    return xvfb ? { browser, xvfb } : { browser };
  } catch (e) {
    xvfb?.process.kill();
    throw e;
  }
}
