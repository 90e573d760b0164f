/**
 * Reading the files of a bundle without being fooled by the file system: each file is opened with
 * O_NOFOLLOW (a symbolic link swapped in for a file is refused by the kernel, not by an lstat that
 * could be stale a moment later) and checked to be a regular file on the open descriptor. Hashing
 * streams through one buffer, so a file of any size is hashed in constant memory.
 */
import { createHash } from 'node:crypto';
import { constants, read } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { FormatError, IOError } from '../errors.js';
import { asIOError } from '../io/atomic.js';

const OPEN_FLAGS = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0);

/** Bytes read per call when hashing: large enough that the hash, not the calls, sets the speed. */
export const HASH_CHUNK_BYTES = 8 << 20;

/** Opens `path` (named `name` inside the bundle) for reading; a link or a non-regular file is refused. */
export async function openBundleFile(path: string, name: string): Promise<fsp.FileHandle> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(path, OPEN_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw symlinkError(path, name);
    if (code === 'ENOENT') {
      throw new FormatError(
        'bundle_missing',
        `${path} is missing: the signature lists ${name}; restore it from the release`,
        {
          path,
          file: name,
        },
      );
    }
    throw asIOError(err, path, 'open');
  }
  const st = await fh.stat().catch(async (err: unknown) => {
    await fh.close();
    throw asIOError(err, path, 'stat');
  });
  if (!st.isFile()) {
    await fh.close();
    throw new FormatError('bundle_not_regular', `${path} is not a regular file; a bundle holds only regular files`, {
      path,
      file: name,
    });
  }
  return fh;
}

export function symlinkError(path: string, name: string): FormatError {
  return new FormatError(
    'bundle_symlink',
    `${path} is a symbolic link; a bundle holds only regular files (a link could point anywhere after signing): copy the release again`,
    { path, file: name },
  );
}

export interface FileDigest {
  sha256: string;
  size: number;
}

/**
 * SHA-256 of an open file (its descriptor), streamed from its start to its end. Two buffers take
 * turns: the next chunk is read (on libuv's thread pool) while this one is hashed, so reading
 * costs no extra time. `buffers` lets a caller hashing many files reuse the pair. Read errors are
 * thrown as the file system gave them (the caller names the file): hash workers run this too, and
 * send the errno back.
 */
export async function hashDescriptor(
  fd: number,
  buffers: [Uint8Array, Uint8Array] = [new Uint8Array(HASH_CHUNK_BYTES), new Uint8Array(HASH_CHUNK_BYTES)],
): Promise<FileDigest> {
  const hash = createHash('sha256');
  const readAt = (buf: Uint8Array, position: number): Promise<number> =>
    new Promise((resolve, reject) =>
      read(fd, buf, 0, buf.byteLength, position, (err, bytesRead) => (err ? reject(err) : resolve(bytesRead))),
    );
  let size = 0;
  let turn = 0;
  let pending = readAt(buffers[0], 0);
  for (;;) {
    const bytesRead = await pending;
    if (bytesRead === 0) break;
    const current = buffers[turn]!;
    turn ^= 1;
    pending = readAt(buffers[turn]!, size + bytesRead);
    hash.update(current.subarray(0, bytesRead));
    size += bytesRead;
  }
  return { sha256: hash.digest('hex'), size };
}

/**
 * The whole of an open file in memory, with its SHA-256 computed over exactly those bytes: what
 * the caller then uses is what was hashed. A file that grows or shrinks while being read is refused.
 */
export async function readAndHash(fh: fsp.FileHandle, path: string): Promise<{ bytes: Uint8Array; sha256: string }> {
  const { size } = await fh.stat();
  if (size > Number.MAX_SAFE_INTEGER) throw new IOError(`${path} is too large to read`, { path, size });
  const bytes = new Uint8Array(size);
  const hash = createHash('sha256');
  let done = 0;
  while (done < size) {
    const length = Math.min(size - done, 1 << 30);
    const { bytesRead } = await fh.read(bytes, done, length, done).catch((err: unknown) => {
      throw asIOError(err, path, 'read');
    });
    if (bytesRead === 0) break;
    hash.update(bytes.subarray(done, done + bytesRead));
    done += bytesRead;
  }
  const extra = await fh.read(new Uint8Array(1), 0, 1, size);
  if (done !== size || extra.bytesRead !== 0) {
    throw new FormatError('bundle_changed', `${path} changed size while it was read; nothing was loaded`, { path });
  }
  return { bytes, sha256: hash.digest('hex') };
}
