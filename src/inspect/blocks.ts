/**
 * A tensor's values as blocks of numbers, whatever the dtype stores: F32 and F64 are views of the
 * bytes, F16/BF16 and the integer dtypes are converted block by block into one reused buffer, so
 * going over a tensor never allocates a second copy of it.
 */
import { f16BitsToF32 } from '../dtype.js';
import { ArgumentError } from '../errors.js';

/** Elements per block: every block but a tensor's last has exactly this many. */
export const BLOCK_ELEMENTS = 1 << 16;

/**
 * Elements read from a file at a time: 16 blocks, so 4 MiB of f32 (8 MiB of a 64-bit dtype)
 * whatever the tensor's size.
 */
export const CHUNK_ELEMENTS = 16 * BLOCK_ELEMENTS;

/** dtypes whose values the stats and the diff read (the file's dtype names). */
export const NUMERIC_DTYPES = [
  'F64',
  'F32',
  'F16',
  'BF16',
  'I64',
  'I32',
  'I16',
  'U16',
  'U32',
  'I8',
  'U8',
  'BOOL',
] as const;

export function isNumericDType(dtype: string): boolean {
  return (NUMERIC_DTYPES as readonly string[]).includes(dtype);
}

export type Block = Float32Array | Float64Array;

/** Every f16 bit pattern as an f32 (256 KiB, built on first use): one lookup per element. */
let f16Table: Float32Array | null = null;
function f16Values(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) f16Table[bits] = f16BitsToF32(bits);
  }
  return f16Table;
}

/**
 * The values of `bytes` (little-endian elements of `dtype`, starting at an 8-byte-aligned offset of
 * their buffer) as blocks of BLOCK_ELEMENTS. A yielded block is valid until the next one is asked
 * for (the converting dtypes reuse one buffer per iteration).
 */
export function* valueBlocks(dtype: string, bytes: Uint8Array): Generator<Block> {
  const { buffer, byteOffset, byteLength } = bytes;
  switch (dtype) {
    case 'F32':
      yield* views(new Float32Array(buffer, byteOffset, byteLength / 4));
      return;
    case 'F64':
      yield* views(new Float64Array(buffer, byteOffset, byteLength / 8));
      return;
    case 'F16': {
      const table = f16Values();
      yield* converted(
        new Uint16Array(buffer, byteOffset, byteLength / 2),
        new Float32Array(BLOCK_ELEMENTS),
        (bits) => table[bits]!,
      );
      return;
    }
    case 'BF16': {
      // A bfloat16 is the top half of an f32: widen the bits, then read them as f32.
      const src = new Uint16Array(buffer, byteOffset, byteLength / 2);
      const out = new Float32Array(BLOCK_ELEMENTS);
      const outBits = new Uint32Array(out.buffer);
      for (let start = 0; start < src.length; start += BLOCK_ELEMENTS) {
        const n = Math.min(BLOCK_ELEMENTS, src.length - start);
        for (let i = 0; i < n; i++) outBits[i] = src[start + i]! << 16;
        yield out.subarray(0, n);
      }
      return;
    }
    case 'I64':
      yield* converted(new BigInt64Array(buffer, byteOffset, byteLength / 8), new Float64Array(BLOCK_ELEMENTS), Number);
      return;
    case 'U64':
      yield* converted(
        new BigUint64Array(buffer, byteOffset, byteLength / 8),
        new Float64Array(BLOCK_ELEMENTS),
        Number,
      );
      return;
    case 'I32':
      yield* converted(new Int32Array(buffer, byteOffset, byteLength / 4), new Float64Array(BLOCK_ELEMENTS), (v) => v);
      return;
    case 'U32':
      yield* converted(new Uint32Array(buffer, byteOffset, byteLength / 4), new Float64Array(BLOCK_ELEMENTS), (v) => v);
      return;
    case 'I16':
      yield* converted(new Int16Array(buffer, byteOffset, byteLength / 2), new Float64Array(BLOCK_ELEMENTS), (v) => v);
      return;
    case 'U16':
      yield* converted(new Uint16Array(buffer, byteOffset, byteLength / 2), new Float64Array(BLOCK_ELEMENTS), (v) => v);
      return;
    case 'I8':
      yield* converted(new Int8Array(buffer, byteOffset, byteLength), new Float64Array(BLOCK_ELEMENTS), (v) => v);
      return;
    case 'U8':
    case 'BOOL':
      yield* converted(bytes, new Float64Array(BLOCK_ELEMENTS), (v) => v);
      return;
    default:
      throw new ArgumentError(`valueBlocks: dtype ${dtype} has no numeric reading (check isNumericDType first)`, {
        dtype,
      });
  }
}

function* views<T extends Block>(all: T): Generator<T> {
  for (let start = 0; start < all.length; start += BLOCK_ELEMENTS) {
    yield all.subarray(start, Math.min(all.length, start + BLOCK_ELEMENTS)) as T;
  }
}

interface Indexable<V> {
  readonly length: number;
  readonly [i: number]: V;
}

function* converted<V, T extends Block>(src: Indexable<V>, out: T, convert: (v: V) => number): Generator<T> {
  for (let start = 0; start < src.length; start += BLOCK_ELEMENTS) {
    const n = Math.min(BLOCK_ELEMENTS, src.length - start);
    for (let i = 0; i < n; i++) out[i] = convert(src[start + i]!);
    yield out.subarray(0, n) as T;
  }
}
