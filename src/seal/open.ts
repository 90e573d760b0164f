/**
 * Opening a sealed directory: its manifest checked against the master key, then every file
 * decrypted chunk by chunk into memory. Nothing plaintext is written anywhere; a file is returned
 * only once every one of its chunks has authenticated.
 */
import { createDecipheriv } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError, KeyError, KnobsError } from '../errors.js';
import { type ByteSource, openFileSource } from '../io/byte-source.js';
import { readRegularText } from '../io/regular-file.js';
import {
  CIPHER,
  MANIFEST_NAME,
  MAX_MANIFEST_BYTES,
  type Manifest,
  type SealedFile,
  TAG_BYTES,
  blobName,
  blobSize,
  chunkAad,
  chunkCount,
  chunkNonce,
  headerDigest,
  parseManifest,
} from './format.js';
import { type MasterKeys, deriveKeys, headerMacOf, keyCheckOf, sameMac, unwrapKey } from './keys.js';

/** True when `dir` holds a sealed model (a knobs-sealed.json manifest). */
export async function isSealedDir(dir: string): Promise<boolean> {
  return fsp.lstat(join(dir, MANIFEST_NAME)).then(
    (st) => st.isFile(),
    () => false,
  );
}

export interface CheckedManifest {
  path: string;
  manifest: Manifest;
  digest: Buffer;
  keys: MasterKeys;
}

/**
 * Reads the manifest of `dir` and checks it against `masterKey`: a wrong key is a KeyError; a
 * manifest edited since sealing (its header no longer matches its MAC) is `seal_tampered`.
 */
export async function readCheckedManifest(dir: string, masterKey: Uint8Array): Promise<CheckedManifest> {
  const path = join(dir, MANIFEST_NAME);
  const manifest = parseManifest(await readRegularText(path, MAX_MANIFEST_BYTES, 'sealed-model manifest'), path);
  const keys = deriveKeys(masterKey);
  if (!sameMac(keyCheckOf(keys, manifest.bundle), manifest.keyCheck))
    throw new KeyError(
      `the master key does not open ${dir}: it was sealed (or last rewrapped) under another key; give the key it was sealed with`,
      { dir },
    );
  const digest = headerDigest(manifest);
  if (!sameMac(headerMacOf(keys, digest), manifest.headerMac))
    throw tampered(`${path} was edited after sealing (its file list no longer matches its MAC)`, path);
  return { path, manifest, digest, keys };
}

/** The data key of one file; a wrapped key that does not authenticate is tampering, naming the file. */
export function dataKeyOf(checked: CheckedManifest, file: SealedFile): Uint8Array {
  const key = unwrapKey(checked.keys, file.wrappedKey, checked.digest, file.id);
  if (!key)
    throw tampered(
      `${checked.path}: the wrapped data key of ${file.name} does not authenticate`,
      checked.path,
      file.name,
    );
  return key;
}

/** Every file of the sealed directory `dir`, decrypted into memory, by name. */
export async function openSealed(dir: string, masterKey: Uint8Array): Promise<Map<string, Uint8Array>> {
  const checked = await readCheckedManifest(dir, masterKey);
  const files = new Map<string, Uint8Array>();
  for (const file of checked.manifest.files) {
    const key = dataKeyOf(checked, file);
    try {
      files.set(file.name, await decryptFile(dir, file, key, checked.digest));
    } finally {
      key.fill(0);
    }
  }
  return files;
}

async function decryptFile(dir: string, file: SealedFile, key: Uint8Array, digest: Uint8Array): Promise<Uint8Array> {
  const path = join(dir, blobName(file.id));
  const source = await openBlob(path, file);
  const plain = new Uint8Array(file.size);
  const buffer = new Uint8Array(Math.min(file.chunkSize, file.size) + TAG_BYTES);
  try {
    const count = chunkCount(file);
    for (let i = 0, at = 0; i < count; i++) {
      const length = Math.min(file.chunkSize, file.size - at);
      const sealed = buffer.subarray(0, length + TAG_BYTES);
      await source.readInto(sealed, at + i * TAG_BYTES);
      const decipher = createDecipheriv(CIPHER, key, chunkNonce(i), { authTagLength: TAG_BYTES });
      decipher.setAAD(chunkAad(digest, file.id, i, i === count - 1));
      decipher.setAuthTag(sealed.subarray(length));
      const out = decipher.update(sealed.subarray(0, length));
      try {
        decipher.final();
      } catch {
        out.fill(0);
        plain.fill(0);
        throw tampered(
          `${path} (${file.name}): chunk ${i + 1} of ${count} does not authenticate; the sealed file was altered, reordered or swapped with another`,
          path,
          file.name,
          { chunk: i },
        );
      }
      plain.set(out, at);
      out.fill(0);
      at += length;
    }
    return plain;
  } finally {
    await source.close();
  }
}

/** The blob of `file`, which must exist and have exactly the size its manifest entry implies. */
async function openBlob(path: string, file: SealedFile): Promise<ByteSource> {
  let source: ByteSource;
  try {
    source = await openFileSource(path);
  } catch (err) {
    if (err instanceof KnobsError && (err.details as { errno?: string }).errno === 'ENOENT')
      throw tampered(`${path} (${file.name}) is missing`, path, file.name);
    throw err;
  }
  const expected = blobSize(file);
  if (source.size !== expected) {
    await source.close();
    throw tampered(
      `${path} (${file.name}) is ${source.size} bytes where the manifest implies ${expected}; it was ${source.size < expected ? 'truncated' : 'extended'}`,
      path,
      file.name,
    );
  }
  return source;
}

function tampered(what: string, path: string, name?: string, more: Record<string, unknown> = {}): FormatError {
  return new FormatError(
    'seal_tampered',
    `${what}; refusing to load it. Restore the sealed directory from a good copy, or seal the original again`,
    { file: path, ...(name === undefined ? {} : { name }), ...more },
  );
}
