/**
 * Training recipes: a JSON file that names the model, data, optimizer, schedule, batch size and
 * the logging, evaluation and checkpoint intervals. Validated with zod; every error names the
 * file and the exact field (`optimizer.betas[1]`), and unknown fields are rejected.
 */
import { z } from 'zod';
import { FormatError, IOError, KnobsError } from '../errors.js';
import { parseJsonFile } from '../io/json.js';
import { readRegularText } from '../io/regular-file.js';

/** A recipe is a page of JSON; anything larger is the wrong file. */
const MAX_RECIPE_BYTES = 1024 * 1024;

const positiveInt = z.number().int().positive();

const mlpModel = z.strictObject({
  type: z.literal('mlp'),
  input: positiveInt.default(784),
  hidden: z.array(positiveInt).min(1),
  classes: positiveInt.default(10),
  dropout: z.number().min(0).max(1).default(0),
});

const cnnModel = z.strictObject({
  type: z.literal('cnn'),
  in_channels: positiveInt.default(1),
  image_size: positiveInt.default(28),
  channels: z.array(positiveInt).min(1).default([32, 64]),
  kernel_size: positiveInt.default(3),
  hidden: positiveInt.default(128),
  classes: positiveInt.default(10),
  dropout: z.number().min(0).max(1).default(0),
});

/** GPT-2 architecture; field names follow Hugging Face's GPT2Config. */
const gptModel = z.strictObject({
  type: z.literal('gpt'),
  vocab_size: positiveInt.default(256),
  n_positions: positiveInt,
  n_embd: positiveInt,
  n_layer: positiveInt,
  n_head: positiveInt,
  layer_norm_epsilon: z.number().positive().default(1e-5),
  dropout: z.number().min(0).max(1).default(0),
});

const ropeScaling = z.discriminatedUnion('rope_type', [
  z.strictObject({ rope_type: z.literal('linear'), factor: z.number().positive() }),
  z.strictObject({
    rope_type: z.literal('llama3'),
    factor: z.number().positive(),
    low_freq_factor: z.number().positive(),
    high_freq_factor: z.number().positive(),
    original_max_position_embeddings: positiveInt,
  }),
]);

const tokenId = z.number().int().min(0);

/**
 * Llama architecture (type "llama"; "qwen2" adds q/k/v biases); field names follow Hugging Face's
 * LlamaConfig / Qwen2Config. num_key_value_heads defaults to num_attention_heads (no grouping),
 * head_dim to hidden_size / num_attention_heads.
 */
const llamaModel = z.strictObject({
  type: z.enum(['llama', 'qwen2']),
  vocab_size: positiveInt.default(256),
  hidden_size: positiveInt,
  intermediate_size: positiveInt,
  num_hidden_layers: positiveInt,
  num_attention_heads: positiveInt,
  num_key_value_heads: positiveInt.optional(),
  head_dim: positiveInt.optional(),
  max_position_embeddings: positiveInt,
  rms_norm_eps: z.number().positive().default(1e-6),
  rope_theta: z.number().positive().default(10000),
  rope_scaling: ropeScaling.nullable().default(null),
  tie_word_embeddings: z.boolean().default(false),
  initializer_range: z.number().min(0).default(0.02),
  bos_token_id: tokenId.nullable().default(null),
  eos_token_id: z
    .union([tokenId, z.array(tokenId).min(1)])
    .nullable()
    .default(null),
});

type ModelSection = z.output<typeof gptModel> | z.output<typeof llamaModel> | { type: 'mlp' | 'cnn' };

/** GPT and Llama-family models train on text; the classifiers on images. */
export const isLanguageModel = (m: ModelSection): m is z.output<typeof gptModel> | z.output<typeof llamaModel> =>
  m.type !== 'mlp' && m.type !== 'cnn';

const llamaOf = (m: ModelSection): z.output<typeof llamaModel> | null =>
  m.type === 'llama' || m.type === 'qwen2' ? (m as z.output<typeof llamaModel>) : null;

