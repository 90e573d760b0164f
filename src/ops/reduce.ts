/** Reductions: sum, mean, max, min, var over axes (keepdim optional); argmax/argmin; cumsum. */
import { record } from '../autograd/tape.js';
import type { ReduceOp } from '../backends/backend.js';
import { kernelFor } from '../backends/dispatch.js';
import { ArgumentError } from '../errors.js';
import { formatShape, normalizeAxes, normalizeAxis, numel } from '../shape.js';
import { Tensor } from '../tensor.js';
import { div, mul, sub } from './elementwise.js';
import { requireArithmetic } from './util.js';
import { cast, expand, reshape } from './view.js';

export type Axes = number | readonly number[] | undefined;

function dropAxes(shape: readonly number[], axes: readonly number[]): number[] {
  return shape.filter((_, i) => !axes.includes(i));
}

function reduceOp(op: ReduceOp, x: Tensor, axis: Axes, keepdim: boolean): Tensor {
  requireArithmetic(op, x);
  const axes = normalizeAxes(op, axis, x.rank);
  // Sums of bools and small ints count past 255: accumulate them as i32, as PyTorch does (in i64).
  const src = op === 'sum' && (x.dtype === 'bool' || x.dtype === 'u8' || x.dtype === 'i8') ? cast(x, 'i32') : x;
  if (op !== 'sum' && axes.some((a) => src.shape[a] === 0)) {
    throw new ArgumentError(
      `${op}: cannot reduce over an empty dimension (shape ${formatShape(src.shape)}); it has no ${op}imum`,
    );
  }
  const kept = src.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const out = new Tensor(kernelFor('reduce', [src]).reduce(op, src, axes), kept, src.dtype);
  const recorded = record(op, out, [src], { axes });
  return keepdim ? recorded : reshape(recorded, dropAxes(src.shape, axes));
}

export const sum = (x: Tensor, axis?: Axes, keepdim = false): Tensor => reduceOp('sum', x, axis, keepdim);
/** Largest value over the axes (PyTorch's amax: on ties the gradient is split evenly). */
export const max = (x: Tensor, axis?: Axes, keepdim = false): Tensor => reduceOp('max', x, axis, keepdim);
export const min = (x: Tensor, axis?: Axes, keepdim = false): Tensor => reduceOp('min', x, axis, keepdim);

/** Number of elements a reduction over `axis` combines. */
function reducedCount(x: Tensor, axis: Axes): number {
  return numel(normalizeAxes('mean', axis, x.rank).map((a) => x.shape[a]!));
}

export function mean(x: Tensor, axis?: Axes, keepdim = false): Tensor {
  const xf = x.dtype === 'f32' || x.dtype === 'f64' ? x : cast(x, 'f32');
  return div(sum(xf, axis, keepdim), reducedCount(xf, axis));
}

/** Variance over the axes with Bessel's correction by default (correction = 1), as torch.var. */
export function variance(x: Tensor, axis?: Axes, opts: { correction?: number; keepdim?: boolean } = {}): Tensor {
  const correction = opts.correction ?? 1;
  const centered = sub(x, mean(x, axis, true));
  const squares = sum(mul(centered, centered), axis, opts.keepdim ?? false);
  return div(squares, Math.max(0, reducedCount(x, axis) - correction));
}

function argReduce(op: 'argmax' | 'argmin', x: Tensor, axis: number | undefined, keepdim: boolean): Tensor {
  requireArithmetic(op, x);
  if (axis === undefined) {
    const flat = reshape(x, [x.size]);
    const r = argReduce(op, flat, 0, false);
    return keepdim
      ? reshape(
          r,
          x.shape.map(() => 1),
        )
      : r;
  }
  const ax = normalizeAxis(op, axis, Math.max(x.rank, 1));
  const src = x.rank === 0 ? reshape(x, [1]) : x;
  if (src.shape[ax] === 0)
    throw new ArgumentError(`${op}: cannot reduce over an empty dimension (shape ${formatShape(src.shape)})`);
  const kept = src.shape.map((d, i) => (i === ax ? 1 : d));
  const out = new Tensor(kernelFor('argReduce', [src]).argReduce(op, src, ax), kept, 'i32');
  return keepdim ? out : reshape(out, dropAxes(src.shape, [ax]));
}

/** Index of the largest value (first on ties; NaN counts as largest), i32. */
export const argmax = (x: Tensor, axis?: number, keepdim = false): Tensor => argReduce('argmax', x, axis, keepdim);
export const argmin = (x: Tensor, axis?: number, keepdim = false): Tensor => argReduce('argmin', x, axis, keepdim);

/**
 * Running sums along `axis`: out[…, i, …] = Σ_{j ≤ i} x[…, j, …] (Σ_{j ≥ i} with `reverse`), the
 * shape of `x`. Bools and small ints are summed as i32, as `sum` does.
 */
export function cumsum(x: Tensor, axis: number, opts: { reverse?: boolean } = {}): Tensor {
  requireArithmetic('cumsum', x);
  const reverse = opts.reverse ?? false;
  const src = x.dtype === 'bool' || x.dtype === 'u8' || x.dtype === 'i8' ? cast(x, 'i32') : x;
  if (src.rank === 0) return cumsum(reshape(src, [1]), 0, opts).reshape([]);
  const ax = normalizeAxis('cumsum', axis, src.rank);
  const out = new Tensor(kernelFor('cumsum', [src]).cumsum(src, ax, reverse), src.shape, src.dtype);
  return record('cumsum', out, [src], { axis: ax, reverse });
}

/** Sums a broadcast gradient back down to `shape` (the inverse of broadcasting). */
export function sumToShape(g: Tensor, shape: readonly number[]): Tensor {
  if (g.shape.length === shape.length && g.shape.every((d, i) => d === shape[i])) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
  const s = axes.length > 0 ? sum(g, axes, true) : g;
  return reshape(s, shape);
}

/** Broadcasts a keepdim-shaped tensor back to `shape` (used by reduction gradients). */
export const expandTo = (t: Tensor, shape: readonly number[]): Tensor => expand(t, shape);
