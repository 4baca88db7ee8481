/**
 * The Node side of the browser runs (src/browser_host/): Chromium discovery and its error, the
 * loopback static server's refusals, the per-case time limit, which pages the compiled package serves.
 */
import { it, expect, describe, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, writeFileSync, chmodSync, rmSync, mkdirSync, existsSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findChromium, ChromiumError } from '../src/browser_host/chromium.ts';
import { serveStatic, type StaticServer } from '../src/browser_host/server.ts';
import { caseLimitMinutes } from '../src/browser_host/conformance.ts';
import { pagesFolder, PREBUILT_PAGES } from '../src/browser_host/build.ts';

const dir = mkdtempSync(join(tmpdir(), 'dsv32-host-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('findChromium', () => {
  it('names apt-get install chromium when nothing is on PATH', () => {
    expect(() => findChromium({ PATH: join(dir, 'empty') })).toThrow(ChromiumError);
    expect(() => findChromium({ PATH: join(dir, 'empty') })).toThrow(
      'no Chromium found (looked for chromium, chromium-browser, google-chrome, google-chrome-stable on PATH; CHROMIUM_PATH is not set); install it with `apt-get install chromium`',
    );
  });

  it('CHROMIUM_PATH wins, and a wrong one is named', () => {
    const bin = join(dir, 'bin');
    mkdirSync(bin, { recursive: true });
    const fake = join(bin, 'my-chrome');
    writeFileSync(fake, '#!/bin/sh\n');
    chmodSync(fake, 0o755);
    expect(findChromium({ PATH: '', CHROMIUM_PATH: fake })).toBe(fake);
    expect(() => findChromium({ PATH: '', CHROMIUM_PATH: join(bin, 'nope') })).toThrow(`CHROMIUM_PATH=${join(bin, 'nope')} is not an executable file`);
  });

  it('finds chromium on PATH', () => {
    const bin = join(dir, 'path-bin');
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, 'chromium'), '#!/bin/sh\n');
    chmodSync(join(bin, 'chromium'), 0o755);
    expect(findChromium({ PATH: `${join(dir, 'empty')}:${bin}` })).toBe(join(bin, 'chromium'));
  });
});

describe('caseLimitMinutes (DSV32_BROWSER_CASE_MINUTES)', () => {
  it('defaults to 180 min, reads a positive number, names the variable on anything else', () => {
    expect(caseLimitMinutes({})).toBe(180);
    expect(caseLimitMinutes({ DSV32_BROWSER_CASE_MINUTES: '45' })).toBe(45);
    expect(caseLimitMinutes({ DSV32_BROWSER_CASE_MINUTES: '0.5' })).toBe(0.5);
    for (const bad of ['0', '-3', 'ten', 'Infinity']) {
      expect(() => caseLimitMinutes({ DSV32_BROWSER_CASE_MINUTES: bad })).toThrow(`DSV32_BROWSER_CASE_MINUTES must be a positive number of minutes but is '${bad}'`);
    }
  });
});

describe('pagesFolder', () => {
  it('the compiled package serves dist/pages and says how to restore it when missing', async () => {
    if (existsSync(join(PREBUILT_PAGES, 'runner.html'))) expect(await pagesFolder(join(dir, 'unused'), true)).toBe(PREBUILT_PAGES);
    else await expect(pagesFolder(join(dir, 'unused'), true)).rejects.toThrow(/the browser pages are missing from .*dist\/pages: `npm run build` writes them/);
    expect(existsSync(join(dir, 'unused'))).toBe(false); // nothing bundled
  });
});

describe('serveStatic', () => {
  let server: StaticServer;
  beforeAll(async () => {
    mkdirSync(join(dir, 'site', 'sub'), { recursive: true });
    writeFileSync(join(dir, 'site', 'index.html'), '<p>hi</p>');
    writeFileSync(join(dir, 'secret.txt'), 'secret');
    server = await serveStatic({ '/': join(dir, 'site') });
  });
  afterAll(async () => server.close());

  const get = (path: string, method = 'GET') => new Promise<{ status: number; body: string }>((ok, fail) => {
    const req = request(`${server.url.replace(/\/$/, '')}${path}`, { method }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => ok({ status: res.statusCode!, body }));
    });
    req.on('error', fail);
    req.end();
  });

  it('listens on the loopback interface and serves files with their type', async () => {
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(await get('/')).toEqual({ status: 200, body: '<p>hi</p>' });
  });

  it('refuses paths outside the mount, directories, missing files and other methods', async () => {
    expect((await get('/../secret.txt')).status).toBe(404);
    expect((await get('/%2e%2e/secret.txt')).status).toBe(404);
    expect((await get('/..%2fsecret.txt')).status).toBe(404); // an encoded slash survives URL parsing
    expect((await get('/sub')).status).toBe(404);
    expect((await get('/nope.js')).status).toBe(404);
    expect((await get('/', 'POST')).status).toBe(405);
  });
});
