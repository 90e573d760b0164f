/**
 * Views and layout: reshape, permute/transpose, slice, expand, (un)squeeze share storage when
 * they can; contiguous, clone and cast copy.
 */
import { record } from '../autograd/tape.js';
import { kernelFor } from '../backends/dispatch.js';
import { type DType, allocateUnfilled, isDType } from '../dtype.js';
import { ArgumentError, DTypeError, ShapeError } from '../errors.js';
import { formatShape, normalizeAxis, numel, shapesEqual } from '../shape.js';
import { Tensor } from '../tensor.js';

function viewOf(x: Tensor, shape: readonly number[], strides: readonly number[], offset: number): Tensor {
  return new Tensor(x.storage, shape, x.dtype, strides, offset);
}

/** Resolves one -1 in a target shape and checks the element count. */
function resolveShape(x: Tensor, shape: readonly number[]): number[] {
  const out = [...shape];
  const unknown = out.indexOf(-1);
  if (out.some((d, i) => (d < 0 && i !== unknown) || !Number.isInteger(d)) || out.lastIndexOf(-1) !== unknown) {
    throw new ShapeError(
      `reshape: invalid target shape ${formatShape(shape)}; use non-negative sizes and at most one -1`,
      { op: 'reshape', shapes: [x.shape, shape] },
    );
  }
  if (unknown >= 0) {
    const known = numel(out.filter((_, i) => i !== unknown));
    if (known === 0 || x.size % known !== 0) {
      throw new ShapeError(
        `reshape: cannot infer -1 in ${formatShape(shape)} for ${x.size} elements (shape ${formatShape(x.shape)})`,
        { op: 'reshape', shapes: [x.shape, shape] },
      );
    }
    out[unknown] = x.size / known;
  }
  if (numel(out) !== x.size) {
    throw new ShapeError(
      `reshape: shape ${formatShape(x.shape)} has ${x.size} elements and cannot become ${formatShape(shape)} (${numel(out)} elements)`,
      { op: 'reshape', shapes: [x.shape, shape] },
    );
  }
  return out;
}

export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const target = resolveShape(x, shape);
  if (shapesEqual(target, x.shape)) return x;
  const src = x.isContiguous() ? x : contiguous(x);
  const out = new Tensor(src.storage, target, src.dtype, undefined, src.offset);
  return record('reshape', out, [src], { xShape: src.shape });
}

/** Merges axes start..end (inclusive) into one. */
export function flatten(x: Tensor, startAxis = 0, endAxis = -1): Tensor {
  if (x.rank === 0) return reshape(x, [1]);
  const s = normalizeAxis('flatten', startAxis, x.rank);
  const e = normalizeAxis('flatten', endAxis, x.rank);
  if (e < s) throw new ArgumentError(`flatten: end axis ${endAxis} comes before start axis ${startAxis}`);
  return reshape(x, [...x.shape.slice(0, s), numel(x.shape.slice(s, e + 1)), ...x.shape.slice(e + 1)]);
}

export function permute(x: Tensor, dims: readonly number[]): Tensor {
  if (dims.length !== x.rank) {
    throw new ShapeError(
      `permute: ${dims.length} dims given for a tensor of rank ${x.rank} (shape ${formatShape(x.shape)})`,
      { op: 'permute', shapes: [x.shape], dims },
    );
  }
  const norm = dims.map((d) => normalizeAxis('permute', d, x.rank));
  if (new Set(norm).size !== norm.length)
    throw new ArgumentError(`permute: dims ${JSON.stringify(dims)} repeat an axis`);
  if (norm.every((d, i) => d === i)) return x;
  const out = viewOf(
    x,
    norm.map((d) => x.shape[d]!),
    norm.map((d) => x.strides[d]!),
    x.offset,
  );
  return record('permute', out, [x], { dims: norm });
}

export function transpose(x: Tensor, a: number, b: number): Tensor {
  const dims = Array.from({ length: x.rank }, (_, i) => i);
  const ia = normalizeAxis('transpose', a, x.rank);
  const ib = normalizeAxis('transpose', b, x.rank);
  [dims[ia], dims[ib]] = [dims[ib]!, dims[ia]!];
  return permute(x, dims);
}

