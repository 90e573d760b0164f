/**
 * Strided iteration for the js backend: walk a shape row by row (innermost axis), keeping one
 * running offset per operand. The per-element work happens in the caller's inner loop, so the
 * walk allocates only its small index arrays, once per call.
 */
import type { Storage } from '../../dtype.js';
import { allocate } from '../../dtype.js';
import { numel } from '../../shape.js';
import type { KernelView } from '../backend.js';

export interface Operand {
  readonly strides: readonly number[];
  readonly offset: number;
}

/**
 * Calls `row(offsets, length, innerStrides)` once per innermost row of `shape`; `offsets[k]` is
 * operand k's offset of the row's first element. A rank-0 shape is one row of length 1.
 */
export function forEachRow(
  shape: readonly number[],
  operands: readonly Operand[],
  row: (offsets: Float64Array, length: number, innerStrides: Float64Array) => void,
): void {
  const rank = shape.length;
  const k = operands.length;
  if (numel(shape) === 0) return;
  const offsets = new Float64Array(k);
  const inner = new Float64Array(k);
  for (let j = 0; j < k; j++) {
    offsets[j] = operands[j]!.offset;
    inner[j] = rank > 0 ? operands[j]!.strides[rank - 1]! : 0;
  }
  if (rank === 0) {
    row(offsets, 1, inner);
    return;
  }
  const length = shape[rank - 1]!;
  const index = new Array<number>(rank).fill(0);
  for (;;) {
    row(offsets, length, inner);
    let d = rank - 2;
    for (; d >= 0; d--) {
      index[d]!++;
      for (let j = 0; j < k; j++) offsets[j] += operands[j]!.strides[d]!;
      if (index[d]! < shape[d]!) break;
      for (let j = 0; j < k; j++) offsets[j] -= operands[j]!.strides[d]! * shape[d]!;
      index[d] = 0;
    }
    if (d < 0) return;
  }
}

/** Row-major strides of `shape`, as an Operand at offset 0. */
export function denseOperand(shape: readonly number[]): Operand {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return { strides, offset: 0 };
}

/** Copies a view's elements, row-major, into `out` (same element kind). */
export function copyInto(view: KernelView, out: Storage): void {
  const src = view.storage as ArrayLike<number> & { [i: number]: number };
  const dst = out as unknown as { [i: number]: number };
  let o = 0;
  forEachRow(view.shape, [view], (offs, len, inner) => {
    let s = offs[0]!;
    const st = inner[0]!;
    for (let i = 0; i < len; i++, s += st) dst[o++] = src[s]!;
  });
}

/** A contiguous copy of a view's elements. */
export function materialize(view: KernelView): Storage {
  const out = allocate(view.dtype, numel(view.shape));
  copyInto(view, out);
  return out;
}

/** The view's elements as row-major storage: the storage itself (or a subarray) when already dense. */
export function dense(view: KernelView): Storage {
  const n = numel(view.shape);
  let expected = 1;
  let contiguous = true;
  for (let i = view.shape.length - 1; i >= 0; i--) {
    if (view.shape[i] === 1) continue;
    if (view.strides[i] !== expected) {
      contiguous = false;
      break;
    }
    expected *= view.shape[i]!;
  }
  if (!contiguous) return materialize(view);
  return view.offset === 0 && view.storage.length === n
    ? view.storage
    : (view.storage.subarray(view.offset, view.offset + n) as Storage);
}
