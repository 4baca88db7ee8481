/**
 * Strict text input of the CLI: a file is read whole, must fit the size limit and must be valid
 * UTF-8 (the first invalid sequence is reported by byte offset, never replaced by U+FFFD).
 * The limits are stated in docs/limits.md.
 * @module
 */
import { readFileSync, statSync } from 'node:fs';
import { firstInvalidUtf8 } from '../internal/utf8.ts';

export { firstInvalidUtf8 };

/** Largest message or completion file `encode` and `parse` read: 64 MiB. */
export const MAX_TEXT_FILE_BYTES = 64 << 20;

/** A file that cannot be used as text input; the message says why (the caller adds the file name). */
export class TextInputError extends Error {
  override name = 'TextInputError';
}

/** `bytes` as text; throws a {@link TextInputError} at the first invalid UTF-8 sequence. A BOM is kept. */
export function decodeUtf8(bytes: Uint8Array): string {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    const at = firstInvalidUtf8(bytes);
    const seq = Array.from(bytes.subarray(at, at + 4), (b) => `0x${b.toString(16).padStart(2, '0')}`).join(' ');
    throw new TextInputError(`not valid UTF-8: invalid byte sequence at byte offset ${at} (${seq})`);
  }
}

/** A text file: at most `maxBytes` bytes of valid UTF-8. */
export function readTextFile(path: string, maxBytes = MAX_TEXT_FILE_BYTES): string {
  let size: number;
  try {
    size = statSync(path).size;
  } catch (e) {
    throw new TextInputError(`cannot read file (${(e as Error).message})`);
  }
  if (size > maxBytes) throw new TextInputError(`file is ${size} bytes, more than the limit of ${maxBytes} bytes (${maxBytes / 2 ** 20} MiB)`);
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new TextInputError(`cannot read file (${(e as Error).message})`);
  }
  return decodeUtf8(bytes);
}
