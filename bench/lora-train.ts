/**
 * A LoRA training step against a full fine-tuning step of the same model, in the same run: the
 * kjv-gpt model and batch (bench/workloads.ts), AdamW, clipping; LoRA r = 8, alpha 16 on the
 * attention projections (c_attn), and on every linear layer (all-linear). The peer is knobs' own
 * full step (the issue's target: LoRA ≥ 1.3× faster); both run on the native backend at the same
 * thread count, interleaved (full, LoRA, full, LoRA, …), medians of per-step times → tokens/s.
 * Then the attention LoRA step against PyTorch 1.13 doing the same LoRA step (bench/peer_torch.py
 * `gpt_lora_train`: PEFT's rules in plain torch, base frozen, AdamW over lora_A/lora_B), through
 * the shared driver (train-step.ts: fastest thread setting per side, interleaved, medians).
 */
import { cpus } from 'node:os';
import * as k from '../src/index.js';
import { loadNativeAddon, loadNativeBackend, nativeLoadError } from '../src/backends/native/index.js';
import { applyLora, parseLoraConfig } from '../src/finetune/lora.js';
import { pinnedToCore0 } from './peer.js';
import { type BenchOptions, type BenchRow, makeRow, median } from './row.js';
import { runTrainBench } from './train-step.js';
import { KJV_BATCH, KJV_GPT, type Workload } from './workloads.js';

const T = KJV_GPT.n_positions;

/** One training step of the kjv-gpt model; `targets` null: every parameter trains. */
function stepOf(targets: string[] | string | null): () => void {
  return workloadOf(targets).step;
}

function workloadOf(targets: string[] | string | null): Workload {
  const model = new k.GPT(KJV_GPT, { seed: 0 });
  if (targets !== null) applyLora(model, parseLoraConfig({ r: 8, lora_alpha: 16, target_modules: targets }));
  model.train();
  const ids = k.randint(0, KJV_GPT.vocab_size, [KJV_BATCH, T + 1], { generator: new k.Generator(1) });
  const x = k.slice(ids, 1, 0, T).contiguous();
  const y = k.slice(ids, 1, 1, T + 1).contiguous();
  const opt = new k.AdamW(model, { lr: 1e-3, betas: [0.9, 0.95], weightDecay: 0.1 });
  return {
    items: KJV_BATCH * T,
    step() {
      opt.zeroGrad();
      model.loss(x, y).backward();
      k.clipGradNorm(model, 1.0);
      opt.step();
    },
  };
}

function seconds(step: () => void): number {
  const t0 = process.hrtime.bigint();
  step();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

export async function run(opts: BenchOptions): Promise<BenchRow[]> {
  const againstFull = await runAgainstFull(opts);
  const againstTorch = await runTrainBench(
    {
      name: `lora_r8_attn_train_step_kjv_gpt_c${KJV_GPT.n_embd}_t${T}_b${KJV_BATCH}`,
      unit: 'tokens/s',
      target: 1,
      make: () => workloadOf(['c_attn']),
      peerRequest: (iters) => ({ op: 'gpt_lora_train', batch: KJV_BATCH, targets: 'attn', iters }),
      iters: 1,
      warmup: 2,
      rounds: 5,
      probe: 1,
    },
    opts,
  );
  return [...againstFull, ...againstTorch];
}

async function runAgainstFull(opts: BenchOptions): Promise<BenchRow[]> {
  const backend = loadNativeBackend();
  const addon = loadNativeAddon();
  if (!backend || !addon) throw new Error(`lora-train bench needs the native backend: ${nativeLoadError()}`);
  if (!k.backends().includes('native')) k.registerBackend(backend);
  const body = async (): Promise<BenchRow[]> => {
    const before = addon.info().threads;
    addon.setThreads(opts.cores === 1 ? 1 : cpus().length);
    try {
      return await k.withBackend('native', async () => {
        const full = stepOf(null);
        const variants: [string, () => void][] = [
          ['attn', stepOf(['c_attn'])],
          ['all_linear', stepOf('all-linear')],
        ];
        const fullTimes: number[] = [];
        const times = new Map<string, number[]>(variants.map(([n]) => [n, []]));
        for (let round = 0; round < 7; round++) {
          const warm = round < 2; // the first steps fault their memory in
          const f = seconds(full);
          if (!warm) fullTimes.push(f);
          for (const [name, step] of variants) {
            const s = seconds(step);
            if (!warm) times.get(name)!.push(s);
          }
        }
        const tokens = KJV_BATCH * T;
        const fullRate = tokens / median(fullTimes);
        return variants.map(([name]) =>
          makeRow(
            `lora_r8_${name}_vs_full_step_kjv_gpt_c${KJV_GPT.n_embd}_t${T}_b${KJV_BATCH}`,
            opts.cores,
            'tokens/s',
            tokens / median(times.get(name)!),
            'knobs full fine-tuning step',
            fullRate,
            true,
            1.3,
          ),
        );
      });
    } finally {
      addon.setThreads(before);
    }
  };
  return opts.cores === 1 ? pinnedToCore0(body) : body();
}
