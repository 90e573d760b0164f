/**
 * The native thread pool (native/kernels/runtime.cpp): a job's chunks are claimed by whichever
 * thread is free, the caller included, so a late worker never holds the caller up. Thousands of
 * back-to-back jobs, with more threads than this machine has cores (workers are often late or
 * asleep), must give the same bits every time: every chunk runs exactly once, and a worker that
 * wakes as one job ends never runs a chunk of the next one with the old job's arguments.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { addon, skip } from './harness/native.js';

function filled(n: number, f: (i: number) => number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = f(i);
  return a;
}

describe('thread pool', { skip }, () => {
  it('back-to-back jobs of different kernels give the same bits as the first run, at 1–5 threads', () => {
    const rows = 1024;
    const C = 256; // rows · C = 8 · GRAIN: every kernel here splits across the pool
    const table = filled(64 * C, (i) => Math.sin(i * 0.37));
    const ids = filled(rows, (i) => (i * 7) % 64);
    const ids32 = Int32Array.from(ids);
    const meta = new Float64Array([2, 0, 64, C, C, 1]);
    const g = filled(rows * C, (i) => Math.cos(i * 0.11));
    const h = filled(rows * C, (i) => Math.sin(i * 0.05) * 3);
    const run = (): Float32Array[] => {
      const gathered = new Float32Array(rows * C).fill(NaN); // every element must be written
      addon!.gatherRows(table, meta, ids32, gathered);
      const dh = new Float32Array(rows * C).fill(NaN);
      const db = new Float32Array(C);
      addon!.biasActivationBackward(g, h, rows, C, 10, dh, db); // gelu_tanh (UNARY_CODE)
      const y = new Float32Array(rows * C);
      const mean = new Float32Array(rows);
      const rstd = new Float32Array(rows);
      addon!.layerNorm(h, null, null, rows, C, 1e-5, y, mean, rstd);
      return [gathered, dh, db, y, mean, rstd];
    };
    const before = addon!.info().threads;
    try {
      addon!.setThreads(1);
      const expected = run();
      for (let i = 0; i < rows * C; i++) assert.equal(expected[0]![i], table[ids32[i >> 8]! * C + (i & 255)]);
      for (const threads of [2, 3, 5]) {
        addon!.setThreads(threads);
        for (let rep = 0; rep < 200; rep++) {
          const got = run();
          got.forEach((a, k) => assert.deepEqual(a, expected[k], `output ${k}, ${threads} threads, run ${rep}`));
        }
      }
    } finally {
      addon!.setThreads(before);
    }
  });
});
