/**
 * ByteSource: random-access reads of a sequence of bytes, wherever they live — a file, or a
 * buffer in memory (weights decrypted into memory, a file fetched whole). Readers of weight
 * formats take a ByteSource and read only the ranges they need, so a model loads tensor by tensor
 * without ever holding a whole file.
 */
import type { FileHandle } from 'node:fs/promises';
import { ArgumentError, FormatError } from '../errors.js';
import { asIOError } from './atomic.js';
import { openRegularFile } from './regular-file.js';

export interface ByteSource {
  /** Names the bytes in messages: a file's path, or a label for memory. */
  readonly name: string;
  /** Total bytes. */
  readonly size: number;
  /** `length` bytes from `offset`. The result may be a view of the source's memory: do not write to it. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Fills `target` with the bytes from `offset`: lets a reader place bytes straight into their final home. */
  readInto(target: Uint8Array, offset: number): Promise<void>;
  /** Releases the file handle (if any); reads after close() fail. Calling it twice is harmless. */
  close(): Promise<void>;
}

/** fs reads take at most 2^31 − 1 bytes per call; stay well under. */
const IO_CHUNK = 1 << 30;

/** Throws (ArgumentError) unless [offset, offset + length) lies within the source. */
export function checkRange(source: { name: string; size: number }, offset: number, length: number): void {
  if (
    !Number.isSafeInteger(offset) ||
    !Number.isSafeInteger(length) ||
    offset < 0 ||
    length < 0 ||
    offset + length > source.size
  ) {
    throw new ArgumentError(
      `${source.name}: cannot read ${length} bytes at offset ${offset}; it has ${source.size} bytes`,
      { name: source.name, offset, length, size: source.size },
    );
  }
}

function checkOpen(closed: boolean, name: string): void {
  if (closed) throw new ArgumentError(`${name}: read after close()`);
}

/**
 * A file, read by ranges through one handle (files over 2 GiB are fine). What is not a regular
 * file (a FIFO, a device, a directory) is refused on the open handle, so reads never block.
 */
export async function openFileSource(path: string): Promise<ByteSource> {
  const fh: FileHandle = await openRegularFile(path, 'weights file');
  let size: number;
  try {
    size = (await fh.stat()).size;
  } catch (err) {
    await fh.close();
    throw asIOError(err, path, 'read');
  }
  let closed = false;
  const source: ByteSource = {
    name: path,
    size,
    async read(offset, length) {
      checkOpen(closed, path);
      checkRange(source, offset, length);
      const bytes = new Uint8Array(length);
      await readExactly(fh, bytes, offset, path);
      return bytes;
    },
    async readInto(target, offset) {
      checkOpen(closed, path);
      checkRange(source, offset, target.byteLength);
      await readExactly(fh, target, offset, path);
    },
    async close() {
      if (closed) return;
      closed = true;
      await fh.close();
    },
  };
  return source;
}

/** Bytes already in memory. Reads are views, not copies. */
export function memorySource(bytes: Uint8Array, name = '(memory)'): ByteSource {
  let closed = false;
  const source: ByteSource = {
    name,
    size: bytes.byteLength,
    async read(offset, length) {
      checkOpen(closed, name);
      checkRange(source, offset, length);
      return bytes.subarray(offset, offset + length);
    },
    async readInto(target, offset) {
      checkOpen(closed, name);
      checkRange(source, offset, target.byteLength);
      target.set(bytes.subarray(offset, offset + target.byteLength));
    },
    async close() {
      closed = true;
    },
  };
  return source;
}

/** Fills `target` from `position`, looping over short reads; a file that shrank is truncated. */
async function readExactly(fh: FileHandle, target: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < target.byteLength) {
    const length = Math.min(target.byteLength - done, IO_CHUNK);
    const { bytesRead } = await fh.read(target, done, length, position + done).catch((err: unknown) => {
      throw asIOError(err, path, 'read');
    });
    if (bytesRead === 0) {
      throw new FormatError(
        'truncated',
        `${path}: the file ended at byte ${position + done} while ${target.byteLength - done} more bytes were expected; it changed or was cut short while being read`,
        { path, position: position + done },
      );
    }
    done += bytesRead;
  }
}
