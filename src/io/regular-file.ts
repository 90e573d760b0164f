/**
 * Opening input files so that what is not a regular file is refused at once.
 *
 * A plain open() of a FIFO blocks until a writer appears (forever, and it holds one of libuv's
 * few threads while it waits); reading a character device (/dev/zero) never ends; a directory
 * or a socket fails late with an unhelpful errno. So every file knobs reads is opened here:
 * non-blocking (a FIFO opens at once), then fstat on the open descriptor — the file we will read,
 * not whatever the name points at a moment later, so there is no race — and anything but a
 * regular file is closed and refused with an IOError naming the path and what it is.
 * O_NONBLOCK does not change reads of regular files.
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { IOError } from '../errors.js';
import { asIOError } from './atomic.js';

/** Flags for reading: O_NONBLOCK and O_NOCTTY where the platform has them (not on Windows). */
const READ_FLAGS = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0) | (constants.O_NOCTTY ?? 0);

type Stats = Awaited<ReturnType<fsp.FileHandle['stat']>>;

function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'not a regular file';
}

function notRegular(path: string, kind: string, what: string): IOError {
  return new IOError(`${path} is ${kind}, not a regular file; give the path of a regular ${what}`, { path, kind });
}

/** Opens `path` for reading; refuses (IOError) anything but a regular file. `what` names the file in the message ("file", "recipe", …). */
export async function openRegularFile(path: string, what = 'file'): Promise<fsp.FileHandle> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(path, READ_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Linux answers ENXIO for a socket; EISDIR comes from platforms that refuse to open directories.
    if (code === 'ENXIO') throw notRegular(path, 'a socket or a device without a driver', what);
    if (code === 'EISDIR') throw notRegular(path, 'a directory', what);
    throw asIOError(err, path, 'open');
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw notRegular(path, kindOf(st), what);
  } catch (err) {
    await fh.close().catch(() => undefined);
    throw asIOError(err, path, 'stat');
  }
  return fh;
}

/** Refuses (IOError) a path that is not a directory: missing, through a file (ENOTDIR), or a file itself. */
export async function checkDirectory(path: string, what = 'directory'): Promise<void> {
  let st: Stats;
  try {
    st = await fsp.stat(path);
  } catch (err) {
    throw asIOError(err, path, 'stat');
  }
  if (!st.isDirectory())
    throw new IOError(
      `${path} is ${st.isFile() ? 'a file' : kindOf(st)}, not a directory; give the path of a ${what}`,
      { path },
    );
}

/** Refuses (IOError) a path that is not a regular file, without reading it; for readers that open by name themselves. */
export async function checkRegularFile(path: string, what = 'file'): Promise<void> {
  await (await openRegularFile(path, what)).close();
}

/**
 * Reads a whole regular file of at most `maxBytes` (checked on the open descriptor before a byte
 * is read, so /dev/zero or a huge file never turns into an unbounded allocation).
 */
export async function readRegularFile(path: string, maxBytes: number, what = 'file'): Promise<Uint8Array> {
  const fh = await openRegularFile(path, what);
  try {
    const { size } = await fh.stat();
    if (size > maxBytes) {
      throw new IOError(
        `${path} is ${size} bytes, more than the ${maxBytes} a ${what} may have; is it the right file?`,
        { path, size, maxBytes },
      );
    }
    const bytes = new Uint8Array(size);
    let done = 0;
    while (done < size) {
      const { bytesRead } = await fh.read(bytes, done, size - done, done);
      if (bytesRead === 0) break; // shrank while we read: return what is there
      done += bytesRead;
    }
    return done === size ? bytes : bytes.subarray(0, done);
  } catch (err) {
    throw asIOError(err, path, 'read');
  } finally {
    await fh.close().catch(() => undefined);
  }
}

const HASH_CHUNK = 4 * 1024 * 1024;

/** SHA-256 (hex) and size of a regular file, read in chunks (any size, constant memory). */
export async function hashRegularFile(path: string, what = 'file'): Promise<{ size: number; sha256: string }> {
  const fh = await openRegularFile(path, what);
  try {
    const hash = createHash('sha256');
    const buf = new Uint8Array(HASH_CHUNK);
    let size = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.byteLength, size);
      if (bytesRead === 0) break;
      hash.update(buf.subarray(0, bytesRead));
      size += bytesRead;
    }
    return { size, sha256: hash.digest('hex') };
  } catch (err) {
    throw asIOError(err, path, 'read');
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** readRegularFile as UTF-8 text. */
export async function readRegularText(path: string, maxBytes: number, what = 'file'): Promise<string> {
  return new TextDecoder().decode(await readRegularFile(path, maxBytes, what));
}
