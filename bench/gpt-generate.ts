/**
 * Greedy generation with the KV cache, tokens/s: GPT.generate (temperature 0) at the kjv-gpt
 * config (4 layers, 4 heads, width 256; n_positions raised to hold prompt + output), batch 1, a
 * 16-token prompt, 256 new tokens — against a hand-written GPT-2 in PyTorch 1.13 with
 * preallocated past key/value buffers, argmax decoding, under torch.inference_mode().
 * One step = one whole generate() call (prefill + 255 cached decode steps).
 */
import type { BenchOptions, BenchRow } from './row.js';
import { runTrainBench } from './train-step.js';
import { gptGenerateWorkload } from './workloads.js';

const PROMPT = 16;
const TOKENS = 256;

export function run(opts: BenchOptions): Promise<BenchRow[]> {
  return runTrainBench(
    {
      name: `gpt_generate_kv_greedy_kjv_p${PROMPT}_n${TOKENS}_b1`,
      unit: 'tokens/s',
      target: 1,
      make: () => gptGenerateWorkload(PROMPT, TOKENS),
      peerRequest: (iters) => ({ op: 'gpt_generate', prompt: PROMPT, tokens: TOKENS, iters }),
      iters: 1,
      warmup: 2,
      rounds: 5,
      probe: 1,
    },
    opts,
  );
}
