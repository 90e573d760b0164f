/**
 * Loads a GGUF model file (llama, qwen2, gpt2) into knobs' Llama or GPT, with Hugging Face
 * parameter names: the metadata becomes a config.json checked by the Hugging Face rules, every
 * parameter is matched to exactly one GGUF tensor of the right shape before anything is read,
 * the memory the loaded model needs is checked against the machine's before anything is
 * allocated, and then each tensor is read into place, one at a time.
 *
 * Weights stay quantized (the default, `weights: 'quantized'`; holding.ts decides per tensor):
 * Q8_0 / Q4_0 matrices of linear layers become QuantizedLinear layers holding the file's blocks,
 * other block formats are re-quantized to q8_0 a row range at a time, and the rest is f32. With
 * `weights: 'f32'` every tensor is dequantized (what conversion to safetensors needs).
 */
import { freemem } from 'node:os';
import { FormatError, UsageError } from '../../errors.js';
import {
  type GgufFile,
  type GgufTensorInfo,
  ggufRows,
  readGguf,
  readGgufRows,
  readGgufTensor,
} from '../../formats/gguf.js';
import { type ByteSource, openFileSource } from '../../io/byte-source.js';
import { withoutInit } from '../../nn/init.js';
import { Linear } from '../../nn/linear.js';
import type { Module } from '../../nn/module.js';
import {
  type QuantType,
  QuantizedLinear,
  type QuantizedMatrix,
  quantizedMatrixFromBlocks,
  replaceLinear,
  requantizeToQ8_0,
} from '../../nn/quantized-linear.js';
import { formatShape, shapesEqual } from '../../shape.js';
import type { Tensor } from '../../tensor.js';
import type { Tokenizer } from '../../tokenizer/tokenizer.js';
import { GPT } from '../gpt.js';
import { type HfModelConfig, parseHfConfig } from '../hf/config.js';
import type { LoadedHfModel } from '../hf/load.js';
import { Llama } from '../llama.js';
import { ggufArchOf, hfConfigJsonFromGguf } from './config.js';
import {
  type GgufHolding,
  type GgufWeightsPlan,
  LOAD_CHUNK_BYTES,
  ggmlTypeName,
  ggufHolding,
  ggufWeightsPlan,
} from './holding.js';
import {
  type GgufArch,
  type HeadCounts,
  ROPE_FREQS,
  ggufTensorName,
  hfTensorName,
  type Relayout,
  relayout,
  relayoutOf,
} from './names.js';
import { tokenizerFromGguf } from './tokenizer.js';

export type LoadedGgufModel = LoadedHfModel & {
  arch: GgufArch;
  /** The header (metadata and tensor infos). */
  gguf: GgufFile;
  /** The tokenizer the file's metadata describes, or null when it has none (`tokenizer.ggml.model` none). */
  tokenizer: Tokenizer | null;
};

export interface LoadGgufOptions {
  /**
   * Bytes the loaded model may take; default: the environment's KNOBS_MEMORY_LIMIT_BYTES when set,
   * else the machine's available memory now.
   */
  memoryLimit?: number;
  /** 'quantized' (default): block-quantized matrices stay quantized (see the file comment); 'f32': all dequantized. */
  weights?: 'quantized' | 'f32';
}

/** Overrides the memory a GGUF load may take (bytes): for tests, and for machines whose free memory misleads (containers). */
export const MEMORY_LIMIT_ENV = 'KNOBS_MEMORY_LIMIT_BYTES';

/** Head counts for the q/k permutation of `hf`. */
export function headCountsOf(hf: HfModelConfig): HeadCounts {
  return hf.kind === 'gpt2'
    ? { heads: hf.config.n_head, kvHeads: hf.config.n_head }
    : { heads: hf.config.num_attention_heads, kvHeads: hf.config.num_key_value_heads };
}

