/**
 * Decoding ggml tensor data into f32, block by block: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
 * Q4_K, Q5_K, Q6_K (llama.cpp's K-quant files hold Q5_0, Q5_1 and Q8_0 where a row is not a whole
 * number of 256-value super-blocks).
 *
 * Block layouts are ggml's (ggml/src/ggml-common.h), the arithmetic is ggml's dequantize_row_* (ggml/src/
 * ggml-quants.c), both of llama.cpp release v0.4.0 as node-llama-cpp 3.21.1 bundles it (squashed commit
 * 80fb11ac73e66d89eae2c6a91d8a77428fa733ed). All integers little-endian; "f16" is an IEEE half.
 *
 *   Q8_0  32 values, 34 bytes: f16 d · int8 q[32]                               value q·d
 *   Q4_0  32 values, 18 bytes: f16 d · u8 qs[16]; element j is the low nibble of qs[j], element
 *         j + 16 its high nibble                                                value (q − 8)·d
 *   Q4_1  32 values, 20 bytes: f16 d · f16 m · u8 qs[16] (nibbles as Q4_0)       value q·d + m
 *   Q5_0  32 values, 22 bytes: f16 d · u32 qh · u8 qs[16]; bit j of qh is element j's fifth bit
 *         (nibbles as Q4_0)                                                     value (q − 16)·d
 *   Q5_1  32 values, 24 bytes: f16 d · f16 m · u32 qh · u8 qs[16] (as Q5_0)      value q·d + m
 *   Q4_K  256 values (8 sub-blocks of 32), 144 bytes: f16 d · f16 dmin · u8 scales[12] · u8 qs[128]
 *   Q5_K  256 values (8 sub-blocks of 32), 176 bytes: f16 d · f16 dmin · u8 scales[12] · u8 qh[32] ·
 *         u8 qs[128]
 *   Q6_K  256 values (16 sub-blocks of 16), 210 bytes: u8 ql[128] · u8 qh[64] · int8 scales[16] · f16 d
 *
 * Q4_K/Q5_K: `scales` packs 8 six-bit scales and 8 six-bit mins (scaleMinK4 below). Each 64 values
 * use 32 bytes of qs: the first 32 values are the low nibbles (sub-block 2i), the next 32 the high
 * nibbles (sub-block 2i + 1); value = d·sc·q − dmin·m. Q5_K adds a fifth bit from qh: for the i-th group
 * of 64, bit 2i of qh[l] for the low-nibble value l and bit 2i + 1 for the high-nibble one.
 * Q6_K: each 128 values use 64 bytes of ql and 32 of qh; for l < 32, the four values l, l+32, l+64,
 * l+96 take the low nibble of ql[l], the low nibble of ql[l+32], the high nibble of ql[l], the high
 * nibble of ql[l+32], with bits (0-1, 2-3, 4-5, 6-7) of qh[l] on top; q − 32 times d·scales[sub-block].
 *
 * Exactness: ggml computes in C floats, so each product and difference here is rounded to f32
 * (Math.fround), in ggml's order; a double result rounded to f32 equals the f32 operation for +, −, ×
 * of f32 operands (53 ≥ 2·24 + 2), so the values equal ggml's bit for bit (test/gguf-ggml.test.ts checks
 * this against the library). No fused multiply-add can change them: the only products feeding a
 * subtraction (d·sc times a 4- or 5-bit q) are exact in f32.
 */
import { bf16BitsToF32, f16BitsToF32 } from '../dtype.js';
import { ArgumentError, FormatError } from '../errors.js';
import type { GgmlType } from './gguf.js';

/** The ggml types knobs turns into f32 values. */
export const GGUF_DEQUANTIZABLE: readonly string[] = [
  'F32',
  'F16',
  'BF16',
  'Q8_0',
  'Q4_0',
  'Q4_1',
  'Q5_0',
  'Q5_1',
  'Q4_K',
  'Q5_K',
  'Q6_K',
];

let f16Values: Float32Array | null = null;
/** Every f16 bit pattern's value (256 KiB, built on first use): a lookup beats decoding per element. */
function f16Table(): Float32Array {
  f16Values ??= Float32Array.from({ length: 65536 }, (_, bits) => f16BitsToF32(bits));
  return f16Values;
}