/** Elements start, start+step, … before end along one axis (Python slice semantics, step > 0). */
export function slice(x: Tensor, axis: number, start: number, end?: number, step = 1): Tensor {
  const ax = normalizeAxis('slice', axis, x.rank);
  if (!Number.isInteger(step) || step <= 0)
    throw new ArgumentError(`slice: step must be a positive integer, got ${step}`);
  const n = x.shape[ax]!;
  const clampIndex = (i: number): number => Math.min(Math.max(i < 0 ? i + n : i, 0), n);
  const s = clampIndex(start);
  const e = Math.max(clampIndex(end ?? n), s);
  const len = Math.ceil((e - s) / step);
  if (s === 0 && len === n && step === 1) return x;
  const shape = [...x.shape];
  shape[ax] = len;
  const strides = [...x.strides];
  strides[ax] = x.strides[ax]! * step;
  const out = viewOf(x, shape, strides, x.offset + (len > 0 ? s * x.strides[ax]! : 0));
  return record('slice', out, [x], { xShape: x.shape, axis: ax, start: s, step });
}

/** Broadcasts to `shape` without copying (new leading axes and size-1 axes get stride 0). -1 keeps a size. */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  if (shape.length < x.rank) {
    throw new ShapeError(
      `expand: cannot expand shape ${formatShape(x.shape)} to fewer dimensions ${formatShape(shape)}`,
      { op: 'expand', shapes: [x.shape, shape] },
    );
  }
  const lead = shape.length - x.rank;
  const target = shape.map((d, i) => (d === -1 && i >= lead ? x.shape[i - lead]! : d));
  if (shapesEqual(target, x.shape)) return x;
  const strides = target.map((d, i) => {
    if (i < lead) return 0;
    const own = x.shape[i - lead]!;
    if (own === d) return x.strides[i - lead]!;
    if (own === 1) return 0;
    throw new ShapeError(
      `expand: shape ${formatShape(x.shape)} cannot expand to ${formatShape(shape)}: dimension ${i} is ${own}, only size-1 dimensions expand`,
      { op: 'expand', shapes: [x.shape, shape], axis: i },
    );
  });
  const out = viewOf(x, target, strides, x.offset);
  return record('expand', out, [x], { xShape: x.shape });
}

export function unsqueeze(x: Tensor, axis: number): Tensor {
  const ax = normalizeAxis('unsqueeze', axis, x.rank + 1);
  return reshape(x, [...x.shape.slice(0, ax), 1, ...x.shape.slice(ax)]);
}

/** Removes one size-1 axis, or all of them when no axis is given. */
export function squeeze(x: Tensor, axis?: number): Tensor {
  if (axis === undefined)
    return reshape(
      x,
      x.shape.filter((d) => d !== 1),
    );
  const ax = normalizeAxis('squeeze', axis, x.rank);
  if (x.shape[ax] !== 1) return x;
  return reshape(
    x,
    x.shape.filter((_, i) => i !== ax),
  );
}

/** Copies `src`'s elements into a fresh row-major tensor. */
function copy(src: Tensor): Tensor {
  const out = new Tensor(allocateUnfilled(src.dtype, src.size), src.shape, src.dtype); // assign writes every element
  kernelFor('assign', [out, src]).assign(out, src);
  return out;
}

/** The tensor itself if row-major already, else a row-major copy. */
export function contiguous(x: Tensor): Tensor {
  if (x.isContiguous()) return x;
  return record('contiguous', copy(x), [x], {});
}

/** Always a fresh copy (gradients flow through it). */
export function clone(x: Tensor): Tensor {
  return record('contiguous', copy(x), [x], {});
}

/** Converts to another dtype (a copy; returns x itself when the dtype already matches). */
export function cast(x: Tensor, dtype: DType): Tensor {
  if (!isDType(dtype))
    throw new DTypeError(`to(): unknown dtype '${String(dtype)}'`, { op: 'cast', dtypes: [x.dtype, String(dtype)] });
  if (dtype === x.dtype) return x;
  const out = new Tensor(kernelFor('cast', [x], dtype).cast(x, dtype), x.shape, dtype);
  // Gradients flow only between floating compute dtypes.
  const floatPair = (x.dtype === 'f32' || x.dtype === 'f64') && (dtype === 'f32' || dtype === 'f64');
  return floatPair ? record('cast', out, [x], { from: x.dtype }) : out;
}

/**
 * Writes `src` into the region of `dst` selected by the view `region` (a view of dst's storage).
 * For ops that build outputs piecewise (concat, pad, slice gradients); not recorded.
 */
export function assignInto(region: Tensor, src: Tensor): void {
  kernelFor('assign', [region, src]).assign(region, src);
}
