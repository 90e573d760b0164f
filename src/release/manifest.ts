/**
 * The manifest of a model as OpenSSF model-signing serializes it with its "files" method
 * (sigstore/model-transparency, src/model_signing/_serialization/file.py and manifest.py at commit
 * e3430730bca924e672b2e59f10524a7ffb5adf79): every regular file under the model directory, named
 * by its POSIX path relative to the directory ("." when the model is one file), with the SHA-256
 * of its bytes; ignored paths (the signature, git's files) are left out, and a symbolic link or a
 * special file is an error. Resources are ordered as Python orders PurePosixPath objects: by path
 * components, each compared by code point.
 */
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError } from '../errors.js';
import { asIOError } from '../io/atomic.js';
import { symlinkError } from './files.js';

export const SIGNATURE_NAME = 'model.sig';

/** What model-signing's hashing.Config always ignores (`ignore_git_paths=True`, its default). */
export const GIT_PATHS: readonly string[] = ['.git', '.gitattributes', '.github', '.gitignore'];

/** The `serialization` object of the predicate: how to recompute the manifest. */
export interface FileSerialization {
  method: 'files';
  hash_type: 'sha256';
  allow_symlinks: false;
  ignore_paths?: string[];
}

export interface Resource {
  name: string;
  algorithm: 'sha256';
  digest: string;
}

export interface Manifest {
  modelName: string;
  resources: Resource[];
  serialization: FileSerialization;
}

/** Compares two strings by code point, as Python compares str. */
function compareCodePoints(a: string, b: string): number {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i]!.codePointAt(0)! - y[i]!.codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

/** Python's ordering of PurePosixPath: component by component (so "a/b" comes before "a.txt"). */
export function compareResourceNames(a: string, b: string): number {
  const x = a.split('/');
  const y = b.split('/');
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = compareCodePoints(x[i]!, y[i]!);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

/**
 * Why a resource name from a signature cannot name a file inside the bundle, or null when it can:
 * it must be a relative POSIX path without `.`/`..` components, backslashes or NUL (or "." alone,
 * model-signing's name for a one-file model).
 */
export function badResourceName(name: string): string | null {
  if (name === '.') return null;
  if (name === '') return 'is empty';
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) return 'is an absolute path';
  if (name.includes('\\')) return 'contains a backslash';
  if (name.includes('\0')) return 'contains a NUL character';
  if (name.split('/').some((part) => part === '' || part === '.' || part === '..'))
    return 'has an empty, "." or ".." component';
  return null;
}

/** Whether `name` is an ignored path or lies under one (pathlib's `is_relative_to`). */
export function isIgnored(name: string, ignorePaths: readonly string[]): boolean {
  return ignorePaths.some((p) => {
    const clean = p.replace(/\/+$/, '');
    return name === clean || name.startsWith(`${clean}/`);
  });
}

/**
 * The relative names of the regular files under `dir`, minus the ignored ones, in manifest order.
 * A symbolic link or a special file (FIFO, socket, device) anywhere not ignored is an error.
 */
export async function listModelFiles(dir: string, ignorePaths: readonly string[]): Promise<string[]> {
  const names: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    const path = rel === '' ? dir : join(dir, rel);
    const entries = await fsp.readdir(path, { withFileTypes: true }).catch((err: unknown) => {
      throw asIOError(err, path, 'list');
    });
    for (const entry of entries) {
      const name = rel === '' ? entry.name : `${rel}/${entry.name}`;
      if (isIgnored(name, ignorePaths)) continue;
      if (entry.isSymbolicLink()) throw symlinkError(join(dir, name), name);
      if (entry.isDirectory()) await walk(name);
      else if (entry.isFile()) names.push(name);
      else {
        throw new FormatError(
          'bundle_not_regular',
          `${join(dir, name)} is not a regular file or directory; a bundle holds only regular files`,
          { path: join(dir, name), file: name },
        );
      }
    }
  };
  await walk('');
  return names.sort(compareResourceNames);
}