/** The longest context the recipe's language model holds, and the field that says so. */
export function modelPositions(m: z.output<typeof gptModel> | z.output<typeof llamaModel>): {
  field: string;
  positions: number;
} {
  return m.type === 'gpt'
    ? { field: 'n_positions', positions: m.n_positions }
    : { field: 'max_position_embeddings', positions: m.max_position_embeddings };
}

const idxData = z.strictObject({
  type: z.literal('idx'),
  train_images: z.string(),
  train_labels: z.string(),
  test_images: z.string(),
  test_labels: z.string(),
  /** Shape fed to the model: flat [B, 784] for MLPs, [B, 1, 28, 28] for CNNs. */
  layout: z.enum(['flat', 'image']).default('flat'),
  /** How to get the files; shown when one is missing. */
  hint: z.string().optional(),
});

const textData = z.strictObject({
  type: z.literal('text'),
  path: z.string(),
  /** The last fraction of the file is held out for validation. */
  validation_fraction: z.number().gt(0).lt(1).default(0.05),
  /** How to get the file; shown when it is missing. */
  hint: z.string().optional(),
});

/** The optimizer section's two shapes (exported for tune recipes, which add LoRA+ fields). */
export const sgdOptimizer = z.strictObject({
  type: z.literal('sgd'),
  lr: z.number().positive(),
  momentum: z.number().min(0).max(1).default(0),
  nesterov: z.boolean().default(false),
  weight_decay: z.number().min(0).default(0),
});
export const adamOptimizer = z.strictObject({
  type: z.enum(['adam', 'adamw']),
  lr: z.number().positive(),
  betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]),
  eps: z.number().positive().default(1e-8),
  weight_decay: z.number().min(0).default(0),
});

const optimizer = z.discriminatedUnion('type', [sgdOptimizer, adamOptimizer]);

const schedule = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('constant'), warmup_steps: z.number().int().min(0).default(0) }),
  z.strictObject({
    type: z.literal('cosine'),
    warmup_steps: z.number().int().min(0).default(0),
    min_lr: z.number().min(0).default(0),
  }),
]);

/**
 * The fields of a recipe besides `name`, `description`, `model` and `tokenizer`: data, optimizer, schedule, length,
 * batching and the intervals. A tune recipe (tune-recipe.ts) shares them.
 */
export const runName = z.string().regex(/^[A-Za-z0-9._-]+$/, 'use letters, digits, dot, dash and underscore');

export const runFields = {
  data: z.discriminatedUnion('type', [idxData, textData]),
  optimizer,
  schedule: schedule.default({ type: 'constant', warmup_steps: 0 }),
  batch_size: positiveInt,
  /** Sequence length for language models (defaults to the model's n_positions). */
  context: positiveInt.optional(),
  steps: positiveInt.optional(),
  epochs: positiveInt.optional(),
  grad_accum_steps: positiveInt.default(1),
  clip_grad_norm: z.number().positive().optional(),
  /** Matmul precision: "f32" (default) or "bf16" mixed precision (bf16 products, f32 weights, optimizer and the rest). */
  precision: z.enum(['f32', 'bf16']).optional(),
  /** Consecutive steps with a NaN/Inf gradient (each skipped) after which the run stops. */
  max_nonfinite_steps: z.number().int().min(0).default(10),
  seed: z.number().int().min(0).default(0),
  log_every: positiveInt.default(10),
  eval_every: positiveInt.optional(),
  /** Batches per evaluation (language models; classifiers evaluate the whole test split). */
  eval_batches: positiveInt.default(20),
  checkpoint_every: positiveInt.optional(),
};

