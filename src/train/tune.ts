/**
 * `knobs tune`: fine-tunes a base (any language model openLanguageModel opens) with a tune recipe,
 * on the same trainer as `knobs train` (progress, metrics, checkpoints, resume, Ctrl-C). Only the
 * RunModel differs (trainer.ts):
 *
 *   LoRA      OUT/adapter_config.json + adapter_model.safetensors (PEFT's layout, the base's digest
 *             in the metadata), OUT/base_config.json (the base's config.json, checked on resume);
 *   freezing  OUT/config.json + model.safetensors + tokenizer files + recipe.json: a run directory
 *             (recipe.json is the train recipe the tune amounts to, so eval and generate read it).
 *   both      OUT/tune.json ({base, recipe}: what --resume reads), metrics.jsonl, checkpoints/.
 *
 * Checkpoints hold only the tensors that train (the LoRA matrices, or the unfrozen parameters):
 * everything else is the base, which never changes. The same property makes a rebuild after a
 * checkpoint that failed part-way simple: the next checkpoint overwrites every tensor that trains,
 * so `build` returns the same model and only points its dropout at the new generator.
 */
import { join, resolve } from 'node:path';
import { FormatError, UsageError } from '../errors.js';
import { baseDigest, saveLoraAdapter } from '../finetune/adapter.js';
import { applyFreeze } from '../finetune/freeze.js';
import { type LoraAdapter, applyLora, planLora } from '../finetune/lora.js';
import { type QuantType, quantizeBase, quantizedElements } from '../finetune/quantized-base.js';
import { saveSafetensors } from '../formats/safetensors.js';
import { loraPlusGroups } from '../optim/loraplus.js';
import { namedParamsOf } from '../optim/optimizer.js';
import { writeFileAtomic } from '../io/atomic.js';
import { parseJsonFile } from '../io/json.js';
import { readRegularText } from '../io/regular-file.js';
import { GPT } from '../models/gpt.js';
import { Llama } from '../models/llama.js';
import { Dropout, LayerNorm, RMSNorm } from '../nn/layers.js';
import type { Generator } from '../random.js';
import type { Tensor } from '../tensor.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { CausalLM } from '../models/causal-lm.js';
import { TOKENIZER_NAME } from '../tokenizer/config.js';
import { type LanguageModel, type TrainableModel, modelConfigJson } from './build.js';
import { type Recipe, parseRecipe } from './recipe.js';
import { CONFIG_NAME, MODEL_NAME, RECIPE_NAME } from './run-dir.js';
import {
  type TrainOptions,
  type TrainResult,
  type RunModel,
  applyOverrides,
  train,
  writeModelFiles,
} from './trainer.js';
import { type TuneRecipe, parseTuneRecipe, tuneLoraConfig } from './tune-recipe.js';

/** What --resume reads: the base and the tune recipe as run. */
export const TUNE_FILE = 'tune.json';
/** A LoRA run's copy of the base's config.json (an adapter directory holds no config.json of its own). */
export const BASE_CONFIG_NAME = 'base_config.json';

export interface TuneFile {
  base: string;
  recipe: TuneRecipe;
}

export type TuneOptions = Omit<TrainOptions, 'runModel'> & {
  /** Quantize the base's float linear layers before tuning (`--quantize`; overrides the recipe's `quantize`). */
  quantize?: QuantType;
};

export interface TuneResult extends TrainResult {
  method: 'lora' | 'freeze';
  /** Elements that train, and all the model's elements (the base's, plus the adapter's). */
  trainableParameters: number;
  totalParameters: number;
}

/** The schema-valid model section of a train recipe that describes `model` (for sizes, context and vocabulary checks). */
function modelSection(model: LanguageModel): Recipe['model'] {
  if (model instanceof GPT) {
    const c = model.config;
    return {
      type: 'gpt',
      vocab_size: c.vocab_size,
      n_positions: c.n_positions,
      n_embd: c.n_embd,
      n_layer: c.n_layer,
      n_head: c.n_head,
      layer_norm_epsilon: c.layer_norm_epsilon,
      dropout: 0,
    };
  }
  const c = model.config;
  return {
    type: c.model_type === 'qwen2' ? 'qwen2' : 'llama',
    vocab_size: c.vocab_size,
    hidden_size: c.hidden_size,
    intermediate_size: c.intermediate_size,
    num_hidden_layers: c.num_hidden_layers,
    num_attention_heads: c.num_attention_heads,
    num_key_value_heads: c.num_key_value_heads,
    max_position_embeddings: c.max_position_embeddings,
    rms_norm_eps: c.rms_norm_eps,
    rope_theta: c.rope_theta,
    rope_scaling: null,
    tie_word_embeddings: c.tie_word_embeddings,
    initializer_range: c.initializer_range,
    bos_token_id: c.bos_token_id,
    eos_token_id:
      c.eos_token_id === null ? null : typeof c.eos_token_id === 'number' ? c.eos_token_id : [...c.eos_token_id],
  };
}

