/**
 * GPT training step, tokens/s, at the kjv-gpt recipe's config (byte vocabulary 256, 4 layers, 4
 * heads, width 256, context 128, batch 16; AdamW lr 1e-3, betas 0.9/0.95, weight decay 0.1 on
 * matrices only; clip 1.0) through the public API — GPT.loss (embeddings, blocks, ln_f, tied
 * head, cross-entropy), backward, clipGradNorm, AdamW.step (bench/workloads.ts) — against the same
 * model written in PyTorch 1.13 (nn.Linear/LayerNorm/Embedding, tied head, F.cross_entropy,
 * clip_grad_norm_, torch.optim.AdamW(foreach=True)) in the same run.
 */
import type { BenchOptions, BenchRow } from './row.js';
import { runTrainBench } from './train-step.js';
import { gptTrainWorkload, KJV_BATCH, KJV_GPT } from './workloads.js';

export function run(opts: BenchOptions): Promise<BenchRow[]> {
  const { n_layer, n_head, n_embd, n_positions } = KJV_GPT;
  return runTrainBench(
    {
      name: `gpt_train_step_kjv_l${n_layer}_h${n_head}_c${n_embd}_t${n_positions}_b${KJV_BATCH}`,
      unit: 'tokens/s',
      target: 1,
      make: () => gptTrainWorkload(KJV_BATCH),
      peerRequest: (iters) => ({ op: 'gpt_train', batch: KJV_BATCH, iters }),
      iters: 1,
      warmup: 2,
      rounds: 5,
      probe: 1,
    },
    opts,
  );
}
