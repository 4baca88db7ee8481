/**
 * The `node:fs` and `node:path` functions that the conformance engine (src/conformance/, src/node.ts)
 * calls, over an in-memory file table, so that the unchanged engine runs in the conformance page
 * (src/browser/runner.ts): the Node side serves each case's files on the loopback server, the page
 * fetches them and registers them here under their absolute paths, and the engine then reads them as
 * it reads files on disk. Only the runner bundle maps `node:fs` / `node:path` here
 * (src/browser_host/build.ts); the explorer and the library never load it.
 *
 * Files are registered with {@link registerFile}; reads of anything else fail as a missing file does
 * in Node (`ENOENT`). Writes are refused.
 *
 * @module
 */

const files = new Map<string, Uint8Array>();
const open = new Map<number, Uint8Array>();
let nextFd = 3;

function enoent(path: string): Error {
  return Object.assign(new Error(`ENOENT: no such file or directory, '${path}'`), { code: 'ENOENT' });
}

/** Makes `bytes` readable at `path` (absolute, `/`-separated). */
export function registerFile(path: string, bytes: Uint8Array): void {
  files.set(normalize(path), bytes);
}

function isDir(path: string): boolean {
  const prefix = normalize(path).replace(/\/?$/, '/');
  for (const k of files.keys()) if (k.startsWith(prefix)) return true;
  return false;
}

// --- node:fs ---

export function existsSync(path: string): boolean {
  return files.has(normalize(path)) || isDir(path);
}

export function statSync(path: string): { isFile(): boolean; isDirectory(): boolean; size: number } {
  const f = files.get(normalize(path));
  if (f) return { isFile: () => true, isDirectory: () => false, size: f.byteLength };
  if (isDir(path)) return { isFile: () => false, isDirectory: () => true, size: 0 };
  throw enoent(path);
}

export function readdirSync(path: string): string[] {
  const prefix = normalize(path).replace(/\/?$/, '/');
  const names = new Set<string>();
  for (const k of files.keys()) if (k.startsWith(prefix)) names.add(k.slice(prefix.length).split('/')[0]!);
  if (names.size === 0) throw enoent(path);
  return [...names];
}

export function readFileSync(path: string, encoding?: string): string | Uint8Array {
  const f = files.get(normalize(path));
  if (!f) throw enoent(path);
  return encoding ? new TextDecoder().decode(f) : f;
}

export function openSync(path: string): number {
  const f = files.get(normalize(path));
  if (!f) throw enoent(path);
  open.set(nextFd, f);
  return nextFd++;
}

export function fstatSync(fd: number): { isFile(): boolean; size: number } {
  const f = open.get(fd);
  if (!f) throw new Error(`EBADF: bad file descriptor ${fd}`);
  return { isFile: () => true, size: f.byteLength };
}

export function readSync(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): number {
  const f = open.get(fd);
  if (!f) throw new Error(`EBADF: bad file descriptor ${fd}`);
  const n = Math.max(0, Math.min(length, f.byteLength - position));
  buffer.set(f.subarray(position, position + n), offset);
  return n;
}

export function closeSync(fd: number): void {
  open.delete(fd);
}

export function writeSync(): never {
  throw new Error('writeSync: the page has no file system');
}

export function writeFileSync(): never {
  throw new Error('writeFileSync: the page has no file system');
}

// --- node:path (POSIX) ---

export const sep = '/';

export function normalize(path: string): string {
  const abs = path.startsWith('/');
  const out: string[] = [];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return (abs ? '/' : '') + out.join('/');
}

export function join(...parts: string[]): string {
  return normalize(parts.filter(Boolean).join('/'));
}

export function resolve(...parts: string[]): string {
  let path = '';
  for (const p of parts) path = p.startsWith('/') ? p : `${path}/${p}`;
  return normalize(path.startsWith('/') ? path : `/${path}`);
}

export function isAbsolute(path: string): boolean {
  return path.startsWith('/');
}

export function basename(path: string, ext?: string): string {
  const base = normalize(path).split('/').pop() ?? '';
  return ext && base.endsWith(ext) ? base.slice(0, -ext.length) : base;
}

export function dirname(path: string): string {
  const parts = normalize(path).split('/');
  parts.pop();
  return parts.join('/') || '/';
}

export default { existsSync, statSync, readdirSync, readFileSync, openSync, fstatSync, readSync, closeSync, writeSync, writeFileSync };
