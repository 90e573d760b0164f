/**
 * GPT-2 block forward + backward, tokens/s: width 256, 4 heads, context 128, batch 16 (pre-LN,
 * causal attention, tanh-GELU MLP, residuals; bench/workloads.ts) against the same block written
 * in PyTorch 1.13 (which has no fused attention: q·kᵀ, mask, softmax, ·v) in the same run.
 */
import type { BenchOptions, BenchRow } from './row.js';
import { runTrainBench } from './train-step.js';
import { GPT_BLOCK, gptBlockWorkload } from './workloads.js';

export function run(opts: BenchOptions): Promise<BenchRow[]> {
  const { batch, context, width, heads } = GPT_BLOCK;
  return runTrainBench(
    {
      name: `gpt2_block_fwd_bwd_c${width}_h${heads}_t${context}_b${batch}`,
      unit: 'tokens/s',
      target: 1,
      make: () => gptBlockWorkload(GPT_BLOCK),
      peerRequest: (iters) => ({ op: 'gpt_block', batch, context, width, heads, iters }),
      iters: 3,
      warmup: 12,
      rounds: 7,
    },
    opts,
  );
}
