/**
 * `knobs convert`: weights from one file format to another, written atomically.
 *
 *   MODEL (Hugging Face or run directory) → GGUF      f32, f16, bf16, q8_0, q4_0 (llama.cpp's rules)
 *   MODEL.gguf → Hugging Face directory               f32, f16, bf16 (dequantized)
 *   MODEL (directory) → Hugging Face directory        f32, f16, bf16
 *   FILE.safetensors → FILE.safetensors               f32, f16, bf16 (float tensors; others kept)
 *
 * Anything else is a UsageError listing what is valid. docs/gguf.md and docs/cli.md describe it.
 */
import { existsSync } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { type DType, convertStorage, storageBytes } from '../dtype.js';
import { FormatError, UsageError } from '../errors.js';
import { writeGguf } from '../formats/gguf-write.js';
import type { GgufValue } from '../formats/gguf.js';
import { type RawTensor, isRawTensor, loadSafetensors, saveSafetensors } from '../formats/safetensors.js';
import { asIOError, atomicTempName, syncDir, writeFileAtomic } from '../io/atomic.js';
import { GPT } from '../models/gpt.js';
import {
  type HfDirFiles,
  type HfOutType,
  ggufFromModel,
  hfConfigOf,
  hfFilesFromGguf,
  hfTensorsOf,
} from '../models/gguf/export.js';
import { GGUF_OUT_TYPES, HF_OUT_TYPES, type GgufOutType } from '../models/gguf/export.js';
import { loadGgufModel } from '../models/gguf/load.js';
import { ggufTokenizerMetadata } from '../models/gguf/tokenizer.js';
import type { HfModelConfig } from '../models/hf/config.js';
import { type HfModel, loadHfModel } from '../models/hf/load.js';
import { Llama } from '../models/llama.js';
import { byteLevelTokenizerJson } from '../tokenizer/export.js';
import { TOKENIZER_CONFIG_NAME, TOKENIZER_NAME, loadTokenizerDir, type TokenizerDir } from '../tokenizer/config.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';
import { isLanguageModelInstance } from '../train/build.js';
import { isRunDir, loadRun } from '../train/run-dir.js';
import { isGgufPath } from './language-model.js';

export type ConvertFormat = 'gguf' | 'safetensors';
export const CONVERT_FORMATS: readonly ConvertFormat[] = ['gguf', 'safetensors'];

export interface ConvertOptions {
  input: string;
  format: ConvertFormat;
  dtype: string;
  out: string;
}

export interface ConvertResult {
  input: string;
  out: string;
  format: ConvertFormat;
  dtype: string;
  /** GGUF: tensors by ggml type; safetensors: tensors written. */
  tensors: Record<string, number>;
}

const VALID = [
  'a model directory (Hugging Face or knobs run) --format gguf --dtype f32|f16|bf16|q8_0|q4_0',
  'a .gguf file --format safetensors --dtype f32|f16|bf16 (writes a Hugging Face directory)',
  'a model directory --format safetensors --dtype f32|f16|bf16 (writes a Hugging Face directory)',
  'a .safetensors file --format safetensors --dtype f32|f16|bf16 (writes a .safetensors file)',
];

function invalid(what: string): never {
  throw new UsageError(`${what}; knobs convert takes ${VALID.join('; or ')}`);
}

export async function convertModel(opts: ConvertOptions): Promise<ConvertResult> {
  const { input, format, dtype, out } = opts;
  if (!(CONVERT_FORMATS as readonly string[]).includes(format))
    invalid(`--format ${format} is not one of gguf, safetensors`);
  if (existsSync(out))
    throw new UsageError(`${out} already exists; knobs convert never overwrites (remove it or pick another --out)`);
  const isDir = await stat(input).then(
    (s) => s.isDirectory(),
    (err: unknown) => {
      throw asIOError(err, input, 'read');
    },
  );
  if (format === 'gguf') {
    if (!isDir) invalid(`${input} is a file; GGUF is written from a model directory`);
    if (!(GGUF_OUT_TYPES as readonly string[]).includes(dtype)) invalid(`--dtype ${dtype} cannot be written as GGUF`);
    return toGguf(input, dtype as GgufOutType, out);
  }
  if (!(HF_OUT_TYPES as readonly string[]).includes(dtype))
    invalid(`--dtype ${dtype} cannot be written as safetensors`);
  const hfType = dtype as HfOutType;
  if (isGgufPath(input) && !isDir) {
    const loaded = await loadGgufModel(input, { weights: 'f32' });
    const files = hfFilesFromGguf(loaded, hfType);
    await writeHfDir(out, files);
    return { input, out, format, dtype, tensors: { [hfType]: files.tensors.size } };
  }
  if (isDir) {
    const { hf, model, tokenizerDir } = await openModelDir(input);
    const files = hfFilesOfModel(hf, model, tokenizerDir, hfType);
    await writeHfDir(out, files);
    return { input, out, format, dtype, tensors: { [hfType]: files.tensors.size } };
  }
  if (!input.toLowerCase().endsWith('.safetensors'))
    invalid(`${input} is neither a directory, a .gguf nor a .safetensors file`);
  return safetensorsDtype(input, hfType, out);
}

async function toGguf(input: string, out: GgufOutType, path: string): Promise<ConvertResult> {
  const opened = await openModelDir(input);
  const written = ggufFromModel({
    hf: opened.hf,
    model: opened.model,
    name: basename(resolve(input)),
    out,
    tokenizer: ggufTokenizerOf(input, opened),
  });
  await mkdir(dirname(resolve(path)), { recursive: true }).catch((err: unknown) => {
    throw asIOError(err, path, 'create the parent of');
  });
  await writeGguf(path, written);
  const counts: Record<string, number> = {};
  for (const t of written.tensors) counts[t.type] = (counts[t.type] ?? 0) + 1;
  return { input, out: path, format: 'gguf', dtype: out, tensors: counts };
}

