/**
 * biMatmulKn (native/kernels/bi_matmul_kn.cpp) on fixed inputs: one product of many rows, then every
 * row again in smaller batches of each size from 1 to 7 (so each row passes through every tile
 * shape), with column counts that leave vector and single-column tails. Reports the rows whose
 * bits differ from the big product, the largest error against f64, and a hash of the products.
 * Printed as JSON when run as a script: test/serve-batching-gpt.test.ts runs it in a child process
 * with the AVX2 tiles switched off (KNOBS_BI_NO_AVX2=1).
 */
import { createHash } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { wave } from './wave.js';
import { loadNativeAddon } from '../../src/backends/native/index.js';

export function matmulKnRows(): { mismatches: number; maxError: number; hash: string; detail: string } {
  const addon = loadNativeAddon();
  if (!addon) throw new Error('native addon not built');
  const h = createHash('sha256');
  let mismatches = 0;
  let maxError = 0;
  const detail: string[] = [];
  for (const [M, K, N] of [
    [23, 70, 77],
    [13, 129, 160],
    [9, 33, 5],
  ] as const) {
    const x = wave(M * K, 1, 1);
    const w = wave(K * N, 2, 0.1);
    const product = (rows: Float32Array, m: number): Float32Array => {
      const y = new Float32Array(m * N);
      addon.biMatmulKn(rows, m, K, w, N, y);
      return y;
    };
    const all = product(x, M);
    h.update(all);
    for (let size = 1; size <= 7; size++)
      for (let m0 = 0; m0 < M; m0 += size) {
        const m1 = Math.min(M, m0 + size);
        const part = product(x.slice(m0 * K, m1 * K), m1 - m0);
        for (let i = 0; i < part.length; i++)
          if (!Object.is(part[i], all[m0 * N + i])) {
            mismatches++;
            if (detail.length < 3) detail.push(`${M}x${K}x${N}: rows ${m0}-${m1} in batches of ${size}, element ${i}`);
          }
      }
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let ref = 0;
        for (let i = 0; i < K; i++) ref += x[m * K + i]! * w[i * N + n]!;
        maxError = Math.max(maxError, Math.abs(all[m * N + n]! - ref) / Math.max(1, Math.abs(ref)));
      }
  }
  return { mismatches, maxError, hash: h.digest('hex'), detail: detail.join('; ') };
}

if (import.meta.url === pathToFileURL(process.argv[1]!).href) console.log(JSON.stringify(matmulKnRows()));
