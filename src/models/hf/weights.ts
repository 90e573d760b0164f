/**
 * The weights of a Hugging Face model directory: `model.safetensors`, or shards listed by
 * `model.safetensors.index.json`:
 *
 *   {"metadata": {"total_size": n}, "weight_map": {"<tensor>": "model-00001-of-00002.safetensors", …}}
 *
 * Only headers are read here; tensors are read later, one at a time, by range. The index is
 * checked against the shards before any tensor is read: shard names are bare file names, every
 * shard exists, every tensor is in exactly one shard and in the shard the index names.
 */
import { FormatError } from '../../errors.js';
import { type SafetensorsEntry, type SafetensorsFile, openSafetensors } from '../../formats/safetensors.js';
import { JsonParseError, type JsonValue, parseStrictJson } from '../../formats/strict-json.js';
import { join } from 'node:path';
import { type ModelFiles, checkBareName, readTextFile } from './files.js';

export const WEIGHTS_NAME = 'model.safetensors';
export const INDEX_NAME = 'model.safetensors.index.json';

export interface TensorLocation {
  readonly file: SafetensorsFile;
  readonly entry: SafetensorsEntry;
}

export interface ModelWeights {
  /** Every tensor of the model, by its name in the files. */
  readonly tensors: ReadonlyMap<string, TensorLocation>;
  /** The weight files, in the order they were opened. */
  readonly fileNames: readonly string[];
  close(): Promise<void>;
}

/** Opens the weights' headers; the caller must close() the result. */
export async function openModelWeights(files: ModelFiles): Promise<ModelWeights> {
  // transformers' order: the single file first, then the index.
  const single = await files.open(WEIGHTS_NAME);
  if (!single) {
    const index = await readTextFile(files, INDEX_NAME);
    if (index) return openShards(files, index.path, parseIndex(index.text, index.path));
    throw new FormatError(
      'hf_no_weights',
      `${files.label} has no ${WEIGHTS_NAME} and no ${INDEX_NAME}; a Hugging Face model directory needs its weights in safetensors (pytorch_model.bin is not read: convert it to safetensors)`,
      { dir: files.label },
    );
  }
  const file = await openSafetensors(single);
  const tensors = new Map<string, TensorLocation>();
  for (const entry of file.entries.values()) tensors.set(entry.name, { file, entry });
  return { tensors, fileNames: [WEIGHTS_NAME], close: () => file.close() };
}

/** weight_map of an index file: tensor → shard name. */
function parseIndex(text: string, path: string): Map<string, string> {
  let json: JsonValue;
  try {
    json = parseStrictJson(text, 8);
  } catch (err) {
    if (err instanceof JsonParseError && err.problem === 'duplicate_key') {
      throw new FormatError('hf_duplicate_tensor', `${path}: ${err.message}; each tensor must be listed once`, {
        file: path,
      });
    }
    throw new FormatError('hf_invalid_json', `${path} is not valid JSON: ${(err as Error).message}`, { file: path });
  }
  const weightMap = json instanceof Map ? json.get('weight_map') : undefined;
  if (!(weightMap instanceof Map)) {
    throw new FormatError(
      'hf_invalid_index',
      `${path} must be an object with a "weight_map" object (tensor name → shard file name)`,
      { file: path },
    );
  }
  const out = new Map<string, string>();
  for (const [tensor, shard] of weightMap) {
    if (typeof shard !== 'string') {
      throw new FormatError(
        'hf_invalid_index',
        `${path}: weight_map[${JSON.stringify(tensor)}] must be a shard file name (a string)`,
        { file: path, tensor },
      );
    }
    out.set(tensor, shard);
  }
  return out;
}

async function openShards(files: ModelFiles, indexPath: string, weightMap: Map<string, string>): Promise<ModelWeights> {
  const shardNames = [...new Set(weightMap.values())];
  for (const name of shardNames) checkBareName(name, files.label, INDEX_NAME);
  const opened: SafetensorsFile[] = [];
  const closeAll = async (): Promise<void> => {
    for (const f of opened) await f.close();
  };
  try {
    const tensors = new Map<string, TensorLocation>();
    for (const name of shardNames) {
      const source = await files.open(name);
      if (!source) {
        throw new FormatError(
          'hf_missing_shard',
          `${indexPath} names the shard ${name}, which is not in ${files.label}; download every shard the index lists`,
          { file: indexPath, shard: name },
        );
      }
      const file = await openSafetensors(source);
      opened.push(file);
      for (const entry of file.entries.values()) {
        const other = tensors.get(entry.name);
        if (other) {
          throw new FormatError(
            'hf_duplicate_tensor',
            `tensor ${JSON.stringify(entry.name)} is in two shards, ${other.file.path} and ${file.path}; each tensor must be in exactly one shard`,
            { tensor: entry.name, files: [other.file.path, file.path] },
          );
        }
        const listed = weightMap.get(entry.name);
        if (listed !== name) {
          throw new FormatError(
            'hf_index_mismatch',
            `${file.path} holds tensor ${JSON.stringify(entry.name)}, but ${indexPath} ${listed === undefined ? 'does not list it' : `puts it in ${listed}`}; the index and the shards disagree (re-download the model)`,
            { file: file.path, index: indexPath, tensor: entry.name },
          );
        }
        tensors.set(entry.name, { file, entry });
      }
    }
    for (const [tensor, shard] of weightMap) {
      if (!tensors.has(tensor)) {
        throw new FormatError(
          'hf_index_mismatch',
          `${indexPath} puts tensor ${JSON.stringify(tensor)} in ${shard}, but ${join(files.label, shard)} has no such tensor; the index and the shards disagree (re-download the model)`,
          { file: indexPath, tensor, shard },
        );
      }
    }
    return { tensors, fileNames: shardNames, close: closeAll };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
