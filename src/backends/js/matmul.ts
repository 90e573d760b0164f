/** Batched matrix product and row gather/scatter for the js backend. */
import { type NumericStorage, type Storage, allocate } from '../../dtype.js';
import { numel } from '../../shape.js';
import type { KernelView, MatmulPrecision } from '../backend.js';
import { roundToBf16 } from './math.js';
import { dense } from './strided.js';

/** 'bf16' is the reference of mixed precision: each operand rounded to bf16, then the f32 product. */
export function matmul(a: KernelView, b: KernelView, precision: MatmulPrecision = 'f32'): Storage {
  const r = a.shape.length;
  const M = a.shape[r - 2]!;
  const K = a.shape[r - 1]!;
  const N = b.shape[r - 1]!;
  const batch = numel(a.shape.slice(0, r - 2));
  const bf16 = precision === 'bf16' && a.dtype === 'f32';
  const as = (bf16 ? Float32Array.from(dense(a) as Float32Array, roundToBf16) : dense(a)) as NumericStorage;
  const bs = (bf16 ? Float32Array.from(dense(b) as Float32Array, roundToBf16) : dense(b)) as NumericStorage;
  const out = allocate(a.dtype, batch * M * N) as NumericStorage;
  const row = new Float64Array(N); // f64 accumulator for one output row
  for (let p = 0; p < batch; p++) {
    const ao = p * M * K;
    const bo = p * K * N;
    const oo = p * M * N;
    for (let i = 0; i < M; i++) {
      row.fill(0);
      for (let k = 0; k < K; k++) {
        const aik = as[ao + i * K + k]!;
        const bRow = bo + k * N;
        for (let j = 0; j < N; j++) row[j] += aik * bs[bRow + j]!;
      }
      for (let j = 0; j < N; j++) out[oo + i * N + j] = row[j]!;
    }
  }
  return out;
}

export function gatherRows(table: KernelView, ids: KernelView): Storage {
  const C = table.shape[1]!;
  const t = dense(table) as NumericStorage;
  const idx = dense(ids);
  const out = allocate(table.dtype, idx.length * C) as NumericStorage;
  for (let i = 0; i < idx.length; i++) {
    const r = Number(idx[i]!);
    for (let c = 0; c < C; c++) out[i * C + c] = t[r * C + c]!;
  }
  return out;
}

export function scatterAddRows(src: KernelView, ids: KernelView, rows: number): Storage {
  const C = src.shape[1]!;
  const s = dense(src) as NumericStorage;
  const idx = dense(ids);
  const out = allocate(src.dtype, rows * C) as NumericStorage;
  for (let i = 0; i < idx.length; i++) {
    const r = Number(idx[i]!);
    for (let c = 0; c < C; c++) out[r * C + c] += s[i * C + c]!;
  }
  return out;
}
