/**
 * The training loop: recipe in, run directory out (layout in run-dir.ts).
 *
 * Order of work, so that a failed start leaves nothing behind and a crash loses nothing committed:
 *   1. validate: recipe (with overrides), data files, model, optimizer, schedule, output directory;
 *   2. resume, in memory, from the newest checkpoint that verifies and whose trainer.json is valid,
 *      when asked: weights, optimizer state, the generator behind init and dropout, the data loader
 *      position (a checkpoint that fails any check is skipped, and the parts are rebuilt, so none
 *      is half-applied); a run with weights but nothing to resume from is refused;
 *   3. only then create the run directory, write config.json, recipe.json and training-data.json
 *      (the SHA-256 and size of every data file, hashed before) atomically, and cut metrics.jsonl
 *      back to the checkpoint's rows;
 *   4. each step: lr from the schedule, grad_accum_steps micro-batches, clip, update; then
 *      log / eval / checkpoint rows at their intervals (eval and checkpoints are not counted in
 *      throughput);
 *   5. at the end: evaluate, checkpoint, write model.safetensors.
 * Every source of randomness is in the checkpoint, so a resumed run's final weights are bitwise
 * identical to an uninterrupted run's (same backend and threads).
 *
 * `signal` (SIGINT in the CLI) stops after the current step with a checkpoint.
 */
