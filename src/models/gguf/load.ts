/**
 * Loads a GGUF model file (llama, qwen2, gpt2) into knobs' Llama or GPT, with Hugging Face
 * parameter names: the metadata becomes a config.json checked by the Hugging Face rules, every
 * parameter is matched to exactly one GGUF tensor of the right shape before anything is read,
 * the memory the f32 model needs is checked against the machine's before anything is allocated,
 * and then each tensor is read, dequantized and laid out as Hugging Face has it, one at a time.
 */
import { freemem } from 'node:os';
import { FormatError } from '../../errors.js';
import { type GgufFile, type GgufTensorInfo, readGguf, readGgufTensor } from '../../formats/gguf.js';
import { type ByteSource, openFileSource } from '../../io/byte-source.js';
import { withoutInit } from '../../nn/init.js';
import { formatShape, shapesEqual } from '../../shape.js';
import type { Tensor } from '../../tensor.js';
import type { Tokenizer } from '../../tokenizer/tokenizer.js';
import { GPT } from '../gpt.js';
import { type HfModelConfig, parseHfConfig } from '../hf/config.js';
import type { LoadedHfModel } from '../hf/load.js';
import { Llama } from '../llama.js';
import { ggufArchOf, hfConfigJsonFromGguf } from './config.js';
import {
  type GgufArch,
  type HeadCounts,
  ROPE_FREQS,
  ggufTensorName,
  hfTensorName,
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
  /** Bytes the loaded model may take; default: the machine's free memory now. */
  memoryLimit?: number;
}

/** Head counts for the q/k permutation of `hf`. */
export function headCountsOf(hf: HfModelConfig): HeadCounts {
  return hf.kind === 'gpt2'
    ? { heads: hf.config.n_head, kvHeads: hf.config.n_head }
    : { heads: hf.config.num_attention_heads, kvHeads: hf.config.num_key_value_heads };
}

/**
 * THE way a GGUF tensor becomes a model parameter's values: dequantized to f32 and laid out as
 * the Hugging Face tensor `hfName` (q/k rows un-permuted, GPT-2's Conv1D transposed back).
 * A quantized-weights path would replace this one function.
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
  checkMemory(file, path, opts.memoryLimit ?? freemem());
  const tokenizer = tokenizerFromGguf(file, path, hf.config.vocab_size);
  const ropeInfo = file.tensors.find((t) => t.name === ROPE_FREQS);
  const ropeFreqFactors =
    ropeInfo && arch !== 'gpt2' ? await readRopeFactors(source, file, ropeInfo, hf, path) : undefined;
  const model = withoutInit(() =>
    hf.kind === 'gpt2' ? new GPT(hf.config) : new Llama(hf.config, ropeFreqFactors ? { ropeFreqFactors } : {}),
  );
  const plan = matchTensors(model.stateDict(), file, arch, heads, path);
  for (const [target, info, hfName] of plan) {
    const values = await ggufTensorToModel(source, file, info, arch, hfName, heads);
    (target.storage as Float32Array).set(values);
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

/** f32 parameters take 4 bytes a value; loading also holds the largest tensor once more. */
function checkMemory(file: GgufFile, path: string, limit: number): void {
  let values = 0;
  let largest = 0;
  for (const t of file.tensors) {
    values += t.elements;
    largest = Math.max(largest, t.elements);
  }
  const needed = 4 * (values + largest);
  if (needed > limit) {
    const gib = (n: number): string => `${(n / 2 ** 30).toFixed(2)} GiB`;
    throw new FormatError(
      'gguf_model_too_large',
      `${path}: its ${values} weights take ${gib(needed)} as f32, more than the ${gib(limit)} of memory available; free memory or use a machine with more`,
      { path, needed, limit },
    );
  }
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