/** The GGUF tokenizer metadata of a model directory opened by openModelDir (one without a tokenizer is refused). */
export function ggufTokenizerOf(input: string, { hf, tokenizerDir }: ModelDir): [string, GgufValue][] {
  if (!tokenizerDir)
    throw new FormatError(
      'hf_no_tokenizer',
      `${input} has no ${TOKENIZER_NAME}; a GGUF file carries the model's tokenizer and llama.cpp will not load one without it`,
      { dir: input },
    );
  const c = hf.config as { bos_token_id: number | null };
  return ggufTokenizerMetadata(
    tokenizerDir.tokenizer,
    tokenizerDir.config,
    hf.config.vocab_size,
    join(input, TOKENIZER_NAME),
    {
      bos: c.bos_token_id,
      eos: hf.eosTokenIds[0] ?? null,
    },
  );
}

export interface ModelDir {
  hf: HfModelConfig;
  model: HfModel;
  tokenizerDir: TokenizerDir | null;
}

/** A Hugging Face model directory or a knobs run directory, with its tokenizer (null when it has none). */
export async function openModelDir(dir: string): Promise<ModelDir> {
  if (await isRunDir(dir)) {
    const { model, recipe } = await loadRun(dir);
    if (!isLanguageModelInstance(model) || !(model instanceof GPT || model instanceof Llama))
      throw new UsageError(
        `${dir} holds a ${model.constructor.name}; knobs converts GPT-2 and Llama-family language models`,
      );
    const hf: HfModelConfig =
      model instanceof GPT
        ? {
            kind: 'gpt2',
            config: model.config,
            eosTokenIds: model.config.eos_token_id === null ? [] : [model.config.eos_token_id],
          }
        : {
            kind: model.config.model_type,
            config: model.config,
            eosTokenIds: [model.config.eos_token_id ?? []].flat(),
          };
    const tokenizerDir =
      recipe.tokenizer === 'bytes'
        ? { tokenizer: Tokenizer.fromJSON(byteLevelTokenizerJson()), config: null }
        : await loadTokenizerDir(dir);
    return { hf, model, tokenizerDir };
  }
  const loaded = await loadHfModel(dir);
  const tokenizerDir = existsSync(join(dir, TOKENIZER_NAME)) ? await loadTokenizerDir(dir) : null;
  return { hf: loaded, model: loaded.model, tokenizerDir };
}

function hfFilesOfModel(
  hf: HfModelConfig,
  model: HfModel,
  tokenizerDir: TokenizerDir | null,
  dtype: HfOutType,
): HfDirFiles {
  const c = hf.config as { bos_token_id: number | null };
  return {
    config: hfConfigOf(model, dtype),
    tensors: hfTensorsOf(model, dtype),
    tokenizer: tokenizerDir ? tokenizerDir.tokenizer.toJSON() : null,
    tokenizerConfig: tokenizerDir?.config?.raw ?? null,
    generationConfig: {
      bos_token_id: c.bos_token_id,
      eos_token_id: hf.eosTokenIds.length === 1 ? hf.eosTokenIds[0] : hf.eosTokenIds,
    },
  };
}

/** Writes a Hugging Face directory into a staging directory, then renames it into place. */
async function writeHfDir(out: string, files: HfDirFiles): Promise<void> {
  await mkdir(dirname(resolve(out)), { recursive: true }).catch((err: unknown) => {
    throw asIOError(err, out, 'create the parent of');
  });
  const staging = atomicTempName(resolve(out));
  try {
    await mkdir(staging);
    const json = (v: unknown): string => `${JSON.stringify(v, null, 2)}\n`;
    await writeFileAtomic(join(staging, 'config.json'), json(files.config));
    await writeFileAtomic(join(staging, 'generation_config.json'), json(files.generationConfig));
    await saveSafetensors(join(staging, 'model.safetensors'), files.tensors, { format: 'pt' });
    if (files.tokenizer) await writeFileAtomic(join(staging, TOKENIZER_NAME), `${JSON.stringify(files.tokenizer)}\n`);
    if (files.tokenizerConfig) await writeFileAtomic(join(staging, TOKENIZER_CONFIG_NAME), json(files.tokenizerConfig));
    await rename(staging, out);
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    throw asIOError(err, out, 'write');
  }
  await syncDir(dirname(resolve(out)));
}

const FLOAT_DTYPES: readonly DType[] = ['f32', 'f64', 'f16', 'bf16'];

async function safetensorsDtype(input: string, dtype: HfOutType, out: string): Promise<ConvertResult> {
  const { tensors, metadata } = await loadSafetensors(input);
  const written = new Map<string, RawTensor>();
  let converted = 0;
  for (const [name, value] of tensors) {
    if (isRawTensor(value) || !FLOAT_DTYPES.includes(value.dtype)) {
      written.set(
        name,
        isRawTensor(value)
          ? value
          : {
              kind: 'raw',
              dtype: value.dtype.toUpperCase() as RawTensor['dtype'],
              shape: value.shape,
              bytes: storageBytes(value.contiguousStorage()),
            },
      );
      continue;
    }
    const storage = convertStorage(value.dtype, value.contiguousStorage(), dtype);
    written.set(name, {
      kind: 'raw',
      dtype: dtype.toUpperCase() as RawTensor['dtype'],
      shape: value.shape,
      bytes: storageBytes(storage),
    });
    converted++;
  }
  await saveSafetensors(out, written, metadata);
  return { input, out, format: 'safetensors', dtype, tensors: { [dtype]: converted, kept: tensors.size - converted } };
}
