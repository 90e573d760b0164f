/**
 * Hugging Face-named models to GGUF and back:
 *
 * - `ggufFromModel`: what llama.cpp's convert_hf_to_gguf.py (--outtype f32/f16/bf16/q8_0), and for
 *   q4_0 its llama-quantize after that, would write: names and layouts from names.ts, metadata from
 *   config.ts, the tokenizer from tokenizer.ts, and each tensor's type by llama.cpp's rules:
 *   1-D tensors, norms, biases and GPT-2's position_embd stay F32; matrices take the requested type;
 *   a matrix whose first ggml dim (its row length) is not a multiple of 32 falls back to F16 when
 *   the type is quantized; for q4_0 the output head (token_embd when tied) is Q8_0. docs/gguf.md
 *   lists where knobs differs from llama.cpp on purpose.
 * - `hfFilesFromGguf`: a loaded GGUF model as a Hugging Face directory's files (config.json,
 *   model.safetensors in f32/f16/bf16, tokenizer.json, tokenizer_config.json).
 */
import { f32ToBF16Bits, f32ToF16Bits } from '../../dtype.js';
import { UsageError } from '../../errors.js';
import type { GgufValue } from '../../formats/gguf.js';
import type { GgufWriteInput, GgufWriteTensor, GgufWriteType } from '../../formats/gguf-write.js';
import type { RawTensor } from '../../formats/safetensors.js';
import type { Tensor } from '../../tensor.js';
import { tokenizerConfigJson } from '../../tokenizer/config.js';
import type { HfModelConfig } from '../hf/config.js';
import type { HfModel } from '../hf/load.js';
import { FILE_TYPE, ggufArchFor, ggufModelMetadata, llama3RopeFactors } from './config.js';
import { headCountsOf, type LoadedGgufModel } from './load.js';
import { gv } from './metadata.js';
import { ROPE_FREQS, type Relayout, ggufTensorName, relayout, relayoutOf } from './names.js';
import { QuantizedLinear } from '../../nn/quantized-linear.js';
import { tokenizerJsonFromGguf } from './tokenizer.js';

export const GGUF_OUT_TYPES = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'] as const;
export type GgufOutType = (typeof GGUF_OUT_TYPES)[number];

const QK = 32;
const WRITE_TYPE: Record<GgufOutType, GgufWriteType> = {
  f32: 'F32',
  f16: 'F16',
  bf16: 'BF16',
  q8_0: 'Q8_0',
  q4_0: 'Q4_0',
};

/** The type llama.cpp gives GGUF tensor `name` of row-major `shape` in a file of type `out`. */
export function ggufTensorType(
  name: string,
  shape: readonly number[],
  out: GgufOutType,
  outputHead: string,
): GgufWriteType {
  if (
    shape.length <= 1 ||
    name.endsWith('_norm.weight') ||
    !name.endsWith('.weight') ||
    name === 'position_embd.weight'
  )
    return 'F32';
  const wanted = out === 'q4_0' && name === outputHead ? 'Q8_0' : WRITE_TYPE[out];
  const quantized = wanted === 'Q8_0' || wanted === 'Q4_0';
  return quantized && shape[shape.length - 1]! % QK !== 0 ? 'F16' : wanted;
}

export interface GgufFromModelInput {
  hf: HfModelConfig;
  model: HfModel;
  /** general.name. */
  name: string;
  out: GgufOutType;
  /** tokenizer metadata (tokenizer.ts), or null for a model without a tokenizer ("none"). */
  tokenizer: [string, GgufValue][] | null;
  /** The weights to write, by checkpoint name (default: the model's stateDict()). */
  weights?: ReadonlyMap<string, Tensor>;
  /** Types that replace `out`'s for these checkpoint names (`knobs merge --format gguf`: the merged weights). */
  types?: ReadonlyMap<string, GgufWriteType>;
}

