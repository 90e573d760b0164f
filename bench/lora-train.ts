/**
 * A LoRA training step against a full fine-tuning step of the same model, in the same run: the
 * kjv-gpt model and batch (bench/workloads.ts), AdamW, clipping; LoRA r = 8, alpha 16 on the
 * attention projections (c_attn), and on every linear layer (all-linear). The peer is knobs' own
 * full step (the target: LoRA ≥ 1.3× faster); both run on the native backend at the same
 * thread count, interleaved (full, LoRA, full, LoRA, …), medians of 10 per-step times → tokens/s.
 * Then the attention LoRA step against PyTorch 1.13 doing the same LoRA step (bench/peer_torch.py
 * `gpt_lora_train`: PEFT's rules in plain torch, base frozen, AdamW over lora_A/lora_B), through
 * the shared driver (train-step.ts: fastest thread setting per side, interleaved, medians).
 *
 * Peak memory (on the wide model, see MEMORY_SHAPE, and at the kjv shape, where activations
 * dominate): each variant (full, attention LoRA, attention LoRA on the q8_0-quantized base) runs
 * MEMORY_STEPS steps in a fresh child process (this file with --child) that reports its peak
 * resident set size; the LoRA rows' peer is the full step's child of the same shape. Lower is
 * better, ratio = full / LoRA.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import * as k from '../src/index.js';
import { loadNativeAddon, loadNativeBackend, nativeLoadError } from '../src/backends/native/index.js';
import { applyLora, parseLoraConfig } from '../src/finetune/lora.js';
import { quantizeBase } from '../src/finetune/quantized-base.js';
import { pinnedToCore0, runBenchChild } from './peer.js';
import { type BenchOptions, type BenchRow, makeRow, median } from './row.js';
import { runTrainBench } from './train-step.js';
import { KJV_BATCH, KJV_GPT, WIDE_GPT, type Workload } from './workloads.js';

const T = KJV_GPT.n_positions;

/** One training step of the kjv-gpt model; `targets` null: every parameter trains; `quantize`: LoRA on that quantized base. */
function stepOf(targets: string[] | string | null, quantize?: 'q8_0'): () => void {
  return workloadOf(targets, quantize).step;
}

/** A model shape, its batch and context for the workload. */
interface Shape {
  config: typeof KJV_GPT | typeof WIDE_GPT;
  batch: number;
  context: number;
}
const KJV_SHAPE: Shape = { config: KJV_GPT, batch: KJV_BATCH, context: T };
/**
 * The memory rows' shape: the wide model (4 × 768) at batch 2 × 128 tokens, where the weights and
 * what full fine-tuning adds to them (gradients, two AdamW moments) outweigh the activations, as
 * when fine-tuning a large model; at the kjv shape the activations dominate both steps.
 */
const MEMORY_SHAPE: Shape = { config: WIDE_GPT, batch: 2, context: 128 };

