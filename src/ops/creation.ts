/** Creating tensors: from data, constants, ranges and seeded random numbers. */
import { type DType, type Storage, allocate, isDType, writeNumber } from '../dtype.js';
import { ArgumentError, DTypeError, ShapeError } from '../errors.js';
import { type Generator, getDefaultGenerator } from '../random.js';
import { checkShape, formatShape, numel } from '../shape.js';
import { type NestedArray, Tensor } from '../tensor.js';

export interface CreateOptions {
  dtype?: DType;
  requiresGrad?: boolean;
}

export interface RandomOptions extends CreateOptions {
  generator?: Generator;
}

function finish(t: Tensor, opts: CreateOptions | undefined): Tensor {
  if (opts?.requiresGrad) {
    if (t.dtype !== 'f32' && t.dtype !== 'f64') {
      throw new DTypeError(`only floating tensors (f32, f64) can require grad, got ${t.dtype}`, {
        op: 'requiresGrad',
        dtypes: [t.dtype],
      });
    }
    t.requiresGrad = true;
  }
  return t;
}

function dtypeOf(opts: CreateOptions | undefined, fallback: DType = 'f32'): DType {
  const d = opts?.dtype ?? fallback;
  if (!isDType(d))
    throw new DTypeError(`unknown dtype '${String(d)}'; use one of f32, f64, f16, bf16, i32, i64, u8, i8, bool`, {
      op: 'dtype',
      dtypes: [String(d)],
    });
  return d;
}

/** A tensor from a flat list of values and a shape (the values are copied). */
export function fromArray(
  data: ArrayLike<number> | ArrayLike<bigint>,
  shape: readonly number[],
  opts?: CreateOptions,
): Tensor {
  checkShape(shape, 'fromArray');
  const dtype = dtypeOf(opts);
  if (data.length !== numel(shape)) {
    throw new ShapeError(
      `fromArray: ${data.length} values do not fill shape ${formatShape(shape)} (${numel(shape)} elements)`,
      { op: 'fromArray', shapes: [shape], values: data.length },
    );
  }
  const storage = allocate(dtype, data.length);
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (typeof v === 'bigint') {
      if (dtype === 'i64') (storage as BigInt64Array)[i] = v;
      else writeNumber(dtype, storage, i, Number(v));
    } else writeNumber(dtype, storage, i, v);
  }
  return finish(new Tensor(storage, shape, dtype), opts);
}

/** A tensor from a number or (nested) arrays of numbers: tensor([[1, 2], [3, 4]]). */
export function tensor(data: NestedArray, opts?: CreateOptions): Tensor {
  const shape: number[] = [];
  let probe: NestedArray = data;
  while (Array.isArray(probe)) {
    shape.push(probe.length);
    probe = probe[0] ?? 0;
    if (shape.length > 64)
      throw new ShapeError('tensor(): nesting deeper than 64 levels', { op: 'tensor', shapes: [shape] });
  }
  const flat: number[] = [];
  const walk = (x: NestedArray, dim: number): void => {
    if (dim === shape.length) {
      if (typeof x !== 'number')
        throw new ShapeError('tensor(): expected a number at the innermost level', { op: 'tensor', shapes: [shape] });
      flat.push(x);
      return;
    }
    if (!Array.isArray(x) || x.length !== shape[dim]) {
      throw new ShapeError(
        `tensor(): ragged nested array at depth ${dim}: expected ${shape[dim]} elements; every row must have the same length`,
        { op: 'tensor', shapes: [shape], depth: dim },
      );
    }
    for (const item of x) walk(item, dim + 1);
  };
  walk(data, 0);
  return fromArray(flat, shape, opts);
}

export function full(shape: readonly number[], value: number, opts?: CreateOptions): Tensor {
  checkShape(shape, 'full');
  const dtype = dtypeOf(opts);
  const storage = allocate(dtype, numel(shape));
  if (value !== 0) for (let i = 0; i < storage.length; i++) writeNumber(dtype, storage, i, value);
  return finish(new Tensor(storage, shape, dtype), opts);
}

export const zeros = (shape: readonly number[], opts?: CreateOptions): Tensor => full(shape, 0, opts);
export const ones = (shape: readonly number[], opts?: CreateOptions): Tensor => full(shape, 1, opts);
export const zerosLike = (t: Tensor, opts?: CreateOptions): Tensor => full(t.shape, 0, { dtype: t.dtype, ...opts });
export const onesLike = (t: Tensor, opts?: CreateOptions): Tensor => full(t.shape, 1, { dtype: t.dtype, ...opts });
export const fullLike = (t: Tensor, value: number, opts?: CreateOptions): Tensor =>
  full(t.shape, value, { dtype: t.dtype, ...opts });

/**
 * Values start, start+step, … below end (arange(n) = 0..n-1). The dtype defaults to i32 when all
 * arguments are integers, f32 otherwise.
 */
export function arange(start: number, end?: number, step = 1, opts?: CreateOptions): Tensor {
  if (end === undefined) [start, end] = [0, start];
  if (step === 0 || !Number.isFinite(step))
    throw new ArgumentError(`arange: step must be a non-zero finite number, got ${step}`);
  const count = Math.max(0, Math.ceil((end - start) / step));
  if (count > 2 ** 31) throw new ArgumentError(`arange: ${count} values is too many`);
  const integral = Number.isInteger(start) && Number.isInteger(end) && Number.isInteger(step);
  const dtype = dtypeOf(opts, integral ? 'i32' : 'f32');
  const storage = allocate(dtype, count);
  for (let i = 0; i < count; i++) writeNumber(dtype, storage, i, start + i * step);
  return finish(new Tensor(storage, [count], dtype), opts);
}

function randomFill(
  shape: readonly number[],
  opts: RandomOptions | undefined,
  sample: (g: Generator) => number,
): Tensor {
  checkShape(shape, 'random');
  const dtype = dtypeOf(opts);
  if (dtype !== 'f32' && dtype !== 'f64')
    throw new DTypeError(`random values need a floating dtype (f32, f64), got ${dtype}`, {
      op: 'random',
      dtypes: [dtype],
    });
  const g = opts?.generator ?? getDefaultGenerator();
  const storage: Storage = allocate(dtype, numel(shape));
  const data = storage as Float32Array | Float64Array;
  for (let i = 0; i < data.length; i++) data[i] = sample(g);
  return finish(new Tensor(storage, shape, dtype), opts);
}

/** Uniform values in [0, 1). */
export const rand = (shape: readonly number[], opts?: RandomOptions): Tensor =>
  randomFill(shape, opts, (g) => g.random());
/** Standard normal values. */
export const randn = (shape: readonly number[], opts?: RandomOptions): Tensor =>
  randomFill(shape, opts, (g) => g.normal());

/** Uniform integers in [low, high), i32. */
export function randint(low: number, high: number, shape: readonly number[], opts?: { generator?: Generator }): Tensor {
  if (!(Number.isInteger(low) && Number.isInteger(high) && high > low)) {
    throw new ArgumentError(`randint: need integers low < high, got ${low}, ${high}`);
  }
  checkShape(shape, 'randint');
  const g = opts?.generator ?? getDefaultGenerator();
  const data = new Int32Array(numel(shape));
  for (let i = 0; i < data.length; i++) data[i] = low + g.integer(high - low);
  return new Tensor(data, shape, 'i32');
}
