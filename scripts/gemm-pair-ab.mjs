// A linear layer's backward GEMMs at the kjv-gpt shapes (2048 tokens), two ways in one process,
// interleaved: dX = dY·Wᵀ then dW = Xᵀ·dY as two matmul calls (each split over the pool), and both
// as one matmulPair call (each product on its own share of the threads). Fresh outputs per call, as
// in a training step. Usage: node --single-threaded-gc scripts/gemm-pair-ab.mjs [threads] [rounds]
import { createRequire } from 'node:module';
import { resolve } from 'node:path';

const threads = Number(process.argv[2] ?? 2);
const rounds = Number(process.argv[3] ?? 15);
const addon = createRequire(import.meta.url)(resolve('build/Release/knobs.node'));
addon.setThreads(threads);

const M = 2048;
const wave = (n, s) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * s));
// a view's layout as the addon reads it: rank, offset, shape, strides
const view = (shape, strides) => [2, 0, ...shape, ...strides];
const median = (a) => [...a].sort((p, q) => p - q)[a.length >> 1];

let totalSeparate = 0;
let totalPair = 0;
for (const [K, N] of [
  [256, 768],
  [256, 256],
  [256, 1024],
  [1024, 256],
]) {
  const x = wave(M * K, 0.37);
  const w = wave(K * N, 0.11);
  const g = wave(M * N, 0.23);
  const dxViews = [...view([M, N], [N, 1]), ...view([N, K], [1, N])]; // dY · Wᵀ
  const dwViews = [...view([K, M], [1, K]), ...view([M, N], [N, 1])]; // Xᵀ · dY
  const separate = () => {
    addon.matmul(g, w, Float64Array.from(dxViews), new Float32Array(M * K));
    addon.matmul(x, g, Float64Array.from(dwViews), new Float32Array(K * N));
  };
  const pair = () =>
    addon.matmulPair(
      g,
      w,
      x,
      g,
      Float64Array.from([...dxViews, ...dwViews]),
      new Float32Array(M * K),
      new Float32Array(K * N),
    );
  const times = { separate: [], pair: [] };
  for (let r = 0; r < rounds; r++) {
    for (const [name, fn] of Object.entries({ separate, pair })) {
      const t0 = performance.now();
      for (let i = 0; i < 3; i++) fn();
      times[name].push((performance.now() - t0) / 3);
    }
  }
  const s = median(times.separate);
  const p = median(times.pair);
  // the median of each round's own ratio: robust to the load drifting between rounds
  const roundRatio = median(times.separate.map((t, i) => t / times.pair[i]));
  totalSeparate += s;
  totalPair += p;
  const gflop = (4 * M * K * N) / 1e9;
  console.log(
    `${K}→${N}: two matmuls ${s.toFixed(2)} ms (${((gflop / s) * 1e3).toFixed(0)} GFLOP/s), pair ${p.toFixed(2)} ms (${((gflop / p) * 1e3).toFixed(0)} GFLOP/s), ${(s / p).toFixed(2)}× (median of the rounds' ratios ${roundRatio.toFixed(2)}×)`,
  );
}
console.log(
  `threads ${threads}: one layer's four linears, two matmuls ${totalSeparate.toFixed(2)} ms, pair ${totalPair.toFixed(2)} ms, ${(totalSeparate / totalPair).toFixed(2)}×`,
);