function workloadOf(targets: string[] | string | null, quantize?: 'q8_0', shape: Shape = KJV_SHAPE): Workload {
  const { config, batch, context } = shape;
  const model = new k.GPT(config, { seed: 0 });
  if (quantize) quantizeBase(model, quantize);
  if (targets !== null) applyLora(model, parseLoraConfig({ r: 8, lora_alpha: 16, target_modules: targets }));
  model.train();
  const ids = k.randint(0, config.vocab_size, [batch, context + 1], { generator: new k.Generator(1) });
  const x = k.slice(ids, 1, 0, context).contiguous();
  const y = k.slice(ids, 1, 1, context + 1).contiguous();
  const opt = new k.AdamW(model, { lr: 1e-3, betas: [0.9, 0.95], weightDecay: 0.1 });
  return {
    items: batch * context,
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
  return [...againstFull, ...peakMemory(opts), ...againstTorch];
}

/** The variants the memory rows compare, by the name the child takes (`_kjv`: at the kjv shape). */
const MEMORY_VARIANTS: Record<string, () => () => void> = {
  full: () => workloadOf(null, undefined, MEMORY_SHAPE).step,
  attn: () => workloadOf(['c_attn'], undefined, MEMORY_SHAPE).step,
  attn_q8_0: () => workloadOf(['c_attn'], 'q8_0', MEMORY_SHAPE).step,
  full_kjv: () => workloadOf(null).step,
  attn_kjv: () => workloadOf(['c_attn']).step,
};
const MEMORY_STEPS = 3;

function childPeakMiB(variant: string, cores: 1 | 'all'): number {
  const self = fileURLToPath(import.meta.url);
  const out = runBenchChild(`lora-train child ${variant}`, [self, '--child', variant, String(MEMORY_STEPS)], cores, [
    '--expose-gc',
  ]);
  return (JSON.parse(out.trim().split('\n').pop()!) as { kib: number }).kib / 1024;
}

function peakMemory(opts: BenchOptions): BenchRow[] {
  const row = (name: string, variant: string, full: number): BenchRow =>
    makeRow(
      name,
      opts.cores,
      'MiB',
      childPeakMiB(variant, opts.cores),
      'knobs full fine-tuning (peak RSS)',
      full,
      false,
      1,
    );
  const wide = childPeakMiB('full', opts.cores);
  const kjv = childPeakMiB('full_kjv', opts.cores);
  return [
    ...['attn', 'attn_q8_0'].map((variant) =>
      row(
        `lora_r8_${variant}_train_peak_rss_gpt_c${WIDE_GPT.n_embd}_l${WIDE_GPT.n_layer}_t${MEMORY_SHAPE.context}_b${MEMORY_SHAPE.batch}`,
        variant,
        wide,
      ),
    ),
    row(`lora_r8_attn_train_peak_rss_kjv_gpt_c${KJV_GPT.n_embd}_t${T}_b${KJV_BATCH}`, 'attn_kjv', kjv),
  ];
}

/** A fresh process: MEMORY_STEPS steps of one variant on the native backend, then its peak RSS (KiB). */
function child(variant: string, steps: number): void {
  const backend = loadNativeBackend();
  if (!backend) throw new Error(`lora-train needs the native backend: ${nativeLoadError()}`);
  if (!k.backends().includes('native')) k.registerBackend(backend);
  k.setBackend('native');
  const step = MEMORY_VARIANTS[variant]!();
  // Collect between steps (the child runs with --expose-gc), so the high-water mark is one step's
  // working set — weights, activations, gradients, optimizer state — not when V8 happens to collect.
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  // Building the variant (an f32 model first, quantized or wrapped after) peaks higher than some
  // steps do: reset the high-water mark to what is resident now, so the row measures training.
  writeFileSync('/proc/self/clear_refs', '5');
  for (let i = 0; i < steps; i++) {
    step();
    gc?.();
  }
  const hwm = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
  if (!hwm) throw new Error('lora-train child: no VmHWM in /proc/self/status');
  process.stdout.write(`${JSON.stringify({ kib: Number(hwm[1]) })}\n`);
}

if (process.argv[2] === '--child') child(process.argv[3]!, Number(process.argv[4]));

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
          ['attn_q8_0', stepOf(['c_attn'], 'q8_0')],
        ];
        const fullTimes: number[] = [];
        const times = new Map<string, number[]>(variants.map(([n]) => [n, []]));
        // 10 measured rounds: on a shared machine the full step's time moves 10–30 % between minutes,
        // and the median of 5 moved the ratio by ±0.1 from run to run
        for (let round = 0; round < 12; round++) {
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
            name === 'attn_q8_0' ? null : 1.3, // the target is for LoRA on the float base
          ),
        );
      });
    } finally {
      addon.setThreads(before);
    }
  };
  return opts.cores === 1 ? pinnedToCore0(body) : body();
}
