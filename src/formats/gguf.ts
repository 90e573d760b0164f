/**
 * GGUF reader: metadata, tensor infos and tensor data, read through a ByteSource.
 *
 * Byte layout (ggml/docs/gguf.md; all integers little-endian; versions 2 and 3 share it, version 3
 * only added big-endian files, which knobs does not read):
 *
 *   u32     magic "GGUF" (bytes 47 47 55 46)
 *   u32     version (2 or 3)
 *   u64     n_tensors
 *   u64     n_kv
 *   n_kv ×  key/value: string key, u32 value type, value
 *   n_tensors × tensor info: string name, u32 n_dims (≤ 4), u64 dims[n_dims] (ggml order: dims[0]
 *           is the fastest-varying, i.e. the reverse of a row-major shape), u32 ggml type, u64 offset
 *   padding with zeros to a multiple of `general.alignment` (a u32 key, default 32)
 *   data:   each tensor's bytes at data_start + offset; offsets are multiples of the alignment and
 *           follow one another in info order, each the previous offset plus the previous tensor's
 *           size rounded up to the alignment (ggml's gguf.cpp requires exactly this).
 *
 *   string = u64 length + that many UTF-8 bytes (no NUL).
 *   value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool (one byte, 0 or 1), 8 string,
 *   9 array (u32 item type, u64 length, items; arrays of arrays are refused, as gguf.cpp does),
 *   10 u64, 11 i64, 12 f64.
 *
 * Block layouts and their decoding: src/formats/gguf-quants.ts. A tensor's data is rows of dims[0]
 * values, each row a whole number of blocks.
 *
 * Bounds: every count and length is checked against the bytes that remain before anything is
 * allocated for it, so a hostile header costs at most about its own size. Every failure is a
 * FormatError whose `rule` is one of GGUF_RULES.
 */
import { ArgumentError, FormatError } from '../errors.js';
import type { ByteSource } from '../io/byte-source.js';
import { GGUF_DEQUANTIZABLE, dequantizeBlocks } from './gguf-quants.js';

export { GGUF_DEQUANTIZABLE, dequantizeBlocks };

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml's GGML_MAX_DIMS. */
export const GGUF_MAX_DIMS = 4;
/** ggml's GGML_MAX_NAME (64) counts the NUL; names are at most 63 bytes. */
export const GGUF_MAX_NAME_BYTES = 63;

/** Stable `rule` names, roughly in the order the reader applies them. */
export const GGUF_RULES = [
  'gguf_bad_magic',
  'gguf_unsupported_version',
  'gguf_truncated',
  'gguf_count_too_large',
  'gguf_string_too_long',
  'gguf_bad_utf8',
  'gguf_unknown_value_type',
  'gguf_nested_array',
  'gguf_bad_bool',
  'gguf_duplicate_key',
  'gguf_bad_alignment',
  'gguf_name_too_long',
  'gguf_duplicate_tensor',
  'gguf_bad_rank',
  'gguf_dims_overflow',
  'gguf_unknown_type',
  'gguf_block_mismatch',
  'gguf_offset_misaligned',
  'gguf_tensors_overlap',
  'gguf_offset_mismatch',
  'gguf_data_past_end',
  'gguf_unsupported_type',
  'gguf_tensor_too_large',
] as const;
export type GgufRule = (typeof GGUF_RULES)[number];

/** Metadata value types, by their number in the file. */
export const GGUF_VALUE_TYPES = [
  'u8',
  'i8',
  'u16',
  'i16',
  'u32',
  'i32',
  'f32',
  'bool',
  'string',
  'array',
  'u64',
  'i64',
  'f64',
] as const;
export type GgufValueType = (typeof GGUF_VALUE_TYPES)[number];
export type GgufItemType = Exclude<GgufValueType, 'array'>;

export type GgufArrayItems =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | BigUint64Array
  | BigInt64Array
  | Float64Array
  | readonly boolean[]
  | readonly string[];

export type GgufValue =
  | { type: 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'f64'; value: number }
  | { type: 'u64' | 'i64'; value: bigint }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'array'; itemType: GgufItemType; value: GgufArrayItems };

/** A ggml tensor type: `blockSize` elements take `typeSize` bytes. */
export interface GgmlType {
  readonly id: number;
  readonly name: string;
  readonly blockSize: number;
  readonly typeSize: number;
}

