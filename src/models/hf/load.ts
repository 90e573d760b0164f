/**
 * Loads a Hugging Face model directory (config.json, model.safetensors or shards with
 * model.safetensors.index.json, generation_config.json) into knobs' GPT (gpt2) or Llama
 * (llama, mistral, qwen2).
 *
 * Order: parse the config; read every weight file's header; build the model without initialising
 * it; match every parameter to exactly one tensor of the same shape (all problems found before any
 * tensor is read); then read the tensors one at a time, straight into the parameters.
 */
import { FormatError } from '../../errors.js';
import { withoutInit } from '../../nn/init.js';
import type { Module } from '../../nn/module.js';
import { formatShape, shapesEqual } from '../../shape.js';
import type { Tensor } from '../../tensor.js';
import { GPT } from '../gpt.js';
import { Llama } from '../llama.js';
import {
  CONFIG_NAME,
  GENERATION_CONFIG_NAME,
  type GenerationConfig,
  type HfModelConfig,
  parseGenerationConfig,
  parseHfConfig,
} from './config.js';
import { type ModelFiles, directoryFiles, parseJsonObject, readTextFile } from './files.js';
import { LOADABLE_DTYPES, readTensorInto } from './tensor-copy.js';
import { type ModelWeights, type TensorLocation, openModelWeights } from './weights.js';

export type HfModel = GPT | Llama;

export type LoadedHfModel = HfModelConfig & {
  model: HfModel;
  generationConfig: GenerationConfig;
  /** The directory's path (or the label of files in memory). */
  dir: string;
};

const MAX_LISTED = 8;

function list(names: readonly string[]): string {
  const shown = names
    .slice(0, MAX_LISTED)
    .map((n) => JSON.stringify(n))
    .join(', ');
  return names.length > MAX_LISTED ? `${shown}, … and ${names.length - MAX_LISTED} more` : shown;
}

/** Reads a model directory (a path, or ModelFiles such as files in memory). */
export async function loadHfModel(input: string | ModelFiles): Promise<LoadedHfModel> {
  const files = typeof input === 'string' ? directoryFiles(input) : input;
  const configFile = await readTextFile(files, CONFIG_NAME);
  if (!configFile) {
    throw new FormatError(
      'hf_no_config',
      `${files.label} has no ${CONFIG_NAME}; a Hugging Face model directory names its architecture there`,
      { dir: files.label },
    );
  }
  const hf = parseHfConfig(parseJsonObject(configFile.text, configFile.path), configFile.path);
  const generationConfig = await readGenerationConfig(files, hf);
  const weights = await openModelWeights(files);
  try {
    const model = withoutInit(() => buildModel(hf));
    const plan = matchTensors(model, weights, hf, configFile.path);
    for (const [target, location] of plan) await readTensorInto(target.storage as Float32Array, location);
    model.eval();
    return { ...hf, model, generationConfig, dir: files.label } as LoadedHfModel;
  } finally {
    await weights.close();
  }
}

async function readGenerationConfig(files: ModelFiles, hf: HfModelConfig): Promise<GenerationConfig> {
  const file = await readTextFile(files, GENERATION_CONFIG_NAME);
  if (!file) return { eosTokenIds: hf.eosTokenIds };
  return parseGenerationConfig(parseJsonObject(file.text, file.path), file.path, hf.config.vocab_size, hf.eosTokenIds);
}

function buildModel(hf: HfModelConfig): HfModel {
  return hf.kind === 'gpt2' ? new GPT(hf.config) : new Llama(hf.config);
}

/**
 * The name a weight file's tensor has in knobs' model, or null for tensors the architecture's
 * files carry but the math does not use: GPT-2's attention-mask buffers, its lm_head (tied to
 * wte), Llama's stored rotary frequencies, and lm_head.weight when the config ties it.
 */
function modelName(hf: HfModelConfig, fileName: string): string | null {
  if (hf.kind === 'gpt2') {
    const name = fileName.startsWith('transformer.') ? fileName.slice('transformer.'.length) : fileName;
    return name === 'lm_head.weight' || /^h\.\d+\.attn\.(bias|masked_bias)$/.test(name) ? null : name;
  }
  if (/\.rotary_emb\.inv_freq$/.test(fileName)) return null;
  return fileName === 'lm_head.weight' && hf.config.tie_word_embeddings ? null : fileName;
}

