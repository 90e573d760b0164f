/**
 * One reader interface over every weights format knobs reads: the tensors of a model by canonical
 * name (canonical.ts), from headers alone, and each tensor's values block by block. A safetensors
 * file, a Hugging Face model directory (one file or shards), a knobs run directory and a GGUF
 * file (gguf-reader.ts: quantized tensors dequantized in `values`) read through here.
 *
 * Memory: a reader holds one buffer of at most CHUNK_ELEMENTS elements and reads each tensor
 * through it a chunk at a time; `values` results are valid until the next call. So going over a
 * model needs a few MiB whatever its size, never a whole tensor (GGUF tensors that must be
 * relaid out into Hugging Face order are the exception: gguf-reader.ts).
 */
import { stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { ArgumentError, FormatError } from '../errors.js';
import { type SafetensorsFile, openSafetensors } from '../formats/safetensors.js';
import { asIOError } from '../io/atomic.js';
import { checkRegularFile } from '../io/regular-file.js';
import { directoryFiles, parseJsonObject, readTextFile } from '../models/hf/files.js';
import { openModelWeights } from '../models/hf/weights.js';
import { type Block, CHUNK_ELEMENTS, isNumericDType, valueBlocks } from './blocks.js';
import { canonicalName } from './canonical.js';
import { openGgufWeights } from './gguf-reader.js';

export type WeightsFormat = 'safetensors' | 'hf-directory' | 'knobs-run' | 'gguf';

export interface WeightsTensor {
  /** The canonical (Hugging Face) name. */
  readonly name: string;
  /** The name in the file, when it differs from the canonical one. */
  readonly sourceName: string;
  /** The file's dtype name (F32, BF16, …). */
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly numel: number;
  readonly bytes: number;
  /** The file that holds it, relative to the reader's path ('' for a single file). */
  readonly file: string;
}

export interface LoadedWeights {
  /** Tensors per in-memory kind: {"q8_0": 60, "f32": 26, "requantized_from": {"q4_K": 40}}. */
  readonly weights: Record<string, number | Record<string, number>>;
  readonly bytes: number;
}

export interface TensorValues {
  readonly dtype: string;
  readonly numel: number;
  /**
   * The values, read from the file a chunk at a time, as blocks of any length (at most
   * BLOCK_ELEMENTS); each block is valid until the next. Each call reads the tensor again.
   */
  blocks(): AsyncGenerator<Block>;
}

/**
 * The order `values` gives a tensor's elements in: `canonical`, the Hugging Face row-major order
 * (what a diff needs to pair elements), or `any` (what statistics need: mean, std, min, max, zero
 * count and histogram do not depend on the order, so a GGUF tensor can skip its relayout).
 */
export type ValueOrder = 'canonical' | 'any';

export interface WeightsReader {
  readonly format: WeightsFormat;
  readonly path: string;
  /** config.json's model_type, or null when the files do not say. */
  readonly architecture: string | null;
  /** The weight files, relative to `path` (a single file: its own name). */
  readonly files: readonly string[];
  /** The (first) weight file's string metadata, or null. */
  readonly metadata: Readonly<Record<string, string>> | null;
  /** In file order (shard by shard). */
  readonly tensors: readonly WeightsTensor[];
  /** A GGUF model: how `generate` would hold its weights (the kinds `weightKinds` reports) and their bytes. */
  readonly loaded?: LoadedWeights;
  /**
   * One tensor's values (default order: canonical); null for a dtype knobs does not decode (F8,
   * F4, complex; GGUF Q2_K, IQ…). The result is valid until the next `values` call on this reader.
   */
  values(name: string, order?: ValueOrder): Promise<TensorValues | null>;
  close(): Promise<void>;
}

/** What knows where a tensor's bytes are. */
interface Located {
  readonly tensor: WeightsTensor;
  readonly file: SafetensorsFile;
}

/** Opens PATH as whatever it is: a directory (run or Hugging Face) or a safetensors file. */
export async function openWeights(path: string): Promise<WeightsReader> {
  let isDirectory: boolean;
  try {
    isDirectory = (await stat(path)).isDirectory();
  } catch (err) {
    throw asIOError(err, path, 'open');
  }
  if (isDirectory) return openModelDirectory(path);
  // A FIFO or a device would block the reader or never end: refuse it before reading.
  await checkRegularFile(path, 'weights file');
  if (path.toLowerCase().endsWith('.gguf')) return openGgufWeights(path);
  const file = await openSafetensors(path);
  try {
    return fromSafetensors('safetensors', path, null, [{ name: basename(path), file }]);
  } catch (err) {
    await file.close();
    throw err;
  }
}

async function openModelDirectory(dir: string): Promise<WeightsReader> {
  const files = directoryFiles(dir);
  const config = await readTextFile(files, 'config.json');
  const modelType = config ? parseJsonObject(config.text, config.path).model_type : undefined;
  const architecture = typeof modelType === 'string' ? modelType : null;
  const isRun = await stat(join(dir, 'recipe.json')).then(
    () => true,
    () => false,
  );
  const weights = await openModelWeights(files);
  // The shards in the order their tensors come, each named by its file name in the directory.
  const opened = new Set<SafetensorsFile>();
  for (const loc of weights.tensors.values()) opened.add(loc.file);
  try {
    const reader = fromSafetensors(
      isRun ? 'knobs-run' : 'hf-directory',
      dir,
      architecture,
      [...opened].map((file) => ({ name: basename(file.path), file })),
    );
    return { ...reader, close: () => weights.close() };
  } catch (err) {
    await weights.close();
    throw err;
  }
}

/** Bytes of CHUNK_ELEMENTS elements of the tensor's dtype. */
function chunkBytes(t: WeightsTensor): number {
  return t.numel > 0 ? (t.bytes / t.numel) * CHUNK_ELEMENTS : 0;
}

function fromSafetensors(
  format: WeightsFormat,
  path: string,
  architecture: string | null,
  files: { name: string; file: SafetensorsFile }[],
): WeightsReader {
  const byName = new Map<string, Located>();
  const tensors: WeightsTensor[] = [];
  for (const { name: fileName, file } of files) {
    for (const e of file.entries.values()) {
      const name = canonicalName(e.name, architecture);
      if (byName.has(name)) {
        throw new FormatError(
          'inspect_duplicate_name',
          `${path}: tensors ${JSON.stringify(byName.get(name)!.tensor.sourceName)} and ${JSON.stringify(e.name)} both map to ${JSON.stringify(name)}; a model holds each tensor once`,
          { path, tensor: name },
        );
      }
      const tensor: WeightsTensor = {
        name,
        sourceName: e.name,
        dtype: e.dtype,
        shape: e.shape,
        numel: e.numel,
        bytes: e.byteLength,
        file: format === 'safetensors' ? '' : fileName,
      };
      tensors.push(tensor);
      byName.set(name, { tensor, file });
    }
  }
  const first = files[0]?.file.metadata;
  // Sized once, for the largest chunk any tensor needs: growing step by step would leave the
  // smaller buffers to the garbage collector, and memory would hold several at once.
  const chunkCap = tensors.reduce(
    (m, t) => (isNumericDType(t.dtype) ? Math.max(m, Math.min(t.bytes, chunkBytes(t))) : m),
    0,
  );
  let scratch: ArrayBuffer | null = null;
  return {
    format,
    path,
    architecture,
    files: files.map((f) => f.name),
    metadata: first ? Object.fromEntries(first) : null,
    tensors,
    async values(name) {
      const loc = byName.get(name);
      if (!loc) throw new ArgumentError(`${path} has no tensor ${JSON.stringify(name)}`, { path, tensor: name });
      const { tensor, file } = loc;
      if (!isNumericDType(tensor.dtype)) return null;
      const buffer = (scratch ??= new ArrayBuffer(chunkCap));
      const step = chunkBytes(tensor);
      async function* blocks(): AsyncGenerator<Block> {
        for (let at = 0; at < tensor.bytes; at += step) {
          // Chunks start at the buffer's start, so every element view is aligned.
          const bytes = new Uint8Array(buffer, 0, Math.min(step, tensor.bytes - at));
          await file.readInto(tensor.sourceName, bytes, at);
          yield* valueBlocks(tensor.dtype, bytes);
        }
      }
      return { dtype: tensor.dtype, numel: tensor.numel, blocks };
    },
    async close() {
      for (const f of files) await f.file.close();
    },
  };
}
