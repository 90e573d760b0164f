/**
 * `knobs merge BASE ADAPTER --out merged.gguf`: the merged model as one GGUF file, where a
 * quantized base keeps its blocks. The targeted layers are decoded, merged and written as `dtype`;
 * every untargeted q8_0 / q4_0 layer is written byte for byte as held (no decode, no re-quantizing);
 * the other tensors keep their type: the f32 of a run or a Hugging Face directory's parameters, or
 * the base file's types when BASE is a GGUF file (merge-gguf-base.ts).
 */
import { existsSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { UsageError } from '../errors.js';
import type { GgufWriteType } from '../formats/gguf-write.js';
import { ggufTokenizerOf, openModelDir } from './convert.js';
import { isGgufPath } from './language-model.js';
import { type MergedGguf, mergeGgufBase, mergeKeepingBlocks, writeMergedGguf } from './merge-gguf-base.js';
import { ggufFromModel, type HfOutType } from '../models/gguf/export.js';
import type { LoadAdapterOptions } from '../finetune/adapter.js';
import { modelWeights } from '../finetune/model-dir.js';
import type { QuantType } from '../finetune/quantized-base.js';

const WRITE_TYPE: Record<HfOutType, GgufWriteType> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

export interface MergeGgufResult extends MergedGguf {
  out: string;
  format: 'gguf';
  dtype: HfOutType;
  /** What BASE was: its untargeted tensors keep the directory's f32, or the GGUF file's types. */
  base: 'directory' | 'gguf';
}

export async function mergeToGguf(
  base: string,
  adapterDir: string,
  out: string,
  opts: LoadAdapterOptions & { quantize?: QuantType; dtype: HfOutType },
): Promise<MergeGgufResult> {
  if (existsSync(out)) throw new UsageError(`${out} already exists; choose a new --out file`, { path: out });
  const what = { out, format: 'gguf', dtype: opts.dtype } as const;
  if (isGgufPath(base)) {
    const merged = await mergeGgufBase(base, adapterDir, out, { ...opts, dtype: WRITE_TYPE[opts.dtype] });
    return { ...what, base: 'gguf', ...merged };
  }
  const opened = await openModelDir(base);
  const { model } = opened;
  const { merged, ...counts } = await mergeKeepingBlocks(model, adapterDir, opts);
  const written = ggufFromModel({
    hf: opened.hf,
    model,
    name: basename(resolve(base)),
    out: 'f32',
    tokenizer: ggufTokenizerOf(base, opened),
    weights: modelWeights(model),
    types: new Map(merged.map((name) => [name, WRITE_TYPE[opts.dtype]])),
  });
  return { ...what, base: 'directory', ...counts, tensors: await writeMergedGguf(out, written) };
}
