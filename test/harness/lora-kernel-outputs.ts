/**
 * LoRA's low-rank kernels (native/kernels/lora.cpp) on fixed inputs: the fused backward (u, dB, dA)
 * and matmulAccumulate's two low-rank paths (an output ≤ 32 wide: LoRA's down projection; an inner
 * size ≤ 32: its up projection). `loraKernelOutputs` returns every output by name; run as a script
 * (`node lora-kernel-outputs.js THREADS`) it prints their SHA-256 as JSON, so test/lora-kernels.test.ts
 * can compare a child process that runs the portable loops (KNOBS_LORA_NO_AVX2=1) with this one.
 */
import { createHash } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import type { KernelView } from '../../src/backends/backend.js';
import { wave } from './wave.js';
import { loadNativeAddon, loadNativeBackend } from '../../src/backends/native/index.js';

/**
 * [M, N, K, r] of the backward: ranks not a multiple of 8, rows past one pass (32), one task (128) and
 * 32 tasks (then tasks grow: 160 rows at M = 4,200), a 4 KiB row stride.
 */
export const BACKWARD_SHAPES = [
  [1, 8, 8, 1],
  [4200, 8, 9, 3],
  [300, 70, 37, 5],
  [600, 96, 40, 8],
  [257, 33, 130, 16],
  [64, 24, 17, 32],
  [40, 1024, 24, 8],
] as const;

/**
 * [M, K, N, a transposed, bias] of matmulAccumulate: N ≤ 32 (narrow) or K ≤ 32 (low rank; N past 64
 * columns and a tail), a row-major or a transposed view, with and without a bias (the narrow path
 * takes none). Its alpha, 1/3, is no power of two: c + alpha·acc must round once on every path.
 */
export const ACCUMULATE_SHAPES = [
  [70, 300, 8, false, false],
  [45, 129, 13, true, false],
  [33, 64, 32, false, false],
  [70, 8, 300, false, false],
  [70, 8, 300, false, true],
  [21, 5, 77, true, true],
] as const;
export const ALPHA = 1 / 3;

export interface BackwardInputs {
  g: Float32Array;
  sB: Float32Array;
  t: Float32Array;
  h: Float32Array;
}

export function backwardInputs(M: number, N: number, K: number, r: number): BackwardInputs {
  return { g: wave(M * N, 1), sB: wave(N * r, 2, 0.3), t: wave(M * r, 3), h: wave(M * K, 4) };
}

/** a [M, K] (row-major, or the transpose of a row-major [K, M]) and b [K, N] as the LoRA layer passes it (Bᵀ of [N, K]). */
export function accumulateInputs(M: number, K: number, N: number, aTransposed: boolean): [KernelView, KernelView] {
  const a: KernelView = {
    dtype: 'f32',
    storage: wave(M * K, 5),
    shape: [M, K],
    strides: aTransposed ? [1, M] : [K, 1],
    offset: 0,
  };
  const b: KernelView = { dtype: 'f32', storage: wave(K * N, 6, 0.2), shape: [K, N], strides: [1, K], offset: 0 };
  return [a, b];
}

export const biasOf = (N: number): KernelView => ({
  dtype: 'f32',
  storage: wave(N, 8, 0.7),
  shape: [N],
  strides: [1],
  offset: 0,
});

export const accumulateName = (M: number, K: number, N: number, aT: boolean, bias: boolean): string =>
  `accumulate ${M}x${K}x${N}${aT ? 'ᵀ' : ''}${bias ? ' + bias' : ''}`;

export function loraKernelOutputs(threads: number): Record<string, Float32Array> {
  const addon = loadNativeAddon();
  const fused = loadNativeBackend()?.fused;
  if (!addon || !fused) throw new Error('native addon not built');
  const before = addon.info().threads;
  addon.setThreads(threads);
  try {
    const out: Record<string, Float32Array> = {};
    for (const [M, N, K, r] of BACKWARD_SHAPES) {
      const { g, sB, t, h } = backwardInputs(M, N, K, r);
      const u = new Float32Array(M * r);
      const dB = new Float32Array(N * r);
      const dA = new Float32Array(r * K);
      addon.loraBackward(g, sB, t, h, M, N, K, r, u, dB, dA);
      Object.assign(out, {
        [`u ${M}x${N}x${K}x${r}`]: u,
        [`dB ${M}x${N}x${K}x${r}`]: dB,
        [`dA ${M}x${N}x${K}x${r}`]: dA,
      });
    }
    for (const [M, K, N, aT, withBias] of ACCUMULATE_SHAPES) {
      const [a, b] = accumulateInputs(M, K, N, aT);
      const c = wave(M * N, 7);
      fused.matmulAccumulate(a, b, c, ALPHA, withBias ? biasOf(N) : null);
      out[accumulateName(M, K, N, aT, withBias)] = c;
    }
    return out;
  } finally {
    addon.setThreads(before);
  }
}

export function loraKernelHashes(threads: number): Record<string, string> {
  const hashes: Record<string, string> = {};
  for (const [name, y] of Object.entries(loraKernelOutputs(threads)))
    hashes[name] = createHash('sha256').update(y).digest('hex');
  return hashes;
}

if (import.meta.url === pathToFileURL(process.argv[1]!).href)
  process.stdout.write(JSON.stringify(loraKernelHashes(Number(process.argv[2] ?? 1))) + '\n');