/** The ggml types whose block layout knobs knows (ggml.c type_traits), so their sizes are checked. */
const TYPE_LIST: readonly GgmlType[] = [
  { id: 0, name: 'F32', blockSize: 1, typeSize: 4 },
  { id: 1, name: 'F16', blockSize: 1, typeSize: 2 },
  { id: 2, name: 'Q4_0', blockSize: 32, typeSize: 18 },
  { id: 3, name: 'Q4_1', blockSize: 32, typeSize: 20 },
  { id: 6, name: 'Q5_0', blockSize: 32, typeSize: 22 },
  { id: 7, name: 'Q5_1', blockSize: 32, typeSize: 24 },
  { id: 8, name: 'Q8_0', blockSize: 32, typeSize: 34 },
  { id: 9, name: 'Q8_1', blockSize: 32, typeSize: 36 },
  { id: 10, name: 'Q2_K', blockSize: 256, typeSize: 84 },
  { id: 11, name: 'Q3_K', blockSize: 256, typeSize: 110 },
  { id: 12, name: 'Q4_K', blockSize: 256, typeSize: 144 },
  { id: 13, name: 'Q5_K', blockSize: 256, typeSize: 176 },
  { id: 14, name: 'Q6_K', blockSize: 256, typeSize: 210 },
  { id: 15, name: 'Q8_K', blockSize: 256, typeSize: 292 },
  { id: 24, name: 'I8', blockSize: 1, typeSize: 1 },
  { id: 25, name: 'I16', blockSize: 1, typeSize: 2 },
  { id: 26, name: 'I32', blockSize: 1, typeSize: 4 },
  { id: 27, name: 'I64', blockSize: 1, typeSize: 8 },
  { id: 28, name: 'F64', blockSize: 1, typeSize: 8 },
  { id: 30, name: 'BF16', blockSize: 1, typeSize: 2 },
];
export const GGML_TYPES: ReadonlyMap<number, GgmlType> = new Map(TYPE_LIST.map((t) => [t.id, t]));
export const GGML_TYPE = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, Q4_K: 12, Q5_K: 13, Q6_K: 14, BF16: 30 } as const;

export interface GgufTensorInfo {
  readonly name: string;
  /** ggml order: dims[0] varies fastest (the last axis of the row-major `shape`). */
  readonly dims: readonly number[];
  /** Row-major shape, the reverse of `dims`. */
  readonly shape: readonly number[];
  readonly type: GgmlType;
  /** From the start of the data section. */
  readonly offset: number;
  readonly elements: number;
  readonly byteLength: number;
}

export interface GgufFile {
  readonly version: number;
  readonly alignment: number;
  readonly metadata: ReadonlyMap<string, GgufValue>;
  readonly tensors: readonly GgufTensorInfo[];
  /** Absolute file offset of the data section. */
  readonly dataOffset: number;
}

/** The fewest bytes a key/value can take: an empty key (8), the type (4), a one-byte value. */
const MIN_KV_BYTES = 13;
/** The fewest bytes a tensor info can take: an empty name (8), n_dims (4), type (4), offset (8). */
const MIN_TENSOR_INFO_BYTES = 24;
/** Bytes of each fixed-size item type; strings take at least 8. */
const ITEM_BYTES: Readonly<Record<GgufItemType, number>> = {
  u8: 1,
  i8: 1,
  u16: 2,
  i16: 2,
  u32: 4,
  i32: 4,
  f32: 4,
  bool: 1,
  string: 8,
  u64: 8,
  i64: 8,
  f64: 8,
};
/** How much the reader asks its ByteSource for at a time while scanning the header. */
const WINDOW = 1 << 16;
const utf8 = new TextDecoder('utf-8', { fatal: true });

function fail(source: ByteSource, rule: GgufRule, message: string, details: Record<string, unknown> = {}): never {
  throw new FormatError(rule, `${source.name}: ${message}`, { path: source.name, ...details });
}

/** Reads the header sequentially through a window onto the ByteSource. */
class Cursor {
  pos = 0;
  private buf: Uint8Array = new Uint8Array(0);
  private view = new DataView(this.buf.buffer);
  private bufStart = 0;
  constructor(readonly source: ByteSource) {}

  get remaining(): number {
    return this.source.size - this.pos;
  }

