/**
 * Node-only: finds the system Chromium and starts it headless through `puppeteer-core` (which never
 * downloads a browser), with the flags that give TensorFlow.js its GPU backends on a machine without a
 * GPU: WebGPU on SwiftShader (`--enable-unsafe-webgpu`) and WebGL2 through ANGLE on SwiftShader
 * (`--enable-unsafe-swiftshader`; the implicit software fallback is deprecated). On a machine with a
 * GPU the same flags let Chromium use it.
 *
 * @module
 */
import { accessSync, constants } from 'node:fs';
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
 *   1280×800), `headless` (default true), `display` (X display for a window, e.g. `:99`), `extraArgs`
 * @throws ChromiumError when none is found or it does not start
 */
export async function launchChromium(
  opts: { executablePath?: string; width?: number; height?: number; headless?: boolean; display?: string; extraArgs?: string[] } = {},
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
      protocolTimeout: 1_800_000,
      ...(opts.display ? { env: { ...process.env, DISPLAY: opts.display } } : {}),
    });
  } catch (e) {
    throw new ChromiumError(`could not start ${executablePath}: ${(e as Error).message.split('\n')[0]}`);
  }
}
