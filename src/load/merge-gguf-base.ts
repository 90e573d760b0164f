/**
 * `knobs merge BASE.gguf ADAPTER --out x.gguf`: an adapter folded into a GGUF file, written as a
 * GGUF file that differs from the base only in the targeted tensors.
 *
 * The base is loaded as `knobs tune` loads it (q8_0 / q4_0 matrices of linear layers as blocks,
 * the rest f32), so the adapter's `knobs.base_digest` is checked against what it was tuned on. The
 * targeted layers are decoded to f32, merged and written as `dtype`; every other tensor keeps the
 * type the base file gives it: quantized layers their blocks (held as loaded, so byte for byte),
 * float tensors their f32 values encoded in the file's F32/F16/BF16 (exact: they were decoded from
 * it), and tensors knobs holds otherwise (a q8_0 token embedding, llama3's rope_freqs) the file's
 * bytes. The metadata (tokenizer, chat template, …) is the base's, key for key.
 */
import { mkdir } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { UsageError } from '../errors.js';
import type { GgufFile, GgufTensorInfo } from '../formats/gguf.js';
import { type GgufWriteInput, type GgufWriteTensor, type GgufWriteType, writeGguf } from '../formats/gguf-write.js';
import { asIOError } from '../io/atomic.js';
import { type ByteSource, openFileSource } from '../io/byte-source.js';
import type { LoadAdapterOptions } from '../finetune/adapter.js';
import { mergeAdapter } from '../finetune/merge.js';
import { modelWeights } from '../finetune/model-dir.js';
import { type QuantType, quantizeBase, quantizedLayers } from '../finetune/quantized-base.js';
import { ggufFromModel } from '../models/gguf/export.js';
import { loadGgufModel } from '../models/gguf/load.js';
import { ROPE_FREQS, ggufTensorName } from '../models/gguf/names.js';
import type { Module } from '../nn/module.js';
import { shapesEqual } from '../shape.js';

const WRITABLE: readonly string[] = ['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0'] satisfies GgufWriteType[];
const FLOAT: readonly string[] = ['F32', 'F16', 'BF16'];

/** What was written (the CLI reports it). */
export interface MergedGguf {
  /** Adapter module paths merged. */
  modules: string[];
  /** Base tensors the adapter's trained copies replaced (modules_to_save, bias), by knobs name. */
  saved: string[];
  parameters: number;
  /** Targeted layers that were quantized in the base, decoded to take the delta, per block type. */
  dequantized: Record<string, number>;
  /** Untargeted quantized layers written with their blocks, per block type. */
  kept: Record<string, number>;
  /** Tensors in the file per GGUF type. */
  tensors: Record<string, number>;
}

