/**
 * GGUF writer: metadata and f32 values stored as F32, F16, BF16, Q8_0 or Q4_0, written atomically
 * (src/io/atomic.ts) and streamed: the header is sized from the shapes and types alone, then each
 * tensor is encoded and written in turn, so a write holds one tensor's bytes at a time (and, when a
 * tensor's values are given as a function, one tensor's values). The layout is the one src/formats/gguf.ts documents and reads; version 3,
 * little-endian, each tensor's data padded to the alignment (`general.alignment`, default 32).
 *
 * The quantizers round exactly as ggml's reference quantizers, so the blocks are the ones
 * llama.cpp's own tools would write: `quantize_row_q8_0_ref` and `quantize_row_q4_0_ref` in
 * ggml/src/ggml-quants.c of ggml-org/llama.cpp at commit 36491e4024b3016e6e2d21afc140add042b44bec.
 * ggml computes in C floats, so every intermediate here is rounded to f32 (Math.fround), and the
 * f16 scale is rounded to nearest even, as GGML_FP32_TO_FP16 does on x86 (F16C).
 */
import { f32ToBF16Bits, f32ToF16Bits } from '../dtype.js';
import { ArgumentError } from '../errors.js';
import { type AtomicWriteOptions, writeFileAtomic } from '../io/atomic.js';
import {
  GGML_TYPE,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_MAX_DIMS,
  GGUF_MAX_NAME_BYTES,
  GGUF_VALUE_TYPES,
  type GgufItemType,
  type GgufValue,
  padTo,
} from './gguf.js';

export type GgufWriteType = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0';

export interface GgufWriteTensor {
  readonly name: string;
  /** Row-major shape (PyTorch order); the file stores it reversed, in ggml order. */
  readonly shape: readonly number[];
  /**
   * The values, or a function that makes them when the tensor is written (so a writer need not hold
   * them all), or `{ encoded }`: bytes already in `type` (e.g. q8_0 blocks kept from a quantized
   * layer), written as they are.
   */
  readonly data: Float32Array | (() => Float32Array) | { readonly encoded: Uint8Array };
  readonly type: GgufWriteType;
}

export interface GgufWriteInput {
  /** Written in insertion order. `general.alignment`, if present, must be a u32 power of two. */
  readonly metadata: ReadonlyMap<string, GgufValue>;
  readonly tensors: readonly GgufWriteTensor[];
}

const TYPE_ID: Readonly<Record<GgufWriteType, number>> = {
  F32: GGML_TYPE.F32,
  F16: GGML_TYPE.F16,
  BF16: GGML_TYPE.BF16,
  Q8_0: GGML_TYPE.Q8_0,
  Q4_0: GGML_TYPE.Q4_0,
};
const QK = 32;

/** Growable little-endian byte buffer for the header. */
class ByteWriter {
  private buf = new Uint8Array(1024);
  private view = new DataView(this.buf.buffer);
  length = 0;

