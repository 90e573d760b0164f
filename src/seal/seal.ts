/**
 * Sealing a model directory, and rotating the master key of a sealed one (format: ./format.ts).
 *
 * Every regular file at the top of the model directory is sealed, the JSON files with the weights:
 * a tokenizer or a config says much about a closed model, and one rule ("everything is sealed")
 * leaves nothing to decide per file. Subdirectories (a run's checkpoints/) and hidden files are left
 * out and reported. The output appears whole or not at all: it is built in a temporary directory
 * beside it, fsynced, then renamed into place.
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { FormatError, IOError, UsageError } from '../errors.js';
import { type WritableFile, asIOError, atomicTempName, syncDir, writeAll, writeFileAtomic } from '../io/atomic.js';
import { type ByteSource, openFileSource } from '../io/byte-source.js';
import { checkDirectory } from '../io/regular-file.js';
import {
  CIPHER,
  DEFAULT_CHUNK_SIZE,
  KEY_BYTES,
  MANIFEST_NAME,
  MAX_CHUNK_SIZE,
  MAX_FILES,
  MIN_CHUNK_SIZE,
  type Manifest,
  type SealedFile,
  TAG_BYTES,
  blobName,
  chunkAad,
  chunkCount,
  chunkNonce,
  headerDigest,
  manifestJson,
} from './format.js';
import { deriveKeys, headerMacOf, keyCheckOf, wrapKey } from './keys.js';
import { dataKeyOf, isSealedDir, readCheckedManifest } from './open.js';

export interface SealResult {
  /** The names sealed, in manifest order. */
  sealed: string[];
  /** What was left out: subdirectories (with a trailing /) and hidden files. */
  skipped: string[];
}

/** Seals the model directory `modelDir` into the new directory `outDir` under `masterKey`. */
export async function sealModel(
  modelDir: string,
  outDir: string,
  masterKey: Uint8Array,
  opts: { chunkSize?: number } = {},
): Promise<SealResult> {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  if (!Number.isSafeInteger(chunkSize) || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE)
    throw new UsageError(
      `the chunk size must be an integer in [${MIN_CHUNK_SIZE}, ${MAX_CHUNK_SIZE}], got ${chunkSize}`,
    );
  await checkDirectory(modelDir, 'model directory');
  if (await isSealedDir(modelDir))
    throw new UsageError(
      `${modelDir} is already sealed (it has ${MANIFEST_NAME}); to change its key use 'knobs seal --rewrap'`,
    );
  await checkAbsent(outDir);
  const { names, skipped } = await listModelFiles(modelDir);

  const sources: ByteSource[] = [];
  const temp = atomicTempName(outDir);
  try {
    for (const name of names) sources.push(await openFileSource(join(modelDir, name)));
    const bundle = randomBytes(16).toString('hex');
    const files: SealedFile[] = sources.map((s, id) => ({
      id,
      name: names[id]!,
      size: s.size,
      chunkSize,
      wrappedKey: new Uint8Array(0),
    }));
    const digest = headerDigest({ bundle, files });
    const keys = deriveKeys(masterKey);
    await fsp.mkdir(temp, { mode: 0o700 }).catch((err: unknown) => {
      throw asIOError(err, temp, 'create');
    });
    for (const file of files) {
      const dataKey = randomBytes(KEY_BYTES);
      try {
        file.wrappedKey = wrapKey(keys, dataKey, digest, file.id);
        await encryptFile(sources[file.id]!, join(temp, blobName(file.id)), file, dataKey, digest);
      } finally {
        dataKey.fill(0);
      }
    }
    const manifest: Manifest = {
      bundle,
      keyCheck: keyCheckOf(keys, bundle),
      headerMac: headerMacOf(keys, digest),
      files,
    };
    await writeFileAtomic(join(temp, MANIFEST_NAME), manifestJson(manifest));
    await checkAbsent(outDir);
    await fsp.rename(temp, outDir).catch((err: unknown) => {
      throw asIOError(err, outDir, 'create');
    });
  } catch (err) {
    await fsp.rm(temp, { recursive: true, force: true });
    throw err;
  } finally {
    for (const s of sources) await s.close();
  }
  await syncDir(dirname(outDir));
  return { sealed: names, skipped };
}

