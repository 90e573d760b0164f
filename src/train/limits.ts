/**
 * Sizes that cannot fit, refused before anything is allocated.
 *
 * A recipe or a run's config.json is a few numbers, and a few large numbers ask for more memory
 * than any machine has: `batch_size` 1e9 aborted V8 itself (an array too large for the heap),
 * `vocab_size` 1e10 asked for a 640 GB embedding, `n_layer` 1e6 allocated until killed. Here a
 * lower bound of what the model needs — parameters, plus for training their gradients and two
 * optimizer moments, one micro-batch's main activations and the batches of one step — is compared
 * with the memory of the machine (or the process's cgroup limit), and the largest single tensor
 * with what a typed array can hold. Being a lower bound, it never refuses what could have run;
 * it turns the hopeless into a FormatError (rule `too_large`) that names the fields to reduce.
 */
import { totalmem } from 'node:os';
import { FormatError } from '../errors.js';
import { cnnFeatureSize } from '../models/cnn.js';
import type { Recipe } from './recipe.js';

/** The most elements a Float32Array can have. */
export const MAX_TENSOR_ELEMENTS = 2 ** 32 - 1;
const FLOAT_BYTES = 4;

/** Memory a run may use: physical memory, or the cgroup limit when one is set and lower. */
export function memoryBudget(): number {
  const constrained = typeof process.constrainedMemory === 'function' ? process.constrainedMemory() : 0;
  // Not the free memory: it changes from second to second; the total is what can ever fit.
  const total = totalmem();
  return constrained !== undefined && constrained > 0 && constrained < total ? constrained : total;
}

interface Need {
  /** Elements in the largest single tensor, and the fields that set its size. */
  largest: { elements: number; fields: string };
  /** Bytes needed at least. */
  bytes: number;
  /** Fields to reduce, for the message. */
  fields: string;
}

function gptNeed(
  V: number,
  P: number,
  E: number,
  L: number,
  H: number,
  batch: { B: number; T: number; accum: number } | null,
): Need {
  const params = V * E + P * E + L * (12 * E * E + 13 * E) + 2 * E;
  // Training: weights, gradients, two moments; per micro-batch the logits and their gradient
  // (B·T·V each), and per layer a dozen B·T·E activations and the B·H·T·T attention weights.
  const act = batch ? batch.B * batch.T * (2 * V + L * (12 * E + 2 * H * batch.T)) : 0;
  const tokens = batch ? batch.accum * batch.B * batch.T * 2 : 0;
  const largest =
    batch && batch.B * batch.T * V > V * E
      ? { elements: batch.B * batch.T * V, fields: 'batch_size × context × model.vocab_size' }
      : { elements: V * E, fields: 'model.vocab_size × model.n_embd' };
  return {
    largest,
    bytes: FLOAT_BYTES * ((batch ? 4 : 1) * params + act + tokens),
    fields: batch
      ? 'model.n_embd, model.n_layer, model.vocab_size, batch_size, context or grad_accum_steps'
      : 'n_embd, n_layer, vocab_size',
  };
}

function mlpNeed(
  input: number,
  hidden: readonly number[],
  classes: number,
  batch: { B: number; accum: number } | null,
): Need {
  const widths = [input, ...hidden, classes];
  let params = 0;
  let largest = 0;
  for (let i = 1; i < widths.length; i++) {
    params += widths[i - 1]! * widths[i]! + widths[i]!;
    largest = Math.max(largest, widths[i - 1]! * widths[i]!);
  }
  const act = batch ? batch.B * widths.reduce((a, b) => a + b, 0) * 2 : 0;
  const images = batch ? batch.accum * batch.B * input : 0;
  return {
    largest: { elements: largest, fields: 'model.input, model.hidden' },
    bytes: FLOAT_BYTES * ((batch ? 4 : 1) * params + act + images),
    fields: batch ? 'model.hidden, batch_size or grad_accum_steps' : 'hidden',
  };
}

