/**
 * The Node side of the browser runs (src/browser_host/): Chromium discovery and its error, the
 * loopback static server's refusals.
 */
import { it, expect, describe, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, writeFileSync, chmodSync, rmSync, mkdirSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findChromium, ChromiumError } from '../src/browser_host/chromium.ts';
import { serveStatic, type StaticServer } from '../src/browser_host/server.ts';

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
