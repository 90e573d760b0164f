/**
 * Opening a sealed directory: its manifest checked against the master key, then every file
 * decrypted chunk by chunk into memory. Nothing plaintext is written anywhere; a file is returned
 * only once every one of its chunks has authenticated.
 */
import { createDecipheriv } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { ArgumentError, FormatError, KeyError, KnobsError } from '../errors.js';
import { type ByteSource, checkRange, openFileSource } from '../io/byte-source.js';
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

/** The files of a sealed directory, opened by name: what ModelFiles (models/hf/files.ts) asks for. */
export interface SealedFiles {
  readonly label: string;
  /** The sealed files' names, in manifest order. */
  readonly names: readonly string[];
  /** The file `name`, decrypted as it is read (the caller closes it), or null when there is no such file. */
  open(name: string): Promise<ByteSource | null>;
}

/**
 * The files of the sealed directory `dir`, each a ByteSource that decrypts the chunks a read
 * covers, checking each chunk's tag before a byte of it is returned. Up front: the key, the
 * manifest's MAC, every wrapped data key and every blob's size are checked, so a wrong key or a
 * damaged directory is refused before any model is built. A loader reading tensor by tensor then
 * holds at most one decrypted chunk besides the tensor it fills.
 */
export async function sealedFiles(dir: string, masterKey: Uint8Array): Promise<SealedFiles> {
  const checked = await readCheckedManifest(dir, masterKey);
  const byName = new Map<string, { file: SealedFile; key: Uint8Array }>();
  for (const file of checked.manifest.files) {
    byName.set(file.name, { file, key: dataKeyOf(checked, file) });
    await checkBlobSize(join(dir, blobName(file.id)), file);
  }
  return {
    label: dir,
    names: [...byName.keys()],
    async open(name) {
      const entry = byName.get(name);
      if (!entry) return null;
      const path = join(dir, blobName(entry.file.id));
      return decryptingSource(path, entry.file, await openBlob(path, entry.file), entry.key, checked.digest);
    },
  };
}

/** Every file of the sealed directory `dir`, decrypted into memory, by name. */
export async function openSealed(dir: string, masterKey: Uint8Array): Promise<Map<string, Uint8Array>> {
  const files = await sealedFiles(dir, masterKey);
  const out = new Map<string, Uint8Array>();
  for (const name of files.names) {
    const source = (await files.open(name))!;
    try {
      out.set(name, await source.read(0, source.size));
    } finally {
      await source.close();
    }
  }
  return out;
}

/** A ByteSource over the plaintext of `file`, decrypting from its blob; the last chunk decrypted is kept for the next read. */
function decryptingSource(
  path: string,
  file: SealedFile,
  blob: ByteSource,
  key: Uint8Array,
  digest: Uint8Array,
): ByteSource {
  const count = chunkCount(file);
  const sealed = new Uint8Array(Math.min(file.chunkSize, file.size) + TAG_BYTES);
  let cached: { index: number; plain: Uint8Array } | null = null;
  let closed = false;

  const chunk = async (i: number): Promise<Uint8Array> => {
    if (cached?.index === i) return cached.plain;
    const at = i * file.chunkSize;
    const length = Math.min(file.chunkSize, file.size - at);
    const bytes = sealed.subarray(0, length + TAG_BYTES);
    await blob.readInto(bytes, at + i * TAG_BYTES);
    const decipher = createDecipheriv(CIPHER, key, chunkNonce(i), { authTagLength: TAG_BYTES });
    decipher.setAAD(chunkAad(digest, file.id, i, i === count - 1));
    decipher.setAuthTag(bytes.subarray(length));
    const plain = decipher.update(bytes.subarray(0, length));
    try {
      decipher.final();
    } catch {
      plain.fill(0);
      throw tampered(
        `${path} (${file.name}): chunk ${i + 1} of ${count} does not authenticate; the sealed file was altered, reordered or swapped with another`,
        path,
        file.name,
        { chunk: i },
      );
    }
    cached?.plain.fill(0);
    cached = { index: i, plain };
    return plain;
  };

  const source: ByteSource = {
    name: join(path, '..', file.name),
    size: file.size,
    async read(offset, length) {
      const target = new Uint8Array(length);
      await source.readInto(target, offset);
      return target;
    },
    async readInto(target, offset) {
      if (closed) throw new ArgumentError(`${source.name}: read after close()`);
      checkRange(source, offset, target.byteLength);
      for (let done = 0; done < target.byteLength;) {
        const i = Math.floor((offset + done) / file.chunkSize);
        const within = offset + done - i * file.chunkSize;
        const plain = await chunk(i);
        const n = Math.min(plain.byteLength - within, target.byteLength - done);
        target.set(plain.subarray(within, within + n), done);
        done += n;
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      cached?.plain.fill(0);
      cached = null;
      await blob.close();
    },
  };
  return source;
}

/** Refuses a blob that is missing or whose size is not the one its manifest entry implies. */
async function checkBlobSize(path: string, file: SealedFile): Promise<void> {
  await (await openBlob(path, file)).close();
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
