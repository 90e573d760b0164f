/**
 * Fashion-MNIST epoch time, seconds (lower is better): Adam (lr 1e-3), batch 128, over the real
 * 60 000-image training set (/usr/share/datasets/fashion-mnist, loadFashionMnist + ImageLoader:
 * shuffled, normalised) — an MLP 784-256-128-10 and the CNNClassifier default (conv 32, conv 64,
 * 3×3 'same', ReLU, 2×2 max pools, fc 128) — against the same models in PyTorch 1.13 (nn.Conv2d
 * etc., tensor slicing by a shuffled permutation, torch.optim.Adam(foreach=True)).
 *
 * An epoch is 468 steps (the last partial batch dropped). Whole epochs per side per round would take
 * the suite past its time budget, so each side is timed on slices of the epoch (MLP: 117 steps =
 * ¼ epoch; CNN: 10 steps), interleaved, and the median slice is scaled to 468 steps; the notes
 * under the table say so. The loaders run on through the epoch (and into the next) between
 * slices, as in training.
 */
import { loadFashionMnist, type ImageDataset } from '../src/index.js';
import type { BenchOptions, BenchRow } from './row.js';
import { notes, runTrainBench } from './train-step.js';
import { fashionWorkload } from './workloads.js';

const BATCH = 128;
const TRAIN_IMAGES = 60000;
const STEPS_PER_EPOCH = Math.floor(TRAIN_IMAGES / BATCH);

let data: Promise<ImageDataset> | null = null;

function fashion(
  kind: 'mlp' | 'cnn',
  steps: number,
  iters: number,
  rounds: number,
  opts: BenchOptions,
): Promise<BenchRow[]> {
  data ??= loadFashionMnist('train');
  if (steps !== STEPS_PER_EPOCH)
    notes.push(
      `fashion_${kind} cores=${opts.cores}: epoch time = median of ${rounds}×${iters} timings of ${steps} steps, scaled to ${STEPS_PER_EPOCH} steps`,
    );
  return runTrainBench(
    {
      name: `fashion_mnist_${kind === 'mlp' ? 'mlp_784_256_128_10' : 'cnn_c32_c64_fc128'}_adam_b${BATCH}_epoch`,
      unit: 's/epoch',
      target: 1,
      make: async () => fashionWorkload(kind, await data!, BATCH, steps),
      peerRequest: (n) => ({ op: 'fashion', model: kind, batch: BATCH, steps, iters: n }),
      iters,
      warmup: 1,
      rounds,
      probe: 1,
      probeReps: 1,
      value: (secondsPerStep) => secondsPerStep * (STEPS_PER_EPOCH / steps),
      higherIsBetter: false,
    },
    opts,
  );
}

export const runMlp = (opts: BenchOptions) => fashion('mlp', 117, 2, 3, opts);
export const runCnn = (opts: BenchOptions) => fashion('cnn', 10, 2, 3, opts);
