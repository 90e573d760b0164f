// GPT-2's tanh GELU forward (bias + activation) and backward (dh and the bias's column sums) at the
// kjv-gpt MLP shape (2048 × 1024), two builds of the addon in one process, interleaved, outputs
// preallocated (the kernels alone, not page faults). Also prints the largest difference between them.
// Usage: node --single-threaded-gc scripts/gelu-ab.mjs OLD/knobs.node NEW/knobs.node [threads]
import { createRequire } from 'node:module';
import { resolve } from 'node:path';

const [oldPath, newPath, threads = '1'] = process.argv.slice(2);
if (!oldPath || !newPath) {
  console.error('usage: node scripts/gelu-ab.mjs OLD/knobs.node NEW/knobs.node [threads]');
  process.exit(2);
}
const req = createRequire(import.meta.url);
const builds = { old: req(resolve(oldPath)), new: req(resolve(newPath)) };
for (const addon of Object.values(builds)) addon.setThreads(Number(threads));

const M = 2048;
const N = 1024;
const GELU_TANH = 10; // UNARY_CODE.gelu_tanh (src/backends/native/index.ts)
const wave = (n, s, a) => Float32Array.from({ length: n }, (_, i) => a * Math.sin(i * s));
const h0 = wave(M * N, 0.37, 4);
const g = wave(M * N, 0.11, 1);
const bias = wave(N, 0.7, 0.1);
const out = {
  old: [new Float32Array(M * N), new Float32Array(M * N)],
  new: [new Float32Array(M * N), new Float32Array(M * N)],
};
const h = new Float32Array(M * N);
const db = new Float32Array(N);
const median = (a) => [...a].sort((p, q) => p - q)[a.length >> 1];
const times = { 'forward old': [], 'forward new': [], 'backward old': [], 'backward new': [] };
for (let r = 0; r < 21; r++) {
  for (const [name, addon] of Object.entries(builds)) {
    h.set(h0);
    let t0 = performance.now();
    addon.biasActivation(h, M, N, bias, GELU_TANH, out[name][0]);
    times[`forward ${name}`].push(performance.now() - t0);
    t0 = performance.now();
    addon.biasActivationBackward(g, h0, M, N, GELU_TANH, out[name][1], db);
    times[`backward ${name}`].push(performance.now() - t0);
  }
}
for (const pass of ['forward', 'backward']) {
  const o = median(times[`${pass} old`]);
  const n = median(times[`${pass} new`]);
  const i = pass === 'forward' ? 0 : 1;
  let worst = 0;
  for (let j = 0; j < M * N; j++) {
    const a = out.old[i][j],
      b = out.new[i][j];
    worst = Math.max(worst, Math.abs(a - b) / (1e-6 + Math.abs(a)));
  }
  console.log(
    `${pass}: old ${o.toFixed(2)} ms, new ${n.toFixed(2)} ms, ${(o / n).toFixed(2)}×; max relative difference ${worst.toExponential(2)}`,
  );
}
