/** Reductions of the js backend: sum/max/min over axes, argmax/argmin and cumsum along one axis. */
import { type NumericStorage, type Storage, allocate } from '../../dtype.js';
import { numel } from '../../shape.js';
import type { ArgReduceOp, KernelView, ReduceOp } from '../backend.js';
import { dense, denseOperand, forEachRow } from './strided.js';

export function reduce(op: ReduceOp, x: KernelView, axes: readonly number[]): Storage {
  const outShape = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const n = numel(outShape);
  // Accumulate in f64 whatever the dtype, then round once: sums of many f32 values stay accurate.
  const acc = new Float64Array(n).fill(op === 'sum' ? 0 : op === 'max' ? -Infinity : Infinity);
  const dst = denseOperand(outShape);
  const target = { strides: dst.strides.map((s, i) => (axes.includes(i) ? 0 : s)), offset: 0 };
  const src = x.storage as NumericStorage;
  forEachRow(x.shape, [x, target], (offs, len, inner) => {
    let ix = offs[0]!;
    let io = offs[1]!;
    const sx = inner[0]!;
    const so = inner[1]!;
    for (let i = 0; i < len; i++, ix += sx, io += so) {
      const v = src[ix]!;
      if (op === 'sum') acc[io] += v;
      // NaN wins: once the accumulator is NaN, every comparison is false and it stays NaN.
      else if (op === 'max' ? v > acc[io]! || v !== v : v < acc[io]! || v !== v) acc[io] = v;
    }
  });
  const out = allocate(x.dtype, n) as NumericStorage;
  for (let i = 0; i < n; i++) out[i] = acc[i]!;
  return out;
}

export function argReduce(op: ArgReduceOp, x: KernelView, axis: number): Storage {
  const src = dense(x) as NumericStorage;
  const len = x.shape[axis]!;
  const outer = numel(x.shape.slice(0, axis));
  const inner = numel(x.shape.slice(axis + 1));
  const out = new Int32Array(outer * inner);
  const better = op === 'argmax' ? (v: number, b: number) => v > b : (v: number, b: number) => v < b;
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < inner; j++) {
      const base = o * len * inner + j;
      let best = src[base]!;
      let bestIndex = 0;
      for (let i = 1; i < len && best === best; i++) {
        const v = src[base + i * inner]!;
        // The first NaN counts as the extreme, as in PyTorch; otherwise the first of equal values wins.
        if (v !== v || better(v, best)) {
          best = v;
          bestIndex = i;
        }
      }
      out[o * inner + j] = bestIndex;
    }
  }
  return out;
}

export function cumsum(x: KernelView, axis: number, reverse: boolean): Storage {
  const src = dense(x) as NumericStorage;
  const len = x.shape[axis]!;
  const outer = numel(x.shape.slice(0, axis));
  const inner = numel(x.shape.slice(axis + 1));
  const out = allocate(x.dtype, src.length) as NumericStorage;
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < inner; j++) {
      const base = o * len * inner + j;
      let acc = 0; // f64 whatever the dtype, rounded once per element
      for (let t = 0; t < len; t++) {
        const at = base + (reverse ? len - 1 - t : t) * inner;
        acc += src[at]!;
        out[at] = acc;
      }
    }
  }
  return out;
}
