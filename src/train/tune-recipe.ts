/**
 * Tune recipes (`knobs tune BASE RECIPE.json`): a training recipe without `model` or `tokenizer`
 * (the base is the model, and its tokenizer reads the text) and with either a `lora` section
 * (PEFT's LoraConfig fields, checked by parseLoraConfig) or `trainable` / `frozen` glob lists over
 * stateDict() names (finetune/freeze.ts), and optionally `quantize` ("q8_0" / "q4_0": LoRA on the
 * base quantized in memory). Validated with zod like train recipes; errors name the
 * file and the field.
 */
import { z } from 'zod';
import { FormatError } from '../errors.js';
import { type LoraConfig, parseLoraConfig } from '../finetune/lora.js';
import { adamOptimizer, fieldPath, readRecipeJson, runFields, runName, sgdOptimizer } from './recipe.js';

const globs = z.array(z.string().min(1)).min(1);

/**
 * LoRA+ (optim/loraplus.ts): lora_B trains at `loraplus_lr_ratio` × the optimizer's lr, named as
 * PEFT's create_loraplus_optimizer argument. Only a LoRA tune has lora_B matrices.
 */
const loraPlus = { loraplus_lr_ratio: z.number().positive().finite().optional() };
const tuneOptimizer = z.discriminatedUnion('type', [sgdOptimizer.extend(loraPlus), adamOptimizer.extend(loraPlus)]);

export const tuneRecipeSchema = z
  .strictObject({
    name: runName,
    description: z.string().optional(),
    /** PEFT's LoraConfig fields (r, lora_alpha, lora_dropout, target_modules, use_rslora, rank_pattern, …). */
    lora: z.record(z.string(), z.unknown()).optional(),
    trainable: globs.optional(),
    frozen: globs.optional(),
    /** Quantize the base's float linear layers in memory before a LoRA tune (QLoRA-style). */
    quantize: z.enum(['q8_0', 'q4_0']).optional(),
    ...runFields,
    optimizer: tuneOptimizer,
  })
  .refine((r) => (r.steps === undefined) !== (r.epochs === undefined), {
    message: 'give exactly one of "steps" or "epochs"',
    path: ['steps'],
  })
  .refine((r) => (r.lora !== undefined) !== (r.trainable !== undefined || r.frozen !== undefined), {
    message: 'give either a "lora" section or "trainable" / "frozen" lists (not both, not neither)',
    path: ['lora'],
  })
  .refine((r) => r.quantize === undefined || r.lora !== undefined, {
    message: 'a quantized base trains LoRA adapters only (its quantized weights cannot train); add a "lora" section',
    path: ['quantize'],
  })
  .refine((r) => r.optimizer.loraplus_lr_ratio === undefined || r.lora !== undefined, {
    message: 'LoRA+ scales the lr of lora_B matrices, which only a LoRA tune has; drop it or add a "lora" section',
    path: ['optimizer', 'loraplus_lr_ratio'],
  })
  .refine((r) => r.data.type === 'text', {
    message: 'knobs tune fine-tunes language models: the data must be text',
    path: ['data', 'type'],
  });

export type TuneRecipe = z.output<typeof tuneRecipeSchema>;

function invalid(source: string, issues: string[]): FormatError {
  return new FormatError('invalid_recipe', `${source}: invalid tune recipe — ${issues.join('; ')}`, {
    file: source,
    issues,
  });
}

/** Validates parsed JSON as a tune recipe (the lora section as PEFT would); `source` names the file. */
export function parseTuneRecipe(json: unknown, source = 'recipe'): TuneRecipe {
  if (typeof json === 'object' && json !== null && 'model' in json)
    throw invalid(source, ['model: a tune recipe has no model section; the BASE given to knobs tune is the model']);
  const result = tuneRecipeSchema.safeParse(json);
  if (!result.success)
    throw invalid(
      source,
      result.error.issues.map((i) => `${fieldPath(i.path)}: ${i.message}`),
    );
  if (result.data.lora !== undefined) tuneLoraConfig(result.data, source);
  return result.data;
}

/** The recipe's lora section as a LoraConfig; a PEFT-level error names `lora.<field>`. */
export function tuneLoraConfig(recipe: TuneRecipe, source = 'recipe'): LoraConfig {
  try {
    return parseLoraConfig({ task_type: 'CAUSAL_LM', ...recipe.lora });
  } catch (err) {
    if (!(err instanceof FormatError)) throw err;
    const field = typeof err.details.field === 'string' ? `lora.${err.details.field}` : 'lora';
    throw new FormatError('invalid_recipe', `${source}: invalid tune recipe — ${field}: ${err.message}`, {
      file: source,
      field,
      issues: [`${field}: ${err.message}`],
    });
  }
}

/** Reads and validates a tune recipe file. */
export async function loadTuneRecipe(path: string): Promise<TuneRecipe> {
  return parseTuneRecipe(await readRecipeJson(path), path);
}