  /** Makes the next `n` bytes readable; `what` names them if the file ends first. */
  async need(n: number, what: string): Promise<void> {
    if (n > this.remaining) {
      fail(
        this.source,
        'gguf_truncated',
        `the file ends at byte ${this.source.size} inside ${what} (${n} bytes needed at offset ${this.pos}); it is truncated`,
        { offset: this.pos, section: what },
      );
    }
    if (this.pos >= this.bufStart && this.pos + n <= this.bufStart + this.buf.byteLength) return;
    const length = Math.min(Math.max(n, WINDOW), this.remaining);
    this.buf = await this.source.read(this.pos, length);
    this.bufStart = this.pos;
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
  }

  private at(n: number): number {
    const i = this.pos - this.bufStart;
    this.pos += n;
    return i;
  }
  u8(): number {
    return this.view.getUint8(this.at(1));
  }
  i8(): number {
    return this.view.getInt8(this.at(1));
  }
  u16(): number {
    return this.view.getUint16(this.at(2), true);
  }
  i16(): number {
    return this.view.getInt16(this.at(2), true);
  }
  u32(): number {
    return this.view.getUint32(this.at(4), true);
  }
  i32(): number {
    return this.view.getInt32(this.at(4), true);
  }
  f32(): number {
    return this.view.getFloat32(this.at(4), true);
  }
  u64(): bigint {
    return this.view.getBigUint64(this.at(8), true);
  }
  i64(): bigint {
    return this.view.getBigInt64(this.at(8), true);
  }
  f64(): number {
    return this.view.getFloat64(this.at(8), true);
  }
  bytes(n: number): Uint8Array {
    const i = this.at(n);
    return this.buf.subarray(i, i + n);
  }

  /** A u64 count of things each at least `minBytes` long, refused if the rest of the file cannot hold them. */
  async count(what: string, minBytes: number): Promise<number> {
    await this.need(8, what);
    const n = this.u64();
    const room = BigInt(Math.floor(this.remaining / minBytes));
    if (n > room) {
      fail(
        this.source,
        'gguf_count_too_large',
        `${what} is ${n}, but the ${this.remaining} bytes left in the file hold at most ${room}; the file is corrupt or truncated`,
        { section: what, count: n.toString(), remaining: this.remaining },
      );
    }
    return Number(n);
  }

  async string(what: string): Promise<string> {
    await this.need(8, `the length of ${what}`);
    const n = this.u64();
    if (n > BigInt(this.remaining)) {
      fail(
        this.source,
        'gguf_string_too_long',
        `${what} claims ${n} bytes, but only ${this.remaining} remain in the file`,
        { section: what, length: n.toString(), remaining: this.remaining },
      );
    }
    const length = Number(n);
    await this.need(length, what);
    const bytes = this.bytes(length);
    try {
      return utf8.decode(bytes);
    } catch {
      return fail(this.source, 'gguf_bad_utf8', `${what} at offset ${this.pos - length} is not valid UTF-8`, {
        section: what,
        offset: this.pos - length,
      });
    }
  }
}

function valueTypeOf(cursor: Cursor, id: number, what: string): GgufValueType {
  const type = GGUF_VALUE_TYPES[id];
  if (type === undefined) {
    fail(cursor.source, 'gguf_unknown_value_type', `${what} has value type ${id}; GGUF defines 0 to 12`, {
      section: what,
      valueType: id,
    });
  }
  return type;
}

async function readScalar(cursor: Cursor, type: GgufItemType, what: string): Promise<GgufValue> {
  if (type === 'string') return { type, value: await cursor.string(what) };
  await cursor.need(ITEM_BYTES[type], what);
  switch (type) {
    case 'u8':
      return { type, value: cursor.u8() };
    case 'i8':
      return { type, value: cursor.i8() };
    case 'u16':
      return { type, value: cursor.u16() };
    case 'i16':
      return { type, value: cursor.i16() };
    case 'u32':
      return { type, value: cursor.u32() };
    case 'i32':
      return { type, value: cursor.i32() };
    case 'f32':
      return { type, value: cursor.f32() };
    case 'f64':
      return { type, value: cursor.f64() };
    case 'u64':
      return { type, value: cursor.u64() };
    case 'i64':
      return { type, value: cursor.i64() };
    case 'bool':
      return { type, value: readBool(cursor, what) };
  }
}

function readBool(cursor: Cursor, what: string): boolean {
  const b = cursor.u8();
  if (b > 1)
    fail(
      cursor.source,
      'gguf_bad_bool',
      `${what} is a bool of byte value ${b} at offset ${cursor.pos - 1}; it must be 0 or 1`,
      { section: what, offset: cursor.pos - 1 },
    );
  return b === 1;
}

