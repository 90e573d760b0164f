/**
 * Data types. Compute happens in f32 (every backend) or f64 (js backend, for gradient checks);
 * the other dtypes are storage types that convert to and from the compute types.
 *
 * f16 and bf16 are stored as their raw 16-bit patterns in a Uint16Array; i64 uses BigInt64Array;
 * bool uses a Uint8Array of 0/1.
 */
import { DTypeError } from './errors.js';

export type DType = 'f32' | 'f64' | 'f16' | 'bf16' | 'i32' | 'i64' | 'u8' | 'i8' | 'bool';
export const DTYPES: readonly DType[] = ['f32', 'f64', 'f16', 'bf16', 'i32', 'i64', 'u8', 'i8', 'bool'];

/** Storage of each dtype. */
export interface StorageOf {
  f32: Float32Array;
  f64: Float64Array;
  f16: Uint16Array;
  bf16: Uint16Array;
  i32: Int32Array;
  i64: BigInt64Array;
  u8: Uint8Array;
  i8: Int8Array;
  bool: Uint8Array;
}
export type Storage = StorageOf[DType];
/** Storage whose elements are JS numbers (everything but i64). */
export type NumericStorage = Exclude<Storage, BigInt64Array>;
/** Storage of the floating compute dtypes. */
export type FloatStorage = Float32Array | Float64Array;

export const BYTES_PER_ELEMENT: Readonly<Record<DType, number>> = {
  f32: 4,
  f64: 8,
  f16: 2,
  bf16: 2,
  i32: 4,
  i64: 8,
  u8: 1,
  i8: 1,
  bool: 1,
};

export function isDType(name: string): name is DType {
  return (DTYPES as readonly string[]).includes(name);
}

/** The floating dtypes arithmetic runs in. */
export function isComputeFloat(d: DType): d is 'f32' | 'f64' {
  return d === 'f32' || d === 'f64';
}

export function isFloat(d: DType): boolean {
  return d === 'f32' || d === 'f64' || d === 'f16' || d === 'bf16';
}

export function allocate<D extends DType>(dtype: D, length: number): StorageOf[D];
export function allocate(dtype: DType, length: number): Storage {
  switch (dtype) {
    case 'f32':
      return new Float32Array(length);
    case 'f64':
      return new Float64Array(length);
    case 'f16':
    case 'bf16':
      return new Uint16Array(length);
    case 'i32':
      return new Int32Array(length);
    case 'i64':
      return new BigInt64Array(length);
    case 'u8':
    case 'bool':
      return new Uint8Array(length);
    case 'i8':
      return new Int8Array(length);
  }
}

/** Above this many bytes, allocateUnfilled takes malloc'd memory (see there). */
const UNFILLED_MIN_BYTES = 4096;

/**
 * Storage whose initial contents are unspecified: for callers that write every element. Large
 * arrays come from malloc (Buffer.allocUnsafeSlow), whose freed blocks are reused with their
 * pages mapped, instead of fresh zeroed pages that fault in one by one (docs/native.md, "Memory").
 */
export function allocateUnfilled<D extends DType>(dtype: D, length: number): StorageOf[D];
export function allocateUnfilled(dtype: DType, length: number): Storage {
  const bytes = length * BYTES_PER_ELEMENT[dtype];
  if (bytes < UNFILLED_MIN_BYTES) return allocate(dtype, length);
  const { buffer, byteOffset } = Buffer.allocUnsafeSlow(bytes);
  return storageView(dtype, buffer, byteOffset, length);
}

/** `n` elements of `dtype` over `buffer` from `byteOffset` (aligned for the dtype). */
function storageView(dtype: DType, buffer: ArrayBufferLike, byteOffset: number, n: number): Storage {
  switch (dtype) {
    case 'f32':
      return new Float32Array(buffer, byteOffset, n);
    case 'f64':
      return new Float64Array(buffer, byteOffset, n);
    case 'f16':
    case 'bf16':
      return new Uint16Array(buffer, byteOffset, n);
    case 'i32':
      return new Int32Array(buffer, byteOffset, n);
    case 'i64':
      return new BigInt64Array(buffer, byteOffset, n);
    case 'u8':
    case 'bool':
      return new Uint8Array(buffer, byteOffset, n);
    case 'i8':
      return new Int8Array(buffer, byteOffset, n);
  }
}

