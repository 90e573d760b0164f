/**
 * Verifying a signed model: the signature first (against the given public key), then the files.
 * Every file is re-hashed, streaming (constant memory whatever its size); a changed, missing or
 * extra file, a symbolic link, a special file or a name that escapes the model directory fails,
 * naming the file. Ignored, as model-signing ignores them: the signature file, git's files, the
 * signed `ignore_paths` and those the caller adds.
 */
import * as fsp from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { FormatError, UsageError } from '../errors.js';
import { asIOError } from '../io/atomic.js';
import { readRegularFile } from '../io/regular-file.js';
import { openBundleFile } from './files.js';
import { type HashJob, hashFiles, laneCount } from './hash-lanes.js';
import { type LoadedKey, loadPublicKey } from './keys.js';
import { GIT_PATHS, type Manifest, SIGNATURE_NAME, listModelFiles } from './manifest.js';
import { MAX_SIGNATURE_BYTES, verifySignature } from './signature.js';

export interface VerifyOptions {
  /** model.sig's path; default MODEL/model.sig (required when the model is one file). */
  signature?: string;
  /** More paths (relative to the model directory) to leave out, as model-signing's --ignore-paths. */
  ignorePaths?: readonly string[];
  /** CPUs to hash on, several files at once (default: every CPU available); one file uses one. */
  threads?: number;
}

export interface VerifiedFile {
  name: string;
  sha256: string;
  size: number;
}

export interface VerifyResult {
  model: string;
  signature: string;
  modelName: string;
  files: VerifiedFile[];
  bytes: number;
}

export interface SignedListing {
  /** Whether the model is one file (its resource is named "."). */
  singleFile: boolean;
  manifest: Manifest;
  /** Resource name → signed digest. */
  digests: Map<string, string>;
}

/** The signature's path for a model at `model`, or a usage error when it cannot be guessed. */
async function signaturePath(model: string, given: string | undefined, isDir: boolean): Promise<string> {
  if (given !== undefined) return given;
  if (!isDir) throw new UsageError(`${model} is a file: say where its signature is with --signature FILE`);
  return join(model, SIGNATURE_NAME);
}

/**
 * Checks the signature at the model and that the files present are exactly the signed ones (no
 * hashing yet). Returns what the files must hash to.
 */
export async function checkSignedListing(
  model: string,
  key: LoadedKey,
  options: VerifyOptions = {},
): Promise<SignedListing & { signature: string }> {
  const st = await fsp.lstat(model).catch((err: unknown) => {
    throw asIOError(err, model, 'open');
  });
  if (st.isSymbolicLink())
    throw new FormatError('bundle_symlink', `${model} is a symbolic link; give the model's own path`, { path: model });
  const isDir = st.isDirectory();
  const signature = await signaturePath(model, options.signature, isDir);
  const bytes = await readRegularFile(signature, MAX_SIGNATURE_BYTES, 'signature');
  const manifest = verifySignature(bytes, signature, key);
  const digests = new Map(manifest.resources.map((r) => [r.name, r.digest]));
  if (!isDir) {
    if (manifest.resources.length !== 1 || !digests.has('.'))
      throw new FormatError('bundle_extra', `${signature} signs a directory, but ${model} is one file`, {
        path: model,
      });
    return { singleFile: true, manifest, digests, signature };
  }
  const ignore = [
    ...GIT_PATHS,
    ...(manifest.serialization.ignore_paths ?? []),
    ...(options.ignorePaths ?? []),
    ...(resolve(signature).startsWith(`${resolve(model)}/`)
      ? [resolve(signature).slice(resolve(model).length + 1)]
      : []),
  ];
  const present = await listModelFiles(model, ignore);
  const extra = present.filter((name) => !digests.has(name));
  if (extra.length > 0) {
    throw new FormatError(
      'bundle_extra',
      `${join(model, extra[0]!)} is not in the signature${extra.length > 1 ? ` (nor are ${extra.length - 1} more files)` : ''}; a signed model holds only the files its publisher signed`,
      { path: join(model, extra[0]!), file: extra[0], extra },
    );
  }
  const missing = [...digests.keys()].filter((name) => !present.includes(name));
  if (missing.length > 0) {
    throw new FormatError(
      'bundle_missing',
      `${join(model, missing[0]!)} is missing: the signature lists it${missing.length > 1 ? ` (and ${missing.length - 1} more files)` : ''}; download the release again`,
      { path: join(model, missing[0]!), file: missing[0], missing },
    );
  }
  return { singleFile: false, manifest, digests, signature };
}

export function changedError(path: string, name: string, expected: string, actual: string): FormatError {
  return new FormatError(
    'bundle_changed',
    `${path} changed since it was signed: its SHA-256 is ${actual}, the signature says ${expected}; download the release again`,
    { path, file: name, expected, actual },
  );
}

/** Verifies the model at `model` (a directory, or one file with `options.signature`) with the public key at `publicKeyPath`. */
export async function verifyModel(
  model: string,
  publicKeyPath: string,
  options: VerifyOptions = {},
): Promise<VerifyResult> {
  const key = await loadPublicKey(publicKeyPath);
  const listing = await checkSignedListing(model, key, options);
  const paths = listing.manifest.resources.map((r) => (listing.singleFile ? model : join(model, r.name)));
  // Sizes only to decide how many CPUs to use: what is hashed is what each opened descriptor reads.
  const sizes = await Promise.all(
    paths.map((p) =>
      fsp.lstat(p).then(
        (st) => st.size,
        () => 0,
      ),
    ),
  );
  const jobs = listing.manifest.resources.map((r, i): HashJob<VerifiedFile> => {
    const path = paths[i]!;
    return {
      path,
      open: () => openBundleFile(path, r.name),
      check: ({ sha256, size }) => {
        if (sha256 !== r.digest) throw changedError(path, r.name, r.digest, sha256);
        return { name: r.name, sha256, size };
      },
    };
  });
  const files = await hashFiles(jobs, laneCount(sizes, options.threads ?? availableParallelism()));
  return {
    model,
    signature: listing.signature,
    modelName: listing.manifest.modelName || basename(model),
    files,
    bytes: files.reduce((sum, f) => sum + f.size, 0),
  };
}
