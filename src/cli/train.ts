/** `knobs train RECIPE.json`: trains a recipe into a run directory; SIGINT stops cleanly with a checkpoint (exit 130). */
import { join } from 'node:path';
import { UsageError } from '../errors.js';
import { formatDuration, Progress } from '../train/progress.js';
import { loadRecipe } from '../train/recipe.js';
import { RECIPE_NAME } from '../train/run-dir.js';
import { type TrainEvent, type TrainOptions, train } from '../train/trainer.js';
import { type CliIO, type Command, type Options, type Parsed, emit, parse } from './command.js';
import { positiveInt } from './flags.js';

/** Exit code after a clean stop on SIGINT (128 + 2, as shells report it). */
export const EXIT_INTERRUPTED = 130;

export function fmt(v: number | undefined): string {
  return v === undefined ? '-' : Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(4);
}

/** Turns trainer events into a live bar on a terminal, plain lines in a log; all on stderr. */
export function reporter(io: CliIO): (e: TrainEvent) => void {
  let progress: Progress | null = null;
  let unit = 'samples';
  return (e) => {
    switch (e.type) {
      case 'start':
        unit = e.unit;
        io.stderr(
          `training ${e.totalSteps} steps into ${e.out}${e.resumedFrom !== null ? ` (resuming from step ${e.resumedFrom})` : ''}\n`,
        );
        progress = new Progress({
          total: e.totalSteps,
          label: 'train',
          write: io.stderr,
          isTTY: io.isTTY,
          plainEvery: Number.MAX_SAFE_INTEGER,
        });
        break;
      case 'step':
        if (io.isTTY) progress?.update(e.step, { loss: e.loss, lr: e.lr });
        break;
      case 'metrics': {
        const rate = e.row.tokens_per_s ?? e.row.samples_per_s;
        if (!io.isTTY)
          io.stderr(
            `step ${e.row.step} loss ${fmt(e.row.loss)} lr ${fmt(e.row.lr)} grad_norm ${fmt(e.row.grad_norm)} ${unit}/s ${fmt(rate)} elapsed ${formatDuration(e.row.elapsed_s)}\n`,
          );
        break;
      }
      case 'eval': {
        const extra =
          e.row.accuracy !== undefined
            ? `accuracy ${fmt(e.row.accuracy)}`
            : `bits_per_byte ${fmt(e.row.bits_per_byte)}`;
        progress?.finish();
        io.stderr(`eval step ${e.row.step} loss ${fmt(e.row.eval_loss)} ${extra}\n`);
        break;
      }
      case 'checkpoint':
        if (!io.isTTY) io.stderr(`checkpoint ${e.dir}\n`);
        break;
      case 'warning':
        progress?.finish();
        io.stderr(`knobs: warning: ${e.message}\n`);
        break;
    }
  };
}

/** The flags `train` and `tune` share. */
export const RUN_FLAGS: Options = {
  out: { type: 'string' },
  data: { type: 'string' },
  steps: { type: 'string' },
  epochs: { type: 'string' },
  seed: { type: 'string' },
  resume: { type: 'boolean' },
  'keep-checkpoints': { type: 'string' },
  json: { type: 'boolean' },
};

/** The trainer options those flags set (the progress reporter included). */
export function runOptions(values: Parsed['values'], io: CliIO): TrainOptions {
  const out = values.out as string | undefined;
  return {
    ...(out !== undefined ? { out } : {}),
    ...(values.data !== undefined ? { dataPath: values.data as string } : {}),
    ...(values.steps !== undefined ? { steps: positiveInt(values.steps, '--steps') } : {}),
    ...(values.epochs !== undefined ? { epochs: positiveInt(values.epochs, '--epochs') } : {}),
    ...(values.seed !== undefined ? { seed: positiveInt(values.seed, '--seed', 0) } : {}),
    ...(values['keep-checkpoints'] !== undefined
      ? { keepCheckpoints: positiveInt(values['keep-checkpoints'], '--keep-checkpoints') }
      : {}),
    resume: values.resume === true,
    onLog: reporter(io),
  };
}

export const trainCommand: Command = {
  name: 'train',
  summary: 'train a recipe (MLP/CNN on IDX images, GPT/Llama/Qwen2 on text) into a run directory',
  help: `Usage: knobs train RECIPE.json [--out DIR] [--data PATH] [--steps N | --epochs N] [--seed S]
                   [--resume] [--keep-checkpoints N] [--json]

Trains the model a recipe describes (see docs/training.md) and writes a run directory:
config.json, recipe.json, model.safetensors, metrics.jsonl and checkpoints/. Everything is
checked (recipe, data files, output directory) before the directory is created.

  --out DIR               run directory (default runs/<recipe name>-<UTC time>)
  --data PATH             the text file, or the directory holding the recipe's IDX file names
  --steps N, --epochs N   override the recipe's length
  --seed S                override the recipe's seed
  --resume                continue DIR from its newest checkpoint that verifies (RECIPE may be
                          left out: DIR/recipe.json is used); the result is bitwise identical
                          to an uninterrupted run
  --keep-checkpoints N    committed checkpoints to keep (default 3)
  --json                  print one JSON object with the result on stdout

Progress goes to stderr (a live bar on a terminal, a line every log_every steps otherwise).
Ctrl-C finishes the current step, writes a checkpoint and exits with code 130; a second Ctrl-C
kills at once (the last checkpoint is still intact).

Example:
  bible 'Gen1:1-Rev22:21' > kjv.txt && knobs train recipes/tiny.json --out runs/tiny`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, RUN_FLAGS, 'train');
    const out = values.out as string | undefined;
    const resume = values.resume === true;
    if (positionals.length > 1)
      throw new UsageError(`train takes one RECIPE, got ${positionals.length}; see 'knobs train --help'`);
    if (resume && out === undefined) throw new UsageError('--resume needs --out DIR (the run to continue)');
    const recipePath = positionals[0] ?? (resume ? join(out!, RECIPE_NAME) : undefined);
    if (recipePath === undefined) throw new UsageError("train needs a RECIPE.json; see 'knobs train --help'");
    const recipe = await loadRecipe(recipePath);

    return onSigintStop(io, async (signal) => {
      const result = await train(recipe, { ...runOptions(values, io), source: recipePath, signal });
      emit(io, values.json === true, result, () => {
        const ev = result.lastEval;
        const score = ev
          ? ev.accuracy !== undefined
            ? `, accuracy ${fmt(ev.accuracy)}`
            : `, bits_per_byte ${fmt(ev.bits_per_byte)}`
          : '';
        return result.interrupted
          ? `stopped at step ${result.step}/${result.totalSteps}; continue with: knobs train --resume --out ${result.out}\n`
          : `trained ${result.step} steps into ${result.out}${ev ? ` (eval loss ${fmt(ev.eval_loss)}${score})` : ''}\n`;
      });
      return result.interrupted ? EXIT_INTERRUPTED : 0;
    });
  },
};

/** Runs `fn` with a signal that the first Ctrl-C aborts (stop after this step); a second Ctrl-C kills. */
export async function onSigintStop<T>(io: CliIO, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const onSigint = (): void => {
    io.stderr('\nknobs: stopping after this step (Ctrl-C again to kill)\n');
    controller.abort();
    process.off('SIGINT', onSigint); // the next Ctrl-C takes Node's default: exit at once
  };
  process.on('SIGINT', onSigint);
  try {
    return await fn(controller.signal);
  } finally {
    process.off('SIGINT', onSigint);
  }
}
