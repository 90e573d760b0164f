/**
 * `knobs release`: a model directory (a run or a Hugging Face directory) or a GGUF file, copied
 * into a new bundle directory with a model card (README.md) and model.sig, the signature over
 * every file in OpenSSF model-signing's v1.0 format. Each file is hashed while it is copied (one
 * read of the source, streaming); the bundle is built under a temporary name, synced, and renamed
 * into place, so BUNDLE either does not exist or is complete and signed.
 *
 * From a directory, the regular files at its top level are copied (links are followed: a Hugging
 * Face cache holds links to blobs); subdirectories such as checkpoints/ (training state, not the
 * model), an older model.sig or README.md (the card replaces it) and git's files are left out.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { IOError, UsageError } from '../errors.js';
import { asIOError, atomicTempPid, syncDir, writeFileAtomic } from '../io/atomic.js';
import { openRegularFile } from '../io/regular-file.js';
import { CARD_NAME, modelCard } from './card.js';
import { HASH_CHUNK_BYTES } from './files.js';
import { keyHint, loadPrivateKey } from './keys.js';
import { GIT_PATHS, type Manifest, SIGNATURE_NAME, compareResourceNames } from './manifest.js';
import { rootDigest, signManifest } from './signature.js';

export interface ReleaseOptions {
  /** A directory or a GGUF file. */
  model: string;
  /** The bundle directory to create; it must not exist. */
  out: string;
  /** PKCS#8 PEM private key. */
  signingKey: string;
  card?: string;
  license?: string;
}

export interface ReleaseResult {
  bundle: string;
  modelName: string;
  files: Array<{ name: string; sha256: string; size: number }>;
  bytes: number;
  /** The subject digest: SHA-256 over the per-file digests. */
  sha256: string;
  keyHint: string;
}

const LEFT_OUT = new Set([SIGNATURE_NAME, CARD_NAME, ...GIT_PATHS]);

/** SPDX identifiers are letters, digits, '.', '-' and '+' (LicenseRef-… included); "other" is Hugging Face's catch-all. */
const SPDX_ID = /^[A-Za-z0-9][A-Za-z0-9.+-]*$/;

/** Copies `from` to `to`, hashing the bytes as they pass. */
async function copyHashing(from: string, to: string, buffer: Uint8Array): Promise<{ sha256: string; size: number }> {
  const src = await openRegularFile(from, 'model file');
  const hash = createHash('sha256');
  let size = 0;
  try {
    const dst = await fsp.open(to, 'wx', 0o644).catch((err: unknown) => {
      throw asIOError(err, to, 'create');
    });
    try {
      for (;;) {
        const { bytesRead } = await src.read(buffer, 0, buffer.byteLength, size).catch((err: unknown) => {
          throw asIOError(err, from, 'read');
        });
        if (bytesRead === 0) break;
        const chunk = buffer.subarray(0, bytesRead);
        hash.update(chunk);
        let written = 0;
        while (written < bytesRead) {
          const r = await dst.write(chunk, written, bytesRead - written, size + written).catch((err: unknown) => {
            throw asIOError(err, to, 'write');
          });
          written += r.bytesWritten;
        }
        size += bytesRead;
      }
      await dst.sync();
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
  return { sha256: hash.digest('hex'), size };
}

/** The files of the model to copy, by bare name → source path. */
async function modelFiles(model: string, isDir: boolean): Promise<Map<string, string>> {
  if (!isDir) return new Map([[basename(model), model]]);
  const entries = await fsp.readdir(model, { withFileTypes: true }).catch((err: unknown) => {
    throw asIOError(err, model, 'list');
  });
  const files = new Map<string, string>();
  for (const e of entries) {
    if (LEFT_OUT.has(e.name) || atomicTempPid(e.name) !== null) continue;
    const path = join(model, e.name);
    const st = await fsp.stat(path).catch(() => null); // follows links; a dangling link is skipped below
    if (st?.isFile()) files.set(e.name, path);
    else if (!st) throw new IOError(`${path} is a link to nothing; fix or remove it before releasing`, { path });
  }
  if (files.size === 0) throw new UsageError(`${model} holds no files to release`);
  return files;
}

export async function createRelease(options: ReleaseOptions): Promise<ReleaseResult> {
  const { model, out } = options;
  if (options.license !== undefined && !SPDX_ID.test(options.license))
    throw new UsageError(
      `--license ${JSON.stringify(options.license)} is not an SPDX identifier (e.g. apache-2.0, MIT, other)`,
    );
  const signer = await loadPrivateKey(options.signingKey);
  const st = await fsp.stat(model).catch((err: unknown) => {
    throw asIOError(err, model, 'open');
  });
  const isDir = st.isDirectory();
  if (!isDir && !(st.isFile() && model.endsWith('.gguf')))
    throw new UsageError(`${model} is neither a model directory nor a .gguf file`);
  if (
    await fsp.lstat(out).then(
      () => true,
      () => false,
    )
  )
    throw new UsageError(`--out ${out} exists; a release goes into a new directory`);
  const files = await modelFiles(model, isDir);
  const modelName = basename(resolve(out));
  const card = await modelCard(
    {
      model,
      name: modelName,
      card:
        options.card ??
        (isDir &&
        (await fsp.stat(join(model, CARD_NAME)).then(
          (s) => s.isFile(),
          () => false,
        ))
          ? join(model, CARD_NAME)
          : undefined),
      license: options.license,
    },
    isDir,
  );

  const temp = join(
    dirname(resolve(out)),
    `.${basename(resolve(out))}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`,
  );
  await fsp.mkdir(temp).catch((err: unknown) => {
    throw asIOError(err, temp, 'create');
  });
  try {
    const buffer = new Uint8Array(HASH_CHUNK_BYTES);
    const digests: ReleaseResult['files'] = [];
    for (const [name, path] of files) digests.push({ name, ...(await copyHashing(path, join(temp, name), buffer)) });
    const cardBytes = Buffer.from(card, 'utf8');
    await writeFileAtomic(join(temp, CARD_NAME), cardBytes, { syncParent: false });
    digests.push({
      name: CARD_NAME,
      sha256: createHash('sha256').update(cardBytes).digest('hex'),
      size: cardBytes.length,
    });
    digests.sort((a, b) => compareResourceNames(a.name, b.name));
    const manifest: Manifest = {
      modelName,
      resources: digests.map((d) => ({ name: d.name, algorithm: 'sha256', digest: d.sha256 })),
      serialization: {
        method: 'files',
        hash_type: 'sha256',
        allow_symlinks: false,
        ignore_paths: [...GIT_PATHS, SIGNATURE_NAME],
      },
    };
    await writeFileAtomic(join(temp, SIGNATURE_NAME), signManifest(manifest, signer), { syncParent: false });
    await syncDir(temp);
    await fsp.rename(temp, out).catch((err: unknown) => {
      throw asIOError(err, out, 'create');
    });
    await syncDir(dirname(resolve(out)));
    return {
      bundle: out,
      modelName,
      files: digests,
      bytes: digests.reduce((n, d) => n + d.size, 0),
      sha256: rootDigest(manifest.resources),
      keyHint: keyHint(signer.key),
    };
  } catch (err) {
    await fsp.rm(temp, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
}
