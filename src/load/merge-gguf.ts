/**
 * `knobs merge BASE ADAPTER --out merged.gguf`: the merged model as one GGUF file, where a
 * quantized base keeps its blocks. The targeted layers are decoded, merged and written as `dtype`;
 * every untargeted q8_0 / q4_0 layer is written byte for byte as held (no decode, no re-quantizing);
 * the other tensors keep their type (the f32 of a run or a Hugging Face directory's parameters).
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { type GgufWriteType, writeGguf } from '../formats/gguf-write.js';
import { asIOError } from '../io/atomic.js';
import { ggufTokenizerOf, openModelDir } from './convert.js';
import { isGgufPath } from './language-model.js';
import { ggufFromModel, type HfOutType } from '../models/gguf/export.js';
import type { LoadAdapterOptions } from '../finetune/adapter.js';
import { mergeAdapter } from '../finetune/merge.js';
import { modelWeights } from '../finetune/model-dir.js';
import { type QuantType, quantizeBase, quantizedLayers } from '../finetune/quantized-base.js';

const WRITE_TYPE: Record<HfOutType, GgufWriteType> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

export interface MergeGgufResult {
  out: string;
  format: 'gguf';
  modules: string[];
  parameters: number;
  dtype: HfOutType;
  /** Untargeted quantized layers written with their blocks, per block type. */
  kept: Record<string, number>;
  /** Tensors in the file per GGUF type. */
  tensors: Record<string, number>;
}

export async function mergeToGguf(
  base: string,
  adapterDir: string,
  out: string,
  opts: LoadAdapterOptions & { quantize?: QuantType; dtype: HfOutType },
): Promise<MergeGgufResult> {
  if (existsSync(out)) throw new UsageError(`${out} already exists; choose a new --out file`, { path: out });
  if (isGgufPath(base))
    throw new UsageError(
      `merging into a GGUF base is not supported yet; merge into its Hugging Face export ('knobs convert ${base} --format safetensors') with --quantize, or write --format hf`,
    );
  const opened = await openModelDir(base);
  const { model } = opened;
  if (opts.quantize !== undefined) quantizeBase(model, opts.quantize);
  const { adapter, merged } = await mergeAdapter(model, adapterDir, { ...opts, dequantizeUntargeted: false });
  const kept: Record<string, number> = {};
  for (const [, q] of quantizedLayers(model)) kept[q.weight.type] = (kept[q.weight.type] ?? 0) + 1;
  const written = ggufFromModel({
    hf: opened.hf,
    model,
    name: basename(resolve(base)),
    out: 'f32',
    tokenizer: ggufTokenizerOf(base, opened),
    weights: modelWeights(model),
    types: new Map(merged.map((name) => [name, WRITE_TYPE[opts.dtype]])),
  });
  await mkdir(dirname(resolve(out)), { recursive: true }).catch((err: unknown) => {
    throw asIOError(err, out, 'create the parent of');
  });
  await writeGguf(out, written);
  const tensors: Record<string, number> = {};
  for (const t of written.tensors) tensors[t.type] = (tensors[t.type] ?? 0) + 1;
  return {
    out,
    format: 'gguf',
    modules: [...adapter.layers.keys()],
    parameters: adapter.numParameters(),
    dtype: opts.dtype,
    kept,
    tensors,
  };
}
