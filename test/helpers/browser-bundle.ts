/**
 * Bundles code for the browser with esbuild and returns what stops it: every import of a Node
 * built-in (`node:fs`, `path`, ...) that no package's `browser` field maps away is an esbuild error
 * ("Could not resolve"), reported here as `file:line: message`. Used by test/browser-safe.test.ts
 * (the sources) and test/package-install.test.ts (the installed package).
 */
import { build } from 'esbuild';

/** esbuild's errors for `code` bundled with platform `browser`, resolved from `resolveDir` (empty: it bundles). */
export async function browserBundleErrors(code: string, resolveDir: string): Promise<string[]> {
  try {
    const result = await build({
      stdin: { contents: code, resolveDir, loader: 'js', sourcefile: 'browser-entry.js' },
      bundle: true,
      platform: 'browser',
      format: 'esm',
      write: false,
      logLevel: 'silent',
    });
    return result.errors.map((e) => `${e.location?.file ?? '?'}:${e.location?.line ?? '?'}: ${e.text}`);
  } catch (e) {
    const errors = (e as { errors?: { text: string; location: { file: string; line: number } | null }[] }).errors;
    if (!errors) throw e;
    return errors.map((x) => `${x.location?.file ?? '?'}:${x.location?.line ?? '?'}: ${x.text}`);
  }
}
