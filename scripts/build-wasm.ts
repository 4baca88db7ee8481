/**
 * `npm run build:wasm`: compiles the WebAssembly SIMD kernels of sparse attention (src/wasm/sparse_mqa.c)
 * with clang and writes them, base64-encoded, into src/wasm/sparse_mqa.wasm.ts, the module that
 * src/sparse_wasm.ts loads (no file to fetch at run time, in Node or a browser). Needs clang and lld
 * with the wasm32 target (Debian: `apt-get install clang lld`); the generated file is committed, so
 * using the package needs neither. test/sparse-wasm.test.ts checks that the committed bytes are what
 * this script builds from the committed source.
 *
 * The kernels run on the memory of tfjs-backend-wasm, which they import, so the module must not own
 * anything in it: `checkSparseMqaModule` refuses a module with a data segment, a start function, any
 * import but `env.memory`, or (when llvm-objdump is at hand) any use of a global such as the stack pointer.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const SOURCE = resolve(import.meta.dirname, '..', 'src', 'wasm', 'sparse_mqa.c');
export const OUTPUT = resolve(import.meta.dirname, '..', 'src', 'wasm', 'sparse_mqa.wasm.ts');

/** The clang command line (after the source and output paths are added). */
export const CLANG_FLAGS = [
  '--target=wasm32', '-O3', '-msimd128', '-ffreestanding', '-fno-builtin', '-nostdlib',
  '-Wl,--no-entry', '-Wl,--import-memory', '-Wl,--strip-all',
];

/** The clang version line, or null when clang is not installed. */
export function clangVersion(): string | null {
  try {
    return execFileSync('clang', ['--version'], { encoding: 'utf8' }).split('\n')[0]!.trim();
  } catch {
    return null;
  }
}

/** sha256 (hex) of the kernel source. */
export function sourceSha256(): string {
  return createHash('sha256').update(readFileSync(SOURCE)).digest('hex');
}

/** Compiles src/wasm/sparse_mqa.c; returns the module's bytes. Throws a one-line error when clang fails. */
export function compileSparseMqa(): Uint8Array<ArrayBuffer> {
  const dir = mkdtempSync(join(tmpdir(), 'dsv32-wasm-'));
  try {
    const out = join(dir, 'sparse_mqa.wasm');
    try {
      execFileSync('clang', [...CLANG_FLAGS, '-o', out, SOURCE], { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      const err = e as { stderr?: Buffer; message: string };
      throw new Error(`build-wasm: clang could not compile ${SOURCE}: ${(err.stderr?.toString() || err.message).trim().split('\n')[0]}`);
    }
    const bytes = new Uint8Array(readFileSync(out));
    checkSparseMqaModule(bytes, out);
    return bytes;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Section ids of the WebAssembly binary format (core spec §5.5). */
const SECTION = { start: 8, data: 11, dataCount: 12 } as const;

/** The ids of the sections of a WebAssembly module, in order. */
export function sectionIds(bytes: Uint8Array): number[] {
  const ids: number[] = [];
  let at = 8; // magic + version
  while (at < bytes.length) {
    const id = bytes[at++]!;
    let size = 0;
    for (let shift = 0; ; shift += 7) {
      const b = bytes[at++]!;
      size += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) break;
    }
    ids.push(id);
    at += size;
  }
  return ids;
}

/**
 * Throws unless the module only imports `env.memory` and owns nothing in it (see the header); `where` is the
 * module's file, disassembled with llvm-objdump when that is installed.
 */
export function checkSparseMqaModule(bytes: Uint8Array<ArrayBuffer>, where: string): void {
  const mod = new WebAssembly.Module(bytes);
  const imports = WebAssembly.Module.imports(mod).map((i) => `${i.module}.${i.name}:${i.kind}`);
  if (imports.join() !== 'env.memory:memory') throw new Error(`build-wasm: ${where} must import only env.memory but imports ${imports.join(', ')}`);
  const ids = sectionIds(bytes);
  for (const [name, id] of Object.entries(SECTION)) {
    if (ids.includes(id)) throw new Error(`build-wasm: ${where} must have no ${name} section (it would write into tfjs's memory)`);
  }
  let listing: string | null = null;
  for (const objdump of ['llvm-objdump', 'llvm-objdump-14', '/usr/lib/llvm-14/bin/llvm-objdump']) {
    try {
      listing = execFileSync(objdump, ['-d', where], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      break;
    } catch {
      // try the next name
    }
  }
  if (listing !== null && /\bglobal\.(get|set)\b/.test(listing)) {
    throw new Error(`build-wasm: ${where} uses a global (the stack pointer?): the kernels must keep everything in locals`);
  }
}

/** The text of src/wasm/sparse_mqa.wasm.ts for these bytes. */
export function generatedModule(bytes: Uint8Array, clang: string): string {
  const base64 = Buffer.from(bytes).toString('base64');
  const lines = base64.match(/.{1,100}/g) ?? [];
  return [
    '/**',
    ' * The WebAssembly kernels of src/wasm/sparse_mqa.c, base64-encoded. Generated by `npm run build:wasm`',
    ` * (scripts/build-wasm.ts) with ${clang};`,
    ` * flags: ${CLANG_FLAGS.join(' ')}. Do not edit: rebuild.`,
    ' */',
    '',
    '/** sha256 of the src/wasm/sparse_mqa.c these bytes were built from. */',
    `export const SPARSE_MQA_SOURCE_SHA256 = '${sourceSha256()}';`,
    '',
    '/** The compiler that built them (`clang --version`, first line): another version may emit other bytes. */',
    `export const SPARSE_MQA_CLANG = '${clang.replace(/[\\']/g, (c) => `\\${c}`)}';`,
    '',
    `/** The module (${bytes.length} bytes). */`,
    'export const SPARSE_MQA_WASM_BASE64 =',
    lines.map((l) => `  '${l}'`).join(' +\n') + ';',
    '',
  ].join('\n');
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(import.meta.filename)) {
  const clang = clangVersion();
  if (!clang) {
    process.stderr.write('build-wasm: clang is not installed (Debian: apt-get install clang lld)\n');
    process.exit(2);
  }
  try {
    const bytes = compileSparseMqa();
    writeFileSync(OUTPUT, generatedModule(bytes, clang));
    process.stdout.write(`build-wasm: ${OUTPUT} (${bytes.length} bytes of WebAssembly)\n`);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(1);
  }
}
