/**
 * The files of a Hugging Face model directory, opened by bare name: a directory on disk, or files
 * held in memory (weights decrypted into memory). Names that come from inside the directory (the
 * shard names of model.safetensors.index.json) are untrusted: a name must be a bare file name —
 * no `/` or `\`, no `..`, not absolute — and on disk the file must be a regular file, not a link,
 * so a model directory can never make knobs read outside itself.
 */
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError } from '../../errors.js';
import { type ByteSource, memorySource, openFileSource } from '../../io/byte-source.js';
import { asIOError } from '../../io/atomic.js';

export interface ModelFiles {
  /** The directory's path, or a label for files in memory; names it in messages. */
  readonly label: string;
  /** The file `name` as a ByteSource (the caller closes it), or null when there is no such file. */
  open(name: string): Promise<ByteSource | null>;
}

/** JSON files of a model directory are small; a larger one is refused before it is read. */
export const MAX_JSON_FILE_BYTES = 64 << 20;

/** Throws unless `name` is a bare file name. `listedIn` names the file that gave it. */
export function checkBareName(name: string, label: string, listedIn: string): void {
  const bad =
    name === ''
      ? 'is empty'
      : name === '.' || name === '..' || name.includes('..')
        ? 'contains ..'
        : name.startsWith('/') || /^[A-Za-z]:/.test(name)
          ? 'is an absolute path'
          : /[/\\]/.test(name)
            ? 'has a directory part'
            : name.includes('\0')
              ? 'contains a NUL character'
              : null;
  if (bad) {
    throw new FormatError(
      'hf_bad_path',
      `${join(label, listedIn)}: the shard name ${JSON.stringify(name)} ${bad}; shard names must be bare file names inside the model directory`,
      { file: join(label, listedIn), shard: name },
    );
  }
}

/** A model directory on disk. */
export function directoryFiles(dir: string): ModelFiles {
  return {
    label: dir,
    async open(name) {
      checkBareName(name, dir, '.');
      const path = join(dir, name);
      try {
        const st = await lstat(path);
        if (st.isSymbolicLink()) {
          throw new FormatError(
            'hf_bad_path',
            `${path} is a symbolic link; knobs reads only regular files inside the model directory (copy the directory with cp -rL to replace links with their files)`,
            { file: path },
          );
        }
        if (!st.isFile()) throw new FormatError('hf_bad_path', `${path} is not a regular file`, { file: path });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
        if (err instanceof FormatError) throw err;
        throw asIOError(err, path, 'open');
      }
      return openFileSource(path);
    },
  };
}

/** Files held in memory, by name. */
export function memoryFiles(files: ReadonlyMap<string, Uint8Array>, label = '(memory)'): ModelFiles {
  return {
    label,
    async open(name) {
      checkBareName(name, label, '.');
      const bytes = files.get(name);
      return bytes ? memorySource(bytes, join(label, name)) : null;
    },
  };
}

/** A JSON file of the model directory as text (bounded, UTF-8), or null when it is absent. */
export async function readTextFile(files: ModelFiles, name: string): Promise<{ path: string; text: string } | null> {
  const source = await files.open(name);
  if (!source) return null;
  try {
    if (source.size > MAX_JSON_FILE_BYTES) {
      throw new FormatError(
        'hf_invalid_json',
        `${source.name} is ${source.size} bytes; JSON files of a model directory are at most ${MAX_JSON_FILE_BYTES} bytes`,
        { file: source.name },
      );
    }
    const bytes = await source.read(0, source.size);
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      throw new FormatError('hf_invalid_json', `${source.name} is not UTF-8 text`, { file: source.name });
    }
    return { path: source.name, text };
  } finally {
    await source.close();
  }
}

/** `text` as JSON that must be an object; a FormatError naming `path` otherwise. */
export function parseJsonObject(text: string, path: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new FormatError('hf_invalid_json', `${path} is not valid JSON: ${(err as Error).message}`, { file: path });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new FormatError(
      'hf_invalid_json',
      `${path} must hold a JSON object, got ${Array.isArray(value) ? 'an array' : typeof value}`,
      { file: path },
    );
  }
  return value as Record<string, unknown>;
}