/** Pairs every parameter with its tensor, or throws naming every tensor that does not fit. */
function matchTensors(
  model: Module,
  weights: ModelWeights,
  hf: HfModelConfig,
  configPath: string,
): [Tensor, TensorLocation][] {
  const byModelName = new Map<string, TensorLocation>();
  const unexpected: string[] = [];
  const targets = new Map<string, Tensor>();
  const seen = new Set<unknown>();
  for (const [name, t] of model.stateDict()) {
    if (seen.has(t.storage)) continue; // a tied weight loads once, under its first name
    seen.add(t.storage);
    targets.set(name, t);
  }
  for (const [fileName, location] of weights.tensors) {
    const name = modelName(hf, fileName);
    if (name === null) continue;
    const other = byModelName.get(name);
    if (other) {
      throw new FormatError(
        'hf_duplicate_tensor',
        `tensor ${JSON.stringify(name)} is in the weights twice, as ${JSON.stringify(other.entry.name)} (${other.file.path}) and ${JSON.stringify(fileName)} (${location.file.path})`,
        { tensor: name },
      );
    }
    if (!targets.has(name)) unexpected.push(fileName);
    byModelName.set(name, location);
  }
  const missing = [...targets.keys()].filter((n) => !byModelName.has(n));
  if (missing.length > 0) {
    throw new FormatError(
      'hf_missing_tensor',
      `the weights (${weights.fileNames.join(', ')}) lack ${missing.length} tensor(s) that ${configPath} implies: ${list(missing)}; the config and the weights disagree (or a shard is incomplete)`,
      { tensors: missing, file: configPath },
    );
  }
  if (unexpected.length > 0) {
    throw new FormatError(
      'hf_unexpected_tensor',
      `the weights (${weights.fileNames.join(', ')}) hold ${unexpected.length} tensor(s) that the model of ${configPath} has no place for: ${list(unexpected)}; the config and the weights disagree (check num_hidden_layers / n_layer and the architecture)`,
      { tensors: unexpected, file: configPath },
    );
  }
  const plan: [Tensor, TensorLocation][] = [];
  for (const [name, target] of targets) {
    const location = byModelName.get(name)!;
    const { entry, file } = location;
    if (!shapesEqual(entry.shape, target.shape)) {
      throw new FormatError(
        'hf_shape_mismatch',
        `${file.path}: tensor ${JSON.stringify(entry.name)} has shape ${formatShape(entry.shape)}, but ${configPath} implies ${formatShape(target.shape)}; the config and the weights disagree`,
        { file: file.path, tensor: entry.name, shape: entry.shape, expected: target.shape },
      );
    }
    if (!(LOADABLE_DTYPES as readonly string[]).includes(entry.dtype)) {
      throw new FormatError(
        'hf_unsupported_dtype',
        `${file.path}: tensor ${JSON.stringify(entry.name)} is ${entry.dtype}; knobs loads weights stored as ${LOADABLE_DTYPES.join(', ')}`,
        { file: file.path, tensor: entry.name, dtype: entry.dtype },
      );
    }
    if (
      target.dtype !== 'f32' ||
      !target.isContiguous() ||
      target.offset !== 0 ||
      target.storage.length !== target.size
    ) {
      throw new Error(`loadHfModel: parameter ${name} is not a whole contiguous f32 storage`);
    }
    plan.push([target, location]);
  }
  // File order: each file is read front to back, which a cold disk and read-ahead reward.
  const fileRank = new Map<unknown, number>();
  for (const { file } of weights.tensors.values()) if (!fileRank.has(file)) fileRank.set(file, fileRank.size);
  const rank = ([, { file }]: [Tensor, TensorLocation]): number => fileRank.get(file)!;
  return plan.sort((a, b) => rank(a) - rank(b) || a[1].entry.dataOffsets[0] - b[1].entry.dataOffsets[0]);
}
