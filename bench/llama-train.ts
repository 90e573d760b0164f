/**
 * Llama training step, tokens/s, at the kjv-llama recipe (recipes/kjv-llama.json: byte vocabulary,
 * 4 layers, 4 query heads sharing 2 key/value heads, width 256, SwiGLU 704, RoPE, RMSNorm, untied
 * head, context 128, batch 16; AdamW with the recipe's settings, clip 1.0) through the public API —
 * Llama.loss, backward, clipGradNorm, AdamW.step (bench/workloads.ts) — against the recipe's
 * PyTorch twin (bench/torch_train.py's Llama: the same math, nn.Linear/Embedding, F.cross_entropy,
 * clip_grad_norm_, torch.optim.AdamW(foreach=True)) in the same run.
 */
import type { BenchOptions, BenchRow } from './row.js';
import { runTrainBench } from './train-step.js';
import { llamaTrainWorkload } from './workloads.js';

export async function run(opts: BenchOptions): Promise<BenchRow[]> {
  const probe = await llamaTrainWorkload();
  const c = probe.config;
  return runTrainBench(
    {
      name: `llama_train_step_kjv_l${c.num_hidden_layers}_h${c.num_attention_heads}_kv${c.num_key_value_heads}_c${c.hidden_size}_t${probe.items / probe.batch}_b${probe.batch}`,
      unit: 'tokens/s',
      target: 1,
      make: () => probe,
      peerRequest: (iters) => ({
        op: 'llama_train',
        config: c,
        batch: probe.batch,
        context: probe.items / probe.batch,
        iters,
      }),
      iters: 1,
      warmup: 2,
      rounds: 5,
      probe: 1,
    },
    opts,
  );
}