import { access, mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { FormatError, UsageError } from '../errors.js';
import { saveSafetensors } from '../formats/safetensors.js';
import { asIOError, writeFileAtomic } from '../io/atomic.js';
import { tokenizerConfigJson } from '../tokenizer/config.js';
import { byteLevelTokenizerFiles, writeTokenizerFiles } from '../tokenizer/export.js';
import { mixSeed } from '../data/shuffle.js';
import { clipGradNorm, accumulateGradients } from '../optim/grad.js';
import type { BaseOptions, Optimizer, ParamGroupInput } from '../optim/optimizer.js';
import { Generator } from '../random.js';
import { type OpTime, mergeOpTimes, startProfile, stopProfile } from '../backends/profile.js';
import type { MatmulPrecision } from '../backends/backend.js';
import { getMatmulPrecision, setMatmulPrecision } from '../backends/dispatch.js';
import type { Tensor } from '../tensor.js';
import {
  type Checkpoint,
  CHECKPOINTS_DIR,
  cleanStaging,
  findLatestVerified,
  loadCheckpointTensors,
  readCheckpointJson,
  saveCheckpoint,
} from './checkpoint.js';
import {
  type TrainableModel,
  buildModel,
  buildOptimizer,
  buildSchedule,
  generationConfigJson,
  modelConfigJson,
  modelLoss,
} from './build.js';
import type { ClassifierEval, LanguageModelEval } from './evaluate.js';
import { type EvalRow, METRICS_NAME, MetricsLog, type TrainRow } from './metrics.js';
import { type Recipe, isLanguageModel, modelPositions, parseRecipe } from './recipe.js';
import { type TrainerState, parseTrainerState } from './trainer-state.js';
import { hashTrainingData, recordTrainingData } from './training-data.js';
import { checkRecipeFits } from './limits.js';
import {
  CONFIG_NAME,
  GENERATION_CONFIG_NAME,
  MODEL_NAME,
  RECIPE_NAME,
  checkSameArchitecture,
  defaultRunDir,
  readRunConfig,
  runDirState,
  tensorsOnly,
} from './run-dir.js';
import { type TrainBatch, type TrainSource, loadRecipeTokenizer, openTrainSource, withDataPath } from './sources.js';

export const DEFAULT_KEEP_CHECKPOINTS = 3;
/** Metadata Hugging Face transformers expects in a PyTorch-layout safetensors file. */
const HF_METADATA = { format: 'pt' } as const;
/** Checkpoint files besides model.safetensors. */
const OPTIMIZER_STATE = 'optimizer.safetensors';
const TRAINER_STATE = 'trainer.json';

export interface TrainOptions {
  /** Run directory (default runs/<recipe name>-<UTC time>). */
  out?: string;
  /** Overrides the recipe's data: the text file, or the directory of the four IDX files. */
  dataPath?: string;
  /** Overrides the recipe's length (give at most one of steps and epochs). */
  steps?: number;
  epochs?: number;
  seed?: number;
  /** Overrides the recipe's matmul precision (`--precision`). */
  precision?: MatmulPrecision;
  /** Continue from the newest checkpoint in `out` that verifies. */
  resume?: boolean;
  /** Committed checkpoints to keep (default 3). */
  keepCheckpoints?: number;
  /** Names the recipe in error messages (its file path). */
  source?: string;
  onLog?: (event: TrainEvent) => void;
  /** Aborting stops the run after the current step, with a checkpoint. */
  signal?: AbortSignal;
  /**
   * Time every kernel of every step after the first (which warms up) and return the sums in
   * `TrainResult.profile` (`knobs train --profile`, KNOBS_PROFILE=1).
   */
  profile?: boolean;
  /** What the run trains and writes; the default builds the recipe's model (`knobs tune` passes a base). */
  runModel?: RunModel;
}

/**
 * What a run trains and the files it writes around the loop. `train` uses `recipeRunModel`;
 * `knobs tune` (tune.ts) starts from a loaded base with adapters attached or parameters frozen,
 * and keeps only what trains in its checkpoints.
 */
export interface RunModel {
  /** A fresh model; called again when a checkpoint fails to load part-way. */
  build(generator: Generator): TrainableModel;
  /** The file (config.json for train) whose JSON identifies the architecture; resuming checks it. */
  configFile: string;
  config(model: TrainableModel): Record<string, unknown>;
  /** The recipe as run, written to `recipeFile` (recipe.json for train). */
  recipeFile: string;
  recipeJson: unknown;
  /** Files written once when the run directory is created (tokenizer, generation config). */
  writeStatic(out: string, model: TrainableModel): Promise<void>;
  /** The tensors a checkpoint holds (what training changes), and how they go back in. */
  weights(model: TrainableModel): Map<string, Tensor>;
  loadWeights(model: TrainableModel, tensors: Map<string, Tensor>): void;
  /** Writes the run's result, after each checkpoint and at the end (model.safetensors for train). */
  writeResult(out: string, model: TrainableModel): Promise<void>;
  /** The optimizer's parameter groups when not the recipe's default (LoRA+: lora_B at a multiple of the lr). */
  paramGroups?(model: TrainableModel): ParamGroupInput<BaseOptions>[];
}

/** The run model of `knobs train`: the recipe's model, all its weights, a run directory. */
export function recipeRunModel(recipe: Recipe): RunModel {
  return {
    build: (generator) => buildModel(recipe, generator),
    configFile: CONFIG_NAME,
    config: modelConfigJson,
    recipeFile: RECIPE_NAME,
    recipeJson: recipe,
    writeStatic: (out, model) => writeModelFiles(out, recipe, model),
    weights: (model) => model.stateDict(),
    loadWeights: (model, tensors) => void model.loadStateDict(tensors),
    writeResult: (out, model) => saveSafetensors(join(out, MODEL_NAME), model.stateDict(), HF_METADATA),
  };
}

/** generation_config.json and the tokenizer files of a language model's run (nothing for classifiers). */
export async function writeModelFiles(out: string, recipe: Recipe, model: TrainableModel): Promise<void> {
  const generation = generationConfigJson(model);
  if (generation) await writeFileAtomic(join(out, GENERATION_CONFIG_NAME), `${JSON.stringify(generation, null, 2)}\n`);
  if (isLanguageModel(recipe.model)) {
    const positions = modelPositions(recipe.model).positions;
    const tokenizer = await loadRecipeTokenizer(recipe);
    await writeTokenizerFiles(
      out,
      tokenizer
        ? { tokenizer: tokenizer.toJSON(), config: tokenizerConfigJson({ modelMaxLength: positions }) }
        : byteLevelTokenizerFiles(positions),
    );
  }
}

/** Where the profiled steps' time went (see src/backends/profile.ts). */
export interface StepProfile {
  /** Steps profiled (every step but the run's first). */
  steps: number;
  /** Wall time of those steps (data, forward, backward, clipping, update). */
  seconds: number;
  /** Per kernel (and operation), slowest first. */
  ops: OpTime[];
}

export type TrainEvent =
  | {
      type: 'start';
      out: string;
      step: number;
      totalSteps: number;
      resumedFrom: number | null;
      unit: 'samples' | 'tokens';
    }
  | { type: 'warning'; message: string }
  | { type: 'step'; step: number; totalSteps: number; loss: number; lr: number }
  | { type: 'metrics'; row: TrainRow }
  | { type: 'eval'; row: EvalRow }
  | { type: 'checkpoint'; step: number; dir: string };

export interface TrainResult {
  out: string;
  /** Optimizer steps done (all sessions). */
  step: number;
  totalSteps: number;
  /** True when `signal` stopped the run before totalSteps. */
  interrupted: boolean;
  resumedFrom: number | null;
  lastTrain: TrainRow | null;
  lastEval: EvalRow | null;
  /** Only with `profile`. */
  profile?: StepProfile;
}

/** The recipe with the options' overrides applied and validated again (so errors name the field). */
export function applyOverrides(
  recipe: Recipe,
  opts: Pick<TrainOptions, 'dataPath' | 'steps' | 'epochs' | 'seed' | 'source' | 'precision'>,
): Recipe {
  const source = opts.source ?? 'recipe';
  if (opts.steps !== undefined && opts.epochs !== undefined)
    throw new UsageError('give at most one of --steps and --epochs');
  const length =
    opts.steps !== undefined
      ? { steps: opts.steps, epochs: undefined }
      : opts.epochs !== undefined
        ? { epochs: opts.epochs, steps: undefined }
        : {};
  const tokenizer = recipe.tokenizer === 'bytes' ? 'bytes' : resolve(recipe.tokenizer); // absolute, as the data paths
  const merged = {
    ...recipe,
    ...length,
    ...(opts.seed !== undefined ? { seed: opts.seed } : {}),
    ...(opts.precision !== undefined ? { precision: opts.precision } : {}),
    data: withDataPath(recipe.data, opts.dataPath),
    tokenizer,
  };
  return parseRecipe(JSON.parse(JSON.stringify(merged)), source);
}

function evalRow(step: number, result: ClassifierEval | LanguageModelEval, elapsed: number): EvalRow {
  return 'accuracy' in result
    ? { step, eval_loss: result.loss, accuracy: result.accuracy, elapsed_s: elapsed }
    : { step, eval_loss: result.loss, bits_per_byte: result.bits_per_byte, elapsed_s: elapsed };
}

/** Trains `recipe` into a run directory; see the file comment for the order of work. */
export async function train(recipeIn: Recipe, opts: TrainOptions = {}): Promise<TrainResult> {
  const source = opts.source ?? 'recipe';
  const log = opts.onLog ?? (() => undefined);
  const keep = opts.keepCheckpoints ?? DEFAULT_KEEP_CHECKPOINTS;
  if (!Number.isSafeInteger(keep) || keep < 1)
    throw new UsageError(`--keep-checkpoints must be an integer >= 1, got ${keep}`);
  const recipe = applyOverrides(recipeIn, opts);
  checkRecipeFits(recipe, source);
  const out = resolve(opts.out ?? defaultRunDir(recipe.name));

  // 1. Validate everything before the run directory exists.
  const previousPrecision = getMatmulPrecision();
  setMatmulPrecision(recipe.precision ?? 'f32'); // bf16 is refused here where the CPU lacks it
  const data = await openTrainSource(recipe).catch((err: unknown) => {
    setMatmulPrecision(previousPrecision);
    throw err;
  });
  let metrics: MetricsLog | null = null;
  try {
    const runModel = opts.runModel ?? recipeRunModel(recipe);
    const build = (): RunParts => {
      const generator = new Generator(mixSeed(recipe.seed, 1));
      const model = runModel.build(generator);
      return {
        model,
        optimizer: buildOptimizer(recipe, model, runModel.paramGroups?.(model)),
        generator,
        data,
        runModel,
      };
    };
    let parts = build();
    const totalSteps = recipe.steps ?? Math.ceil((recipe.epochs! * data.batchesPerEpoch) / recipe.grad_accum_steps);
    const schedule = buildSchedule(recipe, totalSteps, source);
    const config = runModel.config(parts.model);

    // 2. Resume, in memory: a checkpoint rejected part-way leaves fresh parts for the next one.
    const resumed = await resumePoint(
      out,
      opts.resume === true,
      runModel.configFile,
      config,
      source,
      log,
      async (checkpoint) => {
        try {
          return await restore(checkpoint, parts);
        } catch (err) {
          parts = build();
          throw err;
        }
      },
    );
    const dataFiles = await hashTrainingData(recipe.data);

    // 3. Create the run directory.
    await mkdir(out, { recursive: true }).catch((err: unknown) => {
      throw asIOError(err, out, 'create the run directory');
    });
    await writeFileAtomic(join(out, runModel.configFile), `${JSON.stringify(config, null, 2)}\n`);
    await writeFileAtomic(join(out, runModel.recipeFile), `${JSON.stringify(runModel.recipeJson, null, 2)}\n`);
    for (const message of await recordTrainingData(out, dataFiles)) log({ type: 'warning', message });
    await runModel.writeStatic(out, parts.model);

    const restored = resumed?.state ?? null;
    let step = restored?.step ?? 0;
    const startStep = step;
    const resumedFrom = resumed?.checkpoint.step ?? null;
    const rows = await MetricsLog.open(join(out, METRICS_NAME), restored?.metricsBytes ?? 0);
    metrics = rows;
    log({ type: 'start', out, step, totalSteps, resumedFrom, unit: data.unit });

    // 4. Train.
    const started = performance.now();
    const elapsed = (): number => (restored?.elapsedS ?? 0) + (performance.now() - started) / 1000;
    let lastTrain: TrainRow | null = null;
    let lastEval: EvalRow | null = null;
    let windowSeconds = 0;
    let windowCount = 0;
    let nonfinite = 0;
    const { model } = parts;
    const profiled = { steps: 0, seconds: 0, ops: new Map<string, OpTime>() };
    const profileThis = (): boolean => opts.profile === true && step > startStep;
    const withProfile = (): { profile?: StepProfile } =>
      opts.profile === true
        ? {
            profile: {
              steps: profiled.steps,
              seconds: profiled.seconds,
              ops: [...profiled.ops.values()].sort((a, b) => b.seconds - a.seconds),
            },
          }
        : {};
    model.train();
    while (step < totalSteps) {
      const t0 = performance.now();
      const lr = schedule(step);
      const profiling = profileThis();
      if (profiling) startProfile();
      const { loss, gradNorm, count } = await trainStep(parts, recipe, lr).finally(() => {
        if (!profiling) return;
        mergeOpTimes(profiled.ops, stopProfile());
        profiled.steps++;
        profiled.seconds += (performance.now() - t0) / 1000;
      });
      step++;
      if (!Number.isFinite(gradNorm)) {
        nonfinite++;
        await rows.append({ step, skipped: 'nonfinite_grad' });
        log({
          type: 'warning',
          message: `step ${step}: the gradient has a NaN or Inf (norm ${gradNorm}); the update was skipped (${nonfinite} in a row)`,
        });
        if (nonfinite > recipe.max_nonfinite_steps) {
          throw new FormatError(
            'nonfinite_grad',
            `${nonfinite} steps in a row (up to step ${step}) had a NaN or Inf gradient, more than max_nonfinite_steps = ${recipe.max_nonfinite_steps}; the run stopped and its last checkpoint is kept. Lower the learning rate, set clip_grad_norm, or check the data`,
            { step, consecutive: nonfinite, limit: recipe.max_nonfinite_steps },
          );
        }
      } else nonfinite = 0;
      windowSeconds += (performance.now() - t0) / 1000;
      windowCount += count;
      log({ type: 'step', step, totalSteps, loss, lr });

      if (step % recipe.log_every === 0 || step === totalSteps) {
        const rate = windowSeconds > 0 ? windowCount / windowSeconds : 0;
        lastTrain = {
          step,
          loss,
          lr,
          grad_norm: gradNorm,
          [data.unit === 'tokens' ? 'tokens_per_s' : 'samples_per_s']: rate,
          elapsed_s: elapsed(),
        };
        await rows.append(lastTrain);
        log({ type: 'metrics', row: lastTrain });
        windowSeconds = 0;
        windowCount = 0;
      }
      if ((recipe.eval_every !== undefined && step % recipe.eval_every === 0) || step === totalSteps) {
        lastEval = evalRow(step, await data.evaluate(model), elapsed());
        await rows.append(lastEval);
        log({ type: 'eval', row: lastEval });
      }
      const stopping = opts.signal?.aborted === true;
      if (
        (recipe.checkpoint_every !== undefined && step % recipe.checkpoint_every === 0) ||
        step === totalSteps ||
        stopping
      ) {
        const ck = await saveRun(out, step, parts, rows, elapsed(), keep, (message) =>
          log({ type: 'warning', message }),
        );
        log({ type: 'checkpoint', step, dir: ck.dir });
      }
      if (stopping && step < totalSteps)
        return { out, step, totalSteps, interrupted: true, resumedFrom, lastTrain, lastEval, ...withProfile() };
    }
    // 5. The last step's checkpoint wrote the weights; a finished run resumed again only rewrites them.
    if (step === startStep) await runModel.writeResult(out, model);
    return { out, step, totalSteps, interrupted: false, resumedFrom, lastTrain, lastEval, ...withProfile() };
  } finally {
    setMatmulPrecision(previousPrecision);
    await metrics?.close();
    await data.close();
  }
}

/** Everything whose state a checkpoint holds. */
interface RunParts {
  model: TrainableModel;
  optimizer: Optimizer<BaseOptions>;
  /** Draws the init and the dropout masks. */
  generator: Generator;
  data: TrainSource;
  runModel: RunModel;
}

/** One optimizer step: grad_accum_steps micro-batches, clipping, the update. */
async function trainStep(
  parts: RunParts,
  recipe: Recipe,
  lr: number,
): Promise<{ loss: number; gradNorm: number; count: number }> {
  const { model, optimizer, data } = parts;
  optimizer.setLr(lr);
  optimizer.zeroGrad();
  const batches: TrainBatch[] = [];
  for (let i = 0; i < recipe.grad_accum_steps; i++) batches.push(await data.next());
  const loss = accumulateGradients(batches.length, (i) => modelLoss(model, batches[i]!.inputs, batches[i]!.targets));
  // Infinity never clips, and still measures the norm for the log.
  const gradNorm = clipGradNorm(model, recipe.clip_grad_norm ?? Infinity);
  // A NaN/Inf gradient would poison the weights and the optimizer's moments: skip the update.
  // The step still counts (trainer.json keeps one optimizer step per step); no parameter's own
  // update count moves, so Adam's bias correction is unaffected.
  if (Number.isFinite(gradNorm)) optimizer.step();
  else optimizer.stepCount++;
  return { loss, gradNorm, count: batches.reduce((n, b) => n + b.count, 0) };
}

/**
 * Loads a checkpoint into the parts; returns its trainer state. Everything is read and trainer.json
 * validated before anything is applied; the data position goes last, as the only part that is not
 * rebuilt when a later one fails (each loadStateDict/setState checks before it changes anything).
 */
async function restore(checkpoint: Checkpoint, parts: RunParts): Promise<TrainerState> {
  const tensors = async (name: string): Promise<Map<string, Tensor>> =>
    tensorsOnly((await loadCheckpointTensors(checkpoint, name)).tensors, join(checkpoint.dir, name));
  const state = parseTrainerState(
    await readCheckpointJson(checkpoint, TRAINER_STATE),
    join(checkpoint.dir, TRAINER_STATE),
    {
      step: checkpoint.step,
      optimizer: parts.optimizer.type,
    },
  );
  const weights = await tensors(MODEL_NAME);
  const moments = await tensors(OPTIMIZER_STATE);
  parts.runModel.loadWeights(parts.model, weights);
  parts.optimizer.loadStateDict({ ...state.optimizer, tensors: moments });
  parts.generator.setState(state.generator);
  parts.data.setState(state.data);
  return state;
}

/** Commits checkpoint `step` (metrics made durable first, so its recorded length holds), then replaces model.safetensors. */
async function saveRun(
  out: string,
  step: number,
  parts: RunParts,
  metrics: MetricsLog,
  elapsedS: number,
  keep: number,
  onWarning: (message: string) => void,
): Promise<Checkpoint> {
  const { model, optimizer, generator, data, runModel } = parts;
  await metrics.sync();
  const state = {
    step,
    optimizer: { type: optimizer.type, step: optimizer.stepCount },
    generator: generator.getState(),
    data: data.getState(),
    metricsBytes: metrics.bytes,
    elapsedS,
  };
  const checkpoint = await saveCheckpoint(
    out,
    step,
    {
      [MODEL_NAME]: runModel.weights(model),
      [OPTIMIZER_STATE]: optimizer.stateDict().tensors,
      [TRAINER_STATE]: JSON.stringify(state),
    },
    { keep, onWarning },
  );
  await runModel.writeResult(out, model);
  return checkpoint;
}

/**
 * Checks the output directory and loads the checkpoint to resume from through `load` (null: start
 * fresh). A used directory needs `resume`; resuming needs the same architecture. Starting over is
 * allowed only when it loses nothing: a run killed before its first checkpoint (it never wrote
 * model.safetensors; a deterministic rerun rewrites the same rows). Checkpoints that exist but none
 * of which loads, or weights with no checkpoint at all, stop the run rather than be overwritten.
 */
async function resumePoint(
  out: string,
  resume: boolean,
  configFile: string,
  config: Record<string, unknown>,
  source: string,
  log: (e: TrainEvent) => void,
  load: (checkpoint: Checkpoint) => Promise<TrainerState>,
): Promise<{ checkpoint: Checkpoint; state: TrainerState } | null> {
  const state = await runDirState(out);
  if (state !== 'used') return null;
  if (!resume)
    throw new UsageError(`${out} already holds files; pass --resume to continue that run, or choose another --out`, {
      path: out,
    });
  // Killed before config.json was written: nothing to resume, nothing to lose.
  if (!(await exists(join(out, configFile))) && !(await exists(join(out, CHECKPOINTS_DIR)))) return null;
  checkSameArchitecture(out, await readRunConfig(out, configFile), config, source, configFile);
  const cleaned = await cleanStaging(out);
  for (const message of cleaned.warnings) log({ type: 'warning', message });
  const loaded: { state?: TrainerState } = {};
  const { checkpoint, warnings } = await findLatestVerified(out, {
    accept: async (c) => {
      loaded.state = await load(c);
    },
  });
  for (const message of warnings) log({ type: 'warning', message });
  if (checkpoint && loaded.state) return { checkpoint, state: loaded.state };
  const startOver = `to start over, move ${out} away (or delete it) or train into another --out`;
  if (warnings.length > 0) {
    throw new FormatError(
      'nothing_to_resume',
      `cannot resume ${out}: no checkpoint can be resumed from (${warnings.join('; ')}); ${startOver}`,
      { path: out },
    );
  }
  if (await exists(join(out, MODEL_NAME))) {
    throw new FormatError(
      'nothing_to_resume',
      `cannot resume ${out}: it holds trained weights (${MODEL_NAME}) but no checkpoint to resume them from (${CHECKPOINTS_DIR}/ is missing or empty), and starting from step 0 would overwrite them; ${startOver}`,
      { path: out },
    );
  }
  return null;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