/** The GGUF file (metadata and tensors) llama.cpp's converter would make of the model. */
export function ggufFromModel(input: GgufFromModelInput): GgufWriteInput {
  const { hf, model, out } = input;
  const arch = ggufArchFor(hf);
  const heads = headCountsOf(hf);
  const metadata = new Map<string, GgufValue>(ggufModelMetadata(hf, input.name, FILE_TYPE[WRITE_TYPE[out]]));
  if (out === 'q8_0' || out === 'q4_0') metadata.set('general.quantization_version', gv.u32(2));
  for (const [k, v] of input.tokenizer ?? ([['tokenizer.ggml.model', gv.string('none')]] as [string, GgufValue][]))
    metadata.set(k, v);
  const tensors: GgufWriteTensor[] = [];
  const factors = llama3RopeFactors(hf);
  if (factors) tensors.push({ name: ROPE_FREQS, shape: [factors.length], data: factors, type: 'F32' });
  const seen = new Set<unknown>();
  const named: [string, Tensor, string][] = [];
  for (const [name, t] of input.weights ?? model.stateDict()) {
    if (seen.has(t.storage)) continue;
    seen.add(t.storage);
    const ggufName = ggufTensorName(arch, name);
    if (ggufName === null) throw new Error(`ggufFromModel: no GGUF name for parameter ${name}`);
    named.push([name, t, ggufName]);
  }
  const outputHead = named.some(([, , g]) => g === 'output.weight') ? 'output.weight' : 'token_embd.weight';
  for (const [name, t, ggufName] of named) {
    const r = relayoutOf(arch, name, heads);
    const shape = r.kind === 'transpose' ? [...t.shape].reverse() : [...t.shape];
    // Laid out when the writer reaches it, so a write holds one re-laid-out copy at a time; an f32
    // parameter's storage is used as is (the writer copies what it keeps).
    const data = (): Float32Array => {
      const storage = t.contiguousStorage();
      const values = storage instanceof Float32Array ? storage : Float32Array.from(storage as ArrayLike<number>);
      return relayout(r, values, t.shape, true).data;
    };
    const type = input.types?.get(name) ?? ggufTensorType(ggufName, shape, out, outputHead);
    tensors.push({ name: ggufName, shape, data, type });
  }
  for (const [path, q] of model.namedModules()) {
    if (!(q instanceof QuantizedLinear)) continue;
    const ggufName = ggufTensorName(arch, `${path}.weight`);
    if (ggufName === null) throw new Error(`ggufFromModel: no GGUF name for quantized layer ${path}`);
    tensors.push(quantizedTensor(ggufName, q, relayoutOf(arch, `${path}.weight`, heads)));
  }
  return { metadata, tensors };
}

/**
 * A quantized layer's weight as it is held: the blocks of W [out, in] are GGUF's row-major layout
 * already (GPT-2's transposed Conv1D included), so they are written byte for byte; Llama's q/k rows
 * take llama.cpp's permutation as whole block rows.
 */
function quantizedTensor(name: string, q: QuantizedLinear, r: Relayout): GgufWriteTensor {
  const { type, rows, cols, blocks } = q.weight;
  const shape = [rows, cols];
  const gguf = type === 'q8_0' ? 'Q8_0' : 'Q4_0';
  if (r.kind !== 'permute') return { name, shape, type: gguf, data: { encoded: blocks } };
  // The permutation as a row order: relayout of each row's index.
  const order = relayout(
    r,
    Float32Array.from({ length: rows }, (_, i) => i),
    [rows, 1],
    true,
  ).data;
  const rowBytes = blocks.length / rows;
  const out = new Uint8Array(blocks.length);
  for (let i = 0; i < rows; i++)
    out.set(blocks.subarray(order[i]! * rowBytes, (order[i]! + 1) * rowBytes), i * rowBytes);
  return { name, shape, type: gguf, data: { encoded: out } };
}

export const HF_OUT_TYPES = ['f32', 'f16', 'bf16'] as const;
export type HfOutType = (typeof HF_OUT_TYPES)[number];