/**
 * THE way a GGUF tensor becomes a model parameter's values: dequantized to f32 and laid out as
 * the Hugging Face tensor `hfName` (q/k rows un-permuted, GPT-2's Conv1D transposed back), whole.
 * The loader uses it for f32 tensors that are re-laid out; others stream into place (readF32Into),
 * and quantized matrices go through ggufTensorToBlocks.
 */
export async function ggufTensorToModel(
  source: ByteSource,
  file: GgufFile,
  info: GgufTensorInfo,
  arch: GgufArch,
  hfName: string,
  heads: HeadCounts,
): Promise<Float32Array> {
  const values = await readGgufTensor(source, file, info.name);
  return relayout(relayoutOf(arch, hfName, heads), values, info.shape, false).data;
}

/** The Hugging Face shape of GGUF tensor `info` once laid out as `hfName`. */
export function hfShapeOf(arch: GgufArch, hfName: string, info: GgufTensorInfo, heads: HeadCounts): number[] {
  const r = relayoutOf(arch, hfName, heads);
  return r.kind === 'transpose' ? [...info.shape].reverse() : [...info.shape];
}

/** Reads a GGUF model from a path or a ByteSource (which the caller closes). */
export async function loadGgufModel(input: string | ByteSource, opts: LoadGgufOptions = {}): Promise<LoadedGgufModel> {
  const source = typeof input === 'string' ? await openFileSource(input) : input;
  try {
    return await loadFrom(source, opts);
  } finally {
    if (typeof input === 'string') await source.close();
  }
}

async function loadFrom(source: ByteSource, opts: LoadGgufOptions): Promise<LoadedGgufModel> {
  const path = source.name;
  const file = await readGguf(source);
  const arch = ggufArchOf(file, path);
  const hf = parseHfConfig(hfConfigJsonFromGguf(file, path), `${path} (metadata)`);
  const heads = headCountsOf(hf);
  const quantized = (opts.weights ?? 'quantized') === 'quantized';
  checkMemory(ggufWeightsPlan(arch, file, quantized, heads), path, memoryLimitOf(opts));
  const tokenizer = tokenizerFromGguf(file, path, hf.config.vocab_size);
  const ropeInfo = file.tensors.find((t) => t.name === ROPE_FREQS);
  const ropeFreqFactors =
    ropeInfo && arch !== 'gpt2' ? await readRopeFactors(source, file, ropeInfo, hf, path) : undefined;
  // The model is built with f32 Linear weights that are swapped for QuantizedLinear layers below before
  // anything writes them: zero-filled buffers the program never touches take no resident memory (the
  // RSS bound of test/slow/gguf-load-memory.ts holds), only address space.
  const model = withoutInit(() =>
    hf.kind === 'gpt2' ? new GPT(hf.config) : new Llama(hf.config, ropeFreqFactors ? { ropeFreqFactors } : {}),
  );
  const plan = matchTensors(model.stateDict(), file, arch, heads, path);
  for (const [target, info, hfName] of plan) {
    const holding: GgufHolding = quantized ? ggufHolding(arch, info) : 'f32';
    if (holding === 'f32') await readF32Into(target, source, file, info, arch, hfName, heads);
    else {
      const weight = await ggufTensorToBlocks(source, file, info, holding, relayoutOf(arch, hfName, heads));
      swapInQuantized(model, hfName, weight, info, path);
    }
  }
  model.eval();
  return {
    ...hf,
    model,
    generationConfig: { eosTokenIds: hf.eosTokenIds },
    dir: path,
    arch,
    gguf: file,
    tokenizer,
  } as LoadedGgufModel;
}

function memoryLimitOf(opts: LoadGgufOptions): number {
  if (opts.memoryLimit !== undefined) return opts.memoryLimit;
  const env = process.env[MEMORY_LIMIT_ENV];
  if (env === undefined || env === '') return freemem();
  const n = Number(env);
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new UsageError(`${MEMORY_LIMIT_ENV} is '${env}'; it must be a positive whole number of bytes, or unset`);
  return n;
}

