/**
 * `knobs merge BASE ADAPTER --out merged.gguf`: the merged model as one GGUF file, where a
 * quantized base keeps its blocks. The targeted layers are decoded, merged and written as `dtype`;
 * every untargeted q8_0 / q4_0 layer is written byte for byte as held (no decode, no re-quantizing);
 * the other tensors keep their type: the f32 of a run or a Hugging Face directory's parameters, or
 * the base file's types when BASE is a GGUF file (merge-gguf-base.ts).
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { type GgufWriteType, writeGguf } from '../formats/gguf-write.js';
import { asIOError } from '../io/atomic.js';
import { ggufTokenizerOf, openModelDir } from './convert.js';
import { isGgufPath } from './language-model.js';
import { type MergedGguf, countBy, mergeGgufBase } from './merge-gguf-base.js';
import { ggufFromModel, type HfOutType } from '../models/gguf/export.js';
import type { LoadAdapterOptions } from '../finetune/adapter.js';
import { mergeAdapter } from '../finetune/merge.js';
import { modelWeights } from '../finetune/model-dir.js';
import { type QuantType, quantizeBase, quantizedLayers } from '../finetune/quantized-base.js';

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
  if (opts.quantize !== undefined) quantizeBase(model, opts.quantize);
  const held = new Map(quantizedLayers(model).map(([path, q]) => [`${path}.weight`, q.weight.type]));
  const { adapter, merged } = await mergeAdapter(model, adapterDir, { ...opts, dequantizeUntargeted: false });
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
  return {
    ...what,
    base: 'directory',
    modules: [...adapter.layers.keys()],
    parameters: adapter.numParameters(),
    dequantized: countBy(merged.map((name) => held.get(name))),
    kept: countBy(quantizedLayers(model).map(([, q]) => q.weight.type)),
    tensors: countBy(written.tensors.map((t) => t.type)),
  };
}
