/**
 * The reference for quantized products (native/kernels/qmatmul.cpp is tested against it): y = x·Wᵀ
 * and dx = dy·W for W [N, K] held as ggml q8_0 / q4_0 blocks, in plain loops.
 *
 * The forward follows ggml's vec_dot_q8_0_q8_0 / vec_dot_q4_0_q8_0 (generic C path): each row of
 * x is first quantized to q8_0 blocks (quantize_row_q8_0_ref: d = amax/127 stored as f16,
 * q = roundf(x·(1/d))), then every block adds (Σ q_w·q_x)·(d_w·d_x) to an f32 sum, block by block.
 */
import { f16BitsToF32, f32ToF16Bits } from '../../dtype.js';
import type { QuantizedMatrix, QuantType } from '../backend.js';

/** Values per block. */
export const QK = 32;
/** Bytes per block: an f16 scale, then 32 int8 (q8_0) or 16 bytes of nibbles (q4_0). */
export const QUANT_BLOCK_BYTES: Readonly<Record<QuantType, number>> = { q8_0: 34, q4_0: 18 };

/** C's roundf: halves away from zero. */
function roundf(v: number): number {
  return v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5);
}

/** One activation row as q8_0: int8 values and, per block, the f16-rounded scale as a number. */
export interface QuantizedRow {
  q: Int8Array;
  d: Float32Array;
}

/** quantize_row_q8_0_ref of x[offset … offset + K). */
export function quantizeActivationRow(x: ArrayLike<number>, offset: number, K: number): QuantizedRow {
  const q = new Int8Array(K);
  const d = new Float32Array(K / QK);
  for (let b = 0; b < K / QK; b++) {
    const db = quantizedScale(x, offset + b * QK);
    const id = db !== 0 ? Math.fround(1 / db) : 0;
    for (let j = 0; j < QK; j++) q[b * QK + j] = roundf(Math.fround(x[offset + b * QK + j]! * id));
    d[b] = f16BitsToF32(f32ToF16Bits(db));
  }
  return { q, d };
}

/**
 * W's values as ggml blocks, as ggml's reference quantizers make them (quantize_row_q8_0_ref,
 * quantize_row_q4_0_ref). src/formats/gguf-write.ts has the same quantizers for files; the
 * layering keeps nn/ from importing formats/, and test/qmatmul.test.ts holds the two equal.
 */
export function quantizeBlocks(type: QuantType, values: Float32Array): Uint8Array {
  const nb = values.length / QK;
  const bb = QUANT_BLOCK_BYTES[type];
  const out = new Uint8Array(nb * bb);
  for (let b = 0; b < nb; b++) {
    const at = b * bb;
    let d: number;
    if (type === 'q8_0') {
      const row = quantizeActivationRow(values, b * QK, QK);
      out.set(new Uint8Array(row.q.buffer), at + 2);
      d = f32ToF16Bits(quantizedScale(values, b * QK));
    } else {
      d = f32ToF16Bits(quantizeQ4Block(values, b * QK, out, at + 2));
    }
    out[at] = d & 0xff;
    out[at + 1] = d >> 8;
  }
  return out;
}

/** q8_0's scale of the block at x[offset …]: amax/127 in f32. */
function quantizedScale(x: ArrayLike<number>, offset: number): number {
  let amax = 0;
  for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(x[offset + j]!));
  return Math.fround(amax / 127);
}

/**
 * quantize_row_q4_0_ref on one block: d = (the value of largest magnitude, signed)/−8, nibble =
 * min(15, trunc(x·(1/d) + 8.5)) with each step rounded to f32; value j in the low nibble of byte
 * j, value j + 16 in the high. Writes 16 bytes at out[at …]; returns d.
 */
function quantizeQ4Block(x: ArrayLike<number>, offset: number, out: Uint8Array, at: number): number {
  let amax = 0;
  let max = 0;
  for (let j = 0; j < QK; j++) {
    const v = x[offset + j]!;
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  const d = Math.fround(max / -8);
  const id = d !== 0 ? Math.fround(1 / d) : 0;
  const nibble = (v: number): number => Math.min(15, Math.trunc(Math.fround(Math.fround(v * id) + 8.5))) & 0x0f;
  for (let j = 0; j < QK / 2; j++) out[at + j] = nibble(x[offset + j]!) | (nibble(x[offset + j + QK / 2]!) << 4);
  return d;
}

/** Weight value j (0 … 31) of the block at byte `at`, as the integer before scaling. */
function weightInt(w: QuantizedMatrix, at: number, j: number): number {
  if (w.type === 'q8_0') return (w.blocks[at + 2 + j]! << 24) >> 24; // the byte as int8
  const byte = w.blocks[at + 2 + (j % 16)]!;
  return (j < 16 ? byte & 0x0f : byte >> 4) - 8;
}

function blockScale(w: QuantizedMatrix, at: number): number {
  return f16BitsToF32(w.blocks[at]! | (w.blocks[at + 1]! << 8));
}

/** y [M, N] = x [M, K] · Wᵀ; x dense, row-major. */
export function qmatmul(x: ArrayLike<number>, M: number, w: QuantizedMatrix): Float32Array {
  const { rows: N, cols: K } = w;
  const nb = K / QK;
  const bb = QUANT_BLOCK_BYTES[w.type];
  const y = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    const xr = quantizeActivationRow(x, m * K, K);
    for (let n = 0; n < N; n++) {
      let sum = 0;
      for (let b = 0; b < nb; b++) {
        const at = (n * nb + b) * bb;
        let sumi = 0;
        for (let j = 0; j < QK; j++) sumi += weightInt(w, at, j) * xr.q[b * QK + j]!;
        sum = Math.fround(sum + Math.fround(sumi * Math.fround(blockScale(w, at) * xr.d[b]!)));
      }
      y[m * N + n] = sum;
    }
  }
  return y;
}

/** dx [M, K] = dy [M, N] · W, summed over n in order in f32. */
export function qmatmulBackward(dy: ArrayLike<number>, M: number, w: QuantizedMatrix): Float32Array {
  const { rows: N, cols: K } = w;
  const nb = K / QK;
  const bb = QUANT_BLOCK_BYTES[w.type];
  const dx = new Float32Array(M * K);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const g = dy[m * N + n]!;
      for (let b = 0; b < nb; b++) {
        const at = (n * nb + b) * bb;
        const d = blockScale(w, at);
        for (let j = 0; j < QK; j++) {
          const k = m * K + b * QK + j;
          dx[k] = dx[k]! + Math.fround(g * Math.fround(weightInt(w, at, j) * d));
        }
      }
    }
  }
  return dx;
}