/**
 * Rotates the master key of the sealed directory `dir`: every data key is unwrapped with `oldKey`
 * and wrapped again with `newKey`; the blobs are not touched. The manifest is replaced atomically,
 * so `dir` opens with the old key until the moment it opens with the new one.
 */
export async function rewrapSealed(dir: string, oldKey: Uint8Array, newKey: Uint8Array): Promise<void> {
  const checked = await readCheckedManifest(dir, oldKey);
  const keys = deriveKeys(newKey);
  const files = checked.manifest.files.map((file) => {
    const dataKey = dataKeyOf(checked, file);
    try {
      return { ...file, wrappedKey: wrapKey(keys, dataKey, checked.digest, file.id) };
    } finally {
      dataKey.fill(0);
    }
  });
  const manifest: Manifest = {
    bundle: checked.manifest.bundle,
    keyCheck: keyCheckOf(keys, checked.manifest.bundle),
    headerMac: headerMacOf(keys, checked.digest),
    files,
  };
  await writeFileAtomic(checked.path, manifestJson(manifest));
}

async function checkAbsent(path: string): Promise<void> {
  const exists = await fsp.lstat(path).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return false;
      throw asIOError(err, path, 'use as the output');
    },
  );
  if (exists)
    throw new UsageError(`--out ${path} already exists; knobs seal writes a new directory (choose another path)`);
}

/** The regular files at the top of `dir`, sorted; links are refused (as model loading refuses them). */
async function listModelFiles(dir: string): Promise<{ names: string[]; skipped: string[] }> {
  const entries = await fsp.readdir(dir, { withFileTypes: true }).catch((err: unknown) => {
    throw asIOError(err, dir, 'list');
  });
  const names: string[] = [];
  const skipped: string[] = [];
  for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    if (e.name.startsWith('.')) skipped.push(e.isDirectory() ? `${e.name}/` : e.name);
    else if (e.isDirectory()) skipped.push(`${e.name}/`);
    else if (e.isSymbolicLink())
      throw new FormatError(
        'hf_bad_path',
        `${join(dir, e.name)} is a symbolic link; knobs seals only regular files (copy the directory with cp -rL to replace links with their files)`,
        { file: join(dir, e.name) },
      );
    else if (e.isFile()) names.push(e.name);
    else
      throw new IOError(`${join(dir, e.name)} is not a regular file; remove it from the model directory`, {
        path: join(dir, e.name),
      });
  }
  if (names.length === 0) throw new UsageError(`${dir} holds no files to seal`);
  if (names.length > MAX_FILES)
    throw new UsageError(`${dir} holds ${names.length} files; knobs seals at most ${MAX_FILES}`);
  return { names, skipped };
}

/** Encrypts `source` chunk by chunk into the new file `path`, then fsyncs it. */
async function encryptFile(
  source: ByteSource,
  path: string,
  file: SealedFile,
  dataKey: Uint8Array,
  digest: Uint8Array,
): Promise<void> {
  let out: WritableFile | null = null;
  try {
    out = await fsp.open(path, 'wx', 0o600);
    const plain = new Uint8Array(Math.min(file.chunkSize, file.size));
    const count = chunkCount(file);
    for (let i = 0, at = 0; i < count; i++) {
      const length = Math.min(file.chunkSize, file.size - at);
      const chunk = plain.subarray(0, length);
      await source.readInto(chunk, at);
      const cipher = createCipheriv(CIPHER, dataKey, chunkNonce(i), { authTagLength: TAG_BYTES });
      cipher.setAAD(chunkAad(digest, file.id, i, i === count - 1));
      const sealed = Buffer.concat([cipher.update(chunk), cipher.final(), cipher.getAuthTag()]);
      await writeAll(out, sealed, at + i * TAG_BYTES, path);
      at += length;
    }
    plain.fill(0);
    await out.sync();
  } catch (err) {
    throw asIOError(err, path, 'write');
  } finally {
    await out?.close();
  }
}
