/**
 * Seeded weight initialisers. Each fills a floating tensor's storage in place (no gradient is
 * recorded) from a `Generator`, and returns the tensor. Fan-in/fan-out follow PyTorch's convention
 * for a weight laid out [out, in, ...kernel]: fanIn = shape[1]·receptive, fanOut = shape[0]·receptive.
 * A layer that stores its weight the other way round (GPT-2's Conv1D, [in, out]) passes `fans`.
 *
 * The same seed gives the same numbers on every platform; they are not PyTorch's numbers (the
 * generators differ), so tests that compare with PyTorch load weights exported from it.
 */
import { ArgumentError, DTypeError, ShapeError } from '../errors.js';
import { type Generator, getDefaultGenerator } from '../random.js';
import { formatShape } from '../shape.js';
import type { Tensor } from '../tensor.js';

export type Nonlinearity = 'linear' | 'conv2d' | 'sigmoid' | 'tanh' | 'relu' | 'leaky_relu' | 'selu';

export interface Fans {
  fanIn: number;
  fanOut: number;
}

export interface InitOptions {
  generator?: Generator;
}

export interface KaimingOptions extends InitOptions {
  /** Negative slope of leaky_relu (PyTorch's `a`); default 0. */
  a?: number;
  mode?: 'fanIn' | 'fanOut';
  nonlinearity?: Nonlinearity;
  /** Overrides the fans computed from the shape (for [in, out] layouts). */
  fans?: Fans;
}

export interface XavierOptions extends InitOptions {
  gain?: number;
  fans?: Fans;
}

/** The writable float storage behind a contiguous tensor (initialisers write through it). */
function floatData(op: string, t: Tensor): Float32Array | Float64Array {
  if (t.dtype !== 'f32' && t.dtype !== 'f64')
    throw new DTypeError(`${op}: needs an f32 or f64 tensor, got ${t.dtype}`, { op, dtypes: [t.dtype] });
  if (!t.isContiguous())
    throw new ArgumentError(`${op}: needs a contiguous tensor (initialise the parameter, not a view of it)`);
  return (t.storage as Float32Array | Float64Array).subarray(t.offset, t.offset + t.size);
}

/** fanIn/fanOut of a weight [out, in, ...receptive field] (PyTorch's _calculate_fan_in_and_fan_out). */
export function computeFans(shape: readonly number[]): Fans {
  if (shape.length < 2) {
    throw new ShapeError(`fan in/out needs a tensor with at least 2 dimensions, got ${formatShape(shape)}`, {
      op: 'computeFans',
      shapes: [shape],
    });
  }
  let receptive = 1;
  for (let i = 2; i < shape.length; i++) receptive *= shape[i]!;
  return { fanIn: shape[1]! * receptive, fanOut: shape[0]! * receptive };
}

/** PyTorch's calculate_gain. */
export function calculateGain(nonlinearity: Nonlinearity, param?: number): number {
  switch (nonlinearity) {
    case 'linear':
    case 'conv2d':
    case 'sigmoid':
      return 1;
    case 'tanh':
      return 5 / 3;
    case 'relu':
      return Math.SQRT2;
    case 'leaky_relu': {
      const slope = param ?? 0.01;
      return Math.sqrt(2 / (1 + slope * slope));
    }
    case 'selu':
      return 3 / 4;
  }
}

/** Depth of withoutInit calls in progress; while > 0 the initialisers leave tensors as they are. */
let skipping = 0;

/**
 * Runs `build` with every initialiser here a no-op (PyTorch's `skip_init`): for a model whose
 * every parameter is about to be overwritten by loaded weights, where initialising would cost
 * time and touch every page twice. Parameters keep the zeros they were allocated with.
 */
export function withoutInit<T>(build: () => T): T {
  skipping++;
  try {
    return build();
  } finally {
    skipping--;
  }
}

export function constant_<T extends Tensor>(t: T, value: number): T {
  const data = floatData('constant_', t);
  if (skipping === 0) data.fill(value);
  return t;
}

export const zeros_ = <T extends Tensor>(t: T): T => constant_(t, 0);
export const ones_ = <T extends Tensor>(t: T): T => constant_(t, 1);

/** Uniform values in [low, high). */
export function uniform_<T extends Tensor>(t: T, low = 0, high = 1, opts: InitOptions = {}): T {
  if (!(high >= low)) throw new ArgumentError(`uniform_: need low ≤ high, got ${low}, ${high}`);
  const g = opts.generator ?? getDefaultGenerator();
  const data = floatData('uniform_', t);
  if (skipping > 0) return t;
  const width = high - low;
  for (let i = 0; i < data.length; i++) data[i] = low + width * g.random();
  return t;
}

/** Normal values N(mean, std²). */
export function normal_<T extends Tensor>(t: T, mean = 0, std = 1, opts: InitOptions = {}): T {
  if (!(std >= 0)) throw new ArgumentError(`normal_: std must be ≥ 0, got ${std}`);
  const g = opts.generator ?? getDefaultGenerator();
  const data = floatData('normal_', t);
  if (skipping > 0) return t;
  for (let i = 0; i < data.length; i++) data[i] = mean + std * g.normal();
  return t;
}

function kaimingStd(t: Tensor, opts: KaimingOptions): number {
  const fans = opts.fans ?? computeFans(t.shape);
  const fan = (opts.mode ?? 'fanIn') === 'fanIn' ? fans.fanIn : fans.fanOut;
  if (fan === 0)
    throw new ShapeError(`kaiming init: fan is 0 for shape ${formatShape(t.shape)}`, {
      op: 'kaiming',
      shapes: [t.shape],
    });
  const gain = calculateGain(opts.nonlinearity ?? 'leaky_relu', opts.a ?? 0);
  return gain / Math.sqrt(fan);
}

/** He uniform: U(−b, b) with b = gain·√(3 / fan). PyTorch's Linear/Conv default is a = √5. */
export function kaimingUniform_<T extends Tensor>(t: T, opts: KaimingOptions = {}): T {
  const bound = Math.sqrt(3) * kaimingStd(t, opts);
  return uniform_(t, -bound, bound, opts);
}

/** He normal: N(0, (gain / √fan)²). */
export function kaimingNormal_<T extends Tensor>(t: T, opts: KaimingOptions = {}): T {
  return normal_(t, 0, kaimingStd(t, opts), opts);
}

function xavierStd(t: Tensor, opts: XavierOptions): number {
  const { fanIn, fanOut } = opts.fans ?? computeFans(t.shape);
  return (opts.gain ?? 1) * Math.sqrt(2 / (fanIn + fanOut));
}

/** Glorot uniform: U(−b, b) with b = gain·√(6 / (fanIn + fanOut)). */
export function xavierUniform_<T extends Tensor>(t: T, opts: XavierOptions = {}): T {
  const bound = Math.sqrt(3) * xavierStd(t, opts);
  return uniform_(t, -bound, bound, opts);
}

/** Glorot normal: N(0, gain²·2 / (fanIn + fanOut)). */
export function xavierNormal_<T extends Tensor>(t: T, opts: XavierOptions = {}): T {
  return normal_(t, 0, xavierStd(t, opts), opts);
}
