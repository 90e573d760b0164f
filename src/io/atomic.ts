/**
 * Atomic file writes: a reader sees either the old file or the whole new one, never a part.
 *
 * The protocol, in order:
 *   1. open a temporary name in the same directory (`.NAME.<pid>.<random>.tmp`, created exclusively),
 *   2. write every byte, looping because a write may write fewer bytes than asked,
 *   3. fsync the file, so its bytes are on disk before its name is,
 *   4. rename it over the target (atomic within one file system, which is why the temp file
 *      lives in the same directory),
 *   5. fsync the directory, so the rename itself survives a power cut.
 * On failure the temporary file is removed and the target is untouched.
 *
 * Every file-system call goes through a small `WriteFs` adapter. The default one is node:fs;
 * tests pass one that fails or writes short to prove the error paths (disk full, short writes).
 */
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { IOError, KnobsError } from '../errors.js';

/** The part of a FileHandle the writers use. */
export interface WritableFile {
  write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesWritten: number }>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** File-system calls that writers make; swap it out in tests to inject failures. */
export interface WriteFs {
  /** Creates a new file for writing; fails if it exists (flags 'wx'). */
  create(path: string): Promise<WritableFile>;
  rename(from: string, to: string): Promise<void>;
  mkdir(path: string): Promise<void>;
  /** Removes a file or a directory tree; no error when it is already gone. */
  remove(path: string): Promise<void>;
  /** Flushes a directory's entries (after create/rename/remove inside it). */
  syncDir(path: string): Promise<void>;
}

/** node:fs, as used in production. */
export const nodeWriteFs: WriteFs = {
  create: (path) => fsp.open(path, 'wx'),
  rename: (from, to) => fsp.rename(from, to),
  mkdir: async (path) => {
    await fsp.mkdir(path);
  },
  remove: (path) => fsp.rm(path, { recursive: true, force: true }),
  syncDir,
};

/** fs writes take at most 2^31 − 1 bytes per call; stay well under. */
const IO_CHUNK = 1 << 30;

/**
 * Writes all of `bytes` at `position`, looping over short writes. Returns the end position.
 * A write that makes no progress at all is treated as a full disk rather than looping forever.
 */
export async function writeAll(
  file: WritableFile,
  bytes: Uint8Array,
  position: number,
  path = '(file)',
): Promise<number> {
  let done = 0;
  while (done < bytes.byteLength) {
    const length = Math.min(bytes.byteLength - done, IO_CHUNK);
    let written: number;
    try {
      ({ bytesWritten: written } = await file.write(bytes, done, length, position + done));
    } catch (err) {
      throw asIOError(err, path, 'write');
    }
    if (!(written > 0)) {
      throw new IOError(
        `${path}: write made no progress at byte ${position + done} (${bytes.byteLength - done} bytes left); the disk may be full`,
        { path, position: position + done },
      );
    }
    done += written;
  }
  return position + done;
}

/**
 * fsyncs a directory so that the names created, renamed or removed in it are durable.
 * Platforms that cannot open a directory (Windows) or fsync one (some network file systems)
 * get rename's atomicity without that durability; there is nothing better to do there.
 */
export async function syncDir(path: string): Promise<void> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(path, 'r');
  } catch {
    return;
  }
  try {
    await handle.sync();
  } catch {
    // EINVAL/EPERM on file systems without directory fsync.
  } finally {
    await handle.close();
  }
}

