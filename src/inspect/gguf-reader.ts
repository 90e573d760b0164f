/**
 * A GGUF file as a WeightsReader: tensors under their canonical Hugging Face names and shapes
 * (llama, qwen2, gpt2: names mapped back, llama's q/k rows un-permuted, GPT-2's Conv1D weights
 * transposed back), each tensor's values dequantized to f32. Tensors of other architectures, and
 * those with no Hugging Face counterpart (rope_freqs), keep their GGUF names and layout.
 *
 * Memory: values are read and dequantized a chunk of whole ggml blocks at a time (CHUNK_ELEMENTS
 * values, one reused buffer), so statistics (order `any`) need a few MiB at any size: they do not
 * depend on the order of the values, so q/k rows stay in llama.cpp's permuted order and GPT-2's
 * Conv1D weights stay transposed. Only a tensor read in canonical order (a diff) that needs such a
 * relayout is dequantized whole, which takes twice its f32 size while it is compared.
 */
import { ArgumentError, FormatError } from '../errors.js';
import {
  GGUF_DEQUANTIZABLE,
  type GgufFile,
  type GgufTensorInfo,
  type GgufValue,
  dequantizeBlocks,
  readGguf,
  readGgufTensor,
} from '../formats/gguf.js';
import { type ByteSource, openFileSource } from '../io/byte-source.js';
import { ggufWeightsPlan } from '../models/gguf/holding.js';
import { GGUF_ARCHES, type GgufArch, type Relayout, hfTensorName, relayout, relayoutOf } from '../models/gguf/names.js';
import { type Block, CHUNK_ELEMENTS, valueBlocks } from './blocks.js';
import type { WeightsReader, WeightsTensor } from './reader.js';

/** Metadata values as strings for the report; arrays (the vocabulary) are summarised. */
function shown(v: GgufValue): string {
  if (v.type === 'array') return `[${v.value.length} × ${v.itemType}]`;
  return String(v.value);
}

function headCounts(file: GgufFile, arch: string): { heads: number; kvHeads: number } {
  const num = (key: string): number | null => {
    const v = file.metadata.get(`${arch}.${key}`);
    return v && (v.type === 'u32' || v.type === 'i32') ? v.value : null;
  };
  const heads = num('attention.head_count') ?? 1;
  return { heads, kvHeads: num('attention.head_count_kv') ?? heads };
}

/** What loading the file with quantized weights holds (src/models/gguf/holding.ts), without the working copy. */
function loadedWeights(arch: GgufArch, file: GgufFile, heads: { heads: number; kvHeads: number }) {
  const plan = ggufWeightsPlan(arch, file, true, heads);
  return { weights: plan.weights, bytes: plan.bytes };
}

export async function openGgufWeights(path: string): Promise<WeightsReader> {
  const source = await openFileSource(path);
  try {
    return fromGguf(path, source, await readGguf(source));
  } catch (err) {
    await source.close();
    throw err;
  }
}

function fromGguf(path: string, source: ByteSource, file: GgufFile): WeightsReader {
  const archValue = file.metadata.get('general.architecture');
  const archName = archValue?.type === 'string' ? archValue.value : null;
  const arch =
    archName !== null && (GGUF_ARCHES as readonly string[]).includes(archName) ? (archName as GgufArch) : null;
  const heads = headCounts(file, archName ?? '');
  const byName = new Map<string, { tensor: WeightsTensor; info: GgufTensorInfo }>();
  const tensors: WeightsTensor[] = [];
  for (const info of file.tensors) {
    const hfName = arch === null ? null : hfTensorName(arch, info.name);
    const name = hfName ?? info.name;
    const transposed = arch !== null && hfName !== null && relayoutOf(arch, hfName, heads).kind === 'transpose';
    if (byName.has(name))
      throw new FormatError(
        'inspect_duplicate_name',
        `${path}: tensors '${byName.get(name)!.info.name}' and '${info.name}' both map to '${name}'`,
        { path, tensor: name },
      );
    const tensor: WeightsTensor = {
      name,
      sourceName: info.name,
      dtype: info.type.name,
      shape: transposed ? [...info.shape].reverse() : info.shape,
      numel: info.elements,
      bytes: info.byteLength,
      file: '',
    };
    tensors.push(tensor);
    byName.set(name, { tensor, info });
  }
  const chunks = new ChunkDecoder(source, file);
  return {
    format: 'gguf',
    path,
    architecture: archName,
    files: [path.split('/').pop()!],
    metadata: Object.fromEntries([...file.metadata].map(([k, v]) => [k, shown(v)])),
    tensors,
    ...(arch === null ? {} : { loaded: loadedWeights(arch, file, heads) }),
    async values(name, order = 'canonical') {
      const entry = byName.get(name);
      if (!entry) throw new ArgumentError(`${path} has no tensor ${JSON.stringify(name)}`, { path, tensor: name });
      const { tensor, info } = entry;
      // A type knobs lays out but does not decode (Q2_K, IQ…): listed, not read, as safetensors' F8.
      if (!GGUF_DEQUANTIZABLE.includes(info.type.name)) return null;
      const layout: Relayout =
        arch !== null && tensor.name !== info.name ? relayoutOf(arch, tensor.name, heads) : { kind: 'none' };
      if (order === 'any' || layout.kind === 'none')
        return { dtype: 'F32', numel: tensor.numel, blocks: () => chunks.of(info) };
      const laid = relayout(layout, await readGgufTensor(source, file, info.name), info.shape, false).data;
      return {
        dtype: 'F32',
        numel: tensor.numel,
        blocks: async function* () {
          yield* f32Blocks(laid);
        },
      };
    },
    close: () => source.close(),
  };
}

const f32Blocks = (v: Float32Array) => valueBlocks('F32', new Uint8Array(v.buffer, v.byteOffset, v.byteLength));

/** Decodes tensors a chunk of whole ggml blocks at a time through two buffers, made on first use. */
class ChunkDecoder {
  private bytes: Uint8Array | null = null;
  private values: Float32Array | null = null;
  constructor(
    private readonly source: ByteSource,
    private readonly file: GgufFile,
  ) {}

  /** The tensor's values in file order, as blocks valid until the next. */
  async *of(info: GgufTensorInfo): AsyncGenerator<Block> {
    const { type } = info;
    // Every ggml block size (1, 32, 256) divides CHUNK_ELEMENTS: a chunk is whole blocks.
    const perChunk = CHUNK_ELEMENTS / type.blockSize;
    const blockCount = info.elements / type.blockSize;
    // The largest chunk of any type is a Q8_0/F32 chunk's bytes (≤ 4 bytes a value).
    this.bytes ??= new Uint8Array(4 * CHUNK_ELEMENTS);
    this.values ??= new Float32Array(CHUNK_ELEMENTS);
    for (let first = 0; first < blockCount; first += perChunk) {
      const n = Math.min(perChunk, blockCount - first);
      const bytes = this.bytes.subarray(0, n * type.typeSize);
      await this.source.readInto(bytes, this.file.dataOffset + info.offset + first * type.typeSize);
      dequantizeBlocks(type, bytes, this.values);
      yield* f32Blocks(this.values.subarray(0, n * type.blockSize));
    }
  }
}
