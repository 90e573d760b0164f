/**
 * A GGUF file as a WeightsReader: tensors under their canonical Hugging Face names and shapes
 * (llama, qwen2, gpt2: names mapped back, llama's q/k rows un-permuted, GPT-2's Conv1D weights
 * transposed back), each tensor's values dequantized to f32. Tensors of other architectures, and
 * those with no Hugging Face counterpart (rope_freqs), keep their GGUF names and layout.
 *
 * Memory: a tensor is dequantized whole (un-permuting needs all its rows), so reading one takes
 * its f32 size; the reader holds one tensor at a time.
 */
import { ArgumentError, FormatError } from '../errors.js';
import { type GgufFile, type GgufTensorInfo, type GgufValue, readGguf, readGgufTensor } from '../formats/gguf.js';
import { type ByteSource, openFileSource } from '../io/byte-source.js';
import { ggufWeightsPlan } from '../models/gguf/holding.js';
import { GGUF_ARCHES, type GgufArch, hfTensorName, relayout, relayoutOf } from '../models/gguf/names.js';
import { valueBlocks } from './blocks.js';
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
  return {
    format: 'gguf',
    path,
    architecture: archName,
    files: [path.split('/').pop()!],
    metadata: Object.fromEntries([...file.metadata].map(([k, v]) => [k, shown(v)])),
    tensors,
    ...(arch === null ? {} : { loaded: loadedWeights(arch, file, heads) }),
    async values(name) {
      const entry = byName.get(name);
      if (!entry) throw new ArgumentError(`${path} has no tensor ${JSON.stringify(name)}`, { path, tensor: name });
      const { tensor, info } = entry;
      const values = await readGgufTensor(source, file, info.name);
      const laid =
        arch !== null && tensor.name !== info.name
          ? relayout(relayoutOf(arch, tensor.name, heads), values, info.shape, false).data
          : values;
      const bytes = new Uint8Array(laid.buffer, laid.byteOffset, laid.byteLength);
      return { dtype: 'F32', numel: tensor.numel, blocks: () => valueBlocks('F32', bytes) };
    },
    close: () => source.close(),
  };
}