/** Copies `n` fixed-size little-endian items into a fresh typed array (aligned, owned). */
function typedItems(type: Exclude<GgufItemType, 'string' | 'bool'>, bytes: Uint8Array, n: number): GgufArrayItems {
  const copy = bytes.slice().buffer;
  switch (type) {
    case 'u8':
      return new Uint8Array(copy, 0, n);
    case 'i8':
      return new Int8Array(copy, 0, n);
    case 'u16':
      return new Uint16Array(copy, 0, n);
    case 'i16':
      return new Int16Array(copy, 0, n);
    case 'u32':
      return new Uint32Array(copy, 0, n);
    case 'i32':
      return new Int32Array(copy, 0, n);
    case 'f32':
      return new Float32Array(copy, 0, n);
    case 'u64':
      return new BigUint64Array(copy, 0, n);
    case 'i64':
      return new BigInt64Array(copy, 0, n);
    case 'f64':
      return new Float64Array(copy, 0, n);
  }
}

async function readArray(cursor: Cursor, what: string): Promise<GgufValue> {
  await cursor.need(4, `the item type of ${what}`);
  const itemType = valueTypeOf(cursor, cursor.u32(), what);
  if (itemType === 'array')
    fail(
      cursor.source,
      'gguf_nested_array',
      `${what} is an array of arrays, which GGUF readers (ggml's gguf.cpp) refuse`,
      { section: what },
    );
  const n = await cursor.count(`the length of ${what}`, ITEM_BYTES[itemType]);
  if (itemType === 'string') {
    const items: string[] = [];
    for (let i = 0; i < n; i++) items.push(await cursor.string(`${what}[${i}]`));
    return { type: 'array', itemType, value: items };
  }
  if (itemType === 'bool') {
    await cursor.need(n, what);
    const items: boolean[] = [];
    for (let i = 0; i < n; i++) items.push(readBool(cursor, `${what}[${i}]`));
    return { type: 'array', itemType, value: items };
  }
  const byteLength = n * ITEM_BYTES[itemType];
  await cursor.need(byteLength, what);
  return { type: 'array', itemType, value: typedItems(itemType, cursor.bytes(byteLength), n) };
}

