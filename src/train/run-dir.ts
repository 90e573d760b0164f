/**
 * The run directory: where a training run writes, and what eval and generate read.
 *
 *   RUN/config.json          the architecture (Hugging Face GPT2Config / LlamaConfig / Qwen2Config, or knobs-mlp / knobs-cnn)
 *   RUN/generation_config.json   language models: bos_token_id and eos_token_id, as Hugging Face reads them
 *   RUN/recipe.json          the recipe as run: overrides applied, defaults filled, data paths absolute
 *   RUN/model.safetensors    the latest weights (Hugging Face names), replaced atomically
 *   RUN/tokenizer.json       language models: the tokenizer (byte-level models: id = byte value)
 *   RUN/tokenizer_config.json  its transformers settings (special tokens, model_max_length)
 *   RUN/metrics.jsonl        training and evaluation rows (see metrics.ts)
 *   RUN/checkpoints/         crash-safe checkpoints (see checkpoint.ts)
 */
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError, IOError, type KnobsError, UsageError } from '../errors.js';
import { loadSafetensors } from '../formats/safetensors.js';
import { asIOError } from '../io/atomic.js';
import { parseJsonFile } from '../io/json.js';
import { type ModelFiles, readTextFile } from '../models/hf/files.js';
import { checkDirectory, checkRegularFile, readRegularText } from '../io/regular-file.js';
import { Generator } from '../random.js';
import { Tensor } from '../tensor.js';
import { type TrainableModel, modelFromConfigJson } from './build.js';
import { checkRunConfigFits } from './limits.js';
import { type Recipe, parseRecipe } from './recipe.js';

export const CONFIG_NAME = 'config.json';
export const GENERATION_CONFIG_NAME = 'generation_config.json';
export const RECIPE_NAME = 'recipe.json';
export const MODEL_NAME = 'model.safetensors';

/** `runs/<name>-<UTC time>`, e.g. runs/tiny-20250101T120000Z. */
export function defaultRunDir(name: string, now = new Date()): string {
  return join(
    'runs',
    `${name}-${now
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d+Z$/, 'Z')}`,
  );
}

/** What is in the output directory before a run starts. */
/**
 * True for a knobs run directory (it has recipe.json), false for any other model directory (a
 * Hugging Face one); an IOError when `dir` is not a directory at all.
 */
export async function isRunDir(dir: string): Promise<boolean> {
  await checkDirectory(dir, 'model directory');
  return fsp.access(join(dir, RECIPE_NAME)).then(
    () => true,
    () => false,
  );
}

export type RunDirState = 'missing' | 'empty' | 'used';

export async function runDirState(dir: string): Promise<RunDirState> {
  try {
    const st = await fsp.stat(dir);
    if (!st.isDirectory()) throw new UsageError(`--out ${dir} exists and is not a directory`);
    return (await fsp.readdir(dir)).length === 0 ? 'empty' : 'used';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    // ENOTDIR (a part of the path is a regular file), EACCES, ELOOP, …
    throw asIOError(err, dir, 'use as the run directory');
  }
}

/** config.json and recipe.json are small; a larger one is the wrong file. */
const MAX_RUN_JSON_BYTES = 16 * 1024 * 1024;

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readRegularText(path, MAX_RUN_JSON_BYTES);
  } catch (err) {
    const e = err as KnobsError;
    if (e.details?.errno === 'ENOENT')
      throw new IOError(`${path} is missing; is this a knobs run directory (made by 'knobs train')?`, { ...e.details });
    throw err;
  }
  return parseJsonFile(text, path, 'not_json');
}

/** A run's config.json, as an object. */
export async function readRunConfig(dir: string, name = CONFIG_NAME): Promise<Record<string, unknown>> {
  const path = join(dir, name);
  const json = await readJson(path);
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw new FormatError('invalid_model_config', `${path} must hold a JSON object`, { file: path });
  return json as Record<string, unknown>;
}

/** A run's recipe.json, validated. */
export async function readRunRecipe(dir: string): Promise<Recipe> {
  const path = join(dir, RECIPE_NAME);
  return parseRecipe(await readJson(path), path);
}

/**
 * Resuming needs the same architecture: the first config.json field that differs is named, with
 * both values. `source` names where the new config came from (the recipe file).
 */