const fr = Math.fround;

/** get_scale_min_k4: the j-th (0..7) six-bit scale of a Q4_K/Q5_K `scales` array starting at `s`. */
function scaleK4(b: Uint8Array, s: number, j: number): number {
  return j < 4 ? b[s + j]! & 63 : (b[s + j + 4]! & 0x0f) | ((b[s + j - 4]! >> 6) << 4);
}
/** get_scale_min_k4: the j-th (0..7) six-bit min. */
function minK4(b: Uint8Array, s: number, j: number): number {
  return j < 4 ? b[s + j + 4]! & 63 : (b[s + j + 4]! >> 4) | ((b[s + j]! >> 6) << 4);
}

/** One block (or element, for blockSize 1 types) of `b` at byte `p` into `out` at `o`. */
type BlockDecoder = (b: Uint8Array, view: DataView, p: number, out: Float32Array, o: number) => void;

const decodeQ8_0: BlockDecoder = (_b, view, p, out, o) => {
  const d = f16Table()[view.getUint16(p, true)]!;
  for (let j = 0; j < 32; j++) out[o + j] = view.getInt8(p + 2 + j) * d;
};

/**
 * The 32-value types but Q8_0: `m` is the byte offset of the f16 min (−1: none, the values are centred
 * instead), `qh` that of the u32 of fifth bits (−1: none).
 */
function decode32(b: Uint8Array, view: DataView, p: number, out: Float32Array, o: number, m: number, qh: number): void {
  const table = f16Table();
  const d = table[view.getUint16(p, true)]!;
  const min = m < 0 ? 0 : table[view.getUint16(p + m, true)]!;
  const high = qh < 0 ? 0 : view.getUint32(p + qh, true);
  const centre = m >= 0 ? 0 : qh < 0 ? 8 : 16;
  const qs = p + (qh < 0 ? 4 : 8) - (m < 0 ? 2 : 0);
  for (let j = 0; j < 16; j++) {
    const q = b[qs + j]!;
    const x0 = ((q & 0x0f) | (((high >>> j) << 4) & 0x10)) - centre;
    const x1 = ((q >> 4) | ((high >>> (j + 12)) & 0x10)) - centre;
    // Without a min, no + 0: it would turn ggml's −0 (0 · a negative d) into +0.
    out[o + j] = m < 0 ? x0 * d : x0 * d + min;
    out[o + j + 16] = m < 0 ? x1 * d : x1 * d + min;
  }
}

/** Q4_K and Q5_K differ only in the fifth bit; `qh` is its byte offset in the block, or −1 for Q4_K. */
function decodeK4(b: Uint8Array, view: DataView, p: number, out: Float32Array, o: number, qh: number): void {
  const table = f16Table();
  const d = table[view.getUint16(p, true)]!;
  const dmin = table[view.getUint16(p + 2, true)]!;
  const scales = p + 4;
  let qs = p + (qh < 0 ? 16 : 48);
  for (let group = 0; group < 4; group++) {
    const d1 = fr(d * scaleK4(b, scales, 2 * group));
    const m1 = fr(dmin * minK4(b, scales, 2 * group));
    const d2 = fr(d * scaleK4(b, scales, 2 * group + 1));
    const m2 = fr(dmin * minK4(b, scales, 2 * group + 1));
    const lowBit = 1 << (2 * group);
    const highBit = lowBit << 1;
    for (let l = 0; l < 32; l++) {
      const q = b[qs + l]!;
      const h = qh < 0 ? 0 : b[p + qh + l]!;
      out[o + l] = fr(fr(d1 * ((q & 0x0f) + (h & lowBit ? 16 : 0))) - m1);
      out[o + 32 + l] = fr(fr(d2 * ((q >> 4) + (h & highBit ? 16 : 0))) - m2);
    }
    qs += 32;
    o += 64;
  }
}

const decodeQ4_K: BlockDecoder = (b, view, p, out, o) => decodeK4(b, view, p, out, o, -1);
const decodeQ5_K: BlockDecoder = (b, view, p, out, o) => decodeK4(b, view, p, out, o, 16);