function cnnNeed(
  c: {
    in_channels: number;
    image_size: number;
    channels: readonly number[];
    kernel_size: number;
    hidden: number;
    classes: number;
  },
  batch: { B: number; accum: number } | null,
): Need {
  const ins = [c.in_channels, ...c.channels];
  let params = 0;
  for (let i = 0; i < c.channels.length; i++)
    params += c.kernel_size * c.kernel_size * ins[i]! * ins[i + 1]! + ins[i + 1]!;
  const features = cnnFeatureSize(c as never);
  params += features * c.hidden + c.hidden * c.classes;
  const pixels = c.image_size * c.image_size;
  const act = batch ? batch.B * pixels * (c.in_channels + c.channels[0]!) * 2 : 0;
  const images = batch ? batch.accum * batch.B * pixels * c.in_channels : 0;
  return {
    largest: {
      elements: Math.max(features * c.hidden, batch ? batch.B * pixels * c.channels[0]! : 0),
      fields: 'model.channels, model.image_size, model.hidden, batch_size',
    },
    bytes: FLOAT_BYTES * ((batch ? 4 : 1) * params + act + images),
    fields: batch
      ? 'model.channels, model.hidden, model.image_size, batch_size or grad_accum_steps'
      : 'channels, hidden, image_size',
  };
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(bytes < 2 ** 30 ? 3 : 1)} GiB`;
}

function check(need: Need | null, file: string, what: string, budget: number): void {
  if (need === null) return;
  if (!(need.largest.elements <= MAX_TENSOR_ELEMENTS)) {
    throw new FormatError(
      'too_large',
      `${file}: ${what} needs a tensor of ${need.largest.elements.toExponential(2)} elements (${need.largest.fields}), more than the ${MAX_TENSOR_ELEMENTS} a tensor can hold; reduce ${need.fields}`,
      {
        file,
        elements: need.largest.elements,
        limit: MAX_TENSOR_ELEMENTS,
      },
    );
  }
  if (!(need.bytes <= budget)) {
    throw new FormatError(
      'too_large',
      `${file}: ${what} needs at least ${gib(need.bytes)} of memory, more than the ${gib(budget)} this machine has; reduce ${need.fields}`,
      {
        file,
        bytes: need.bytes,
        limit: budget,
      },
    );
  }
}

/** Refuses a recipe whose model and batches cannot fit in `budget` bytes (default: this machine). */
export function checkRecipeFits(recipe: Recipe, source: string, budget = memoryBudget()): void {
  const m = recipe.model as Recipe['model'] | { type: string };
  const accum = recipe.grad_accum_steps;
  let need: Need | null = null;
  if (m.type === 'gpt') {
    const g = m as Extract<Recipe['model'], { type: 'gpt' }>;
    need = gptNeed(g.vocab_size, g.n_positions, g.n_embd, g.n_layer, g.n_head, {
      B: recipe.batch_size,
      T: recipe.context ?? g.n_positions,
      accum,
    });
  } else if (m.type === 'mlp') {
    const c = m as Extract<Recipe['model'], { type: 'mlp' }>;
    need = mlpNeed(c.input, c.hidden, c.classes, { B: recipe.batch_size, accum });
  } else if (m.type === 'cnn') {
    need = cnnNeed(m as Extract<Recipe['model'], { type: 'cnn' }>, { B: recipe.batch_size, accum });
  }
  check(need, source, 'training this recipe', budget);
}

/** Refuses a run's config.json whose model cannot fit in `budget` bytes, before the model is built. */
export function checkRunConfigFits(config: Record<string, unknown>, file: string, budget = memoryBudget()): void {
  const n = (k: string, fallback = 0): number =>
    typeof config[k] === 'number' && Number.isFinite(config[k]) ? (config[k] as number) : fallback;
  const list = (k: string): number[] =>
    Array.isArray(config[k])
      ? (config[k] as unknown[]).map((v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0))
      : [];
  let need: Need | null = null;
  if (config.model_type === 'gpt2')
    need = gptNeed(n('vocab_size', 50257), n('n_positions', n('n_ctx')), n('n_embd'), n('n_layer'), n('n_head'), null);
  else if (config.model_type === 'knobs-mlp') need = mlpNeed(n('input'), list('hidden'), n('classes'), null);
  else if (config.model_type === 'knobs-cnn' && list('channels').length > 0) {
    need = cnnNeed(
      {
        in_channels: n('in_channels'),
        image_size: n('image_size'),
        channels: list('channels'),
        kernel_size: n('kernel_size'),
        hidden: n('hidden'),
        classes: n('classes'),
      },
      null,
    );
  }
  check(need, file, 'this model', budget);
}
