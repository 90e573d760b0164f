/**
 * Evaluation without gradients: classifiers on a whole image dataset (loss and accuracy),
 * language models on consecutive windows of a text split (loss and bits per byte).
 * Both put the model in eval mode (dropout off) and restore its mode after.
 */
import { noGrad } from '../autograd/tape.js';
import { type ImageDataset, ImageLoader, FASHION_MNIST_NORMALIZE } from '../data/images.js';
import { type TextCorpus, type TextSplit, sequentialTextBatches } from '../data/text.js';
import type { CausalLM } from '../models/causal-lm.js';
import { argmax } from '../ops/reduce.js';
import type { CNNClassifier } from '../models/cnn.js';
import type { MLPClassifier } from '../models/mlp.js';
import { crossEntropy } from '../ops/nn.js';

export interface ClassifierEval {
  loss: number;
  accuracy: number;
  examples: number;
}

export interface LanguageModelEval {
  loss: number;
  /** Loss in bits per byte of text: loss / (ln 2 · bytes per token); for byte-level models loss / ln 2. */
  bits_per_byte: number;
  tokens: number;
}

/** How a run feeds images to a classifier: flat [B, H·W] or image [B, 1, H, W]. */
export type ImageLayout = 'flat' | 'image';

/** Pixels are scaled to [0, 1] and normalised with Fashion-MNIST's mean and std, in training and evaluation alike. */
export function imageLoader(
  dataset: ImageDataset,
  opts: { batchSize: number; layout: ImageLayout; seed?: number; shuffle?: boolean },
): ImageLoader {
  return new ImageLoader(dataset, {
    batchSize: opts.batchSize,
    seed: opts.seed ?? 0,
    shuffle: opts.shuffle ?? false,
    // Training drops a last partial batch so every step sees batch_size examples.
    dropLast: (opts.shuffle ?? false) && opts.batchSize <= dataset.count,
    layout: opts.layout === 'image' ? 'nchw' : 'flat',
    normalize: FASHION_MNIST_NORMALIZE,
  });
}

function withEvalMode<T>(
  model: { training: boolean; train(mode?: boolean): unknown },
  fn: () => Promise<T>,
): Promise<T> {
  const was = model.training;
  model.train(false);
  return fn().finally(() => model.train(was));
}

export function evaluateClassifier(
  model: MLPClassifier | CNNClassifier,
  dataset: ImageDataset,
  opts: { batchSize: number; layout: ImageLayout },
): Promise<ClassifierEval> {
  return withEvalMode(model, async () => {
    const loader = imageLoader(dataset, { ...opts, shuffle: false });
    let lossSum = 0;
    let correct = 0;
    let n = 0;
    noGrad(() => {
      for (const batch of loader.epoch()) {
        const logits = model.forward(batch.inputs); // [B, K]
        const b = batch.labels.size;
        lossSum += crossEntropy(logits, batch.labels).item() * b;
        const predicted = argmax(logits, 1).contiguousStorage();
        const labels = batch.labels.contiguousStorage();
        for (let i = 0; i < b; i++) if (predicted[i] === labels[i]) correct++;
        n += b;
      }
    });
    return { loss: lossSum / n, accuracy: correct / n, examples: n };
  });
}

/** Mean next-token loss over consecutive windows of `split` (at most `maxBatches` batches). */
export function evaluateLanguageModel(
  model: CausalLM,
  corpus: TextCorpus,
  opts: { split: TextSplit; batchSize: number; blockSize: number; maxBatches?: number },
): Promise<LanguageModelEval> {
  return withEvalMode(model, async () => {
    let lossSum = 0;
    let tokens = 0;
    for await (const batch of sequentialTextBatches(corpus, opts)) {
      const t = batch.inputs.size;
      lossSum += noGrad(() => model.loss(batch.inputs, batch.targets).item()) * t;
      tokens += t;
    }
    const loss = lossSum / tokens;
    return { loss, bits_per_byte: loss / (Math.LN2 * corpus.bytesPerToken(opts.split)), tokens };
  });
}
