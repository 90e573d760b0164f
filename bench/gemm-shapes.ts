/**
 * `node dist/bench/gemm-shapes.js [THREADS]`: every GEMM library compiled into the addon on the
 * kjv-gpt training step's products (2048 tokens × width 256: forward, dX = dY·Wᵀ, dW = Xᵀ·dY) and
 * the bench's squares, the libraries interleaved 5 rounds, medians → GFLOP/s. The measurement behind
 * the per-CPU library choice in docs/native.md ("On an AVX2-only CPU the answer is OpenBLAS").
 * A tool for choosing, not a bench row: both sides are knobs.
 */
import { loadNativeAddon, nativeLoadError } from '../src/backends/native/index.js';
import { median } from './row.js';

const T = 2048;
const C = 256;
/** [name, transpose A, transpose B, M, N, K] */
const SHAPES: readonly [string, 0 | 1, 0 | 1, number, number, number][] = [
  ['forward qkv', 0, 0, T, 3 * C, C],
  ['forward fc', 0, 0, T, 4 * C, C],
  ['forward down', 0, 0, T, C, 4 * C],
  ['dX fc', 0, 1, T, C, 4 * C],
  ['dX down', 0, 1, T, 4 * C, C],
  ['dW qkv', 1, 0, C, 3 * C, T],
  ['dW fc', 1, 0, C, 4 * C, T],
  ['dW down', 1, 0, 4 * C, C, T],
  ['square 512', 0, 0, 512, 512, 512],
  ['square 1024', 0, 0, 1024, 1024, 1024],
  ['square 2048', 0, 0, 2048, 2048, 2048],
];

const addon = loadNativeAddon();
if (!addon) throw new Error(`gemm-shapes needs the native backend: ${nativeLoadError()}`);
addon.setThreads(Number(process.argv[2] ?? 1));
const libs = addon
  .info()
  .gemmLibraries.split(',')
  .filter((l) => l !== 'builtin');
const original = addon.info().gemm;
console.log(`threads ${addon.info().threads}; GFLOP/s, median of 5 interleaved rounds`);
console.log(['product', 'ta', 'tb', 'M×N×K', ...libs].join('\t'));
try {
  for (const [name, ta, tb, M, N, K] of SHAPES) {
    const a = Float32Array.from({ length: M * K }, Math.random);
    const b = Float32Array.from({ length: K * N }, Math.random);
    const c = new Float32Array(M * N);
    const iters = Math.max(3, Math.min(40, Math.round(2e9 / (2 * M * N * K))));
    const times = new Map<string, number[]>(libs.map((l) => [l, []]));
    for (let r = 0; r < 5; r++)
      for (const lib of libs) {
        addon.selectGemm(lib);
        addon.sgemm(ta, tb, M, N, K, a, b, c); // warm-up
        for (let i = 0; i < iters; i++) {
          const t0 = process.hrtime.bigint();
          addon.sgemm(ta, tb, M, N, K, a, b, c);
          times.get(lib)!.push(Number(process.hrtime.bigint() - t0) / 1e9);
        }
      }
    const rates = libs.map((l) => ((2 * M * N * K) / median(times.get(l)!) / 1e9).toFixed(1));
    console.log([name, ta, tb, `${M}×${N}×${K}`, ...rates].join('\t'));
  }
} finally {
  addon.selectGemm(original);
}