export async function mergeGgufBase(
  base: string,
  adapterDir: string,
  out: string,
  opts: LoadAdapterOptions & { quantize?: QuantType; dtype: GgufWriteType },
): Promise<MergedGguf> {
  const source = await openFileSource(base);
  try {
    const loaded = await loadGgufModel(source, { weights: 'quantized' });
    const { model, gguf } = loaded;
    // Checked before the merge, which is the slow part: nothing here would be written anyway.
    const unwritable = gguf.tensors.find((t) => !WRITABLE.includes(t.type.name));
    if (unwritable)
      throw new UsageError(
        `${base}: tensor '${unwritable.name}' is ${unwritable.type.name}, which knobs cannot write back into a GGUF file (it writes ${WRITABLE.join(', ')}); merge into a model directory instead (--format hf), then 'knobs convert DIR --format gguf'`,
        { path: base, tensor: unwritable.name, type: unwritable.type.name },
      );
    const { merged, ...counts } = await mergeKeepingBlocks(model, adapterDir, opts);
    // The model's tensors as GGUF names and layouts (quantized layers as their blocks), then retyped
    // as the base has them; what the adapter changed is written as opts.dtype where the file held blocks.
    const changed = [...merged, ...counts.saved];
    const fromModel = ggufFromModel({
      hf: loaded,
      model,
      name: '',
      out: 'f32',
      tokenizer: null,
      weights: modelWeights(model),
      types: new Map(changed.map((name) => [name, opts.dtype])),
    });
    const ours = new Map(fromModel.tensors.filter((t) => t.name !== ROPE_FREQS).map((t) => [t.name, t]));
    const targeted = new Set(merged.map((name) => ggufTensorName(loaded.arch, name)));
    // A trained copy (a norm, an embedding) keeps a float file type; one the file held quantized is written as opts.dtype.
    const saved = new Set(counts.saved.map((name) => ggufTensorName(loaded.arch, name)));
    const tensors: GgufWriteTensor[] = [];
    for (const info of gguf.tensors) {
      const t = ours.get(info.name);
      if (t === undefined || !shapesEqual(t.shape, info.shape)) {
        if (saved.has(info.name))
          throw new UsageError(
            `${base}: the adapter trains ${info.name}, which knobs could not map onto the file's tensor`,
            {
              path: base,
              tensor: info.name,
            },
          );
        tensors.push(await fileBytes(source, gguf, info));
      } else if (targeted.has(info.name) || isEncoded(t) || (saved.has(info.name) && !FLOAT.includes(info.type.name)))
        tensors.push(t);
      else if (FLOAT.includes(info.type.name)) tensors.push({ ...t, type: info.type.name as GgufWriteType });
      else tensors.push(await fileBytes(source, gguf, info));
    }
    return { ...counts, tensors: await writeMergedGguf(out, { metadata: gguf.metadata, tensors }) };
  } finally {
    await source.close();
  }
}

/**
 * The adapter at `adapterDir` folded into `model` (quantized first with `quantize`), untargeted
 * quantized layers left as their blocks: the merged parameter names and what both GGUF merges report.
 */
export async function mergeKeepingBlocks(
  model: Module,
  adapterDir: string,
  opts: LoadAdapterOptions & { quantize?: QuantType },
): Promise<Omit<MergedGguf, 'tensors'> & { merged: string[] }> {
  if (opts.quantize !== undefined) quantizeBase(model, opts.quantize);
  const held = new Map(quantizedLayers(model).map(([path, q]) => [`${path}.weight`, q.weight.type]));
  const { adapter, merged } = await mergeAdapter(model, adapterDir, { ...opts, dequantizeUntargeted: false });
  return {
    merged,
    modules: [...adapter.layers.keys()],
    saved: adapter.saved.map((s) => s.target.name),
    parameters: adapter.numParameters(),
    dequantized: countBy(merged.map((name) => held.get(name))),
    kept: countBy(quantizedLayers(model).map(([, q]) => q.weight.type)),
  };
}

/** Writes the merged file (its parent created) and returns its tensors per GGUF type. */
export async function writeMergedGguf(out: string, file: GgufWriteInput): Promise<Record<string, number>> {
  await mkdir(dirname(resolve(out)), { recursive: true }).catch((err: unknown) => {
    throw asIOError(err, out, 'create the parent of');
  });
  await writeGguf(out, file);
  return countBy(file.tensors.map((t) => t.type));
}

/** How many of each value (undefined left out). */
function countBy(values: Iterable<string | undefined>): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const v of values) if (v !== undefined) counts[v] = (counts[v] ?? 0) + 1;
  return counts;
}

/** A quantized layer's blocks (ggufFromModel gives float tensors as functions). */
function isEncoded(t: GgufWriteTensor): boolean {
  return typeof t.data !== 'function' && !(t.data instanceof Float32Array);
}

/** Tensor `info` of the base file, its bytes as they are. */
async function fileBytes(source: ByteSource, file: GgufFile, info: GgufTensorInfo): Promise<GgufWriteTensor> {
  const encoded = await source.read(file.dataOffset + info.offset, info.byteLength);
  return { name: info.name, shape: info.shape, type: info.type.name as GgufWriteType, data: { encoded } };
}
