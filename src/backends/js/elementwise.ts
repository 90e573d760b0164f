/**
 * Elementwise kernels of the js backend: unary ops, binary ops, where, cast. (Unary gradients are
 * composites in src/autograd/gradients.ts, the one gradient table.)
 */
import { type DType, type NumericStorage, type Storage, allocate, readNumber, writeNumber } from '../../dtype.js';
import { numel } from '../../shape.js';
import type { BinaryOp, KernelView, UnaryOp } from '../backend.js';
import { erf, gelu, geluTanh, sigmoid } from './math.js';
import { dense, forEachRow, denseOperand } from './strided.js';

type Fn1 = (x: number) => number;
type Fn2 = (a: number, b: number) => number;

const UNARY: Readonly<Record<UnaryOp, Fn1>> = {
  neg: (x) => -x,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  rsqrt: (x) => 1 / Math.sqrt(x),
  abs: Math.abs,
  tanh: Math.tanh,
  sigmoid,
  relu: (x) => (x > 0 || Number.isNaN(x) ? x : 0),
  gelu,
  gelu_tanh: geluTanh,
  silu: (x) => x * sigmoid(x),
  sign: Math.sign,
};

const nanAware =
  (pick: (a: number, b: number) => boolean): Fn2 =>
  (a, b) =>
    a !== a || b !== b ? NaN : pick(a, b) ? a : b;

const BINARY: Readonly<Record<BinaryOp, Fn2>> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  pow: Math.pow,
  maximum: nanAware((a, b) => a >= b),
  minimum: nanAware((a, b) => a <= b),
  eq: (a, b) => (a === b ? 1 : 0),
  ne: (a, b) => (a !== b ? 1 : 0),
  lt: (a, b) => (a < b ? 1 : 0),
  le: (a, b) => (a <= b ? 1 : 0),
  gt: (a, b) => (a > b ? 1 : 0),
  ge: (a, b) => (a >= b ? 1 : 0),
};

const COMPARE = new Set<BinaryOp>(['eq', 'ne', 'lt', 'le', 'gt', 'ge']);

export function unary(op: UnaryOp, x: KernelView): Storage {
  const f = UNARY[op];
  const src = dense(x) as NumericStorage;
  const out = allocate(x.dtype, src.length) as NumericStorage;
  for (let i = 0; i < src.length; i++) out[i] = f(src[i]!);
  return out;
}

export function binary(op: BinaryOp, a: KernelView, b: KernelView): Storage {
  const f = BINARY[op];
  const outDType: DType = COMPARE.has(op) ? 'bool' : a.dtype;
  const out = allocate(outDType, numel(a.shape)) as NumericStorage;
  const as = a.storage as NumericStorage;
  const bs = b.storage as NumericStorage;
  let o = 0;
  forEachRow(a.shape, [a, b], (offs, len, inner) => {
    let ia = offs[0]!;
    let ib = offs[1]!;
    const sa = inner[0]!;
    const sb = inner[1]!;
    for (let i = 0; i < len; i++, ia += sa, ib += sb) out[o++] = f(as[ia]!, bs[ib]!);
  });
  return out;
}

export function where(cond: KernelView, a: KernelView, b: KernelView): Storage {
  const out = allocate(a.dtype, numel(a.shape)) as NumericStorage;
  const cs = cond.storage as Uint8Array;
  const as = a.storage as NumericStorage;
  const bs = b.storage as NumericStorage;
  let o = 0;
  forEachRow(a.shape, [cond, a, b], (offs, len, inner) => {
    let ic = offs[0]!;
    let ia = offs[1]!;
    let ib = offs[2]!;
    for (let i = 0; i < len; i++, ic += inner[0]!, ia += inner[1]!, ib += inner[2]!)
      out[o++] = cs[ic] ? as[ia]! : bs[ib]!;
  });
  return out;
}

/** Element-by-element copy between views of one shape (any dtype, both the same). */
export function assign(dst: KernelView, src: KernelView): void {
  const d = dst.storage as unknown as { [i: number]: unknown };
  const s = src.storage as unknown as { [i: number]: unknown };
  forEachRow(dst.shape, [dst, src], (offs, len, inner) => {
    let id = offs[0]!;
    let is = offs[1]!;
    for (let i = 0; i < len; i++, id += inner[0]!, is += inner[1]!) d[id] = s[is];
  });
}

/** Dtype conversion with PyTorch's rules (floats → ints truncate toward zero). */
export function cast(x: KernelView, dtype: DType): Storage {
  const src = dense(x);
  const n = src.length;
  const out = allocate(dtype, n);
  if (x.dtype === dtype) {
    assign(
      { ...denseOperand([n]), dtype, storage: out, shape: [n] },
      { ...denseOperand([n]), dtype, storage: src, shape: [n] },
    );
    return out;
  }
  const toInt = dtype === 'i32' || dtype === 'i8' || dtype === 'u8' || dtype === 'i64';
  for (let i = 0; i < n; i++) {
    const v = readNumber(x.dtype, src, i);
    writeNumber(dtype, out, i, toInt ? Math.trunc(v) : v);
  }
  return out;
}

export { erf };
