/**
 * A hash worker (see hash-lanes.ts): hashes the files whose descriptors the main thread opened and
 * sends back their digests, or the errno of a failed read. Descriptors belong to the process, so
 * the worker reads the very file the main thread opened and checked.
 */
import { parentPort } from 'node:worker_threads';
import { HASH_CHUNK_BYTES, hashDescriptor } from './files.js';

export interface HashRequest {
  fd: number;
}

export type HashReply = { sha256: string; size: number } | { error: { message: string; code?: string } };

const port = parentPort!;
const buffers: [Uint8Array, Uint8Array] = [new Uint8Array(HASH_CHUNK_BYTES), new Uint8Array(HASH_CHUNK_BYTES)];

port.on('message', (request: HashRequest) => {
  hashDescriptor(request.fd, buffers).then(
    (digest) => port.postMessage(digest satisfies HashReply),
    (err: NodeJS.ErrnoException) =>
      port.postMessage({ error: { message: err.message, code: err.code } } satisfies HashReply),
  );
});
