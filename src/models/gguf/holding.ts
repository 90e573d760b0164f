/**
 * How each tensor of a GGUF model is held in memory once loaded, decided from the header alone
 * (so `inspect` can say it and the loader can check the memory before reading anything):
 *
 * - `blocks`: a Q8_0 or Q4_0 matrix of a linear layer is kept as the file's blocks, in a
 *   QuantizedLinear (llama's q/k rows reordered as whole block rows, nothing decoded);
 * - `requantized`: a matrix of a linear layer in another block format (Q4_1, Q5_0, Q5_1, Q4_K,
 *   Q5_K, Q6_K) is decoded a few rows at a time and re-quantized to q8_0;
 * - `f32`: everything else — 1-D tensors, F32/F16/BF16 matrices, and the embeddings
 *   (`token_embd`, GPT-2's `position_embd`), which knobs' Embedding looks up as f32 rows and which
 *   a tied output head multiplies as an f32 matrix.
 *
 * The three architectures' only 2-D tensors besides the embeddings are linear layers' weights, so
 * "2-D and not an embedding" is "a linear layer's weight" (the loader checks it as it swaps).
 */
import type { GgufFile, GgufTensorInfo } from '../../formats/gguf.js';
import { type GgufArch, type HeadCounts, ROPE_FREQS, hfTensorName, relayoutOf } from './names.js';

export type GgufHolding = 'blocks' | 'requantized' | 'f32';

/** ggml types whose blocks a QuantizedLinear multiplies as they are. */
export const KEPT_BLOCK_TYPES: readonly string[] = ['Q8_0', 'Q4_0'];
/** ggml types re-quantized to q8_0 at load (decoded row range by row range, never whole). */
export const REQUANTIZED_TYPES: readonly string[] = ['Q4_1', 'Q5_0', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K'];
/** The most f32 bytes the loader decodes at once for a tensor it streams into place or re-quantizes. */
export const LOAD_CHUNK_BYTES = 4 << 20;
const EMBEDDINGS = new Set(['token_embd.weight', 'position_embd.weight']);
/** q8_0: 32 values in 34 bytes. */
const Q8_0_BLOCK = { values: 32, bytes: 34 };

/** ggml's own lower-case type name (ggml_type_name): Q4_K → q4_K, Q8_0 → q8_0, F32 → f32. */
export function ggmlTypeName(type: string): string {
  return type.replace(/^[QFB]+(?=\d)/, (p) => p.toLowerCase());
}

/** How tensor `info` of an `arch` file is held when loaded with quantized weights. */
export function ggufHolding(arch: GgufArch, info: GgufTensorInfo): GgufHolding {
  if (info.shape.length !== 2 || EMBEDDINGS.has(info.name) || hfTensorName(arch, info.name) === null) return 'f32';
  if (KEPT_BLOCK_TYPES.includes(info.type.name)) return 'blocks';
  if (REQUANTIZED_TYPES.includes(info.type.name)) return 'requantized';
  return 'f32';
}

/** Bytes tensor `info` takes in memory when held as `holding`. */
export function heldBytes(info: GgufTensorInfo, holding: GgufHolding): number {
  if (holding === 'blocks') return info.byteLength;
  if (holding === 'requantized') return (info.elements / Q8_0_BLOCK.values) * Q8_0_BLOCK.bytes;
  return 4 * info.elements;
}

/** What loading a file makes of its weights, from the header. */
export interface GgufWeightsPlan {
  /** Tensors per in-memory kind, as `weightKinds` reports the loaded model: {"q8_0": 60, "f32": 26, "requantized_from": {"q4_K": 40}}. */
  weights: Record<string, number | Record<string, number>>;
  /** Bytes the weights take in memory. */
  bytes: number;
  /** The most the loader holds at once besides them (one tensor's decoded or reordered copy). */
  transientBytes: number;
}

/**
 * The weights plan of `file` loaded with quantized weights (`quantized`), or all in f32. A tensor
 * that is re-laid out (GPT-2's transposed Conv1D, llama's q/k permutation by `heads`) is decoded
 * whole and copied once when it stays f32, and its blocks copied once in the new row order when it
 * does not; other tensors stream into place a few rows at a time (LOAD_CHUNK_BYTES of f32 at most).
 */
export function ggufWeightsPlan(
  arch: GgufArch,
  file: GgufFile,
  quantized: boolean,
  heads: HeadCounts,
): GgufWeightsPlan {
  const chunkBytes = LOAD_CHUNK_BYTES;
  const relaidOut = (info: GgufTensorInfo): boolean => {
    const hfName = hfTensorName(arch, info.name);
    return hfName !== null && relayoutOf(arch, hfName, heads).kind !== 'none';
  };
  const kinds: Record<string, number> = {};
  const from: Record<string, number> = {};
  const count = (table: Record<string, number>, kind: string): void => void (table[kind] = (table[kind] ?? 0) + 1);
  let bytes = 0;
  let transientBytes = 0;
  for (const info of file.tensors) {
    const holding = quantized ? ggufHolding(arch, info) : 'f32';
    bytes += heldBytes(info, holding);
    const moved = relaidOut(info);
    const transient =
      holding === 'f32'
        ? moved
          ? 8 * info.elements
          : Math.min(chunkBytes, 4 * info.elements)
        : holding === 'blocks'
          ? moved
            ? info.byteLength
            : 0
          : Math.min(chunkBytes, 4 * info.elements) + (moved ? heldBytes(info, holding) : 0);
    transientBytes = Math.max(transientBytes, transient);
    if (info.name === ROPE_FREQS) continue; // a buffer of the model, not a parameter
    count(kinds, holding === 'f32' ? 'f32' : holding === 'blocks' ? ggmlTypeName(info.type.name) : 'q8_0');
    if (holding === 'requantized') count(from, ggmlTypeName(info.type.name));
  }
  return {
    weights: Object.keys(from).length > 0 ? { ...kinds, requantized_from: from } : kinds,
    bytes,
    transientBytes,
  };
}