  /**
   * Makes room for `n` more bytes and returns where they start. It may replace `buf` and `view`, so
   * callers take the offset first: `this.view.setX(this.room(n), …)` would write into the old view.
   */
  private room(n: number): number {
    if (this.length + n > this.buf.byteLength) {
      const next = new Uint8Array(Math.max(this.buf.byteLength * 2, this.length + n));
      next.set(this.buf.subarray(0, this.length));
      this.buf = next;
      this.view = new DataView(next.buffer);
    }
    const at = this.length;
    this.length += n;
    return at;
  }
  u8(v: number): void {
    const at = this.room(1); // grow first: this.view changes when the buffer does
    this.view.setUint8(at, v);
  }
  i8(v: number): void {
    const at = this.room(1);
    this.view.setInt8(at, v);
  }
  u16(v: number): void {
    const at = this.room(2);
    this.view.setUint16(at, v, true);
  }
  i16(v: number): void {
    const at = this.room(2);
    this.view.setInt16(at, v, true);
  }
  u32(v: number): void {
    const at = this.room(4);
    this.view.setUint32(at, v, true);
  }
  i32(v: number): void {
    const at = this.room(4);
    this.view.setInt32(at, v, true);
  }
  f32(v: number): void {
    const at = this.room(4);
    this.view.setFloat32(at, v, true);
  }
  f64(v: number): void {
    const at = this.room(8);
    this.view.setFloat64(at, v, true);
  }
  u64(v: bigint): void {
    const at = this.room(8);
    this.view.setBigUint64(at, v, true);
  }
  i64(v: bigint): void {
    const at = this.room(8);
    this.view.setBigInt64(at, v, true);
  }
  bytes(b: Uint8Array): void {
    const at = this.room(b.byteLength);
    this.buf.set(b, at);
  }
  string(s: string): void {
    const b = new TextEncoder().encode(s);
    this.u64(BigInt(b.byteLength));
    this.bytes(b);
  }
  pad(alignment: number): void {
    this.room(padTo(this.length, alignment) - this.length);
  }
  result(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

function writeItem(w: ByteWriter, type: GgufItemType, v: unknown): void {
  switch (type) {
    case 'u8':
      return w.u8(v as number);
    case 'i8':
      return w.i8(v as number);
    case 'u16':
      return w.u16(v as number);
    case 'i16':
      return w.i16(v as number);
    case 'u32':
      return w.u32(v as number);
    case 'i32':
      return w.i32(v as number);
    case 'f32':
      return w.f32(v as number);
    case 'f64':
      return w.f64(v as number);
    case 'u64':
      return w.u64(BigInt(v as bigint));
    case 'i64':
      return w.i64(BigInt(v as bigint));
    case 'bool':
      return w.u8(v ? 1 : 0);
    case 'string':
      return w.string(v as string);
  }
}

function writeValue(w: ByteWriter, value: GgufValue): void {
  w.u32(GGUF_VALUE_TYPES.indexOf(value.type));
  if (value.type !== 'array') return writeItem(w, value.type, value.value);
  if ((value.itemType as string) === 'array')
    throw new ArgumentError('GGUF arrays of arrays are not readable by ggml; flatten them');
  w.u32(GGUF_VALUE_TYPES.indexOf(value.itemType));
  w.u64(BigInt(value.value.length));
  for (const item of value.value as Iterable<unknown>) writeItem(w, value.itemType, item);
}

function alignmentOf(metadata: ReadonlyMap<string, GgufValue>): number {
  const v = metadata.get('general.alignment');
  if (v === undefined) return GGUF_DEFAULT_ALIGNMENT;
  if (v.type !== 'u32' || v.value === 0 || (v.value & (v.value - 1)) !== 0) {
    throw new ArgumentError('general.alignment must be a u32 power of two', { key: 'general.alignment' });
  }
  return v.value;
}

function checkTensor(t: GgufWriteTensor, seen: Set<string>): void {
  if (Buffer.byteLength(t.name) > GGUF_MAX_NAME_BYTES)
    throw new ArgumentError(`tensor name '${t.name}' is longer than ${GGUF_MAX_NAME_BYTES} bytes, ggml's limit`, {
      tensor: t.name,
    });
  if (seen.has(t.name)) throw new ArgumentError(`tensor '${t.name}' is given twice`, { tensor: t.name });
  seen.add(t.name);
  if (t.shape.length > GGUF_MAX_DIMS)
    throw new ArgumentError(
      `tensor '${t.name}' has ${t.shape.length} dimensions; GGUF allows at most ${GGUF_MAX_DIMS}`,
      { tensor: t.name },
    );
  if (t.data instanceof Float32Array) checkValues(t, t.data);
  if (!(t.type in TYPE_ID))
    throw new ArgumentError(
      `tensor '${t.name}': type ${String(t.type)} is not one the writer stores; use F32, F16, BF16, Q8_0 or Q4_0`,
      { tensor: t.name },
    );
  const row = t.shape[t.shape.length - 1] ?? 1;
  if ((t.type === 'Q8_0' || t.type === 'Q4_0') && row % QK !== 0) {
    throw new ArgumentError(
      `tensor '${t.name}': ${t.type} needs the last dimension to be a multiple of ${QK}, but it is ${row}; store it as F16 or F32`,
      { tensor: t.name, type: t.type },
    );
  }
  if (
    typeof t.data !== 'function' &&
    !(t.data instanceof Float32Array) &&
    t.data.encoded.byteLength !== encodedLength(t)
  )
    throw new ArgumentError(
      `tensor '${t.name}': ${t.data.encoded.byteLength} bytes given, but ${t.type} [${t.shape.join(', ')}] takes ${encodedLength(t)}`,
      { tensor: t.name },
    );
}

function elementsOf(t: GgufWriteTensor): number {
  return t.shape.reduce((a, b) => a * b, 1);
}

function checkValues(t: GgufWriteTensor, data: Float32Array): void {
  if (elementsOf(t) !== data.length)
    throw new ArgumentError(`tensor '${t.name}' has shape [${t.shape.join(', ')}] but ${data.length} values`, {
      tensor: t.name,
    });
}

/** Bytes per value, or per block of 32 for the quantized types. */
const ENCODED_BYTES: Readonly<Record<GgufWriteType, { values: number; bytes: number }>> = {
  F32: { values: 1, bytes: 4 },
  F16: { values: 1, bytes: 2 },
  BF16: { values: 1, bytes: 2 },
  Q8_0: { values: QK, bytes: 34 },
  Q4_0: { values: QK, bytes: 18 },
};

/** The bytes tensor `t` takes in the file (before padding), from its shape and type alone. */
function encodedLength(t: GgufWriteTensor): number {
  const e = ENCODED_BYTES[t.type];
  return (elementsOf(t) / e.values) * e.bytes;
}

/** The bytes of one tensor in its GGUF type. */
export function encodeGgufTensorData(type: GgufWriteType, data: Float32Array): Uint8Array {
  switch (type) {
    case 'F32':
      return new Uint8Array(Float32Array.from(data).buffer);
    case 'F16':
      return new Uint8Array(Uint16Array.from(data, f32ToF16Bits).buffer);
    case 'BF16':
      return new Uint8Array(Uint16Array.from(data, f32ToBF16Bits).buffer);
    case 'Q8_0':
      return quantizeQ8_0(data);
    case 'Q4_0':
      return quantizeQ4_0(data);
  }
}

/** C's roundf: halves round away from zero (exact for f32 inputs, since x ± 0.5 is exact in double). */
function roundf(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

/** quantize_row_q8_0_ref: d = amax/127, q = roundf(x·(1/d)). */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  const blocks = x.length / QK;
  const out = new Uint8Array(blocks * 34);
  const view = new DataView(out.buffer);
  for (let b = 0; b < blocks; b++) {
    let amax = 0;
    for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(x[b * QK + j]!));
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    view.setUint16(34 * b, f32ToF16Bits(d), true);
    for (let j = 0; j < QK; j++) view.setInt8(34 * b + 2 + j, roundf(Math.fround(x[b * QK + j]! * id)));
  }
  return out;
}

/**
 * quantize_row_q4_0_ref: d = max/−8, where max is the first value of largest magnitude (with its
 * sign); q = min(15, (int8_t)(x·(1/d) + 8.5)); element j in the low nibble of byte j, j + 16 in the high.
 *
 * Two details make this bit-exact with ggml (checked against its library in test/gguf-ggml.test.ts):
 * - `x·id` and `+ 8.5` are rounded to f32 separately, as the C source reads. A build that fuses them
 *   into one FMA could differ in a rare nibble (upstream gguf-py's quants.py: "Q4_0's reference rounding
 *   is cursed and depends on FMA"). llama.cpp's x86-64 builds do not: the reference quantizers live in
 *   libggml-base, compiled for baseline x86-64 without FMA or F16C (node-llama-cpp 3.21.1's prebuilt
 *   libggml-base.so contains no vfmadd instruction), whatever CPU variant libggml-cpu is built for.
 * - When |d| is so small (a block of f32 subnormals) that 1/d overflows to ∞, x·id is ±∞ or NaN; C's
 *   float-to-int8 conversion is undefined there, and x86-64 (cvttps2dq) yields 0x80000000, whose low byte
 *   is 0. knobs writes that 0 nibble, as x86-64 ggml does (an ARM build would saturate instead). The
 *   f16 scale of such a block is 0, so every value decodes to 0 either way.
 */
export function quantizeQ4_0(x: Float32Array): Uint8Array {
  const blocks = x.length / QK;
  const out = new Uint8Array(blocks * 18);
  const view = new DataView(out.buffer);
  const nibble = (v: number, id: number): number => {
    const t = Math.fround(Math.fround(v * id) + 8.5);
    return Number.isFinite(t) ? Math.min(15, Math.trunc(t)) : 0;
  };
  for (let b = 0; b < blocks; b++) {
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const v = x[b * QK + j]!;
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = Math.fround(max / -8);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    view.setUint16(18 * b, f32ToF16Bits(d), true);
    for (let j = 0; j < QK / 2; j++) {
      out[18 * b + 2 + j] = nibble(x[b * QK + j]!, id) | (nibble(x[b * QK + QK / 2 + j]!, id) << 4);
    }
  }
  return out;
}

/**
 * The whole file as chunks to write back to back: the header (built and checked now, so bad input
 * throws here), then, as the caller iterates, each tensor's data encoded in turn and its padding.
 */
export function encodeGguf(input: GgufWriteInput): Iterable<Uint8Array> {
  const alignment = alignmentOf(input.metadata);
  const seen = new Set<string>();
  for (const t of input.tensors) checkTensor(t, seen);
  const w = new ByteWriter();
  w.u32(GGUF_MAGIC);
  w.u32(3);
  w.u64(BigInt(input.tensors.length));
  w.u64(BigInt(input.metadata.size));
  for (const [key, value] of input.metadata) {
    w.string(key);
    writeValue(w, value);
  }
  let offset = 0;
  for (const t of input.tensors) {
    w.string(t.name);
    w.u32(t.shape.length);
    for (let d = t.shape.length - 1; d >= 0; d--) w.u64(BigInt(t.shape[d]!));
    w.u32(TYPE_ID[t.type]);
    w.u64(BigInt(offset));
    offset += padTo(encodedLength(t), alignment);
  }
  w.pad(alignment);
  return tensorChunks(w.result(), input.tensors, alignment);
}

function* tensorChunks(
  header: Uint8Array,
  tensors: readonly GgufWriteTensor[],
  alignment: number,
): Generator<Uint8Array> {
  yield header;
  for (const t of tensors) {
    const bytes = tensorBytes(t);
    yield bytes;
    const padding = padTo(bytes.byteLength, alignment) - bytes.byteLength;
    if (padding > 0) yield new Uint8Array(padding);
  }
}

/** Tensor `t`'s bytes in its type: its values encoded, or its encoded bytes. */
function tensorBytes(t: GgufWriteTensor): Uint8Array {
  if (typeof t.data === 'function' || t.data instanceof Float32Array) {
    const data = typeof t.data === 'function' ? t.data() : t.data;
    checkValues(t, data);
    return encodeGgufTensorData(t.type, data);
  }
  return t.data.encoded; // its length was checked with the header
}

/** Writes a GGUF file atomically, one tensor at a time: a reader sees the old file or the whole new one. */
export async function writeGguf(path: string, input: GgufWriteInput, opts: AtomicWriteOptions = {}): Promise<void> {
  await writeFileAtomic(path, encodeGguf(input), opts);
}
