/**
 * fp32 GEMM, C[n,n] = A·B at n = 512, 1024, 2048: knobs' native sgemm (through one N-API call)
 * against torch.mm in the same run, interleaved A B A B, medians of per-call times → GFLOP/s.
 * KNOBS_BENCH_GEMM_LIBS=openblas,onednn also times each GEMM library compiled in (a build with
 * KNOBS_GEMM=both) — the measurement behind the library choice in docs/native.md.
 *
 * Where the CPU runs bf16 (addon.info().bf16), n = 1024 and 2048 also time the bf16 mixed-precision
 * GEMM (f32 in, bf16 products, f32 out) in the same rounds: one row against knobs' own f32 GEMM
 * (target 1.8×) and one against torch's CPU autocast bf16 matmul (f32 operands, cast inside).
 */
import { cpus } from 'node:os';
import { loadNativeAddon, nativeLoadError, type NativeAddon } from '../src/backends/native/index.js';
import { TorchPeer, pinnedToCore0 } from './peer.js';
import { type BenchOptions, type BenchRow, makeRow, median } from './row.js';

const SIZES = [512, 1024, 2048];
const ROUNDS = 5;
/** The aim: GEMM within 10% of PyTorch's (ratio ≥ 0.9). */
const GEMM_TARGET = 0.9;
const BF16_SIZES = new Set([1024, 2048]);
/** The speed issue's aim for bf16 over knobs' own f32 GEMM. */
const BF16_OVER_F32_TARGET = 1.8;

function itersFor(n: number): number {
  return n >= 2048 ? 2 : n >= 1024 ? 4 : 12;
}

function timeKnobs(
  addon: NativeAddon,
  n: number,
  a: Float32Array,
  b: Float32Array,
  c: Float32Array,
  iters: number,
  bf16 = false,
): number[] {
  const out: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t0 = process.hrtime.bigint();
    (bf16 ? addon.sgemmBf16 : addon.sgemm)(0, 0, n, n, n, a, b, c);
    out.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return out;
}

export async function run(opts: BenchOptions): Promise<BenchRow[]> {
  const addon = loadNativeAddon();
  if (!addon) throw new Error(`gemm bench needs the native backend: ${nativeLoadError()}`);
  const body = async (): Promise<BenchRow[]> => {
    const threadsBefore = addon.info().threads;
    addon.setThreads(opts.cores === 1 ? 1 : cpus().length);
    const peer = await TorchPeer.start(opts.cores);
    const libs = (process.env.KNOBS_BENCH_GEMM_LIBS ?? addon.info().gemm)
      .split(',')
      .filter((l) => addon.info().gemmLibraries.includes(l));
    const original = addon.info().gemm;
    const rows: BenchRow[] = [];
    try {
      for (const n of SIZES) {
        const a = Float32Array.from({ length: n * n }, () => Math.random());
        const b = Float32Array.from({ length: n * n }, () => Math.random());
        const c = new Float32Array(n * n);
        const iters = itersFor(n);
        const knobsTimes = new Map<string, number[]>(libs.map((l) => [l, []]));
        const torchTimes: number[] = [];
        const bf16 = addon.info().bf16 && BF16_SIZES.has(n);
        const bf16Times: number[] = [];
        const torchBf16Times: number[] = [];
        for (const lib of libs) {
          addon.selectGemm(lib);
          timeKnobs(addon, n, a, b, c, 1); // warm-up
        }
        if (bf16) timeKnobs(addon, n, a, b, c, 1, true); // warm-up (creates the primitive)
        for (let r = 0; r < ROUNDS; r++) {
          for (const lib of libs) {
            addon.selectGemm(lib);
            knobsTimes.get(lib)!.push(...timeKnobs(addon, n, a, b, c, iters));
          }
          torchTimes.push(...(await peer.request<{ seconds: number[] }>({ op: 'gemm', n, iters })).seconds);
          if (!bf16) continue;
          addon.selectGemm(original);
          bf16Times.push(...timeKnobs(addon, n, a, b, c, iters, true));
          torchBf16Times.push(...(await peer.request<{ seconds: number[] }>({ op: 'gemm_bf16', n, iters })).seconds);
        }
        const flops = 2 * n ** 3;
        const torchGflops = flops / median(torchTimes) / 1e9;
        for (const lib of libs) {
          const name = libs.length > 1 || lib !== original ? `gemm_f32_${n} (${lib})` : `gemm_f32_${n}`;
          rows.push(
            makeRow(
              name,
              opts.cores,
              'GFLOP/s',
              flops / median(knobsTimes.get(lib)!) / 1e9,
              peer.version,
              torchGflops,
              true,
              GEMM_TARGET,
            ),
          );
        }
        if (bf16) {
          const knobsBf16 = flops / median(bf16Times) / 1e9;
          const f32 = flops / median(knobsTimes.get(original)!) / 1e9;
          rows.push(
            makeRow(`gemm_bf16_${n}`, opts.cores, 'GFLOP/s', knobsBf16, 'knobs f32', f32, true, BF16_OVER_F32_TARGET),
            makeRow(
              `gemm_bf16_${n}`,
              opts.cores,
              'GFLOP/s',
              knobsBf16,
              `${peer.version} autocast bf16`,
              flops / median(torchBf16Times) / 1e9,
              true,
              1,
            ),
          );
        }
      }
    } finally {
      addon.selectGemm(original);
      addon.setThreads(threadsBefore);
      peer.close();
    }
    return rows;
  };
  return opts.cores === 1 ? pinnedToCore0(body) : body();
}
