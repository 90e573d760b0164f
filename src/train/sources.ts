/**
 * The data side of a run: opens what the recipe's `data` section names, checks it fits the model,
 * and hands out training batches with a resumable position, plus the evaluation the run logs.
 *
 * Recipe paths are relative to the current directory; `withDataPath` applies `--data` and makes
 * them absolute, so the recipe.json saved in a run directory works from anywhere.
 */
import { basename, join, resolve } from 'node:path';
import { ArgumentError, FormatError, IOError } from '../errors.js';
import { type ImageDataset, type ImageLoaderState, loadIdxDataset } from '../data/images.js';
import { ByteTextCorpus, type TextCorpus, TextBatcher, type TextBatcherState } from '../data/text.js';
import { TokenTextCorpus } from '../data/token-text.js';
import { Tokenizer, checkTokenizerFitsVocab } from '../tokenizer/tokenizer.js';
import { loadGgufTokenizer } from '../models/gguf/tokenizer.js';
import { mixSeed } from '../data/shuffle.js';
import type { Tensor } from '../tensor.js';
import type { LanguageModel, TrainableModel } from './build.js';
import {
  type ClassifierEval,
  type LanguageModelEval,
  evaluateClassifier,
  evaluateLanguageModel,
  imageLoader,
} from './evaluate.js';
import { type Recipe, isLanguageModel, modelPositions } from './recipe.js';

type DataSection = Recipe['data'];

export interface TrainBatch {
  inputs: Tensor;
  targets: Tensor;
  /** Examples (images) or tokens in the batch, for throughput. */
  count: number;
}

export interface TrainSource {
  /** What `count` counts: metrics report samples_per_s or tokens_per_s. */
  readonly unit: 'samples' | 'tokens';
  /** Batches in one pass over the training data (sets the step count of an `epochs` recipe). */
  readonly batchesPerEpoch: number;
  next(): Promise<TrainBatch>;
  /** The loader position, JSON-serialisable, for checkpoints. */
  getState(): unknown;
  setState(state: unknown): void;
  /** The run's evaluation: the whole test split (images) or `eval_batches` of the validation split (text). */
  evaluate(model: TrainableModel): Promise<ClassifierEval | LanguageModelEval>;
  close(): Promise<void>;
}

/** The data section with `--data` applied and every path made absolute. For idx data, PATH is a directory holding the recipe's four file names. */
export function withDataPath(data: DataSection, path?: string): DataSection {
  if (data.type === 'text') return { ...data, path: resolve(path ?? data.path) };
  const at = (p: string): string => resolve(path === undefined ? p : join(path, basename(p)));
  return {
    ...data,
    train_images: at(data.train_images),
    train_labels: at(data.train_labels),
    test_images: at(data.test_images),
    test_labels: at(data.test_labels),
  };
}

/** A missing data file names the recipe field and says how to get the data. */
async function opening<T>(data: DataSection, field: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof IOError && err.details.errno === 'ENOENT') {
      const how = data.hint ?? 'fix the path in the recipe or pass --data';
      throw new IOError(`${err.message} (recipe field data.${field}); ${how}`, {
        ...err.details,
        field: `data.${field}`,
      });
    }
    throw err;
  }
}

function mismatch(field: string, message: string): FormatError {
  return new FormatError('data_mismatch', `${field}: ${message}`, { field });
}

/** One split of the image data, checked against the classifier's input size and classes. */
export async function openImageSplit(
  recipe: Recipe,
  data: Extract<DataSection, { type: 'idx' }>,
  split: 'train' | 'test',
): Promise<ImageDataset> {
  const m = recipe.model;
  const numClasses = isLanguageModel(m) ? 256 : m.classes;
  const [images, labels] =
    split === 'train' ? [data.train_images, data.train_labels] : [data.test_images, data.test_labels];
  const ds = await opening(data, `${split}_images`, () => loadIdxDataset(images, labels, { numClasses }));
  const pixels = ds.height * ds.width;
  if (m.type === 'mlp' && m.input !== pixels)
    throw mismatch('model.input', `${m.input}, but ${images} holds ${ds.height}×${ds.width} = ${pixels}-pixel images`);
  if (m.type === 'cnn' && (m.image_size !== ds.height || m.image_size !== ds.width || m.in_channels !== 1)) {
    throw mismatch(
      'model.image_size',
      `${m.image_size}×${m.image_size} with ${m.in_channels} channel(s), but ${images} holds ${ds.height}×${ds.width} single-channel images`,
    );
  }
  return ds;
}

/**
 * The recipe's tokenizer: null for "bytes", else its tokenizer.json — or the tokenizer in a GGUF
 * file's metadata when it names a `.gguf` file (`knobs tune` on a GGUF base) — checked to fit the
 * model's vocabulary (rule `tokenizer_vocab_mismatch`); a missing file names the recipe field.
 */
