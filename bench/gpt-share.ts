/**
 * The GPT training step against the machine's ceiling (the speed issue): achieved model FLOP/s of
 * a full step (forward, backward, clipping, AdamW) as a share of knobs' best f32 GEMM measured in
 * the same run at the same core setting, and the bf16 mixed-precision step against the f32 step.
 *
 * Model FLOPs per token = 6·(N − position embeddings) + 12·L·C·T (the usual estimate: every weight
 * takes a multiply-add forward and two backward; attention's q·kᵀ and p·v add 12·L·C·T, counted
 * dense as is customary). The ceiling is the best of fp32 GEMMs at n = 512, 1024 and 2048 through
 * one N-API call, timed in the same rounds as the steps (interleaved: f32 step, bf16 step, GEMMs).
 *
 * Rows (peers are knobs itself, in the same process and rounds):
 *   gpt_train_share_of_gemm_<shape>: unit share_of_gemm, knobs = the share, peer "knobs gemm" = 1,
 *     ratio = the share, target 0.6;
 *   gpt_train_step_bf16_<shape>: tokens/s in bf16, peer "knobs f32" tokens/s; targets 1.2 (kjv)
 *     and 1.5 (wide). Skipped with a note where the CPU has no bf16.
 *
 * `gpt-share` is the kjv-gpt shape (in the default suite); `gpt-share-wide` (4 layers, width 768,
 * 12 heads, context 512, batch 8: ~0.8 TFLOP per step) is a named group outside it.
 */
import { cpus } from 'node:os';
import * as k from '../src/index.js';
import { loadNativeAddon, loadNativeBackend, nativeLoadError } from '../src/backends/native/index.js';
import { pinnedToCore0 } from './peer.js';
import { type BenchOptions, type BenchRow, makeRow, median } from './row.js';
import { notes } from './train-step.js';
import { KJV_BATCH, KJV_GPT, WIDE_BATCH, WIDE_GPT, gptTrainWorkload } from './workloads.js';

interface Shape {
  name: string;
  config: typeof KJV_GPT | typeof WIDE_GPT;
  batch: number;
  rounds: number;
  bf16Target: number;
}

const KJV: Shape = { name: 'kjv', config: KJV_GPT, batch: KJV_BATCH, rounds: 5, bf16Target: 1.2 };
const WIDE: Shape = {
  name: 'wide_l4_c768_h12_t512_b8',
  config: WIDE_GPT,
  batch: WIDE_BATCH,
  rounds: 3,
  bf16Target: 1.5,
};
const SHARE_TARGET = 0.6;
const GEMM_SIZES = [512, 1024, 2048];

/** 6·(N − position embeddings) + 12·L·C·T for a GPT-2 with a tied head. */
export function gptFlopsPerToken(c: {
  vocab_size: number;
  n_embd: number;
  n_layer: number;
  n_positions: number;
}): number {
  const C = c.n_embd;
  const perLayer = 12 * C * C + 13 * C; // ln_1, c_attn, c_proj, ln_2, c_fc, c_proj (weights and biases)
  const params = c.vocab_size * C + c.n_layer * perLayer + 2 * C; // wte (tied head), blocks, ln_f
  return 6 * params + 12 * c.n_layer * C * c.n_positions;
}

function seconds(fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function run(shape: Shape, opts: BenchOptions): Promise<BenchRow[]> {
  const backend = loadNativeBackend();
  const addon = loadNativeAddon();
  if (!backend || !addon) throw new Error(`gpt-share bench needs the native backend: ${nativeLoadError()}`);
  if (!k.backends().includes('native')) k.registerBackend(backend);
  const body = async (): Promise<BenchRow[]> => {
    const threadsBefore = addon.info().threads;
    addon.setThreads(opts.cores === 1 ? 1 : cpus().length);
    try {
      return k.withBackend('native', () => {
        const bf16 = addon.info().bf16;
        const w = gptTrainWorkload(shape.batch, shape.config);
        const stepBf16 = () => k.withMatmulPrecision('bf16', () => w.step());
        const mats = GEMM_SIZES.map((n) => {
          const a = Float32Array.from({ length: n * n }, () => Math.random());
          return { n, a, b: a.slice().reverse(), c: new Float32Array(n * n), times: [] as number[] };
        });
        // warm-up: JIT, first-touch pages, oneDNN primitive creation
        w.step();
        if (bf16) stepBf16();
        for (const m of mats) addon.sgemm(0, 0, m.n, m.n, m.n, m.a, m.b, m.c);
        const f32Times: number[] = [];
        const bf16Times: number[] = [];
        for (let r = 0; r < shape.rounds; r++) {
          f32Times.push(seconds(() => w.step()));
          if (bf16) bf16Times.push(seconds(stepBf16));
          for (const m of mats)
            for (let i = 0; i < (m.n >= 2048 ? 1 : m.n >= 1024 ? 3 : 8); i++)
              m.times.push(seconds(() => addon.sgemm(0, 0, m.n, m.n, m.n, m.a, m.b, m.c)));
        }
        const gemmGflops = Math.max(...mats.map((m) => (2 * m.n ** 3) / median(m.times) / 1e9));
        const tokensPerS = w.items / median(f32Times);
        const modelGflops = (tokensPerS * gptFlopsPerToken(shape.config)) / 1e9;
        const share = modelGflops / gemmGflops;
        notes.push(
          `gpt-share ${shape.name} cores=${opts.cores}: step ${modelGflops.toFixed(1)} model GFLOP/s (${tokensPerS.toFixed(0)} tokens/s) vs best f32 GEMM ${gemmGflops.toFixed(1)} GFLOP/s`,
        );
        const rows = [
          makeRow(
            `gpt_train_share_of_gemm_${shape.name}`,
            opts.cores,
            'share_of_gemm',
            share,
            'knobs gemm',
            1,
            true,
            SHARE_TARGET,
          ),
        ];
        if (bf16)
          rows.push(
            makeRow(
              `gpt_train_step_bf16_${shape.name}`,
              opts.cores,
              'tokens/s',
              w.items / median(bf16Times),
              'knobs f32',
              tokensPerS,
              true,
              shape.bf16Target,
            ),
          );
        else notes.push(`gpt-share ${shape.name}: no bf16 on this CPU, bf16 row skipped`);
        return rows;
      });
    } finally {
      addon.setThreads(threadsBefore);
    }
  };
  return opts.cores === 1 ? pinnedToCore0(body) : body();
}

export const runKjv = (opts: BenchOptions): Promise<BenchRow[]> => run(KJV, opts);
export const runWide = (opts: BenchOptions): Promise<BenchRow[]> => run(WIDE, opts);
