/**
 * Tensor: a TypedArray storage seen through a shape, strides and an offset, plus gradient state.
 *
 * Views (reshape of contiguous data, transpose, permute, slice, expand) share storage; ops always
 * return new tensors — nothing here mutates a tensor's values except the optimizer helpers that
 * say so. Methods are thin forwards to the functional ops in src/ops.
 */
import { type DType, type Storage, allocate, readNumber } from './dtype.js';
import { ArgumentError, ShapeError } from './errors.js';
import { type Shape, contiguousStrides, formatShape, isContiguousLayout, numel } from './shape.js';
import type { Node } from './autograd/tape.js';
import { backward as runBackward } from './autograd/backward.js';
import * as ops from './ops/index.js';

export type Scalar = number;
export type TensorOrScalar = Tensor | number;

export class Tensor {
  readonly storage: Storage;
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
  readonly dtype: DType;
  /** Whether gradients flow to this tensor. Set on leaves with `requiresGrad_()` or creation options. */
  requiresGrad = false;
  /** Accumulated gradient of a leaf after `backward()`. */
  grad: Tensor | null = null;
  /** The tape node that produced this tensor, or null for leaves. */
  gradFn: Node | null = null;

  constructor(storage: Storage, shape: Shape, dtype: DType, strides?: Shape, offset = 0) {
    this.storage = storage;
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze(strides ? [...strides] : contiguousStrides(shape));
    this.offset = offset;
    this.dtype = dtype;
  }

  /** Wraps a row-major storage of exactly numel(shape) elements (no copy). */
  static fromStorage(storage: Storage, shape: Shape, dtype: DType): Tensor {
    if (storage.length !== numel(shape)) {
      throw new ShapeError(
        `fromStorage: ${storage.length} elements do not fill shape ${formatShape(shape)} (${numel(shape)} elements)`,
        { op: 'fromStorage', shapes: [shape], elements: storage.length },
      );
    }
    return new Tensor(storage, shape, dtype);
  }

  get rank(): number {
    return this.shape.length;
  }

  get size(): number {
    return numel(this.shape);
  }

  isContiguous(): boolean {
    return isContiguousLayout(this.shape, this.strides);
  }

  /** Marks a leaf as requiring gradients (in place) and returns it. */
  requiresGrad_(value = true): this {
    if (this.gradFn && !value)
      throw new ArgumentError('requiresGrad_(false) on a tensor computed from others; use detach()');
    this.requiresGrad = value;
    return this;
  }

  /** Runs reverse-mode autodiff from this tensor (a scalar, or with `grad` of its shape). */
  backward(grad?: Tensor): void {
    runBackward(this, grad);
  }

  /** The same values, cut off from the tape. Shares storage. */
  detach(): Tensor {
    return new Tensor(this.storage, this.shape, this.dtype, this.strides, this.offset);
  }

  /** Row-major storage of exactly `size` elements: the storage itself when contiguous, else a copy. */
  contiguousStorage(): Storage {
    if (this.isContiguous()) {
      return this.offset === 0 && this.storage.length === this.size
        ? this.storage
        : (this.storage.subarray(this.offset, this.offset + this.size) as Storage);
    }
    return ops.contiguous(this.detach()).storage;
  }

  /** All values, row-major, as JS numbers (i64 converts with Number()). */
  toFlatArray(): number[] {
    const data = this.contiguousStorage();
    const out = new Array<number>(this.size);
    for (let i = 0; i < out.length; i++) out[i] = readNumber(this.dtype, data, i);
    return out;
  }

  /** Values as nested arrays (a number for a 0-d tensor). */
  toArray(): NestedArray {
    return nestRows(this.toFlatArray(), this.shape, (rows) => rows);
  }