const decodeQ6_K: BlockDecoder = (b, view, p, out, o) => {
  const d = f16Table()[view.getUint16(p + 208, true)]!;
  for (let half = 0; half < 2; half++) {
    const ql = p + 64 * half;
    const qh = p + 128 + 32 * half;
    const sc = p + 192 + 8 * half;
    const y = o + 128 * half;
    for (let l = 0; l < 32; l++) {
      const is = l >> 4;
      const h = b[qh + l]!;
      const q1 = ((b[ql + l]! & 0x0f) | ((h & 3) << 4)) - 32;
      const q2 = ((b[ql + l + 32]! & 0x0f) | (((h >> 2) & 3) << 4)) - 32;
      const q3 = ((b[ql + l]! >> 4) | (((h >> 4) & 3) << 4)) - 32;
      const q4 = ((b[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4)) - 32;
      out[y + l] = fr(d * view.getInt8(sc + is)) * q1;
      out[y + l + 32] = fr(d * view.getInt8(sc + is + 2)) * q2;
      out[y + l + 64] = fr(d * view.getInt8(sc + is + 4)) * q3;
      out[y + l + 96] = fr(d * view.getInt8(sc + is + 6)) * q4;
    }
  }
};

const DECODERS: Readonly<Record<string, BlockDecoder>> = {
  F32: (_b, view, p, out, o) => {
    out[o] = view.getFloat32(p, true);
  },
  F16: (_b, view, p, out, o) => {
    out[o] = f16Table()[view.getUint16(p, true)]!;
  },
  BF16: (_b, view, p, out, o) => {
    out[o] = bf16BitsToF32(view.getUint16(p, true));
  },
  Q8_0: decodeQ8_0,
  Q4_0: (b, view, p, out, o) => decode32(b, view, p, out, o, -1, -1),
  Q4_1: (b, view, p, out, o) => decode32(b, view, p, out, o, 2, -1),
  Q5_0: (b, view, p, out, o) => decode32(b, view, p, out, o, -1, 2),
  Q5_1: (b, view, p, out, o) => decode32(b, view, p, out, o, 2, 4),
  Q4_K: decodeQ4_K,
  Q5_K: decodeQ5_K,
  Q6_K: decodeQ6_K,
};

/**
 * Decodes whole blocks of `type` from `bytes` (a multiple of the block's byte size) into `out` from
 * `outOffset` on: bytes.byteLength / typeSize × blockSize values. The caller chooses the range (see
 * readGgufRows in gguf.ts), so a tensor can be decoded a few rows at a time in a fixed buffer.
 */
export function dequantizeBlocks(type: GgmlType, bytes: Uint8Array, out: Float32Array, outOffset = 0): void {
  const decode = DECODERS[type.name];
  if (decode === undefined) {
    throw new FormatError(
      'gguf_unsupported_type',
      `ggml type ${type.name} is not one knobs decodes; supported: ${GGUF_DEQUANTIZABLE.join(', ')}`,
      { type: type.name, supported: GGUF_DEQUANTIZABLE },
    );
  }
  const blocks = bytes.byteLength / type.typeSize;
  if (!Number.isInteger(blocks))
    throw new ArgumentError(
      `${bytes.byteLength} bytes are not a whole number of ${type.name} blocks (${type.typeSize} bytes each)`,
      { type: type.name, bytes: bytes.byteLength },
    );
  const values = blocks * type.blockSize;
  if (!Number.isInteger(outOffset) || outOffset < 0 || outOffset + values > out.length)
    throw new ArgumentError(
      `${values} ${type.name} values do not fit in a Float32Array of ${out.length} from offset ${outOffset}`,
      { type: type.name, values, length: out.length, offset: outOffset },
    );
  if (type.name === 'F32') {
    // A byte copy: knobs runs on little-endian hosts only (as its safetensors reader does).
    new Uint8Array(out.buffer, out.byteOffset + 4 * outOffset, bytes.byteLength).set(bytes);
    return;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < blocks; i++) decode(bytes, view, i * type.typeSize, out, outOffset + i * type.blockSize);
}
