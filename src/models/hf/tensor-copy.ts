/**
 * Copies one tensor of a weight file into an f32 parameter, converting F16/BF16/F64 as it goes.
 * F32 bytes are read straight into the parameter's storage; other dtypes pass through one buffer
 * the size of that tensor in its file dtype. So loading a model needs the model's memory plus its
 * largest tensor, never two copies of the model.
 */
import { f16BitsToF32 } from '../../dtype.js';
import type { TensorLocation } from './weights.js';

/** The dtypes a parameter loads from. */
export const LOADABLE_DTYPES = ['F32', 'F16', 'BF16', 'F64'] as const;

let f16Table: Float32Array | null = null;

/** All 65,536 binary16 values as f32: conversion by lookup is one load per element. */
function f16ToF32Table(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) f16Table[bits] = f16BitsToF32(bits);
  }
  return f16Table;
}

/** Fills `out` (exactly the tensor's element count) from the tensor's bytes. Little-endian host. */
export async function readTensorInto(out: Float32Array, { file, entry }: TensorLocation): Promise<void> {
  const n = out.length;
  if (entry.dtype === 'F32') {
    await file.readInto(entry.name, new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
    return;
  }
  const bytes = await file.readBytes(entry.name); // a fresh, aligned buffer
  switch (entry.dtype) {
    case 'BF16': {
      // bfloat16 is the top half of an f32: shift its bits into place.
      const src = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
      const dst = new Uint32Array(out.buffer, out.byteOffset, n);
      for (let i = 0; i < n; i++) dst[i] = src[i]! << 16;
      return;
    }
    case 'F16': {
      const src = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
      const table = f16ToF32Table();
      for (let i = 0; i < n; i++) out[i] = table[src[i]!]!;
      return;
    }
    case 'F64':
      out.set(new Float64Array(bytes.buffer, bytes.byteOffset, n));
      return;
    default:
      throw new Error(
        `readTensorInto: ${entry.dtype} is not one of ${LOADABLE_DTYPES.join(', ')}; the caller checks dtypes first`,
      );
  }
}
