/** Shared helpers for ops: dtype checks and promotion, scalar wrapping. */
import { type DType, isComputeFloat } from '../dtype.js';
import { DTypeError } from '../errors.js';
import { Tensor, type TensorOrScalar } from '../tensor.js';

/** Throws unless `t` has a floating compute dtype (f32, f64). */
export function requireFloat(op: string, t: Tensor): void {
  if (!isComputeFloat(t.dtype)) {
    throw new DTypeError(
      `${op}: needs a floating tensor (f32 or f64), got ${t.dtype}; convert it first, e.g. x.to('f32')`,
      { op, dtypes: [t.dtype] },
    );
  }
}

/** Dtypes arithmetic runs in; f16/bf16/i64 are storage-only. */
export function requireArithmetic(op: string, t: Tensor): void {
  if (t.dtype === 'f16' || t.dtype === 'bf16' || t.dtype === 'i64') {
    const to = t.dtype === 'i64' ? 'i32' : 'f32';
    throw new DTypeError(
      `${op}: ${t.dtype} is a storage dtype and does not compute; convert it first with x.to('${to}')`,
      { op, dtypes: [t.dtype] },
    );
  }
}

const RANK: Readonly<Record<DType, number>> = {
  bool: 0,
  u8: 1,
  i8: 1,
  i32: 2,
  i64: 3,
  f16: 4,
  bf16: 4,
  f32: 5,
  f64: 6,
};

/** The dtype of an arithmetic result of a and b (PyTorch's promotion, restricted to compute dtypes). */
export function promote(a: DType, b: DType): DType {
  if (a === b) return a;
  const hi = RANK[a] >= RANK[b] ? a : b;
  if (hi === 'u8' || hi === 'i8' || hi === 'bool') return 'i32';
  return hi;
}

/**
 * Wraps a JS number as a 0-d tensor that fits next to `like`: a number does not widen a
 * tensor's dtype (x_f32 + 2.5 stays f32), but a fractional number makes an int tensor float.
 */
export function scalarLike(value: number, like: Tensor): Tensor {
  let dtype: DType = like.dtype;
  if (!isComputeFloat(dtype) && !Number.isInteger(value)) dtype = 'f32';
  if (dtype === 'bool' || dtype === 'u8' || dtype === 'i8') dtype = Number.isInteger(value) ? 'i32' : 'f32';
  const storage =
    dtype === 'f64' ? new Float64Array([value]) : dtype === 'i32' ? new Int32Array([value]) : new Float32Array([value]);
  return new Tensor(storage, [], dtype === 'f64' || dtype === 'i32' ? dtype : 'f32');
}

export function asTensor(x: TensorOrScalar, like: Tensor): Tensor {
  return typeof x === 'number' ? scalarLike(x, like) : x;
}