export const recipeSchema = z
  .strictObject({
    name: runName,
    description: z.string().optional(),
    model: z.discriminatedUnion('type', [mlpModel, cnnModel, gptModel, llamaModel]),
    /** How text becomes token ids: "bytes" (each UTF-8 byte is its id, vocabulary 256) or the path of a tokenizer.json. */
    tokenizer: z.string().min(1, 'give "bytes" or the path of a tokenizer.json').default('bytes'),
    ...runFields,
  })
  .refine((r) => (r.steps === undefined) !== (r.epochs === undefined), {
    message: 'give exactly one of "steps" or "epochs"',
    path: ['steps'],
  })
  .refine((r) => r.tokenizer === 'bytes' || isLanguageModel(r.model), {
    message: 'only language models (gpt, llama, qwen2) take a tokenizer',
    path: ['tokenizer'],
  })
  .refine((r) => isLanguageModel(r.model) === (r.data.type === 'text'), {
    message: 'gpt, llama and qwen2 models train on text data; mlp and cnn models on idx data',
    path: ['data', 'type'],
  })
  .refine((r) => r.model.type !== 'gpt' || r.model.n_embd % r.model.n_head === 0, {
    message: 'n_embd must be divisible by n_head',
    path: ['model', 'n_head'],
  })
  .refine(
    (r) => {
      const m = llamaOf(r.model);
      return !m || m.num_attention_heads % (m.num_key_value_heads ?? m.num_attention_heads) === 0;
    },
    {
      message:
        'num_key_value_heads must divide num_attention_heads (each key/value head serves a whole group of query heads)',
      path: ['model', 'num_key_value_heads'],
    },
  )
  .refine(
    (r) => {
      const m = llamaOf(r.model);
      return !m || m.hidden_size % m.num_attention_heads === 0;
    },
    {
      message: 'hidden_size must be divisible by num_attention_heads',
      path: ['model', 'num_attention_heads'],
    },
  )
  .refine(
    (r) => {
      const m = llamaOf(r.model);
      return !m || m.head_dim === undefined || m.head_dim * m.num_attention_heads === m.hidden_size;
    },
    {
      message: 'head_dim must equal hidden_size / num_attention_heads (knobs implements no other head size)',
      path: ['model', 'head_dim'],
    },
  )
  .refine(
    (r) => !isLanguageModel(r.model) || r.context === undefined || r.context <= modelPositions(r.model).positions,
    {
      message: "context must be at most the model's positions (n_positions, or max_position_embeddings)",
      path: ['context'],
    },
  )
  // Text read as bytes: every token id 0..255 must be in the vocabulary (a tokenizer.json is checked when loaded).
  .refine((r) => !isLanguageModel(r.model) || r.tokenizer !== 'bytes' || r.model.vocab_size >= 256, {
    message: 'byte-level text needs vocab_size >= 256',
    path: ['model', 'vocab_size'],
  })
  .refine(
    (r) => {
      const m = llamaOf(r.model);
      return !m || [m.bos_token_id, m.eos_token_id].flat().every((id) => id === null || id < m.vocab_size);
    },
    {
      message: 'bos_token_id and eos_token_id must be ids below vocab_size',
      path: ['model', 'eos_token_id'],
    },
  );

export type Recipe = z.output<typeof recipeSchema>;

/** Formats zod's issue path the way a user writes it: optimizer.betas[1]. */
export function fieldPath(path: readonly PropertyKey[]): string {
  return (
    path.reduce<string>(
      (acc, key) => (typeof key === 'number' ? `${acc}[${key}]` : acc ? `${acc}.${String(key)}` : String(key)),
      '',
    ) || '(top level)'
  );
}

/** Validates parsed JSON as a recipe; `source` names the file in error messages. */
export function parseRecipe(json: unknown, source = 'recipe'): Recipe {
  const result = recipeSchema.safeParse(json);
  if (!result.success) {
    const issues = result.error.issues.map((i) => `${fieldPath(i.path)}: ${i.message}`);
    throw new FormatError('invalid_recipe', `${source}: invalid recipe — ${issues.join('; ')}`, {
      file: source,
      issues,
    });
  }
  return result.data;
}

/** A recipe file's JSON, unvalidated (bounded read; IOError or FormatError naming the file). */
export async function readRecipeJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readRegularText(path, MAX_RECIPE_BYTES, 'recipe');
  } catch (err) {
    if (err instanceof KnobsError) throw err;
    throw new IOError(`cannot read recipe ${path}: ${(err as Error).message}`, { path });
  }
  return parseJsonFile(text, path, 'recipe_not_json');
}

/** Reads and validates a recipe file. */
export async function loadRecipe(path: string): Promise<Recipe> {
  return parseRecipe(await readRecipeJson(path), path);
}
