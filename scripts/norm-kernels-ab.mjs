// Two builds of the native addon in one process, interleaved, one thread, kjv-gpt shapes (2048 rows × 256):
// the residual add + LayerNorm forward, LayerNorm's backward with the residual gradient, cross-entropy.
// Usage: node --single-threaded-gc scripts/norm-kernels-ab.mjs OLD/knobs.node NEW/knobs.node
// A build without addLayerNorm (before session 22) runs the unfused pair: add, then layerNorm; the
// backward then adds the residual gradient with a separate binary add. Prints medians of 21 rounds.
import { createRequire } from 'node:module';
import { resolve } from 'node:path';

const [oldPath, newPath] = process.argv.slice(2);
if (!oldPath || !newPath) {
  console.error('usage: node scripts/norm-kernels-ab.mjs OLD/knobs.node NEW/knobs.node');
  process.exit(2);
}
const req = createRequire(import.meta.url);
const builds = [
  ['old', req(resolve(oldPath))],
  ['new', req(resolve(newPath))],
];
for (const [, addon] of builds) addon.setThreads(1);

const M = 2048;
const C = 256;
const wave = (n, s) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * s));
const x = wave(M * C, 0.37);
const r = wave(M * C, 0.11);
const g = wave(M * C, 0.23);
const w = wave(C, 0.5).map((v) => 1 + 0.1 * v);
const b = wave(C, 0.7);
const logits = wave(M * 256, 0.19);
const targets = Int32Array.from({ length: M }, (_, i) => (i * 7) % 256);
const dense2d = new Float64Array([2, 0, M, C, C, 1, 2, 0, M, C, C, 1]); // two [M, C] contiguous views
const ADD = 0; // the addon's binary op code for add (src/backends/native/index.ts)
const f32 = (n) => new Float32Array(n);

function stats(addon) {
  const mean = f32(M);
  const rstd = f32(M);
  addon.layerNorm(x, w, b, M, C, 1e-5, f32(M * C), mean, rstd);
  return { mean, rstd };
}

const cases = {
  'residual add + layerNorm forward': (addon) => {
    if (addon.addLayerNorm) return addon.addLayerNorm(x, r, w, b, M, C, 1e-5, f32(M * C), f32(M * C), f32(M), f32(M));
    const s = f32(M * C);
    addon.binary(ADD, x, r, dense2d, s);
    addon.layerNorm(s, w, b, M, C, 1e-5, f32(M * C), f32(M), f32(M));
  },
  'layerNorm backward + residual grad': (addon, { mean, rstd }) => {
    if (addon.addLayerNorm) return addon.layerNormBackward(x, w, mean, rstd, g, M, C, f32(M * C), f32(C), f32(C), r);
    const dx = f32(M * C);
    addon.layerNormBackward(x, w, mean, rstd, g, M, C, dx, f32(C), f32(C));
    addon.binary(ADD, r, dx, dense2d, f32(M * C));
  },
  'crossEntropy loss + gradient': (addon) => addon.crossEntropy(logits, targets, M, 256, -100, f32(M * 256)),
};

const median = (a) => [...a].sort((p, q) => p - q)[a.length >> 1];
for (const [name, run] of Object.entries(cases)) {
  const times = { old: [], new: [] };
  const saved = Object.fromEntries(builds.map(([k, addon]) => [k, stats(addon)]));
  for (let round = 0; round < 21; round++) {
    for (const [k, addon] of builds) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < 5; i++) run(addon, saved[k]);
      times[k].push(Number(process.hrtime.bigint() - t0) / 5e6);
    }
  }
  const [o, n] = [median(times.old), median(times.new)];
  console.log(`${name.padEnd(36)} old ${o.toFixed(3)} ms  new ${n.toFixed(3)} ms  ${(o / n).toFixed(2)}x`);
}
