/**
 * The sealed-model format (docs/sealing.md): a directory holding a manifest, knobs-sealed.json,
 * and one ciphertext blob per sealed file, `<id>.sealed`.
 *
 * A blob is the file's chunks in order, each `ciphertext ‖ 16-byte GCM tag`. Chunk i of file f is
 * AES-256-GCM under f's own random data key, with nonce `0x00000000 ‖ u64be(i)` (unique: a data key
 * encrypts exactly one file, once) and authenticated data
 *
 *   "knobs-sealed/1 chunk\0" ‖ header digest (32) ‖ u32be(file id) ‖ u64be(i) ‖ u8(last chunk ? 1 : 0)
 *
 * so a chunk moved to another index, another file or past the end no longer authenticates, and a
 * blob cut at a chunk boundary lacks the chunk flagged last. The header digest is SHA-256 of what
 * the manifest says about the files (names, sizes, chunk sizes, ids) and the bundle id; the master
 * key's wrapped data keys and MACs are outside it, so rotating the master key leaves every blob as
 * it is. An empty file still has one (empty, last) chunk.
 */
import { createHash } from 'node:crypto';
import { FormatError } from '../errors.js';

export const MANIFEST_NAME = 'knobs-sealed.json';
export const FORMAT = 'knobs-sealed';
export const VERSION = 1;
export const CIPHER = 'aes-256-gcm';

export const KEY_BYTES = 32;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
/** A wrapped data key: nonce ‖ encrypted key ‖ tag. */
export const WRAPPED_KEY_BYTES = NONCE_BYTES + KEY_BYTES + TAG_BYTES;

export const DEFAULT_CHUNK_SIZE = 1 << 20;
export const MIN_CHUNK_SIZE = 1 << 10;
export const MAX_CHUNK_SIZE = 64 << 20;
/** A manifest is a few hundred bytes per file; these bound what is read and parsed before a key is checked. */
export const MAX_MANIFEST_BYTES = 4 << 20;
export const MAX_FILES = 4096;

export interface SealedFile {
  id: number;
  /** The file's name in the model directory (config.json, model.safetensors, …). */
  name: string;
  /** Plaintext bytes. */
  size: number;
  chunkSize: number;
  wrappedKey: Uint8Array;
}

export interface Manifest {
  /** 16 random bytes (hex), fixed at sealing: binds every chunk to this bundle. */
  bundle: string;
  /** HMAC of the bundle id under the master key: tells a wrong key from a damaged file. */
  keyCheck: string;
  /** HMAC of the header digest under the master key: an edited manifest is refused before any blob is read. */
  headerMac: string;
  files: SealedFile[];
}

export const blobName = (id: number): string => `${id}.sealed`;

export const chunkCount = (f: Pick<SealedFile, 'size' | 'chunkSize'>): number =>
  Math.max(1, Math.ceil(f.size / f.chunkSize));

/** A blob's exact size: the plaintext plus one tag per chunk. */
export const blobSize = (f: Pick<SealedFile, 'size' | 'chunkSize'>): number => f.size + TAG_BYTES * chunkCount(f);

/** SHA-256 of the bundle id and every file's id, name, size and chunk size. */
export function headerDigest(m: Pick<Manifest, 'bundle' | 'files'>): Buffer {
  const header = [FORMAT, VERSION, CIPHER, m.bundle, m.files.map((f) => [f.id, f.name, f.size, f.chunkSize])];
  return createHash('sha256').update(JSON.stringify(header)).digest();
}

const CHUNK_LABEL = Buffer.from('knobs-sealed/1 chunk\0');
const KEY_LABEL = Buffer.from('knobs-sealed/1 data key\0');

export function chunkAad(digest: Uint8Array, id: number, index: number, last: boolean): Buffer {
  const tail = Buffer.alloc(13);
  tail.writeUInt32BE(id, 0);
  tail.writeBigUInt64BE(BigInt(index), 4);
  tail.writeUInt8(last ? 1 : 0, 12);
  return Buffer.concat([CHUNK_LABEL, digest, tail]);
}

export function chunkNonce(index: number): Buffer {
  const nonce = Buffer.alloc(NONCE_BYTES);
  nonce.writeBigUInt64BE(BigInt(index), 4);
  return nonce;
}

/** What a wrapped data key is bound to: the bundle's header and the file's id. */
export function keyAad(digest: Uint8Array, id: number): Buffer {
  const idBytes = Buffer.alloc(4);
  idBytes.writeUInt32BE(id, 0);
  return Buffer.concat([KEY_LABEL, digest, idBytes]);
}

