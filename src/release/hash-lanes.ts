/**
 * Hashing the files of a bundle on several CPUs. SHA-256 of one file is sequential (one CPU, ~1.4
 * GB/s with SHA-NI), so a bundle of several files is spread over lanes: the main thread is one,
 * each further lane a worker thread. Every file is opened (and checked) on the main thread and
 * read once, by the lane that hashes it; a lane takes the next file when it is done with one, so
 * shards of unequal sizes still keep every lane busy. Memory: two 8 MiB buffers per lane.
 */
import { Worker } from 'node:worker_threads';
import { asIOError } from '../io/atomic.js';
import { type FileDigest, HASH_CHUNK_BYTES, hashDescriptor } from './files.js';
import type { HashReply, HashRequest } from './hash-worker.js';

/** Below this many bytes per extra lane, starting a worker (~30 ms) costs more than it saves. */
export const BYTES_PER_WORKER = 64 << 20;

/** How many lanes to hash `sizes` with, at most `threads`. */
export function laneCount(sizes: readonly number[], threads: number): number {
  const total = sizes.reduce((sum, s) => sum + s, 0);
  const big = sizes.filter((s) => s >= BYTES_PER_WORKER).length;
  return Math.max(1, Math.min(threads, big, Math.floor(total / BYTES_PER_WORKER)));
}

/** One lane: hashes one open file at a time. */
interface Lane {
  hash(fd: number): Promise<FileDigest>;
  close(): Promise<void>;
}

function mainThreadLane(): Lane {
  const buffers: [Uint8Array, Uint8Array] = [new Uint8Array(HASH_CHUNK_BYTES), new Uint8Array(HASH_CHUNK_BYTES)];
  return { hash: (fd) => hashDescriptor(fd, buffers), close: async () => {} };
}

function workerLane(): Lane {
  const worker = new Worker(new URL('./hash-worker.js', import.meta.url));
  let waiting: { resolve: (d: FileDigest) => void; reject: (err: unknown) => void } | undefined;
  let dead: unknown;
  const fail = (err: unknown): void => {
    dead ??= err;
    waiting?.reject(err);
    waiting = undefined;
  };
  worker.on('message', (reply: HashReply) => {
    const w = waiting;
    waiting = undefined;
    if ('error' in reply) w?.reject(Object.assign(new Error(reply.error.message), { code: reply.error.code }));
    else w?.resolve(reply);
  });
  worker.on('error', fail);
  worker.on('exit', (code) => fail(new Error(`the hash worker exited (code ${code})`)));
  return {
    hash: (fd) =>
      dead !== undefined
        ? Promise.reject(dead)
        : new Promise((resolve, reject) => {
            waiting = { resolve, reject };
            worker.postMessage({ fd } satisfies HashRequest);
          }),
    close: async () => {
      await worker.terminate();
    },
  };
}

/** A file to hash: `open` opens and checks it; `check` judges its digest (and throws to stop everything). */
export interface HashJob<T> {
  path: string;
  open(): Promise<{ fd: number; close(): Promise<void> }>;
  check(digest: FileDigest): T;
}

/**
 * Runs the jobs on `lanes` lanes and returns their results in the jobs' order. The first failure
 * stops the lanes from taking more files; it is thrown once every lane has closed its file.
 */
export async function hashFiles<T>(jobs: readonly HashJob<T>[], lanes: number): Promise<T[]> {
  const results: T[] = new Array<T>(jobs.length);
  const all = [mainThreadLane(), ...Array.from({ length: Math.max(0, lanes - 1) }, workerLane)];
  let next = 0;
  let failure: { err: unknown } | undefined;
  const drive = async (lane: Lane): Promise<void> => {
    while (failure === undefined && next < jobs.length) {
      const i = next++;
      const job = jobs[i]!;
      try {
        const file = await job.open();
        try {
          const digest = await lane.hash(file.fd).catch((err: unknown) => {
            throw asIOError(err, job.path, 'read');
          });
          results[i] = job.check(digest);
        } finally {
          await file.close();
        }
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  try {
    await Promise.all(all.map(drive));
  } finally {
    await Promise.all(all.map((lane) => lane.close()));
  }
  if (failure !== undefined) throw failure.err;
  return results;
}
