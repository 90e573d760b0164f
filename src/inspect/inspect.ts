/**
 * `inspect(path)`: what a model holds — format, architecture, every tensor (canonical name,
 * dtype, shape, bytes), parameter count and metadata — from the headers alone; with
 * `{stats: true}` also each tensor's statistics and histogram, read one tensor at a time.
 */
import { CHUNK_ELEMENTS } from './blocks.js';
import { type LoadedWeights, type TensorValues, type WeightsFormat, openWeights } from './reader.js';
import { type TensorStats, tensorStats } from './stats.js';

export interface InspectOptions {
  /** Read every tensor and add `stats` and `histogram` (default false: headers only). */
  stats?: boolean;
  /**
   * Called as tensors are read (with `stats`): after each chunk of a tensor, and once more when it
   * is done, with the bytes done so far (a tensor counts half done after its first pass) of the
   * total.
   */
  onProgress?: (doneBytes: number, totalBytes: number, tensor: string) => void;
}

export interface InspectedTensor {
  /** The canonical (Hugging Face) name. */
  name: string;
  /** The name in the file, present only when it differs from `name`. */
  sourceName?: string;
  dtype: string;
  shape: number[];
  bytes: number;
  /** The file holding it, for a model directory. */
  file?: string;
  /** With `stats`: null for a dtype knobs does not decode (F8, F4, complex; GGUF Q2_K, IQ…). */
  stats?: TensorStats | null;
  histogram?: number[];
}

export interface ModelInspection {
  format: WeightsFormat;
  path: string;
  /** config.json's model_type, or null. */
  architecture: string | null;
  files: string[];
  tensorCount: number;
  parameterCount: number;
  tensorBytes: number;
  tensors: InspectedTensor[];
  metadata: Record<string, string> | null;
  /** A GGUF model: how loading it holds its weights (quantized matrices kept or re-quantized) and their bytes. */
  loaded?: LoadedWeights;
}

export async function inspect(path: string, options: InspectOptions = {}): Promise<ModelInspection> {
  const reader = await openWeights(path);
  try {
    const totalBytes = reader.tensors.reduce((s, t) => s + t.bytes, 0);
    const tensors: InspectedTensor[] = [];
    let doneBytes = 0;
    for (const t of reader.tensors) {
      const row: InspectedTensor = { name: t.name, dtype: t.dtype, shape: [...t.shape], bytes: t.bytes };
      if (t.sourceName !== t.name) row.sourceName = t.sourceName;
      if (t.file !== '') row.file = t.file;
      if (options.stats === true) {
        const values = await reader.values(t.name, 'any');
        const onProgress = options.onProgress;
        const tracked =
          values && onProgress
            ? withProgress(values, (fraction) => onProgress(doneBytes + fraction * t.bytes, totalBytes, t.name))
            : values;
        const result = tracked && (await tensorStats(tracked));
        row.stats = result ? result.stats : null;
        if (result) row.histogram = result.histogram;
        doneBytes += t.bytes;
        onProgress?.(doneBytes, totalBytes, t.name);
      }
      tensors.push(row);
    }
    return {
      format: reader.format,
      path,
      architecture: reader.architecture,
      files: [...reader.files],
      tensorCount: tensors.length,
      parameterCount: reader.tensors.reduce((s, t) => s + t.numel, 0),
      tensorBytes: totalBytes,
      tensors,
      metadata: reader.metadata ? { ...reader.metadata } : null,
      ...(reader.loaded ? { loaded: reader.loaded } : {}),
    };
  } finally {
    await reader.close();
  }
}

/**
 * `values` whose reads report progress after each chunk: the fraction of the statistics' two
 * passes done (a large tensor is minutes of work; progress per tensor would stand still).
 */
function withProgress(values: TensorValues, report: (fraction: number) => void): TensorValues {
  let passes = 0;
  return {
    dtype: values.dtype,
    numel: values.numel,
    async *blocks() {
      const pass = passes++;
      let seen = 0;
      for await (const block of values.blocks()) {
        yield block;
        seen += block.length;
        // The end of the second pass is left to the caller's report that the tensor is done.
        const fraction = (pass + seen / values.numel) / 2;
        if (seen % CHUNK_ELEMENTS === 0 && fraction < 1) report(fraction);
      }
    },
  };
}