/** A parameter's values as a safetensors tensor of `dtype`. */
export function rawTensorOf(t: Tensor, dtype: HfOutType): RawTensor {
  const values = t.contiguousStorage() as Float32Array;
  if (dtype === 'f32')
    return { kind: 'raw', dtype: 'F32', shape: t.shape, bytes: new Uint8Array(Float32Array.from(values).buffer) };
  const bits = Uint16Array.from(values, dtype === 'f16' ? f32ToF16Bits : f32ToBF16Bits);
  return { kind: 'raw', dtype: dtype === 'f16' ? 'F16' : 'BF16', shape: t.shape, bytes: new Uint8Array(bits.buffer) };
}

/** A model's parameters as safetensors tensors of `dtype` (a tied weight once, under its first name). */
export function hfTensorsOf(model: HfModel, dtype: HfOutType): Map<string, RawTensor> {
  const tensors = new Map<string, RawTensor>();
  const seen = new Set<unknown>();
  for (const [name, t] of model.stateDict()) {
    if (seen.has(t.storage)) continue;
    seen.add(t.storage);
    tensors.set(name, rawTensorOf(t, dtype));
  }
  return tensors;
}

/** config.json of a model stored as `dtype`. */
export function hfConfigOf(model: HfModel, dtype: HfOutType): Record<string, unknown> {
  return { ...model.toHFConfig(), torch_dtype: { f32: 'float32', f16: 'float16', bf16: 'bfloat16' }[dtype] };
}

export interface HfDirFiles {
  config: Record<string, unknown>;
  tensors: Map<string, RawTensor>;
  tokenizer: Record<string, unknown> | null;
  tokenizerConfig: Record<string, unknown> | null;
  generationConfig: Record<string, unknown>;
}

/** A loaded GGUF model as the files of a Hugging Face model directory. */
export function hfFilesFromGguf(loaded: LoadedGgufModel, dtype: HfOutType): HfDirFiles {
  if (loaded.gguf.tensors.some((t) => t.name === ROPE_FREQS))
    throw new UsageError(
      `${loaded.dir}: its llama3 rope scaling is a ${ROPE_FREQS} tensor, which config.json cannot state (rope_scaling names llama3's parameters, not per-frequency factors); run the .gguf directly instead of converting it`,
    );
  const tensors = hfTensorsOf(loaded.model, dtype);
  const config = hfConfigOf(loaded.model, dtype);
  const tokenizer = tokenizerJsonFromGguf(loaded.gguf, loaded.dir);
  const text = (id: number | null | undefined): string | null =>
    id === null || id === undefined || !loaded.tokenizer ? null : (loaded.tokenizer.idToToken(id) ?? null);
  const meta = loaded.gguf.metadata;
  const str = (key: string): string | null => {
    const v = meta.get(key);
    return v?.type === 'string' ? v.value : null;
  };
  const bool = (key: string): boolean | undefined => {
    const v = meta.get(key);
    return v?.type === 'bool' ? v.value : undefined;
  };
  const num = (key: string): number | null => {
    const v = meta.get(key);
    return v && (v.type === 'u32' || v.type === 'i32') ? v.value : null;
  };
  const tokenizerConfig = tokenizer
    ? tokenizerConfigJson({
        bosToken: text(num('tokenizer.ggml.bos_token_id')),
        eosToken: text(num('tokenizer.ggml.eos_token_id')),
        unkToken: text(num('tokenizer.ggml.unknown_token_id')),
        padToken: text(num('tokenizer.ggml.padding_token_id')),
        addBosToken: bool('tokenizer.ggml.add_bos_token') ?? str('tokenizer.ggml.model') === 'llama',
        addEosToken: bool('tokenizer.ggml.add_eos_token') ?? false,
        chatTemplate: str('tokenizer.chat_template'),
        modelMaxLength: loaded.model.contextLength,
      })
    : null;
  const c = loaded.config as { bos_token_id: number | null };
  const generationConfig = {
    bos_token_id: c.bos_token_id,
    eos_token_id: loaded.eosTokenIds.length === 1 ? loaded.eosTokenIds[0] : loaded.eosTokenIds,
  };
  return { config, tensors, tokenizer, tokenizerConfig, generationConfig };
}
