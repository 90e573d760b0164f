/** Ops that rearrange whole tensors: concat, stack, split, pad, triu/tril. */
import { record } from '../autograd/tape.js';
import { allocate } from '../dtype.js';
import { ArgumentError, DTypeError, ShapeError } from '../errors.js';
import { formatShape, normalizeAxis, numel } from '../shape.js';
import { Tensor } from '../tensor.js';
import { arange, full } from './creation.js';
import { ge, le, sub, where } from './elementwise.js';
import { assignInto, reshape, slice, unsqueeze } from './view.js';

/** Joins tensors along an existing axis. */
export function concat(tensors: readonly Tensor[], axis = 0): Tensor {
  if (tensors.length === 0) throw new ArgumentError('concat: needs at least one tensor');
  const first = tensors[0]!;
  const ax = normalizeAxis('concat', axis, first.rank);
  for (const t of tensors) {
    if (t.dtype !== first.dtype) {
      throw new DTypeError(
        `concat: dtypes differ (${first.dtype} and ${t.dtype}); convert them to one dtype with .to()`,
        { op: 'concat', dtypes: [first.dtype, t.dtype] },
      );
    }
    if (t.rank !== first.rank || t.shape.some((d, i) => i !== ax && d !== first.shape[i])) {
      throw new ShapeError(
        `concat: shapes ${formatShape(first.shape)} and ${formatShape(t.shape)} differ outside axis ${ax}; all other dimensions must match`,
        { op: 'concat', shapes: [first.shape, t.shape], axis: ax },
      );
    }
  }
  const sizes = tensors.map((t) => t.shape[ax]!);
  const shape = [...first.shape];
  shape[ax] = sizes.reduce((a, b) => a + b, 0);
  const out = new Tensor(allocate(first.dtype, numel(shape)), shape, first.dtype);
  let start = 0;
  tensors.forEach((t, i) => {
    const region = new Tensor(out.storage, t.shape, out.dtype, out.strides, out.offset + start * out.strides[ax]!);
    if (t.size > 0) assignInto(region, t);
    start += sizes[i]!;
  });
  return record('concat', out, tensors, { axis: ax, sizes });
}

/** Joins tensors of one shape along a new axis. */
export function stack(tensors: readonly Tensor[], axis = 0): Tensor {
  if (tensors.length === 0) throw new ArgumentError('stack: needs at least one tensor');
  const ax = normalizeAxis('stack', axis, tensors[0]!.rank + 1);
  for (const t of tensors) {
    if (t.rank !== tensors[0]!.rank || t.shape.some((d, i) => d !== tensors[0]!.shape[i])) {
      throw new ShapeError(
        `stack: shapes ${formatShape(tensors[0]!.shape)} and ${formatShape(t.shape)} differ; stacked tensors must have one shape`,
        { op: 'stack', shapes: [tensors[0]!.shape, t.shape] },
      );
    }
  }
  return concat(
    tensors.map((t) => unsqueeze(t, ax)),
    ax,
  );
}

/** Splits into chunks of `size` (the last may be smaller), or into the given sizes. Views, not copies. */
export function split(x: Tensor, sizeOrSizes: number | readonly number[], axis = 0): Tensor[] {
  const ax = normalizeAxis('split', axis, x.rank);
  const n = x.shape[ax]!;
  let sizes: number[];
  if (typeof sizeOrSizes === 'number') {
    if (!Number.isInteger(sizeOrSizes) || sizeOrSizes <= 0)
      throw new ArgumentError(`split: chunk size must be a positive integer, got ${sizeOrSizes}`);
    sizes = [];
    for (let s = 0; s < n; s += sizeOrSizes) sizes.push(Math.min(sizeOrSizes, n - s));
    if (n === 0) sizes = [0];
  } else {
    sizes = [...sizeOrSizes];
    const total = sizes.reduce((a, b) => a + b, 0);
    if (sizes.some((s) => !Number.isInteger(s) || s < 0) || total !== n) {
      throw new ShapeError(
        `split: sizes ${JSON.stringify(sizes)} must be non-negative integers summing to ${n} (axis ${ax} of ${formatShape(x.shape)})`,
        { op: 'split', shapes: [x.shape], sizes, axis: ax },
      );
    }
  }
  let start = 0;
  return sizes.map((s) => {
    const part = slice(x, ax, start, start + s);
    start += s;
    return part;
  });
}

/**
 * Constant padding, with pads in torch.nn.functional.pad order: the last axis first,
 * [before, after] for each padded axis. Pads must be non-negative (crop with slice instead).
 */
export function pad(x: Tensor, pads: readonly number[], value = 0): Tensor {
  if (pads.length % 2 !== 0 || pads.length / 2 > x.rank) {
    throw new ArgumentError(
      `pad: pads must be [before, after] pairs for at most ${x.rank} axes, got ${JSON.stringify(pads)}`,
    );
  }
  if (pads.some((p) => !Number.isInteger(p) || p < 0)) {
    throw new ArgumentError(`pad: pads must be non-negative integers, got ${JSON.stringify(pads)}; to crop, use slice`);
  }
  const starts = x.shape.map(() => 0);
  const shape = [...x.shape];
  for (let i = 0; i < pads.length / 2; i++) {
    const axis = x.rank - 1 - i;
    starts[axis] = pads[2 * i]!;
    shape[axis] = x.shape[axis]! + pads[2 * i]! + pads[2 * i + 1]!;
  }
  const out = full(shape, value, { dtype: x.dtype });
  const offset = starts.reduce((acc, s, i) => acc + s * out.strides[i]!, 0);
  if (x.size > 0) assignInto(new Tensor(out.storage, x.shape, x.dtype, out.strides, offset), x);
  return record('pad', out, [x], { starts });
}

/** mask[i, j] = keep(j − i) over the last two axes of x, as a broadcastable bool tensor. */
function diagonalMask(x: Tensor, keep: 'upper' | 'lower', diagonal: number): Tensor {
  if (x.rank < 2)
    throw new ShapeError(
      `${keep === 'upper' ? 'triu' : 'tril'}: needs at least 2 dimensions, got ${formatShape(x.shape)}`,
      { op: keep === 'upper' ? 'triu' : 'tril', shapes: [x.shape] },
    );
  const rows = x.shape[x.rank - 2]!;
  const cols = x.shape[x.rank - 1]!;
  const offsetFromDiagonal = sub(reshape(arange(cols), [1, cols]), reshape(arange(rows), [rows, 1]));
  return keep === 'upper' ? ge(offsetFromDiagonal, diagonal) : le(offsetFromDiagonal, diagonal);
}

/** Keeps elements on and above the `diagonal`-th diagonal of the last two axes; zeros the rest. */
export const triu = (x: Tensor, diagonal = 0): Tensor => where(diagonalMask(x, 'upper', diagonal), x, 0);
/** Keeps elements on and below the `diagonal`-th diagonal of the last two axes; zeros the rest. */
export const tril = (x: Tensor, diagonal = 0): Tensor => where(diagonalMask(x, 'lower', diagonal), x, 0);

/** A causal mask: true where key position j may be seen from query position i (j ≤ i). */
export function causalMask(queries: number, keys: number): Tensor {
  const offsetFromDiagonal = sub(reshape(arange(keys), [1, keys]), reshape(arange(queries), [queries, 1]));
  return le(offsetFromDiagonal, 0);
}