/** A view of `bytes` (little-endian, as files store them) as the storage of `dtype`; copies if misaligned. */
export function storageFromBytes(dtype: DType, bytes: Uint8Array): Storage {
  const size = BYTES_PER_ELEMENT[dtype];
  if (bytes.byteLength % size !== 0) {
    throw new DTypeError(`${bytes.byteLength} bytes is not a whole number of ${dtype} elements (${size} bytes each)`, {
      op: 'storageFromBytes',
      dtypes: [dtype],
      bytes: bytes.byteLength,
    });
  }
  const aligned = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  const n = aligned.byteLength / size;
  return storageView(dtype, aligned.buffer, aligned.byteOffset, n);
}

/** The raw little-endian bytes of a storage array (a view, not a copy). */
export function storageBytes(storage: Storage): Uint8Array {
  return new Uint8Array(storage.buffer, storage.byteOffset, storage.byteLength);
}

// ---- half precision -------------------------------------------------------------------------

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** f32 → IEEE binary16 bits, round to nearest even; overflow → ±Inf; NaN stays NaN. */
export function f32ToF16Bits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  // Re-bias the exponent from 127 to 15.
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero): shift the mantissa with its implicit bit in.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1) !== 0)) half += 1;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // Rounding may carry into the exponent, which is still the right answer (up to Inf).
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) !== 0)) half += 1;
  return sign | half;
}

export function f16BitsToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant !== 0 ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** f32 → bfloat16 bits (the top 16 bits of the f32), round to nearest even; NaN stays NaN. */
export function f32ToBF16Bits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0]!;
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff;
  const rounded = x + 0x7fff + ((x >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

export function bf16BitsToF32(bits: number): number {
  u32Scratch[0] = (bits & 0xffff) << 16;
  return f32Scratch[0]!;
}

// ---- conversion ------------------------------------------------------------------------------

/** Reads element i of a storage as a JS number (i64 → Number, may lose precision above 2^53). */
export function readNumber(dtype: DType, storage: Storage, i: number): number {
  switch (dtype) {
    case 'f16':
      return f16BitsToF32((storage as Uint16Array)[i]!);
    case 'bf16':
      return bf16BitsToF32((storage as Uint16Array)[i]!);
    case 'i64':
      return Number((storage as BigInt64Array)[i]!);
    default:
      return (storage as NumericStorage)[i]!;
  }
}

/** Converts a whole storage array to another dtype with PyTorch's casting rules. */
export function convertStorage(from: DType, src: Storage, to: DType): Storage {
  const n = src.length;
  const out = allocate(to, n);
  if (from === to) {
    (out as Uint8Array).set(src as Uint8Array);
    return out;
  }
  for (let i = 0; i < n; i++) writeNumber(to, out, i, readNumber(from, src, i));
  return out;
}

/** Writes a JS number into element i, converting as PyTorch does (truncation toward zero for ints, wrap-around). */
export function writeNumber(dtype: DType, storage: Storage, i: number, v: number): void {
  switch (dtype) {
    case 'f16':
      (storage as Uint16Array)[i] = f32ToF16Bits(v);
      return;
    case 'bf16':
      (storage as Uint16Array)[i] = f32ToBF16Bits(v);
      return;
    case 'i64':
      (storage as BigInt64Array)[i] = Number.isFinite(v) ? BigInt(Math.trunc(v)) : 0n;
      return;
    case 'bool':
      (storage as Uint8Array)[i] = v !== 0 ? 1 : 0;
      return;
    default:
      (storage as NumericStorage)[i] = v;
  }
}
