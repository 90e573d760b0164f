/**
 * trainer.json: the part of a checkpoint that is not tensors (step counts, generator states, the
 * data loader's position, how much of metrics.jsonl belongs to the checkpoint, time spent).
 *
 * It is read from disk, so it is untrusted input like a recipe: validated with zod before any of it
 * is applied, and checked against the checkpoint it came from (its step) and the run resuming it
 * (the optimizer type). A trainer.json that fails is a FormatError `invalid_trainer_state`, and the
 * trainer skips that checkpoint as it skips a corrupt one.
 */
import { z } from 'zod';
import { FormatError } from '../errors.js';
import { fieldPath } from './recipe.js';

const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const uint32 = z.number().int().min(0).max(0xffffffff);

/** A Generator's state: four 32-bit words (not all zero: xoshiro never leaves that state) and a cached normal. */
export const generatorStateSchema = z.strictObject({
  words: z
    .array(uint32)
    .length(4)
    .refine((w) => w.some((x) => x !== 0), 'all four words are zero, which no generator reaches'),
  spareNormal: z.number().nullable(),
});

/** TextBatcher: the position is the generator that draws the windows. */
const textDataState = z.strictObject({ generator: generatorStateSchema });
/** ImageLoader: epoch and index of the next batch, for this seed and dataset size. */
const imageDataState = z.strictObject({ epoch: count, index: count, seed: z.number().int(), count });

export const trainerStateSchema = z.strictObject({
  step: count,
  optimizer: z.strictObject({ type: z.string(), step: count }),
  generator: generatorStateSchema,
  data: z.union([textDataState, imageDataState]),
  metricsBytes: count,
  elapsedS: z.number().min(0),
});

export type TrainerState = z.output<typeof trainerStateSchema>;

/**
 * Validates trainer.json of checkpoint `step`: the schema, then agreement with the checkpoint
 * (its step) and the run (the optimizer type; one optimizer step per training step).
 */
export function parseTrainerState(
  json: unknown,
  file: string,
  expected: { step: number; optimizer: string },
): TrainerState {
  const result = trainerStateSchema.safeParse(json);
  const issues = result.success ? [] : result.error.issues.map((i) => `${fieldPath(i.path)}: ${i.message}`);
  if (result.success) {
    const s = result.data;
    if (s.step !== expected.step) issues.push(`step: ${s.step}, but the checkpoint is step ${expected.step}`);
    if (s.optimizer.step !== s.step)
      issues.push(`optimizer.step: ${s.optimizer.step}, but the trainer takes one optimizer step per step (${s.step})`);
    if (s.optimizer.type !== expected.optimizer)
      issues.push(
        `optimizer.type: ${JSON.stringify(s.optimizer.type)}, but the run uses ${JSON.stringify(expected.optimizer)}`,
      );
  }
  if (issues.length > 0 || !result.success) {
    throw new FormatError('invalid_trainer_state', `${file}: invalid trainer state — ${issues.join('; ')}`, {
      file,
      issues,
    });
  }
  return result.data;
}