  /** The value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) {
      throw new ShapeError(
        `item() needs a tensor with one element, got shape ${formatShape(this.shape)}; reduce it first (e.g. sum or mean)`,
        { op: 'item', shapes: [this.shape] },
      );
    }
    return readNumber(this.dtype, this.storage, this.offset);
  }

  toString(): string {
    return formatTensor(this);
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  // ---- views ----
  reshape(shape: readonly number[]): Tensor {
    return ops.reshape(this, shape);
  }
  view(shape: readonly number[]): Tensor {
    return ops.reshape(this, shape);
  }
  flatten(startAxis = 0, endAxis = -1): Tensor {
    return ops.flatten(this, startAxis, endAxis);
  }
  transpose(a: number, b: number): Tensor {
    return ops.transpose(this, a, b);
  }
  permute(dims: readonly number[]): Tensor {
    return ops.permute(this, dims);
  }
  slice(axis: number, start: number, end?: number, step = 1): Tensor {
    return ops.slice(this, axis, start, end, step);
  }
  expand(shape: readonly number[]): Tensor {
    return ops.expand(this, shape);
  }
  unsqueeze(axis: number): Tensor {
    return ops.unsqueeze(this, axis);
  }
  squeeze(axis?: number): Tensor {
    return ops.squeeze(this, axis);
  }
  contiguous(): Tensor {
    return ops.contiguous(this);
  }
  to(dtype: DType): Tensor {
    return ops.cast(this, dtype);
  }

  // ---- arithmetic ----
  add(o: TensorOrScalar): Tensor {
    return ops.add(this, o);
  }
  sub(o: TensorOrScalar): Tensor {
    return ops.sub(this, o);
  }
  mul(o: TensorOrScalar): Tensor {
    return ops.mul(this, o);
  }
  div(o: TensorOrScalar): Tensor {
    return ops.div(this, o);
  }
  pow(o: TensorOrScalar): Tensor {
    return ops.pow(this, o);
  }
  neg(): Tensor {
    return ops.neg(this);
  }
  exp(): Tensor {
    return ops.exp(this);
  }
  log(): Tensor {
    return ops.log(this);
  }
  sqrt(): Tensor {
    return ops.sqrt(this);
  }
  rsqrt(): Tensor {
    return ops.rsqrt(this);
  }
  abs(): Tensor {
    return ops.abs(this);
  }
  tanh(): Tensor {
    return ops.tanh(this);
  }
  sigmoid(): Tensor {
    return ops.sigmoid(this);
  }
  relu(): Tensor {
    return ops.relu(this);
  }
  gelu(approximate: 'none' | 'tanh' = 'none'): Tensor {
    return ops.gelu(this, approximate);
  }
  silu(): Tensor {
    return ops.silu(this);
  }
  maximum(o: TensorOrScalar): Tensor {
    return ops.maximum(this, o);
  }
  minimum(o: TensorOrScalar): Tensor {
    return ops.minimum(this, o);
  }
  clamp(min?: number, max?: number): Tensor {
    return ops.clamp(this, min, max);
  }
  eq(o: TensorOrScalar): Tensor {
    return ops.eq(this, o);
  }
  ne(o: TensorOrScalar): Tensor {
    return ops.ne(this, o);
  }
  lt(o: TensorOrScalar): Tensor {
    return ops.lt(this, o);
  }
  le(o: TensorOrScalar): Tensor {
    return ops.le(this, o);
  }
  gt(o: TensorOrScalar): Tensor {
    return ops.gt(this, o);
  }
  ge(o: TensorOrScalar): Tensor {
    return ops.ge(this, o);
  }

  // ---- reductions ----
  sum(axis?: number | readonly number[], keepdim = false): Tensor {
    return ops.sum(this, axis, keepdim);
  }
  mean(axis?: number | readonly number[], keepdim = false): Tensor {
    return ops.mean(this, axis, keepdim);
  }
  max(axis?: number | readonly number[], keepdim = false): Tensor {
    return ops.max(this, axis, keepdim);
  }
  min(axis?: number | readonly number[], keepdim = false): Tensor {
    return ops.min(this, axis, keepdim);
  }
  argmax(axis?: number, keepdim = false): Tensor {
    return ops.argmax(this, axis, keepdim);
  }
  argmin(axis?: number, keepdim = false): Tensor {
    return ops.argmin(this, axis, keepdim);
  }
  var(axis?: number | readonly number[], opts?: { correction?: number; keepdim?: boolean }): Tensor {
    return ops.variance(this, axis, opts);
  }

  // ---- linear algebra and nn ----
  matmul(o: Tensor): Tensor {
    return ops.matmul(this, o);
  }
  softmax(axis = -1): Tensor {
    return ops.softmax(this, axis);
  }
  logSoftmax(axis = -1): Tensor {
    return ops.logSoftmax(this, axis);
  }
}

export type NestedArray = number | NestedArray[];

/** A zero-filled tensor (internal helper for ops that need a fresh output). */
export function emptyLike(shape: Shape, dtype: DType): Tensor {
  return new Tensor(allocate(dtype, numel(shape)), shape, dtype);
}

const MAX_PRINT = 1000;

function formatTensor(t: Tensor): string {
  const header = `tensor(shape=${formatShape(t.shape)}, dtype=${t.dtype}${t.requiresGrad ? ', requiresGrad' : ''}${t.gradFn ? `, gradFn=${t.gradFn.op}` : ''})`;
  if (t.size > MAX_PRINT) return `${header} [${t.size} values]`;
  const isFloatType = t.dtype === 'f32' || t.dtype === 'f64' || t.dtype === 'f16' || t.dtype === 'bf16';
  const fmt = (v: number): string => (isFloatType ? formatFloat(v) : String(v));
  const body = nestRows(
    t.toFlatArray().map(fmt),
    t.shape,
    (parts, dim) => `[${parts.join(dim === t.rank - 1 ? ', ' : `,\n${' '.repeat(dim + 1)}`)}]`,
  );
  return `${header}\n${body}`;
}

/**
 * Groups row-major `flat` values into nested rows, innermost dimension first: `row(parts, dim)`
 * turns the parts of one row along `dim` into a value. Iterative, so the rank is bounded by memory,
 * not by the call stack (a valid tensor may have thousands of dimensions of size 1).
 */
function nestRows<T, R>(
  flat: readonly T[],
  shape: readonly number[],
  row: (parts: (T | R)[], dim: number) => R,
): T | R {
  let level: (T | R)[] = [...flat];
  let outer = flat.length; // rows at the current level = product of the dimensions before it
  for (let dim = shape.length - 1; dim >= 0; dim--) {
    const size = shape[dim]!;
    outer = size === 0 ? shape.slice(0, dim).reduce((a, b) => a * b, 1) : outer / size;
    const next: (T | R)[] = new Array(outer);
    for (let i = 0; i < outer; i++) next[i] = row(level.slice(i * size, (i + 1) * size), dim);
    level = next;
  }
  return level[0]!;
}

function formatFloat(v: number): string {
  if (!Number.isFinite(v)) return Number.isNaN(v) ? 'nan' : v > 0 ? 'inf' : '-inf';
  const a = Math.abs(v);
  return a !== 0 && (a >= 1e5 || a < 1e-4) ? v.toExponential(4) : v.toFixed(4);
}
