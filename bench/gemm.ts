/**
 * fp32 GEMM, C[n,n] = A·B at n = 512, 1024, 2048: knobs' native sgemm (through one N-API call)
 * against torch.mm in the same run, interleaved A B A B, medians of per-call times → GFLOP/s.
 * KNOBS_BENCH_GEMM_LIBS=openblas,onednn also times each GEMM library compiled in (a build with
 * KNOBS_GEMM=both) — the measurement behind the library choice in docs/native.md.
 */
import { cpus } from 'node:os';
import { loadNativeAddon, nativeLoadError, type NativeAddon } from '../src/backends/native/index.js';
import { TorchPeer, pinnedToCore0 } from './peer.js';
import { type BenchOptions, type BenchRow, makeRow, median } from './row.js';

const SIZES = [512, 1024, 2048];
const ROUNDS = 5;
/** The aim: GEMM within 10% of PyTorch's (ratio ≥ 0.9). */
const GEMM_TARGET = 0.9;

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
): number[] {
  const out: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t0 = process.hrtime.bigint();
    addon.sgemm(0, 0, n, n, n, a, b, c);
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
        for (const lib of libs) {
          addon.selectGemm(lib);
          timeKnobs(addon, n, a, b, c, 1); // warm-up
        }
        for (let r = 0; r < ROUNDS; r++) {
          for (const lib of libs) {
            addon.selectGemm(lib);
            knobsTimes.get(lib)!.push(...timeKnobs(addon, n, a, b, c, iters));
          }
          torchTimes.push(...(await peer.request<{ seconds: number[] }>({ op: 'gemm', n, iters })).seconds);
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