/** The tensors that train, by parameter name (what a tune checkpoint holds). */
export function trainableTensors(model: TrainableModel): Map<string, Tensor> {
  return new Map(
    model
      .namedParameters()
      .filter(([, p]) => p.requiresGrad)
      .map(([n, p]) => [n, p.detach()]),
  );
}

/** Copies a checkpoint's tensors into the parameters that train; the names must be exactly those. */
function loadTrainable(model: TrainableModel, tensors: Map<string, Tensor>, file: string): void {
  const wanted = trainableTensors(model);
  const missing = [...wanted.keys()].filter((k) => !tensors.has(k));
  const unexpected = [...tensors.keys()].filter((k) => !wanted.has(k));
  if (missing.length > 0 || unexpected.length > 0)
    throw new FormatError(
      'resume_mismatch',
      `${file}: the checkpoint's tensors are not the ones this tune trains (missing ${missing.slice(0, 4).join(', ') || 'none'}; unexpected ${unexpected.slice(0, 4).join(', ') || 'none'}); resume with the recipe the run started with`,
      { file, missing, unexpected },
    );
  model.loadStateDict(tensors, { strict: false });
}

/** Reads OUT/tune.json of a tune run (for --resume without BASE and RECIPE). */
export async function readTuneFile(out: string): Promise<TuneFile> {
  const path = join(out, TUNE_FILE);
  const json = parseJsonFile(
    await readRegularText(path, 1024 * 1024, 'tune file'),
    path,
    'not_json',
  ) as Partial<TuneFile>;
  if (typeof json !== 'object' || json === null || typeof json.base !== 'string')
    throw new FormatError('invalid_recipe', `${path} must hold {"base": PATH, "recipe": {...}}`, { file: path });
  return { base: json.base, recipe: parseTuneRecipe(json.recipe, path) };
}

/** The base a tune starts from: what openLanguageModel (load/) returns for its path. */
export interface TuneBase {
  path: string;
  model: CausalLM;
  /** Its tokenizer (DIR/tokenizer.json, or a GGUF file's metadata); null for byte-level runs. */
  tokenizer: Tokenizer | null;
  /** 'gguf' when `path` is a GGUF file (its tokenizer is read from the file). */
  kind?: string;
}

/**
 * Fine-tunes `opened` with `recipeIn` into `opts.out`. Everything (recipe, data, targets, globs) is
 * checked before the output directory is created, as in `train`. The base's model is changed in
 * place (adapters attached, or parameters frozen and trained).
 */