/** An f32 parameter's values: streamed into its storage a row range at a time, or decoded whole when re-laid out. */
async function readF32Into(
  target: Tensor,
  source: ByteSource,
  file: GgufFile,
  info: GgufTensorInfo,
  arch: GgufArch,
  hfName: string,
  heads: HeadCounts,
): Promise<void> {
  const storage = target.storage as Float32Array;
  if (relayoutOf(arch, hfName, heads).kind !== 'none') {
    storage.set(await ggufTensorToModel(source, file, info, arch, hfName, heads));
    return;
  }
  const { rows, rowLength } = ggufRows(info);
  const step = Math.max(1, Math.floor(LOAD_CHUNK_BYTES / 4 / Math.max(1, rowLength)));
  for (let row = 0; row < rows; row += step)
    await readGgufRows(
      source,
      file,
      info.name,
      row,
      Math.min(step, rows - row),
      storage,
      target.offset + row * rowLength,
    );
}

/**
 * THE way a block-quantized GGUF matrix (ggml dims [cols, rows]) becomes a QuantizedLinear's
 * weight W [rows, cols] without ever being f32 as a whole: Q8_0 / Q4_0 blocks copied as they are
 * (`blocks`), other formats decoded a row range at a time and re-quantized to q8_0
 * (`requantized`). llama's q/k permutation is undone on whole block rows, after re-quantizing
 * (q8_0 quantizes each row on its own, so the order of the two does not matter).
 */
export async function ggufTensorToBlocks(
  source: ByteSource,
  file: GgufFile,
  info: GgufTensorInfo,
  holding: Exclude<GgufHolding, 'f32'>,
  r: Relayout,
): Promise<QuantizedMatrix> {
  const { rows, rowLength: cols } = ggufRows(info);
  const rowOrder = r.kind === 'permute' ? unpermutedRowOrder(rows, r.heads) : undefined;
  if (holding === 'blocks') {
    const bytes = new Uint8Array(info.byteLength);
    await source.readInto(bytes, file.dataOffset + info.offset);
    return quantizedMatrixFromBlocks(ggmlTypeName(info.type.name) as QuantType, bytes, rows, cols, rowOrder);
  }
  const step = Math.max(1, Math.floor(LOAD_CHUNK_BYTES / 4 / cols));
  const chunk = new Float32Array(step * cols);
  let blocks: Uint8Array | null = null;
  for (let row = 0; row < rows; row += step) {
    const n = Math.min(step, rows - row);
    await readGgufRows(source, file, info.name, row, n, chunk);
    const part = requantizeToQ8_0(n, cols, (i) => chunk.subarray(i * cols, (i + 1) * cols)).blocks;
    blocks ??= new Uint8Array((rows * part.length) / n);
    blocks.set(part, (row * part.length) / n);
  }
  return quantizedMatrixFromBlocks('q8_0', blocks ?? new Uint8Array(0), rows, cols, rowOrder);
}

/** Row i of the Hugging Face matrix is file row order[i] (names.ts: HF row j·D/2 + i ↔ GGUF row 2i + j). */
function unpermutedRowOrder(rows: number, heads: number): Int32Array {
  const D = rows / heads;
  const half = D / 2;
  const order = new Int32Array(rows);
  for (let h = 0; h < heads; h++)
    for (let j = 0; j < 2; j++) for (let i = 0; i < half; i++) order[h * D + j * half + i] = h * D + 2 * i + j;
  return order;
}

/** Puts a QuantizedLinear holding `weight` where the Linear owning parameter `hfName` is (its bias kept). */
function swapInQuantized(
  model: Module,
  hfName: string,
  weight: QuantizedMatrix,
  info: GgufTensorInfo,
  path: string,
): void {
  const layerPath = hfName.replace(/\.weight$/, '');
  const layer = model.getModule(layerPath);
  if (!(layer instanceof Linear))
    throw new FormatError(
      'gguf_model_unsupported',
      `${path}: tensor '${info.name}' is ${info.type.name}, but ${layerPath} is a ${layer.constructor.name}, which knobs cannot run on quantized blocks`,
      { path, tensor: info.name },
    );
  const from = weight.type === ggmlTypeName(info.type.name) ? null : ggmlTypeName(info.type.name);
  replaceLinear(model, layerPath, new QuantizedLinear(weight, layer.bias, from));
}