export function checkSameArchitecture(
  dir: string,
  saved: Record<string, unknown>,
  wanted: Record<string, unknown>,
  source: string,
  name = CONFIG_NAME,
): void {
  const file = join(dir, name);
  for (const field of new Set([...Object.keys(saved), ...Object.keys(wanted)])) {
    const a = JSON.stringify(saved[field]);
    const b = JSON.stringify(wanted[field]);
    if (a !== b) {
      throw new FormatError(
        'resume_mismatch',
        `cannot resume ${dir}: ${file} has ${field} ${a ?? '(absent)'} but ${source} gives ${b ?? '(absent)'}; resume with the recipe the run started with, or train into a new --out`,
        {
          file,
          field,
          saved: saved[field] ?? null,
          wanted: wanted[field] ?? null,
        },
      );
    }
  }
}

export interface LoadedRun {
  dir: string;
  config: Record<string, unknown>;
  recipe: Recipe;
  model: TrainableModel;
}

/** The trained model of a run directory (config.json + model.safetensors) and its recipe. */
export async function loadRun(dir: string): Promise<LoadedRun> {
  const config = await readRunConfig(dir);
  const recipe = await readRunRecipe(dir);
  const weights = join(dir, MODEL_NAME);
  return buildRun(dir, config, recipe, weights, () =>
    checkRegularFile(weights, 'weights file')
      .then(() => loadSafetensors(weights))
      .catch((err: unknown) => {
        if ((err as { details?: { errno?: string } }).details?.errno === 'ENOENT') {
          throw new IOError(`${weights} is missing: the run has not finished or checkpointed yet`, { path: weights });
        }
        throw err;
      }),
  );
}

/**
 * A run's model from its files opened by name (files in memory: a sealed run decrypted), with
 * the same checks as loadRun.
 */
export async function loadRunFiles(files: ModelFiles): Promise<LoadedRun> {
  const json = async (name: string): Promise<{ path: string; value: unknown }> => {
    const file = await readTextFile(files, name);
    const path = join(files.label, name);
    if (!file)
      throw new IOError(`${path} is missing; is this a knobs run directory (made by 'knobs train')?`, { path });
    return { path, value: parseJsonFile(file.text, path, 'not_json') };
  };
  const configFile = await json(CONFIG_NAME);
  const config = configFile.value;
  if (typeof config !== 'object' || config === null || Array.isArray(config))
    throw new FormatError('invalid_model_config', `${configFile.path} must hold a JSON object`, {
      file: configFile.path,
    });
  const recipeFile = await json(RECIPE_NAME);
  const recipe = parseRecipe(recipeFile.value, recipeFile.path);
  const weights = join(files.label, MODEL_NAME);
  return buildRun(files.label, config as Record<string, unknown>, recipe, weights, async () => {
    const source = await files.open(MODEL_NAME);
    if (!source)
      throw new IOError(`${weights} is missing: the run has not finished or checkpointed yet`, { path: weights });
    try {
      return await loadSafetensors(source);
    } finally {
      await source.close();
    }
  });
}

/** Builds the run's model from its config (checked to fit first) and loads the weights `load` reads. */
async function buildRun(
  dir: string,
  config: Record<string, unknown>,
  recipe: Recipe,
  weights: string,
  load: () => Promise<{ tensors: ReadonlyMap<string, unknown> }>,
): Promise<LoadedRun> {
  checkRunConfigFits(config, join(dir, CONFIG_NAME));
  const model = modelFromConfigJson(config, join(dir, CONFIG_NAME), new Generator(0));
  const { tensors } = await load();
  model.loadStateDict(tensorsOnly(tensors, weights));
  model.eval();
  return { dir, config, recipe, model };
}

/** The Tensor entries of a safetensors file; a dtype knobs cannot compute in is an error naming the file. */
export function tensorsOnly(tensors: ReadonlyMap<string, unknown>, file: string): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [name, t] of tensors) {
    if (!(t instanceof Tensor))
      throw new FormatError(
        'unsupported_dtype',
        `${file}: tensor ${JSON.stringify(name)} has a dtype knobs does not load`,
        { file, tensor: name },
      );
    out.set(name, t);
  }
  return out;
}