/** The temporary name `writeFileAtomic` uses next to `path`. `isAtomicTempName` recognises it. */
export function atomicTempName(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

const TEMP_NAME = /^\..+\.(\d+)\.[0-9a-f]{12}\.tmp$/;

/** Whether a bare file name is one of our temporary names; returns the writer's pid, or null. */
export function atomicTempPid(name: string): number | null {
  const m = TEMP_NAME.exec(name);
  return m ? Number(m[1]) : null;
}

export interface AtomicWriteOptions {
  /** The file-system adapter (default node:fs). */
  fs?: WriteFs;
  /** fsync the parent directory after the rename (default true). */
  syncParent?: boolean;
}

/**
 * Writes `data` (bytes, a UTF-8 string, or byte chunks written back to back: a list, or an
 * iterable that makes each chunk as it is asked for, so a large file need not be in memory at
 * once) to `path` atomically. Throws IOError (with `details.path`) on failure — also when making a
 * chunk throws — leaving any existing file intact.
 */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array | string | Iterable<Uint8Array> | AsyncIterable<Uint8Array>,
  opts: AtomicWriteOptions = {},
): Promise<void> {
  const fs = opts.fs ?? nodeWriteFs;
  const chunks =
    typeof data === 'string' ? [new TextEncoder().encode(data)] : data instanceof Uint8Array ? [data] : data;
  const temp = atomicTempName(path);
  let file: WritableFile | null = null;
  try {
    file = await fs.create(temp);
    let position = 0;
    for await (const chunk of chunks) position = await writeAll(file, chunk, position, path);
    await file.sync();
    const f = file;
    file = null;
    await f.close();
    await fs.rename(temp, path);
  } catch (err) {
    await file?.close().catch(() => undefined);
    const stuck = await fs.remove(temp).then(
      () => null,
      (e: unknown) => e,
    );
    const typed = asIOError(err, path, 'write');
    if (stuck === null) throw typed;
    throw new IOError(
      `${typed.message}; the temporary file ${temp} could not be removed either (${(stuck as Error)?.message ?? String(stuck)}): remove it by hand`,
      { ...typed.details, leftover: temp },
    );
  }
  if (opts.syncParent !== false) {
    await fs.syncDir(dirname(path)).catch((err: unknown) => {
      throw asIOError(err, dirname(path), 'fsync the directory');
    });
  }
}

/** What a file-system errno means for the user, and what to do about it. */
const ERRNO_HINTS: Readonly<Record<string, string>> = {
  ENOSPC: 'the disk is full; free space and retry',
  EDQUOT: 'disk quota exceeded; free space and retry',
  EACCES:
    'permission denied; check the owner and mode of the path and its directories (ls -ld), or run as a user who may access it',
  EPERM:
    'operation not permitted; check the permissions and attributes of the path (ls -ld, lsattr), or run as a user who may change it',
  EROFS: 'the file system is read-only; choose a path on a writable one',
  ENOENT: 'no such file or directory; check the path',
  ENOTDIR: 'a part of the path is a file, not a directory; choose another path',
  EISDIR: 'it is a directory; give a file',
  ENAMETOOLONG: 'the path is too long; choose a shorter one',
  ELOOP: 'too many symbolic links; check the path',
  EMFILE: 'too many open files; raise the limit (ulimit -n) or close other programs',
  ENFILE: 'too many open files in the system; retry later',
  EIO: 'an I/O error from the device; check the disk',
  EBUSY: 'the path is busy (a mount point, or in use); retry or choose another path',
  ENXIO: 'no device or reader behind it (a socket or a FIFO); give a regular file',
};

/** Wraps a Node error as an IOError naming the path, the action and what to do; KnobsErrors pass through. */
export function asIOError(err: unknown, path: string, action: string): KnobsError {
  if (err instanceof KnobsError) return err;
  const e = err as NodeJS.ErrnoException;
  const code = typeof e?.code === 'string' ? e.code : undefined;
  const hint = code !== undefined && Object.hasOwn(ERRNO_HINTS, code) ? ` (${ERRNO_HINTS[code]})` : '';
  return new IOError(`cannot ${action} ${path}: ${e?.message ?? String(err)}${hint}`, {
    path,
    action,
    ...(code ? { errno: code } : {}),
  });
}

/**
 * Creates the new directory `dir` whole: `fill` writes into a staging directory next to it, which
 * is then renamed into place (and the parent fsynced). On failure the staging directory is
 * removed and nothing is left at `dir`. `dir` must not exist yet.
 */
export async function writeDirectoryAtomic(dir: string, fill: (staging: string) => Promise<void>): Promise<void> {
  const target = resolve(dir);
  await fsp.mkdir(dirname(target), { recursive: true }).catch((err: unknown) => {
    throw asIOError(err, dir, 'create the parent of');
  });
  const staging = atomicTempName(target);
  try {
    await fsp.mkdir(staging);
    await fill(staging);
    await fsp.rename(staging, target);
  } catch (err) {
    await fsp.rm(staging, { recursive: true, force: true });
    throw asIOError(err, dir, 'write');
  }
  await syncDir(dirname(target));
}