export async function loadRecipeTokenizer(recipe: Recipe): Promise<Tokenizer | null> {
  if (recipe.tokenizer === 'bytes' || !isLanguageModel(recipe.model)) return null;
  let tokenizer: Tokenizer;
  try {
    tokenizer = recipe.tokenizer.toLowerCase().endsWith('.gguf')
      ? await ggufTokenizer(recipe.tokenizer)
      : await Tokenizer.fromFile(recipe.tokenizer);
  } catch (err) {
    if (err instanceof IOError)
      throw new IOError(`${err.message} (recipe field tokenizer)`, { ...err.details, field: 'tokenizer' });
    throw err;
  }
  checkTokenizerFitsVocab(tokenizer, recipe.model.vocab_size, "the recipe's model.vocab_size");
  return tokenizer;
}

async function ggufTokenizer(path: string): Promise<Tokenizer> {
  const tokenizer = await loadGgufTokenizer(path);
  if (!tokenizer)
    throw new FormatError(
      'gguf_tokenizer_invalid',
      `${path} has no tokenizer in its metadata (tokenizer.ggml.model is none); knobs needs one to turn text into tokens`,
      { path, field: 'tokenizer' },
    );
  return tokenizer;
}

/**
 * The text corpus (token ids of `tokenizer`, or bytes when it is null), checked to hold at least
 * one context window in each split.
 */
export async function openTextData(
  data: Extract<DataSection, { type: 'text' }>,
  context: number,
  validationFraction = data.validation_fraction,
  tokenizer: Tokenizer | null = null,
): Promise<TextCorpus> {
  const bytes = await opening(data, 'path', () => ByteTextCorpus.open(data.path, { validationFraction }));
  const corpus: TextCorpus = tokenizer
    ? await TokenTextCorpus.encode(bytes, (text) => tokenizer.encode(text, { addSpecialTokens: false }).ids).finally(
        () => bytes.close(),
      )
    : bytes;
  const unit = tokenizer ? 'tokens' : 'bytes';
  for (const split of ['train', 'validation'] as const) {
    if (validationFraction === 0 && split === 'validation') continue;
    const r = corpus.range(split);
    if (r.end - r.start < context + 1) {
      await corpus.close();
      throw new FormatError(
        'too_short',
        `${data.path}: the ${split} split has ${r.end - r.start} ${unit}, fewer than context + 1 = ${context + 1}; use a longer text, a smaller context${split === 'validation' ? ' or a larger data.validation_fraction' : ''}`,
        {
          path: data.path,
          field: split === 'validation' ? 'data.validation_fraction' : 'context',
        },
      );
    }
  }
  return corpus;
}

/** The context length of a language-model recipe. */
export function contextOf(recipe: Recipe): number {
  if (!isLanguageModel(recipe.model)) throw new ArgumentError('contextOf: not a language-model recipe');
  return recipe.context ?? modelPositions(recipe.model).positions;
}

/** Opens the recipe's data (paths already resolved by withDataPath) for training. */
export async function openTrainSource(recipe: Recipe): Promise<TrainSource> {
  const data = recipe.data;
  const seed = mixSeed(recipe.seed, 2);
  if (data.type === 'idx') {
    const train = await openImageSplit(recipe, data, 'train');
    const test = await openImageSplit(recipe, data, 'test');
    const loader = imageLoader(train, { batchSize: recipe.batch_size, layout: data.layout, seed, shuffle: true });
    return {
      unit: 'samples',
      batchesPerEpoch: loader.batchesPerEpoch,
      async next() {
        const b = loader.next();
        return { inputs: b.inputs, targets: b.labels, count: b.labels.size };
      },
      getState: () => loader.getState(),
      setState: (state) => loader.setState(state as ImageLoaderState),
      evaluate: (model) =>
        evaluateClassifier(model as Exclude<TrainableModel, LanguageModel>, test, {
          batchSize: recipe.batch_size,
          layout: data.layout,
        }),
      close: async () => undefined,
    };
  }
  const context = contextOf(recipe);
  const corpus = await openTextData(data, context, data.validation_fraction, await loadRecipeTokenizer(recipe));
  const batcher = new TextBatcher(corpus, { split: 'train', batchSize: recipe.batch_size, blockSize: context, seed });
  const r = corpus.range('train');
  return {
    unit: 'tokens',
    batchesPerEpoch: Math.max(1, Math.floor((r.end - r.start) / (recipe.batch_size * context))),
    async next() {
      const b = await batcher.next();
      return { inputs: b.inputs, targets: b.targets, count: b.inputs.size };
    },
    getState: () => batcher.getState(),
    setState: (state) => batcher.setState(state as TextBatcherState),
    evaluate: (model) =>
      evaluateLanguageModel(model as LanguageModel, corpus, {
        split: 'validation',
        batchSize: recipe.batch_size,
        blockSize: context,
        maxBatches: recipe.eval_batches,
      }),
    close: () => corpus.close(),
  };
}
