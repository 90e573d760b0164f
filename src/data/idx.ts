/**
 * IDX files (the MNIST / Fashion-MNIST container), raw or gzip-compressed.
 *
 * Byte layout (all integers big-endian):
 *
 *   [0, 2)              two zero bytes
 *   [2]                 element type: 0x08 u8 (the only one knobs reads; 0x09 i8, 0x0B i16,
 *                       0x0C i32, 0x0D f32, 0x0E f64 exist and are refused by name)
 *   [3]                 rank R (1..IDX_MAX_RANK)
 *   [4, 4 + 4R)         R dimensions, u32 each
 *   [4 + 4R, EOF)       product(dims) elements, row-major; nothing after them
 *
 * So images are magic 0x00000803 with dims [N, rows, cols], labels 0x00000801 with dims [N].
 *
 * Untrusted input is bounded: the declared size is checked against IDX_MAX_BYTES, against the
 * file size (raw files) or the most a gzip stream of that size can inflate to (gzip files), before
 * the buffer is allocated; a gzip stream is inflated into that one buffer and stopped as soon as
 * it produces more than the header declared.
 */
import * as fsp from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { FormatError, IOError, KnobsError } from '../errors.js';
import { openRegularFile } from '../io/regular-file.js';

/** Largest element buffer the reader allocates (Fashion-MNIST train is 47 MB). */
export const IDX_MAX_BYTES = 1 << 30;
export const IDX_MAX_RANK = 8;
/** Deflate cannot inflate one compressed byte to more than ~1032 bytes. */
const DEFLATE_MAX_RATIO = 1032;

export const IDX_RULES = [
  'bad_magic',
  'unsupported_type',
  'bad_rank',
  'too_large',
  'truncated',
  'trailing_bytes',
  'gzip_corrupt',
  'wrong_rank',
  'count_mismatch',
  'label_out_of_range',
  'empty',
] as const;
export type IdxRule = (typeof IDX_RULES)[number];

const TYPE_NAMES: Record<number, string> = {
  0x08: 'u8',
  0x09: 'i8',
  0x0b: 'i16',
  0x0c: 'i32',
  0x0d: 'f32',
  0x0e: 'f64',
};

/** A decoded IDX file: u8 elements in row-major order. */
export interface IdxArray {
  readonly dtype: 'u8';
  readonly shape: readonly number[];
  readonly data: Uint8Array;
}

export function idxError(
  rule: IdxRule,
  path: string,
  message: string,
  details: Record<string, unknown> = {},
): FormatError {
  return new FormatError(rule, `${path}: invalid IDX file (${rule}): ${message}`, { path, ...details });
}

interface IdxHeader {
  readonly shape: number[];
  readonly headerBytes: number;
  readonly dataBytes: number;
}

/**
 * Parses the header once enough bytes are present. Returns null while `bytes` is too short to
 * know (the caller feeds more), or the header. Throws FormatError for a header that is wrong.
 */
function parseHeader(bytes: Uint8Array, path: string, maxBytes: number): IdxHeader | null {
  if (bytes.byteLength < 4) return null;
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    const magic = ((bytes[0]! << 24) | (bytes[1]! << 16) | (bytes[2]! << 8) | bytes[3]!) >>> 0;
    throw idxError(
      'bad_magic',
      path,
      `magic number 0x${magic.toString(16).padStart(8, '0')} does not start with two zero bytes; expected 0x00000803 (images) or 0x00000801 (labels). Is this an IDX file${bytes[0] === 0x1f && bytes[1] === 0x8b ? ' (it looks gzip-compressed twice)' : ''}?`,
      { magic },
    );
  }
  const type = bytes[2]!;
  if (type !== 0x08) {
    throw idxError(
      'unsupported_type',
      path,
      `element type 0x${type.toString(16).padStart(2, '0')} (${TYPE_NAMES[type] ?? 'unknown'}) is not supported; knobs reads u8 IDX files (type 0x08)`,
      { type },
    );
  }
  const rank = bytes[3]!;
  if (rank < 1 || rank > IDX_MAX_RANK)
    throw idxError('bad_rank', path, `rank ${rank} is outside 1..${IDX_MAX_RANK}`, { rank });
  const headerBytes = 4 + 4 * rank;
  if (bytes.byteLength < headerBytes) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, headerBytes);
  const shape: number[] = [];
  let total = 1;
  for (let i = 0; i < rank; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    shape.push(d);
    total *= d; // a double: exact while it stays under 2^53, and the limit below is far under that
  }
  if (total > maxBytes) {
    throw idxError(
      'too_large',
      path,
      `dims [${shape.join(', ')}] declare ${total} bytes, over the ${maxBytes}-byte limit (IDX_MAX_BYTES)`,
      { shape, declared: total, limit: maxBytes },
    );
  }
  return { shape, headerBytes, dataBytes: total };
}