export function manifestJson(m: Manifest): string {
  const files = m.files.map((f) => ({
    id: f.id,
    name: f.name,
    size: f.size,
    chunk_size: f.chunkSize,
    wrapped_key: Buffer.from(f.wrappedKey).toString('base64'),
  }));
  const json = {
    format: FORMAT,
    version: VERSION,
    cipher: CIPHER,
    bundle: m.bundle,
    key_check: m.keyCheck,
    header_mac: m.headerMac,
    files,
  };
  return `${JSON.stringify(json, null, 2)}\n`;
}

/** Parses and checks a manifest; anything off is a FormatError (`seal_bad_manifest`) naming `path` and the field. */
export function parseManifest(text: string, path: string): Manifest {
  const bad = (what: string): FormatError =>
    new FormatError(
      'seal_bad_manifest',
      `${path}: ${what}; it is not a manifest knobs seal wrote, or it was edited (restore the sealed directory from a good copy)`,
      { file: path },
    );
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw bad('not JSON');
  }
  const obj = asObject(json, 'the manifest', bad);
  exactKeys(obj, ['format', 'version', 'cipher', 'bundle', 'key_check', 'header_mac', 'files'], 'the manifest', bad);
  if (obj.format !== FORMAT) throw bad(`format must be "${FORMAT}"`);
  if (obj.version !== VERSION)
    throw bad(`version ${JSON.stringify(obj.version)} is not ${VERSION}, the one this knobs reads`);
  if (obj.cipher !== CIPHER) throw bad(`cipher must be "${CIPHER}"`);
  const hex = (field: string, bytes: number): string => {
    const v = obj[field];
    if (typeof v !== 'string' || !new RegExp(`^[0-9a-f]{${bytes * 2}}$`).test(v))
      throw bad(`${field} must be ${bytes} bytes in lowercase hex`);
    return v;
  };
  const bundle = hex('bundle', 16);
  const keyCheck = hex('key_check', 32);
  const headerMac = hex('header_mac', 32);
  if (!Array.isArray(obj.files) || obj.files.length === 0 || obj.files.length > MAX_FILES)
    throw bad(`files must be a list of 1 to ${MAX_FILES} entries`);
  const names = new Set<string>();
  const files = obj.files.map((entry: unknown, i: number): SealedFile => {
    const where = `files[${i}]`;
    const f = asObject(entry, where, bad);
    exactKeys(f, ['id', 'name', 'size', 'chunk_size', 'wrapped_key'], where, bad);
    if (f.id !== i) throw bad(`${where}.id must be ${i}`);
    if (typeof f.name !== 'string' || f.name === '' || f.name.length > 255 || names.has(f.name))
      throw bad(`${where}.name must be a unique file name of 1 to 255 characters`);
    names.add(f.name);
    if (!Number.isSafeInteger(f.size) || (f.size as number) < 0) throw bad(`${where}.size must be an integer >= 0`);
    const chunkSize = f.chunk_size;
    if (
      !Number.isSafeInteger(chunkSize) ||
      (chunkSize as number) < MIN_CHUNK_SIZE ||
      (chunkSize as number) > MAX_CHUNK_SIZE
    )
      throw bad(`${where}.chunk_size must be an integer in [${MIN_CHUNK_SIZE}, ${MAX_CHUNK_SIZE}]`);
    const wrapped = typeof f.wrapped_key === 'string' ? Buffer.from(f.wrapped_key, 'base64') : null;
    if (!wrapped || wrapped.byteLength !== WRAPPED_KEY_BYTES || wrapped.toString('base64') !== f.wrapped_key)
      throw bad(`${where}.wrapped_key must be ${WRAPPED_KEY_BYTES} bytes in base64`);
    return { id: i, name: f.name, size: f.size as number, chunkSize: chunkSize as number, wrappedKey: wrapped };
  });
  return { bundle, keyCheck, headerMac, files };
}

function asObject(v: unknown, where: string, bad: (w: string) => Error): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(`${where} must be a JSON object`);
  return v as Record<string, unknown>;
}

function exactKeys(
  obj: Record<string, unknown>,
  keys: readonly string[],
  where: string,
  bad: (w: string) => Error,
): void {
  const extra = Object.keys(obj).filter((k) => !keys.includes(k));
  const missing = keys.filter((k) => !Object.hasOwn(obj, k));
  if (extra.length > 0) throw bad(`${where} has unknown field(s) ${extra.map((k) => JSON.stringify(k)).join(', ')}`);
  if (missing.length > 0) throw bad(`${where} lacks ${missing.join(', ')}`);
}