function readAlignment(source: ByteSource, value: GgufValue | undefined): number {
  if (value === undefined) return GGUF_DEFAULT_ALIGNMENT;
  if (value.type !== 'u32' || value.value === 0 || (value.value & (value.value - 1)) !== 0) {
    const shown = value.type === 'array' ? 'an array' : `${value.type} ${String(value.value)}`;
    fail(source, 'gguf_bad_alignment', `general.alignment is ${shown}; it must be a u32 power of two`, {
      key: 'general.alignment',
    });
  }
  return value.value;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

async function readTensorInfo(
  cursor: Cursor,
  index: number,
  alignment: number,
  expectedOffset: number,
): Promise<GgufTensorInfo> {
  const source = cursor.source;
  const name = await cursor.string(`the name of tensor ${index}`);
  const nameBytes = Buffer.byteLength(name);
  if (nameBytes > GGUF_MAX_NAME_BYTES) {
    fail(
      source,
      'gguf_name_too_long',
      `tensor ${index}'s name is ${nameBytes} bytes; ggml allows at most ${GGUF_MAX_NAME_BYTES}`,
      { tensor: name.slice(0, 80) },
    );
  }
  const what = `tensor '${name}'`;
  await cursor.need(4, `the n_dims of ${what}`);
  const nDims = cursor.u32();
  if (nDims > GGUF_MAX_DIMS)
    fail(source, 'gguf_bad_rank', `${what} has ${nDims} dimensions; ggml allows at most ${GGUF_MAX_DIMS}`, {
      tensor: name,
      nDims,
    });
  await cursor.need(8 * nDims, `the dims of ${what}`);
  const big: bigint[] = [];
  for (let d = 0; d < nDims; d++) big.push(cursor.u64());
  const product = big.reduce((a, b) => a * b, 1n);
  if (product > MAX_SAFE || big.some((d) => d > MAX_SAFE)) {
    fail(
      source,
      'gguf_dims_overflow',
      `${what} has dims [${big.join(', ')}], whose product exceeds 2^53 − 1 elements`,
      { tensor: name, dims: big.map(String) },
    );
  }
  const dims = big.map(Number);
  const elements = Number(product);
  await cursor.need(4, `the type of ${what}`);
  const typeId = cursor.u32();
  const type = GGML_TYPES.get(typeId);
  if (type === undefined) {
    fail(
      source,
      'gguf_unknown_type',
      `${what} has ggml type ${typeId}, which knobs does not know; known: ${TYPE_LIST.map((t) => `${t.name} (${t.id})`).join(', ')}`,
      { tensor: name, type: typeId },
    );
  }
  if ((dims[0] ?? 1) % type.blockSize !== 0) {
    fail(
      source,
      'gguf_block_mismatch',
      `${what} is ${type.name}, whose blocks hold ${type.blockSize} elements, but its first ggml dim is ${dims[0]}`,
      { tensor: name, type: type.name, dims },
    );
  }
  const bigBytes = (product / BigInt(type.blockSize)) * BigInt(type.typeSize);
  if (bigBytes > MAX_SAFE) {
    fail(
      source,
      'gguf_dims_overflow',
      `${what} (${type.name}, dims [${dims.join(', ')}]) would take ${bigBytes} bytes, more than 2^53 − 1`,
      { tensor: name, dims },
    );
  }
  const byteLength = Number(bigBytes);
  await cursor.need(8, `the offset of ${what}`);
  const raw = cursor.u64();
  if (raw % BigInt(alignment) !== 0n) {
    fail(
      source,
      'gguf_offset_misaligned',
      `${what} has data offset ${raw}, not a multiple of the alignment ${alignment}`,
      { tensor: name, offset: raw.toString(), alignment },
    );
  }
  if (raw < BigInt(expectedOffset)) {
    fail(
      source,
      'gguf_tensors_overlap',
      `${what} has data offset ${raw}, inside the previous tensor's data (which ends, padded, at ${expectedOffset})`,
      { tensor: name, offset: raw.toString(), expected: expectedOffset },
    );
  }
  if (raw !== BigInt(expectedOffset)) {
    fail(
      source,
      'gguf_offset_mismatch',
      `${what} has data offset ${raw}; GGUF places tensors back to back, so it must be ${expectedOffset}`,
      { tensor: name, offset: raw.toString(), expected: expectedOffset },
    );
  }
  return { name, dims, shape: [...dims].reverse(), type, offset: expectedOffset, elements, byteLength };
}

/** Reads and validates a GGUF header (metadata and tensor infos); tensor data stays in the source. */
export async function readGguf(source: ByteSource): Promise<GgufFile> {
  const cursor = new Cursor(source);
  await cursor.need(4, 'the magic');
  const magic = cursor.u32();
  if (magic !== GGUF_MAGIC)
    fail(
      source,
      'gguf_bad_magic',
      `it does not start with "GGUF" (first bytes 0x${magic.toString(16).padStart(8, '0')} as a little-endian u32); it is not a GGUF file`,
      { magic },
    );
  await cursor.need(4, 'the version');
  const version = cursor.u32();
  if (version !== 2 && version !== 3) {
    fail(source, 'gguf_unsupported_version', `GGUF version ${version}; knobs reads versions 2 and 3 (little-endian)`, {
      version,
    });
  }
  const nTensors = await cursor.count('the tensor count', MIN_TENSOR_INFO_BYTES);
  const nKv = await cursor.count('the key/value count', MIN_KV_BYTES);
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < nKv; i++) {
    const key = await cursor.string(`key ${i}`);
    if (metadata.has(key)) fail(source, 'gguf_duplicate_key', `key '${key}' appears twice in the metadata`, { key });
    await cursor.need(4, `the value type of '${key}'`);
    const type = valueTypeOf(cursor, cursor.u32(), `key '${key}'`);
    metadata.set(
      key,
      type === 'array' ? await readArray(cursor, `key '${key}'`) : await readScalar(cursor, type, `key '${key}'`),
    );
  }
  const alignment = readAlignment(source, metadata.get('general.alignment'));
  const tensors: GgufTensorInfo[] = [];
  const names = new Set<string>();
  let expected = 0;
  for (let i = 0; i < nTensors; i++) {
    const info = await readTensorInfo(cursor, i, alignment, expected);
    if (names.has(info.name))
      fail(source, 'gguf_duplicate_tensor', `tensor '${info.name}' appears twice`, { tensor: info.name });
    names.add(info.name);
    tensors.push(info);
    expected = info.offset + padTo(info.byteLength, alignment);
  }
  const dataOffset = padTo(cursor.pos, alignment);
  for (const t of tensors) {
    const end = dataOffset + t.offset + t.byteLength;
    if (end > source.size) {
      fail(
        source,
        'gguf_data_past_end',
        `tensor '${t.name}' (${t.type.name}, ${t.byteLength} bytes) ends at byte ${end}, past the end of the file (${source.size} bytes); the file is truncated`,
        { tensor: t.name, end, size: source.size },
      );
    }
  }
  return { version, alignment, metadata, tensors, dataOffset };
}

