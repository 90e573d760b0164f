/**
 * Evaluating a finished (or checkpointed) run directory: classifiers on the whole IDX test split,
 * language models on the whole validation split of the recipe's text, or on a whole other file.
 */
import { type LoadAdapterOptions, loadAdapters } from '../finetune/adapter.js';
import { type QuantType, quantizeBase } from '../finetune/quantized-base.js';
import type { LanguageModel } from './build.js';
import type { ClassifierEval, LanguageModelEval } from './evaluate.js';
import { evaluateClassifier, evaluateLanguageModel } from './evaluate.js';
import { loadRun } from './run-dir.js';
import { contextOf, loadRecipeTokenizer, openImageSplit, openTextData, withDataPath } from './sources.js';

export type RunEval = ClassifierEval | LanguageModelEval;

/**
 * `dataPath` replaces the recipe's data: for idx runs a directory with the recipe's file names
 * (only the test files are evaluated); for text runs a file evaluated whole.
 */
export async function evaluateRun(
  dir: string,
  opts: { dataPath?: string; adapters?: readonly string[]; quantize?: QuantType } & LoadAdapterOptions = {},
): Promise<RunEval> {
  const { model, recipe } = await loadRun(dir);
  // Before the adapters, as openLanguageModel does: an adapter tuned on the quantized base finds its digest.
  if (opts.quantize !== undefined) quantizeBase(model, opts.quantize);
  await loadAdapters(model, opts.adapters ?? [], opts);
  const data = withDataPath(recipe.data, opts.dataPath);
  if (data.type === 'idx') {
    const test = await openImageSplit(recipe, data, 'test');
    return evaluateClassifier(model as Exclude<typeof model, LanguageModel>, test, {
      batchSize: recipe.batch_size,
      layout: data.layout,
    });
  }
  const context = contextOf(recipe);
  const whole = opts.dataPath !== undefined;
  const corpus = await openTextData(
    data,
    context,
    whole ? 0 : data.validation_fraction,
    await loadRecipeTokenizer(recipe),
  );
  try {
    return await evaluateLanguageModel(model as LanguageModel, corpus, {
      split: whole ? 'train' : 'validation',
      batchSize: recipe.batch_size,
      blockSize: context,
    });
  } finally {
    await corpus.close();
  }
}