export async function tune(opened: TuneBase, recipeIn: TuneRecipe, opts: TuneOptions = {}): Promise<TuneResult> {
  const source = opts.source ?? 'recipe';
  const basePath = opened.path;
  const base = resolve(basePath);
  const model = opened.model;
  if (!(model instanceof GPT || model instanceof Llama))
    throw new UsageError(
      `${basePath}: knobs tune trains GPT-2 and Llama-family models; this is a ${model.constructor.name}`,
    );
  const { lora, trainable, frozen, quantize: recipeQuantize, optimizer: tuneOptimizer, ...rest } = recipeIn;
  const { loraplus_lr_ratio: loraPlusRatio, ...optimizer } = tuneOptimizer;
  const fields = { ...rest, optimizer };
  const quantize = opts.quantize ?? recipeQuantize;
  if (quantize !== undefined && lora === undefined)
    throw new UsageError(
      `--quantize ${quantize}: a quantized base trains LoRA adapters only (its quantized weights cannot train); use a recipe with a "lora" section`,
    );
  // A GGUF file carries its tokenizer in its metadata; the recipe names the file (train/sources.ts).
  const tokenizerPath = opened.kind === 'gguf' ? base : join(base, TOKENIZER_NAME);
  const trainRecipe = applyOverrides(
    parseRecipe(
      { ...fields, model: modelSection(model), tokenizer: opened.tokenizer !== null ? tokenizerPath : 'bytes' },
      source,
    ),
    opts,
  );
  // The tune recipe as run: the overrides applied, its data path absolute (as recipe.json in a run).
  const ran: TuneRecipe = parseTuneRecipe(
    JSON.parse(
      JSON.stringify({
        ...recipeIn,
        data: trainRecipe.data,
        steps: trainRecipe.steps,
        epochs: trainRecipe.epochs,
        seed: trainRecipe.seed,
        ...(quantize !== undefined ? { quantize } : {}),
      }),
    ),
    source,
  );
  const tuneJson: TuneFile = { base, recipe: ran };
  const total0 = model.numParameters() + quantizedElements(model); // a GGUF base may hold quantized layers

  let adapter: LoraAdapter | null = null;
  let runModel: RunModel;
  if (lora !== undefined) {
    const config = { ...tuneLoraConfig(ran, source), base_model_name_or_path: basePath };
    if (quantize !== undefined) {
      // Before the plan and the digest: the adapter attaches to the quantized layers, and the
      // digest records the base as it trains (its blocks).
      const { kept } = quantizeBase(model, quantize);
      for (const k of kept)
        opts.onLog?.({ type: 'warning', message: `--quantize ${quantize}: ${k.name} stays f32 (${k.reason})` });
    }
    const plan = planLora(model, config); // checks the targets before anything changes
    const digest = baseDigest(model);
    const baseConfig = { ...model.toHFConfig(), knobs_base_digest: digest };
    runModel = {
      build: (generator) => {
        adapter ??= applyLora(model, plan, { generator });
        return withDropoutFrom(model, generator);
      },
      configFile: BASE_CONFIG_NAME,
      config: () => baseConfig,
      recipeFile: TUNE_FILE,
      recipeJson: tuneJson,
      writeStatic: async () => undefined,
      weights: trainableTensors,
      loadWeights: (m, tensors) => loadTrainable(m, tensors, 'checkpoint'),
      writeResult: (out, m) => saveLoraAdapter(out, m, adapter!, { baseDigest: digest }),
      ...(loraPlusRatio !== undefined
        ? {
            paramGroups: (m: TrainableModel) =>
              loraPlusGroups(namedParamsOf(m), {
                lr: trainRecipe.optimizer.lr,
                ratio: loraPlusRatio,
                weightDecay: trainRecipe.optimizer.weight_decay,
                noDecay: normParameterNames(m),
              }),
          }
        : {}),
    };
  } else {
    let applied = false;
    runModel = {
      build: (generator) => {
        if (!applied) applyFreeze(model, { ...(trainable ? { trainable } : {}), ...(frozen ? { frozen } : {}) });
        applied = true;
        return withDropoutFrom(model, generator);
      },
      configFile: CONFIG_NAME,
      config: modelConfigJson,
      recipeFile: TUNE_FILE,
      recipeJson: tuneJson,
      // recipe.json too (the train recipe it amounts to), so eval and generate read OUT as a run.
      writeStatic: async (out, m) => {
        await writeFileAtomic(join(out, RECIPE_NAME), `${JSON.stringify(trainRecipe, null, 2)}\n`);
        await writeModelFiles(out, trainRecipe, m);
      },
      weights: trainableTensors,
      loadWeights: (m, tensors) => loadTrainable(m, tensors, 'checkpoint'),
      writeResult: (out, m) => saveSafetensors(join(out, MODEL_NAME), m.stateDict(), { format: 'pt' }),
    };
  }
  const result = await train(trainRecipe, { ...opts, runModel });
  return {
    ...result,
    method: lora !== undefined ? 'lora' : 'freeze',
    trainableParameters: model.numParameters({ trainableOnly: true }),
    totalParameters: Math.max(total0, model.numParameters() + quantizedElements(model)),
  };
}

/** The parameters of `model`'s layer norms (LoRA+ never decays them, as PEFT's groups do not). */
function normParameterNames(model: TrainableModel): Set<string> {
  return new Set(
    model
      .namedModules()
      .filter(([, m]) => m instanceof LayerNorm || m instanceof RMSNorm)
      .flatMap(([path, m]) => m.namedParameters(path).map(([name]) => name)),
  );
}

/** Points every dropout of `model` (the base's and the adapter's) at the run's generator, so a resumed run draws the same masks. */
function withDropoutFrom(model: TrainableModel, generator: Generator): TrainableModel {
  for (const [, m] of model.namedModules()) if (m instanceof Dropout) m.generator = generator;
  return model;
}
