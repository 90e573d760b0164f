/**
 * MLP training step, samples/s: a 784-512-512-10 ReLU MLP on a batch of 128 — forward,
 * cross-entropy, backward and an AdamW update (bench/workloads.ts) — against PyTorch doing the
 * same step (torch.addmm layers, F.cross_entropy, torch.optim.AdamW) in the same run.
 */
import type { BenchOptions, BenchRow } from './row.js';
import { runTrainBench } from './train-step.js';
import { mlpWorkload } from './workloads.js';

const BATCH = 128;

export function run(opts: BenchOptions): Promise<BenchRow[]> {
  return runTrainBench(
    {
      name: `mlp_step_784_512_512_10_b${BATCH}`,
      unit: 'samples/s',
      target: 1,
      make: () => mlpWorkload(BATCH),
      peerRequest: (iters) => ({ op: 'mlp', batch: BATCH, iters }),
      iters: 20,
      warmup: 20,
      rounds: 7,
    },
    opts,
  );
}