/** Reads an IDX file, raw or gzip (detected by its first two bytes, 1f 8b). */
export async function readIdx(path: string, opts: { maxBytes?: number } = {}): Promise<IdxArray> {
  const maxBytes = opts.maxBytes ?? IDX_MAX_BYTES;
  let fh: fsp.FileHandle | null;
  try {
    fh = await openRegularFile(path, 'IDX file');
  } catch (err) {
    throw ioError(err, path);
  }
  let size: number;
  let prefix: Uint8Array;
  try {
    size = (await fh.stat()).size;
    prefix = new Uint8Array(Math.min(size, 4 + 4 * IDX_MAX_RANK));
    await readFully(fh, prefix, 0, path);
    if (prefix[0] === 0x1f && prefix[1] === 0x8b) {
      const opened = fh;
      fh = null; // the stream closes it
      return await readGzip(path, size, maxBytes, opened);
    }
    if (size === 0) throw idxError('empty', path, 'the file is empty');
    if (size < 4)
      throw idxError('truncated', path, `the file is ${size} bytes; the header alone needs at least 4`, {
        fileSize: size,
      });
    const header = parseHeader(prefix, path, maxBytes);
    if (!header)
      throw idxError(
        'truncated',
        path,
        `the file is ${size} bytes, shorter than its header (${4 + 4 * prefix[3]!} bytes)`,
        { fileSize: size },
      );
    const expected = header.headerBytes + header.dataBytes;
    if (size < expected) {
      throw idxError(
        'truncated',
        path,
        `dims [${header.shape.join(', ')}] need ${expected} bytes but the file has ${size}`,
        { shape: header.shape, expected, fileSize: size },
      );
    }
    if (size > expected) {
      throw idxError(
        'trailing_bytes',
        path,
        `dims [${header.shape.join(', ')}] need ${expected} bytes but the file has ${size} (${size - expected} extra)`,
        { shape: header.shape, expected, fileSize: size },
      );
    }
    const data = new Uint8Array(header.dataBytes);
    await readFully(fh, data, header.headerBytes, path);
    return { dtype: 'u8', shape: header.shape, data };
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

/** Parses an IDX file already in memory (not compressed). */
export function parseIdx(bytes: Uint8Array, path = '(bytes)', opts: { maxBytes?: number } = {}): IdxArray {
  if (bytes.byteLength === 0) throw idxError('empty', path, 'the file is empty');
  const header = parseHeader(bytes, path, opts.maxBytes ?? IDX_MAX_BYTES);
  if (!header) throw idxError('truncated', path, `${bytes.byteLength} bytes is shorter than the header`);
  const expected = header.headerBytes + header.dataBytes;
  if (bytes.byteLength !== expected) {
    const rule = bytes.byteLength < expected ? 'truncated' : 'trailing_bytes';
    throw idxError(
      rule,
      path,
      `dims [${header.shape.join(', ')}] need ${expected} bytes but there are ${bytes.byteLength}`,
      { shape: header.shape, expected, size: bytes.byteLength },
    );
  }
  return { dtype: 'u8', shape: header.shape, data: bytes.slice(header.headerBytes) };
}

/** Inflates the gzip file open as `handle` (which the stream closes). */
async function readGzip(
  path: string,
  compressedSize: number,
  maxBytes: number,
  handle: fsp.FileHandle,
): Promise<IdxArray> {
  // Header bytes accumulate here until parseHeader can decide; then `data` is allocated once.
  let head = new Uint8Array(0);
  let header: IdxHeader | null = null;
  let data: Uint8Array | null = null;
  let filled = 0;
  const feed = (chunk: Uint8Array): void => {
    if (!header) {
      const joined = new Uint8Array(head.byteLength + chunk.byteLength);
      joined.set(head);
      joined.set(chunk, head.byteLength);
      header = parseHeader(joined, path, maxBytes);
      if (!header) {
        head = joined;
        return;
      }
      const bound = compressedSize * DEFLATE_MAX_RATIO + 1024;
      if (header.dataBytes > bound) {
        throw idxError(
          'truncated',
          path,
          `dims [${header.shape.join(', ')}] declare ${header.dataBytes} bytes, more than a ${compressedSize}-byte gzip file can hold`,
          { shape: header.shape, declared: header.dataBytes, fileSize: compressedSize },
        );
      }
      data = new Uint8Array(header.dataBytes);
      chunk = joined.subarray(header.headerBytes);
    }
    if (filled + chunk.byteLength > data!.byteLength) {
      throw idxError(
        'trailing_bytes',
        path,
        `the decompressed data is longer than the ${header.headerBytes + header.dataBytes} bytes dims [${header.shape.join(', ')}] declare`,
        { shape: header.shape },
      );
    }
    data!.set(chunk, filled);
    filled += chunk.byteLength;
  };
  // pipeline() reports an error thrown by the consumer as a generic abort; keep ours to rethrow.
  let rejected: unknown = null;
  try {
    // From the handle already opened and checked as a regular file, not the name again.
    await pipeline(handle.createReadStream({ start: 0 }), createGunzip(), async (source: AsyncIterable<Buffer>) => {
      for await (const chunk of source) {
        try {
          feed(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        } catch (err) {
          rejected = err;
          throw err;
        }
      }
    });
  } catch (err) {
    if (rejected !== null) throw rejected;
    if (err instanceof KnobsError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'Z_BUF_ERROR')
      throw idxError('truncated', path, 'the gzip stream ends early (the download was cut short?)', {
        fileSize: compressedSize,
      });
    if (typeof code === 'string' && code.startsWith('Z_'))
      throw idxError('gzip_corrupt', path, `the gzip stream is corrupt: ${(err as Error).message}`, { zlib: code });
    throw ioError(err, path);
  }
  const h = header as IdxHeader | null;
  if (!h) {
    if (head.byteLength === 0) throw idxError('empty', path, 'the decompressed file is empty');
    throw idxError('truncated', path, `the decompressed file is ${head.byteLength} bytes, shorter than its header`);
  }
  if (filled < h.dataBytes) {
    throw idxError(
      'truncated',
      path,
      `dims [${h.shape.join(', ')}] need ${h.headerBytes + h.dataBytes} bytes but the decompressed file has ${h.headerBytes + filled}`,
      { shape: h.shape, expected: h.headerBytes + h.dataBytes, size: h.headerBytes + filled },
    );
  }
  return { dtype: 'u8', shape: h.shape, data: data! };
}

async function readFully(fh: fsp.FileHandle, target: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < target.byteLength) {
    const { bytesRead } = await fh
      .read(target, done, target.byteLength - done, position + done)
      .catch((err: unknown) => {
        throw ioError(err, path);
      });
    if (bytesRead === 0)
      throw idxError('truncated', path, `the file ended at byte ${position + done} while being read (it shrank?)`);
    done += bytesRead;
  }
}

function ioError(err: unknown, path: string): KnobsError {
  if (err instanceof KnobsError) return err;
  const e = err as NodeJS.ErrnoException;
  return new IOError(`cannot read ${path}: ${e.message}`, { path, ...(e.code ? { errno: e.code } : {}) });
}

// ---- images and labels -----------------------------------------------------------------------

/** Images [N, H, W] of u8 pixels, row-major. */
export interface IdxImages {
  readonly count: number;
  readonly height: number;
  readonly width: number;
  readonly pixels: Uint8Array;
}

/** Reads an IDX image file (magic 0x00000803, rank 3). */
export async function readIdxImages(path: string, opts: { maxBytes?: number } = {}): Promise<IdxImages> {
  const a = await readIdx(path, opts);
  if (a.shape.length !== 3) {
    throw idxError(
      'wrong_rank',
      path,
      `an image file has rank 3 [N, rows, cols] (magic 0x00000803); this one has rank ${a.shape.length} [${a.shape.join(', ')}]${a.shape.length === 1 ? ' — it looks like a label file' : ''}`,
      { shape: a.shape },
    );
  }
  const [count, height, width] = a.shape as [number, number, number];
  return { count, height, width, pixels: a.data };
}

/** Reads an IDX label file (magic 0x00000801, rank 1); checks labels < numClasses when given. */
export async function readIdxLabels(
  path: string,
  opts: { maxBytes?: number; numClasses?: number } = {},
): Promise<Uint8Array> {
  const a = await readIdx(path, opts);
  if (a.shape.length !== 1) {
    throw idxError(
      'wrong_rank',
      path,
      `a label file has rank 1 [N] (magic 0x00000801); this one has rank ${a.shape.length} [${a.shape.join(', ')}]${a.shape.length === 3 ? ' — it looks like an image file' : ''}`,
      { shape: a.shape },
    );
  }
  if (opts.numClasses !== undefined) {
    for (let i = 0; i < a.data.length; i++) {
      if (a.data[i]! >= opts.numClasses) {
        throw idxError(
          'label_out_of_range',
          path,
          `label ${a.data[i]} at index ${i} is outside 0..${opts.numClasses - 1}`,
          { index: i, label: a.data[i], numClasses: opts.numClasses },
        );
      }
    }
  }
  return a.data;
}
