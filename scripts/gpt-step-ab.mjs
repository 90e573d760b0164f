// The kjv-gpt training step (full, and LoRA r = 8 on c_attn as bench/lora-train.ts builds it) with
// and without matmulPair, in one process, interleaved step by step: "separate" replaces the native
// backend's matmulPair with the two matmul calls it stands for. Prints medians (ms per step), the
// model GFLOP/s of the full step and the full/LoRA ratio per mode.
// Usage (after `npx tsc`): KNOBS_THREADS=2 node --single-threaded-gc scripts/gpt-step-ab.mjs [rounds]
import * as k from '../dist/src/index.js';
import { getBackend } from '../dist/src/backends/dispatch.js';
import { applyLora, parseLoraConfig } from '../dist/src/finetune/lora.js';
import { KJV_BATCH, KJV_GPT } from '../dist/bench/workloads.js';
import { gptFlopsPerToken } from '../dist/bench/gpt-share.js';

const rounds = Number(process.argv[2] ?? 12);
k.setBackend('native');
const fused = getBackend('native').fused;
const pairKernel = fused.matmulPair;
const native = getBackend('native');
const separate = (a1, b1, a2, b2) => [native.matmul(a1, b1), native.matmul(a2, b2)];

function workload(lora) {
  const T = KJV_GPT.n_positions;
  const model = new k.GPT(KJV_GPT, { seed: 0 });
  if (lora) applyLora(model, parseLoraConfig({ r: 8, lora_alpha: 16, target_modules: ['c_attn'] }));
  model.train();
  const ids = k.randint(0, KJV_GPT.vocab_size, [KJV_BATCH, T + 1], { generator: new k.Generator(1) });
  const x = k.slice(ids, 1, 0, T).contiguous();
  const y = k.slice(ids, 1, 1, T + 1).contiguous();
  const opt = new k.AdamW(model, { lr: 1e-3, betas: [0.9, 0.95], weightDecay: 0.1 });
  return () => {
    opt.zeroGrad();
    model.loss(x, y).backward();
    k.clipGradNorm(model, 1.0);
    opt.step();
  };
}

const steps = { full: workload(false), lora: workload(true) };
const modes = { pair: pairKernel, separate };
const times = {};
for (let r = -2; r < rounds; r++) {
  for (const [mode, kernel] of Object.entries(modes)) {
    fused.matmulPair = kernel;
    for (const [name, step] of Object.entries(steps)) {
      const t0 = performance.now();
      step();
      const ms = performance.now() - t0;
      if (r >= 0) (times[`${mode} ${name}`] ??= []).push(ms);
    }
  }
}
fused.matmulPair = pairKernel;
const median = (a) => [...a].sort((p, q) => p - q)[a.length >> 1];
const tokens = KJV_BATCH * KJV_GPT.n_positions;
const flops = gptFlopsPerToken(KJV_GPT) * tokens;
for (const mode of Object.keys(modes)) {
  const full = median(times[`${mode} full`]);
  const lora = median(times[`${mode} lora`]);
  console.log(
    `${mode}: full ${full.toFixed(1)} ms (${(flops / full / 1e6).toFixed(1)} model GFLOP/s), LoRA ${lora.toFixed(1)} ms, full/LoRA ${(full / lora).toFixed(2)}`,
  );
}
