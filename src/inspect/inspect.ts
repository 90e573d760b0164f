/**
 * `inspect(path)`: what a model holds — format, architecture, every tensor (canonical name,
 * dtype, shape, bytes), parameter count and metadata — from the headers alone; with
 * `{stats: true}` also each tensor's statistics and histogram, read one tensor at a time.
 */
import { type LoadedWeights, type WeightsFormat, openWeights } from './reader.js';
import { type TensorStats, tensorStats } from './stats.js';

export interface InspectOptions {
  /** Read every tensor and add `stats` and `histogram` (default false: headers only). */
  stats?: boolean;
  /** Called after each tensor is read (with `stats`): bytes read so far, of `totalBytes`. */
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
  /** With `stats`: null for a dtype without numeric values (F8, F4, complex). */
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
        const values = await reader.values(t.name);
        const result = values && tensorStats(values);
        row.stats = result ? result.stats : null;
        if (result) row.histogram = result.histogram;
        doneBytes += t.bytes;
        options.onProgress?.(doneBytes, totalBytes, t.name);
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