async function readRopeFactors(
  source: ByteSource,
  file: GgufFile,
  info: GgufTensorInfo,
  hf: HfModelConfig,
  path: string,
): Promise<Float32Array> {
  const half = hf.kind === 'gpt2' ? 0 : hf.config.head_dim / 2;
  if (info.elements !== half)
    throw new FormatError(
      'gguf_model_shape_mismatch',
      `${path}: ${ROPE_FREQS} has ${info.elements} values; head_dim / 2 = ${half} expected`,
      { path, tensor: ROPE_FREQS, shape: info.shape, expected: [half] },
    );
  return readGgufTensor(source, file, ROPE_FREQS);
}

/** The weights (as loading holds them) plus the largest transient copy must fit in `limit` bytes. */
function checkMemory(plan: GgufWeightsPlan, path: string, limit: number): void {
  const needed = plan.bytes + plan.transientBytes;
  if (needed <= limit) return;
  const gib = (n: number): string => `${(n / 2 ** 30).toFixed(2)} GiB`;
  throw new FormatError(
    'gguf_model_too_large',
    `${path}: loading it needs ${gib(needed)} (${needed} bytes: its weights held as ${JSON.stringify(plan.weights)}, plus one tensor's working copy), more than the ${gib(limit)} (${limit} bytes) of memory available (${MEMORY_LIMIT_ENV} or the free memory); free memory, use a machine with more, or a smaller quantization`,
    { path, needed, limit, weights: plan.weights },
  );
}

function matchTensors(
  state: Map<string, Tensor>,
  file: GgufFile,
  arch: GgufArch,
  heads: HeadCounts,
  path: string,
): [Tensor, GgufTensorInfo, string][] {
  const byName = new Map(file.tensors.map((t) => [t.name, t]));
  const plan: [Tensor, GgufTensorInfo, string][] = [];
  const used = new Set<string>([ROPE_FREQS]);
  const seen = new Set<unknown>();
  const missing: string[] = [];
  for (const [name, target] of state) {
    if (seen.has(target.storage)) continue; // a tied weight loads once, under its first name
    seen.add(target.storage);
    const ggufName = ggufTensorName(arch, name);
    const info = ggufName === null ? undefined : byName.get(ggufName);
    if (!info) {
      missing.push(ggufName ?? name);
      continue;
    }
    used.add(info.name);
    const shape = hfShapeOf(arch, name, info, heads);
    if (!shapesEqual(shape, target.shape))
      throw new FormatError(
        'gguf_model_shape_mismatch',
        `${path}: tensor '${info.name}' has shape ${formatShape(info.shape)} (ggml dims [${info.dims.join(', ')}]), but the metadata implies ${formatShape(target.shape)} for ${name}; the metadata and the tensors disagree`,
        { path, tensor: info.name, shape: info.shape, expected: target.shape },
      );
    plan.push([target, info, name]);
  }
  if (missing.length > 0)
    throw new FormatError(
      'gguf_model_missing_tensor',
      `${path}: lacks ${missing.length} tensor(s) its metadata implies: ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ', …' : ''}`,
      { path, tensors: missing },
    );
  const unexpected = file.tensors.filter((t) => !used.has(t.name)).map((t) => t.name);
  if (unexpected.length > 0)
    throw new FormatError(
      'gguf_model_unexpected_tensor',
      `${path}: holds ${unexpected.length} tensor(s) a ${arch} model of this size has no place for: ${unexpected.slice(0, 8).join(', ')}${unexpected.length > 8 ? ', …' : ''}${unexpected.some((n) => hfTensorName(arch, n) === null) ? ' (knobs does not know these names)' : ''}`,
      { path, tensors: unexpected },
    );
  return plan.sort((a, b) => a[1].offset - b[1].offset);
}
