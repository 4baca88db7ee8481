/**
 * Strict text input of the CLI: a file is read whole, must fit the size limit and must be valid
 * UTF-8 (the first invalid sequence is reported by byte offset, never replaced by U+FFFD).
 * The limits are stated in docs/limits.md.
 * @module
 */
import { readFileSync, statSync } from 'node:fs';

/** Largest message or completion file `encode` and `parse` read: 64 MiB. */
export const MAX_TEXT_FILE_BYTES = 64 << 20;

/** A file that cannot be used as text input; the message says why (the caller adds the file name). */
export class TextInputError extends Error {
  override name = 'TextInputError';
}

/**
 * Byte offset of the first byte that does not start or continue a valid UTF-8 sequence (RFC 3629:
 * no overlong forms, no surrogates, nothing above U+10FFFF), or -1 when all of `bytes` is valid.
 */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  const n = bytes.length;
  let i = 0;
  while (i < n) {
    const b = bytes[i]!;
    if (b < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) lo = 0xa0; // no overlong 3-byte form
      if (b === 0xed) hi = 0x9f; // no UTF-16 surrogates
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) lo = 0x90; // no overlong 4-byte form
      if (b === 0xf4) hi = 0x8f; // nothing above U+10FFFF
    } else return i;
    for (let k = 1; k <= need; k++) {
      const c = bytes[i + k];
      if (c === undefined || c < (k === 1 ? lo : 0x80) || c > (k === 1 ? hi : 0xbf)) return i;
    }
    i += need + 1;
  }
  return -1;
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
