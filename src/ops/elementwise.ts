/** Elementwise ops: unary math, broadcasting binary arithmetic, comparisons, where, clamp. */
import { record } from '../autograd/tape.js';
import type { ArithmeticOp, CompareOp, UnaryOp } from '../backends/backend.js';
import { kernelFor } from '../backends/dispatch.js';
import { DTypeError } from '../errors.js';
import { broadcastShapes } from '../shape.js';
import { Tensor, type TensorOrScalar } from '../tensor.js';
import { asTensor, promote, requireArithmetic, requireFloat } from './util.js';
import { cast, expand } from './view.js';

function unaryOp(op: Exclude<UnaryOp, 'sign'>, x: Tensor): Tensor {
  requireFloat(op, x);
  const out = new Tensor(kernelFor('unary', [x]).unary(op, x), x.shape, x.dtype);
  return record(op, out, [x], {});
}

export const neg = (x: Tensor): Tensor => unaryOp('neg', x);
export const exp = (x: Tensor): Tensor => unaryOp('exp', x);
export const log = (x: Tensor): Tensor => unaryOp('log', x);
export const sqrt = (x: Tensor): Tensor => unaryOp('sqrt', x);
export const rsqrt = (x: Tensor): Tensor => unaryOp('rsqrt', x);
export const abs = (x: Tensor): Tensor => unaryOp('abs', x);
export const tanh = (x: Tensor): Tensor => unaryOp('tanh', x);
export const sigmoid = (x: Tensor): Tensor => unaryOp('sigmoid', x);
export const relu = (x: Tensor): Tensor => unaryOp('relu', x);
export const silu = (x: Tensor): Tensor => unaryOp('silu', x);
/** Sign of each element (−1, 0, 1); no gradient flows through it. */
export const sign = (x: Tensor): Tensor => {
  requireFloat('sign', x);
  return new Tensor(kernelFor('unary', [x]).unary('sign', x), x.shape, x.dtype);
};

/** GELU: exact (erf) by default, or the tanh approximation GPT-2 uses (`gelu_new`). */
export function gelu(x: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor {
  return unaryOp(approximate === 'tanh' ? 'gelu_tanh' : 'gelu', x);
}

/**
 * Brings two operands to one dtype and one shape: promotes dtypes (recording casts) and
 * broadcasts with stride-0 views (recording expands, whose gradients sum back).
 */
export function broadcastPair(op: string, a: TensorOrScalar, b: TensorOrScalar): [Tensor, Tensor] {
  if (typeof a === 'number' && typeof b === 'number') {
    throw new DTypeError(`${op}: at least one operand must be a tensor`, { op, dtypes: [] });
  }
  let ta = typeof a === 'number' ? asTensor(a, b as Tensor) : a;
  let tb = typeof b === 'number' ? asTensor(b, ta) : b;
  requireArithmetic(op, ta);
  requireArithmetic(op, tb);
  const dtype = promote(ta.dtype, tb.dtype);
  ta = cast(ta, dtype);
  tb = cast(tb, dtype);
  const shape = broadcastShapes(op, ta.shape, tb.shape);
  return [expand(ta, shape), expand(tb, shape)];
}

function arithmetic(op: ArithmeticOp, a: TensorOrScalar, b: TensorOrScalar): Tensor {
  let [x, y] = broadcastPair(op, a, b);
  // True division and powers of integers give floats, as in PyTorch.
  if ((op === 'div' || op === 'pow') && x.dtype !== 'f32' && x.dtype !== 'f64') {
    x = cast(x, 'f32');
    y = cast(y, 'f32');
  }
  const out = new Tensor(kernelFor('binary', [x, y]).binary(op, x, y), x.shape, x.dtype);
  return record(op, out, [x, y], {});
}

export const add = (a: TensorOrScalar, b: TensorOrScalar): Tensor => arithmetic('add', a, b);
export const sub = (a: TensorOrScalar, b: TensorOrScalar): Tensor => arithmetic('sub', a, b);
export const mul = (a: TensorOrScalar, b: TensorOrScalar): Tensor => arithmetic('mul', a, b);
export const div = (a: TensorOrScalar, b: TensorOrScalar): Tensor => arithmetic('div', a, b);
export const pow = (a: TensorOrScalar, b: TensorOrScalar): Tensor => arithmetic('pow', a, b);
/** Elementwise max; NaN propagates; on ties the gradient is split evenly (as PyTorch). */
export const maximum = (a: TensorOrScalar, b: TensorOrScalar): Tensor => arithmetic('maximum', a, b);
export const minimum = (a: TensorOrScalar, b: TensorOrScalar): Tensor => arithmetic('minimum', a, b);

function compare(op: CompareOp, a: TensorOrScalar, b: TensorOrScalar): Tensor {
  const [x, y] = broadcastPair(op, a, b);
  return new Tensor(kernelFor('binary', [x, y]).binary(op, x, y), x.shape, 'bool');
}

export const eq = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('eq', a, b);
export const ne = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('ne', a, b);
export const lt = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('lt', a, b);
export const le = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('le', a, b);
export const gt = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('gt', a, b);
export const ge = (a: TensorOrScalar, b: TensorOrScalar): Tensor => compare('ge', a, b);

function logical(op: string, a: Tensor, b: Tensor, kernelOp: 'mul' | 'maximum'): Tensor {
  if (a.dtype !== 'bool' || b.dtype !== 'bool')
    throw new DTypeError(`${op}: needs bool tensors, got ${a.dtype} and ${b.dtype}`, {
      op,
      dtypes: [a.dtype, b.dtype],
    });
  const [x, y] = broadcastPair(op, a, b);
  return new Tensor(kernelFor('binary', [x, y]).binary(kernelOp, x, y), x.shape, 'bool');
}

/** Elementwise AND of bool tensors. */
export const logicalAnd = (a: Tensor, b: Tensor): Tensor => logical('logicalAnd', a, b, 'mul');
/** Elementwise OR of bool tensors. */
export const logicalOr = (a: Tensor, b: Tensor): Tensor => logical('logicalOr', a, b, 'maximum');

/** cond ? a : b elementwise, broadcasting all three; `cond` is a bool tensor. */
export function where(cond: Tensor, a: TensorOrScalar, b: TensorOrScalar): Tensor {
  if (cond.dtype !== 'bool') {
    throw new DTypeError(
      `where: the condition must be a bool tensor, got ${cond.dtype}; build it with a comparison such as gt(x, 0)`,
      { op: 'where', dtypes: [cond.dtype] },
    );
  }
  let [x, y] = broadcastPair('where', a, b);
  const shape = broadcastShapes('where', cond.shape, x.shape);
  const c = expand(cond, shape);
  x = expand(x, shape);
  y = expand(y, shape);
  const out = new Tensor(kernelFor('where', [c, x, y]).where(c, x, y), shape, x.dtype);
  return record('where', out, [x, y], { cond: c });
}

/** Limits values to [min, max]; the gradient passes where min ≤ x ≤ max (inclusive, as PyTorch). NaN stays NaN. */
export function clamp(x: Tensor, min?: number, max?: number): Tensor {
  let y = x;
  if (min !== undefined) y = where(lt(y, min), min, y);
  if (max !== undefined) y = where(gt(y, max), max, y);
  return y;
}