export function padTo(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

/** V8's limit on a typed array's length. */
const MAX_DECODED_ELEMENTS = 2 ** 32;

function findTensor(source: ByteSource, file: GgufFile, name: string): GgufTensorInfo {
  const info = file.tensors.find((t) => t.name === name);
  if (info === undefined)
    throw new ArgumentError(`${source.name}: has no tensor '${name}'`, { path: source.name, tensor: name });
  if (!GGUF_DEQUANTIZABLE.includes(info.type.name)) {
    fail(
      source,
      'gguf_unsupported_type',
      `tensor '${name}' is ${info.type.name}; knobs turns ${GGUF_DEQUANTIZABLE.join(', ')} into values`,
      { tensor: name, type: info.type.name, supported: GGUF_DEQUANTIZABLE },
    );
  }
  return info;
}

/** A tensor's rows: a row is dims[0] values (the last axis of `shape`), a whole number of blocks. */
export function ggufRows(info: GgufTensorInfo): { rows: number; rowLength: number; rowBytes: number } {
  const rowLength = info.dims[0] ?? 1;
  const rows = rowLength === 0 ? 0 : info.elements / rowLength;
  return { rows, rowLength, rowBytes: (rowLength / info.type.blockSize) * info.type.typeSize };
}

/** Reads one tensor's data and returns its values as f32 (the types in GGUF_DEQUANTIZABLE). */
export async function readGgufTensor(source: ByteSource, file: GgufFile, name: string): Promise<Float32Array> {
  const info = findTensor(source, file, name);
  if (info.elements > MAX_DECODED_ELEMENTS) {
    fail(
      source,
      'gguf_tensor_too_large',
      `tensor '${name}' has ${info.elements} elements; one tensor is decoded into one Float32Array, which holds at most ${MAX_DECODED_ELEMENTS}; read it a few rows at a time with readGgufRows`,
      { tensor: name, elements: info.elements, limit: MAX_DECODED_ELEMENTS },
    );
  }
  return readGgufRows(source, file, name, 0, ggufRows(info).rows);
}

/**
 * Reads rows [firstRow, firstRow + rowCount) of a tensor and decodes them into `out` from `outOffset`
 * on (a new Float32Array of rowCount × rowLength values when `out` is not given). Only those rows'
 * bytes are read, so a large or quantized tensor can be walked block by block in a fixed buffer.
 */
export async function readGgufRows(
  source: ByteSource,
  file: GgufFile,
  name: string,
  firstRow: number,
  rowCount: number,
  out?: Float32Array,
  outOffset = 0,
): Promise<Float32Array> {
  const info = findTensor(source, file, name);
  const { rows, rowLength, rowBytes } = ggufRows(info);
  if (
    !Number.isSafeInteger(firstRow) ||
    !Number.isSafeInteger(rowCount) ||
    firstRow < 0 ||
    rowCount < 0 ||
    firstRow + rowCount > rows
  )
    throw new ArgumentError(
      `${source.name}: rows ${firstRow}..${firstRow + rowCount} are outside tensor '${name}', which has ${rows} rows of ${rowLength} values`,
      { path: source.name, tensor: name, firstRow, rowCount, rows },
    );
  const target = out ?? new Float32Array(rowCount * rowLength);
  const bytes = await source.read(file.dataOffset + info.offset + firstRow * rowBytes, rowCount * rowBytes);
  dequantizeBlocks(info.type, bytes, target, outOffset);
  return target;
}

/** Decodes `elements` values of a ggml type from `bytes` (exactly the tensor's bytes). */
export function dequantizeGguf(type: GgmlType, bytes: Uint8Array, elements: number): Float32Array {
  const out = new Float32Array(elements);
  dequantizeBlocks(type, bytes.subarray(0, (elements / type.blockSize) * type.typeSize), out);
  return out;
}
