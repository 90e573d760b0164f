/**
 * From a recipe to the objects a training run needs: the model, its config.json, the optimizer
 * and the learning-rate schedule. Also the way back: a model from a run directory's config.json
 * (for eval, generate and resume).
 */
import { FormatError } from '../errors.js';
import { CNNClassifier } from '../models/cnn.js';
import { GPT, gptConfigFromHF } from '../models/gpt.js';
import { Llama, llamaConfigFromHF } from '../models/llama.js';
import { MLPClassifier } from '../models/mlp.js';
import { crossEntropy } from '../ops/nn.js';
import { Adam, AdamW } from '../optim/adam.js';
import type { Optimizer, BaseOptions, ParamGroupInput } from '../optim/optimizer.js';
import { constantSchedule, cosineSchedule, type Schedule } from '../optim/schedule.js';
import { SGD } from '../optim/sgd.js';
import type { Generator } from '../random.js';
import type { Tensor } from '../tensor.js';
import type { Recipe } from './recipe.js';

export type TrainableModel = GPT | Llama | MLPClassifier | CNNClassifier;

/** The language models among them (next-token loss, generation). */
export type LanguageModel = GPT | Llama;

export const isLanguageModelInstance = (m: TrainableModel): m is LanguageModel =>
  m instanceof GPT || m instanceof Llama;

/** knobs' own model_type values for the classifiers (GPT uses Hugging Face's "gpt2"). */
export const MLP_MODEL_TYPE = 'knobs-mlp';
export const CNN_MODEL_TYPE = 'knobs-cnn';

/** A fresh model for the recipe; `generator` draws the init and, later, the dropout masks. */
export function buildModel(recipe: Recipe, generator: Generator): TrainableModel {
  const m = recipe.model;
  switch (m.type) {
    case 'mlp':
      return new MLPClassifier(
        { input: m.input, hidden: m.hidden, classes: m.classes, dropout: m.dropout },
        { generator },
      );
    case 'cnn':
      return new CNNClassifier(
        {
          in_channels: m.in_channels,
          image_size: m.image_size,
          channels: m.channels,
          kernel_size: m.kernel_size,
          hidden: m.hidden,
          classes: m.classes,
          dropout: m.dropout,
        },
        { generator },
      );
    case 'gpt':
      return new GPT(
        {
          vocab_size: m.vocab_size,
          n_positions: m.n_positions,
          n_embd: m.n_embd,
          n_layer: m.n_layer,
          n_head: m.n_head,
          layer_norm_epsilon: m.layer_norm_epsilon,
          dropout: m.dropout,
        },
        { generator },
      );
    case 'llama':
    case 'qwen2': {
      const { type, ...config } = m;
      return new Llama({ ...config, model_type: type }, { generator });
    }
  }
}

/**
 * The config.json of a run: Hugging Face's GPT2Config, LlamaConfig or Qwen2Config for language
 * models (so the run directory is a model directory transformers can load), knobs' own model_type
 * with the model config for classifiers.
 */
export function modelConfigJson(model: TrainableModel): Record<string, unknown> {
  if (isLanguageModelInstance(model)) return model.toHFConfig();
  if (model instanceof MLPClassifier)
    return { model_type: MLP_MODEL_TYPE, architectures: ['MLPClassifier'], ...model.config };
  return { model_type: CNN_MODEL_TYPE, architectures: ['CNNClassifier'], ...model.config };
}

/** generation_config.json of a language model's run (Hugging Face's GenerationConfig fields); null for classifiers. */
export function generationConfigJson(model: TrainableModel): Record<string, unknown> | null {
  if (!isLanguageModelInstance(model)) return null;
  return { bos_token_id: model.config.bos_token_id, eos_token_id: model.config.eos_token_id };
}

/** A model (freshly initialised) from a run's config.json; `file` names it in errors. */
export function modelFromConfigJson(json: Record<string, unknown>, file: string, generator: Generator): TrainableModel {
  try {
    switch (json.model_type) {
      case 'gpt2':
        return new GPT(gptConfigFromHF(json), { generator });
      case 'llama':
      case 'mistral':
      case 'qwen2':
        return new Llama(llamaConfigFromHF(json), { generator });
      case MLP_MODEL_TYPE:
        return new MLPClassifier(json as never, { generator });
      case CNN_MODEL_TYPE:
        return new CNNClassifier(json as never, { generator });
    }
  } catch (err) {
    throw new FormatError('invalid_model_config', `${file}: ${(err as Error).message}`, { file });
  }
  throw new FormatError(
    'invalid_model_config',
    `${file}: model_type ${JSON.stringify(json.model_type)} is not one knobs trains ("gpt2", "llama", "mistral", "qwen2", "${MLP_MODEL_TYPE}", "${CNN_MODEL_TYPE}")`,
    { file, field: 'model_type' },
  );
}

/** The mean loss of one batch: next-token cross-entropy for language models, class cross-entropy otherwise. */
export function modelLoss(model: TrainableModel, inputs: Tensor, targets: Tensor): Tensor {
  return isLanguageModelInstance(model) ? model.loss(inputs, targets) : crossEntropy(model.forward(inputs), targets);
}

/** AdamW decays only matrices and embeddings (not biases or norm weights), as nanoGPT. */
export function buildOptimizer(
  recipe: Recipe,
  model: TrainableModel,
  groups?: readonly ParamGroupInput<BaseOptions>[],
): Optimizer<BaseOptions> {
  const o = recipe.optimizer;
  const params = groups ?? model; // explicit groups (LoRA+) carry their own lr and weight decay
  switch (o.type) {
    case 'sgd':
      return new SGD(params, { lr: o.lr, momentum: o.momentum, nesterov: o.nesterov, weightDecay: o.weight_decay });
    case 'adam':
      return new Adam(params, { lr: o.lr, betas: o.betas, eps: o.eps, weightDecay: o.weight_decay });
    case 'adamw':
      return new AdamW(params, { lr: o.lr, betas: o.betas, eps: o.eps, weightDecay: o.weight_decay });
  }
}

/**
 * The recipe's schedule over `totalSteps` optimizer steps; errors name the recipe field. A run
 * shorter than its warm-up (a smoke test with --steps 3) just never leaves the warm-up.
 */
export function buildSchedule(recipe: Recipe, totalSteps: number, source = 'recipe'): Schedule {
  const s = recipe.schedule;
  if (s.type === 'constant') return constantSchedule({ lr: recipe.optimizer.lr, warmupSteps: s.warmup_steps });
  if (s.min_lr > recipe.optimizer.lr) {
    throw new FormatError(
      'invalid_recipe',
      `${source}: schedule.min_lr (${s.min_lr}) is above optimizer.lr (${recipe.optimizer.lr})`,
      {
        file: source,
        issues: ['schedule.min_lr: above optimizer.lr'],
      },
    );
  }
  return cosineSchedule({
    maxLr: recipe.optimizer.lr,
    minLr: s.min_lr,
    warmupSteps: s.warmup_steps,
    totalSteps: Math.max(totalSteps, s.warmup_steps),
  });
}
