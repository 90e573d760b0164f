/**
 * The safetensors header: validation (reader) and encoding (writer). Pure: no file I/O, so every
 * rule is testable on bytes in memory.
 *
 * Byte layout of a safetensors file (all integers little-endian):
 *
 *   offset 0      u64 N                  length of the header in bytes (at most 100,000,000)
 *   offset 8      N bytes of UTF-8 JSON  one object, starting with `{`:
 *                   "__metadata__": {"key": "value", …}            (optional; strings only)
 *                   "<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
 *                 writers pad it with spaces so that 8 + N is a multiple of 8
 *   offset 8 + N  the byte buffer, to the end of the file: each tensor's elements, row-major,
 *                 little-endian, at [8 + N + begin, 8 + N + end). Sorted by offset, the tensors
 *                 tile the buffer exactly: the first begins at 0, each begins where the previous
 *                 ended, the last ends at the end of the file. Sub-byte dtypes (F4, F6_*) pack
 *                 elements LSB-first and must fill whole bytes.
 *
 * Validation follows the order of the reference reader (huggingface/safetensors,
 * `safetensors/src/tensor.rs`), so a file fails on the same problem there and here, plus stricter
 * checks upstream lacks (duplicate keys, unknown fields, integers above 2^53 − 1, NUL padding).
 * Every failure is a FormatError whose `rule` is one of SAFETENSORS_RULES.
 */
import type { DType } from '../dtype.js';
import { ArgumentError, FormatError } from '../errors.js';
import { JsonNumber, type JsonObject, JsonParseError, type JsonValue, clip, parseStrictJson } from './strict-json.js';

/** Upstream's dtypes, in upstream's enum order (the writer sorts by it, largest alignment first). */
export const SAFETENSORS_DTYPES = [
  'BOOL', 'F4', 'F6_E2M3', 'F6_E3M2', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'F8_E8M0', 'F8_E4M3FNUZ',
  'F8_E5M2FNUZ', 'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'C64', 'F64', 'I64', 'U64',
] as const;
export type SafetensorsDType = (typeof SAFETENSORS_DTYPES)[number];

/** Bits per element. */
export const SAFETENSORS_DTYPE_BITS: Readonly<Record<SafetensorsDType, number>> = {
  BOOL: 8, F4: 4, F6_E2M3: 6, F6_E3M2: 6, U8: 8, I8: 8, F8_E5M2: 8, F8_E4M3: 8, F8_E8M0: 8,
  F8_E4M3FNUZ: 8, F8_E5M2FNUZ: 8, I16: 16, U16: 16, F16: 16, BF16: 16, I32: 32, U32: 32, F32: 32,
  C64: 64, F64: 64, I64: 64, U64: 64,
};

/** The safetensors dtypes knobs materialises as tensors; the rest stay raw bytes. */
const TO_KNOBS: Partial<Record<SafetensorsDType, DType>> = {
  BOOL: 'bool', U8: 'u8', I8: 'i8', F16: 'f16', BF16: 'bf16', I32: 'i32', F32: 'f32', F64: 'f64', I64: 'i64',
};
const FROM_KNOBS: Readonly<Record<DType, SafetensorsDType>> = {
  bool: 'BOOL', u8: 'U8', i8: 'I8', f16: 'F16', bf16: 'BF16', i32: 'I32', f32: 'F32', f64: 'F64', i64: 'I64',
};

export function isSafetensorsDType(name: string): name is SafetensorsDType {
  return (SAFETENSORS_DTYPES as readonly string[]).includes(name);
}

/** The knobs dtype a safetensors dtype loads as, or null when it stays raw bytes. */
export function knobsDTypeOf(dtype: SafetensorsDType): DType | null {
  return TO_KNOBS[dtype] ?? null;
}

export function safetensorsDTypeOf(dtype: DType): SafetensorsDType {
  return FROM_KNOBS[dtype];
}

/** Upstream's limit; a larger header is refused before anything is allocated for it. */
export const MAX_HEADER_LENGTH = 100_000_000;
/** Deepest JSON nesting a valid header needs is 3 (header → entry → shape); allow some slack. */
const MAX_JSON_DEPTH = 16;
/** Upstream computes sizes in usize; on the 64-bit machines it runs on, this is the overflow line. */
const USIZE_LIMIT = 1n << 64n;

/** Stable names of the validation rules, in the order the reader applies them (the per-entry rules, from
 * duplicate_key to integer_too_large, apply entry by entry in header order). */
export const SAFETENSORS_RULES = [
  'file_too_small', 'header_too_large', 'header_out_of_bounds', 'header_not_utf8', 'header_not_object',
  'header_not_json', 'nul_padding', 'duplicate_key', 'header_invalid_entry', 'metadata_not_string',
  'unknown_field', 'unknown_dtype', 'integer_too_large', 'offsets_misaligned', 'shape_overflow',
  'subbyte_misaligned', 'size_mismatch', 'truncated', 'trailing_bytes',
] as const;
export type SafetensorsRule = (typeof SAFETENSORS_RULES)[number];

export interface SafetensorsEntry {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  /** [begin, end) relative to the start of the byte buffer, as the header says. */
  readonly dataOffsets: readonly [number, number];
  readonly byteLength: number;
  readonly numel: number;
}

export interface SafetensorsHeader {
  /** N, the JSON header's length in bytes. */
  readonly headerLength: number;
  /** File offset of the byte buffer (8 + N). */
  readonly dataStart: number;
  readonly fileSize: number;
  /** Tensors in file order (by offset). A Map, so any name — `__proto__` included — is just a key. */
  readonly entries: ReadonlyMap<string, SafetensorsEntry>;
  /** `__metadata__`, or null when the header has none. */
  readonly metadata: ReadonlyMap<string, string> | null;
}

function fail(rule: SafetensorsRule, message: string, details: Record<string, unknown> = {}): never {
  throw new FormatError(rule, `invalid safetensors file (${rule}): ${message}`, details);
}

const REPAIR = 'The file is damaged or was not written by a safetensors writer; re-download or re-export it';

function quote(name: string): string {
  return JSON.stringify(clip(name));
}

function toSafeSize(size: number | bigint, what: string): number {
  const n = typeof size === 'bigint' ? Number(size) : size;
  if (!Number.isSafeInteger(n) || n < 0 || (typeof size === 'bigint' && BigInt(n) !== size)) {
    throw new ArgumentError(`${what} must be a non-negative integer below 2^53, got ${String(size)}`);
  }
  return n;
}

/**
 * Checks the 8-byte length prefix against the file size and returns N. `prefix` holds the file's
 * first bytes (at least 8 when the file has them).
 */
export function readHeaderLength(prefix: Uint8Array, fileSize: number | bigint): number {
  const size = toSafeSize(fileSize, 'fileSize');
  if (size < 8) {
    fail('file_too_small', `the file is ${size} bytes; a safetensors file starts with an 8-byte header length. ${REPAIR}`, { fileSize: size });
  }
  if (prefix.byteLength < 8) throw new ArgumentError('readHeaderLength needs the first 8 bytes of the file');
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_LENGTH)) {
    fail('header_too_large', `the header length field says ${n} bytes, over the limit of ${MAX_HEADER_LENGTH}; this is not a safetensors file or its first 8 bytes are damaged`, { headerLength: n.toString(), limit: MAX_HEADER_LENGTH });
  }
  const length = Number(n);
  if (8 + length > size) {
    fail('header_out_of_bounds', `the header length field says ${length} bytes, but the file has only ${size - 8} bytes after it. ${REPAIR}`, { headerLength: length, fileSize: size });
  }
  return length;
}

/**
 * Validates a whole header. `bytes` holds the file's first bytes: at least min(fileSize, 8 + N)
 * of them (more is fine, e.g. the whole file). Throws FormatError naming the first rule broken.
 */
export function parseSafetensorsHeader(bytes: Uint8Array, fileSize: number | bigint): SafetensorsHeader {
  const size = toSafeSize(fileSize, 'fileSize');
  if (bytes.byteLength > size) throw new ArgumentError(`parseSafetensorsHeader: ${bytes.byteLength} bytes given for a file of ${size}`);
  const headerLength = readHeaderLength(bytes, size);
  const dataStart = 8 + headerLength;
  if (bytes.byteLength < dataStart) {
    throw new ArgumentError(`parseSafetensorsHeader needs the first ${dataStart} bytes of the file, got ${bytes.byteLength}`);
  }
  const root = parseJsonHeader(bytes.subarray(8, dataStart));
  const declared = readEntries(root);
  const { entries, bufferEnd } = checkLayout(declared.entries);
  const metadata = declared.metadata;
  const expected = dataStart + bufferEnd;
  if (expected > size) {
    fail('truncated', `the tensors end at byte ${expected} but the file is ${size} bytes (${expected - size} missing); the file was cut short — download or copy it again`, { expectedSize: expected, fileSize: size });
  }
  if (expected < size) {
    fail('trailing_bytes', `the tensors end at byte ${expected} but the file is ${size} bytes (${size - expected} extra bytes after the last tensor). ${REPAIR}`, { expectedSize: expected, fileSize: size });
  }
  return { headerLength, dataStart, fileSize: size, entries: new Map(entries.map((e) => [e.name, e])), metadata };
}

// ---- header text → JSON ----------------------------------------------------------------------

// ignoreBOM keeps a leading byte-order mark in the text, so it fails the `{` check as upstream does.
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function parseJsonHeader(headerBytes: Uint8Array): JsonObject {
  let text: string;
  try {
    text = UTF8.decode(headerBytes);
  } catch {
    fail('header_not_utf8', `the ${headerBytes.byteLength}-byte header is not valid UTF-8. ${REPAIR}`);
  }
  if (!text.startsWith('{')) {
    const first = headerBytes.byteLength === 0 ? 'nothing' : `byte 0x${headerBytes[0]!.toString(16).padStart(2, '0')}`;
    fail('header_not_object', `the header must be a JSON object starting with '{' but starts with ${first}. ${REPAIR}`);
  }
  try {
    return parseStrictJson(text, MAX_JSON_DEPTH) as JsonObject;
  } catch (err) {
    if (!(err instanceof JsonParseError)) throw err;
    if (err.problem === 'duplicate_key') {
      fail('duplicate_key', `${err.message}; JSON readers disagree on which copy wins, so the file is refused. ${REPAIR}`, { position: err.position });
    }
    if (err.problem === 'too_deep') {
      fail('header_invalid_entry', `${err.message}; a safetensors header nests 3 levels at most. ${REPAIR}`, { position: err.position });
    }
    if (err.problem === 'trailing_text' && text.slice(err.position).includes('\0')) {
      fail('nul_padding', `the header is padded with NUL bytes after the JSON (from character ${err.position}); safetensors pads with spaces. ${REPAIR}`, { position: err.position });
    }
    fail('header_not_json', `the header is not valid JSON: ${err.message}. ${REPAIR}`, { position: err.position });
  }
}

// ---- JSON → entries --------------------------------------------------------------------------

const ENTRY_FIELDS = ['dtype', 'shape', 'data_offsets'] as const;
const NON_NEGATIVE_INTEGER = /^(?:0|[1-9][0-9]*)$/;

/** An entry as the header states it, before its layout is checked. */
interface DeclaredEntry {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  readonly begin: number;
  readonly end: number;
}

function readEntries(root: JsonObject): { entries: DeclaredEntry[]; metadata: Map<string, string> | null } {
  let metadata: Map<string, string> | null = null;
  const entries: DeclaredEntry[] = [];
  for (const [name, value] of root) {
    if (name === '__metadata__') metadata = readMetadata(value);
    else entries.push(readEntry(name, value));
  }
  return { entries, metadata };
}

function readMetadata(value: JsonValue): Map<string, string> | null {
  if (value === null) return null; // upstream reads `null` as "no metadata"
  if (!(value instanceof Map)) {
    fail('header_invalid_entry', `"__metadata__" must be an object of strings, got ${describe(value)}. ${REPAIR}`);
  }
  for (const [key, v] of value) {
    if (typeof v !== 'string') {
      fail('metadata_not_string', `"__metadata__" value for key ${quote(key)} is ${describe(v)}; metadata values must be strings (encode numbers and lists as text). ${REPAIR}`, { key });
    }
  }
  return value as Map<string, string>;
}

function readEntry(name: string, value: JsonValue): DeclaredEntry {
  // Built only when a message needs it: headers can hold hundreds of thousands of entries.
  const where = () => `tensor ${quote(name)}`;
  if (!(value instanceof Map)) {
    fail('header_invalid_entry', `${where()} must be an object with dtype, shape and data_offsets, got ${describe(value)}. ${REPAIR}`, { tensor: name });
  }
  for (const key of value.keys()) {
    if (!(ENTRY_FIELDS as readonly string[]).includes(key)) {
      fail('unknown_field', `${where()} has an unknown field ${quote(key)}; an entry has exactly dtype, shape and data_offsets. ${REPAIR}`, { tensor: name, field: key });
    }
  }
  for (const key of ENTRY_FIELDS) {
    if (!value.has(key)) fail('header_invalid_entry', `${where()} has no "${key}" field. ${REPAIR}`, { tensor: name, field: key });
  }
  const dtype = value.get('dtype')!;
  if (typeof dtype !== 'string') {
    fail('header_invalid_entry', `${where()}: dtype must be a string, got ${describe(dtype)}. ${REPAIR}`, { tensor: name });
  }
  if (!isSafetensorsDType(dtype)) {
    fail('unknown_dtype', `${where()} has unknown dtype ${quote(dtype)}; known dtypes are ${SAFETENSORS_DTYPES.join(', ')}. The file may come from a newer safetensors version.`, { tensor: name, dtype });
  }
  const shape = readIntegers(where, name, 'shape', value.get('shape')!);
  const offsets = readIntegers(where, name, 'data_offsets', value.get('data_offsets')!);
  if (offsets.length !== 2) {
    fail('header_invalid_entry', `${where()}: data_offsets must be [begin, end], got ${offsets.length} numbers. ${REPAIR}`, { tensor: name });
  }
  const [begin, end] = offsets as [number, number];
  return { name, dtype, shape, begin, end };
}

function readIntegers(where: () => string, name: string, field: string, value: JsonValue): number[] {
  if (!Array.isArray(value)) {
    fail('header_invalid_entry', `${where()}: ${field} must be a list of integers, got ${describe(value)}. ${REPAIR}`, { tensor: name, field });
  }
  return value.map((v) => {
    if (!(v instanceof JsonNumber) || !NON_NEGATIVE_INTEGER.test(v.text)) {
      fail('header_invalid_entry', `${where()}: ${field} must hold non-negative integers written without sign, fraction or exponent, got ${describe(v)}. ${REPAIR}`, { tensor: name, field });
    }
    // Compared as text-derived BigInt: parsing to a double first would round 2^53 + 1 to 2^53.
    if (BigInt(v.text) > BigInt(Number.MAX_SAFE_INTEGER)) {
      fail('integer_too_large', `${where()}: ${field} holds ${clip(v.text, 40)}, above 2^53 − 1, which cannot be represented exactly. ${REPAIR}`, { tensor: name, field, value: clip(v.text, 40) });
    }
    return Number(v.text);
  });
}

function describe(v: JsonValue): string {
  if (v === null) return 'null';
  if (v instanceof Map) return 'an object';
  if (Array.isArray(v)) return 'a list';
  if (v instanceof JsonNumber) return `the number ${clip(v.text, 40)}`;
  if (typeof v === 'string') return `the string ${quote(v)}`;
  return String(v);
}

// ---- layout ----------------------------------------------------------------------------------

/**
 * Upstream's per-tensor checks, in its order: offsets tile the buffer, shape × bits fits in
 * 64 bits, sub-byte tensors fill whole bytes, byte range = size. Returns the entries in offset
 * order and the buffer's length.
 */
function checkLayout(declared: DeclaredEntry[]): { entries: SafetensorsEntry[]; bufferEnd: number } {
  // Stable sort by [begin, end], as upstream orders entries before validating them.
  const sorted = [...declared].sort((a, b) => a.begin - b.begin || a.end - b.end);
  const entries: SafetensorsEntry[] = [];
  let position = 0;
  for (const e of sorted) {
    const { begin, end } = e;
    const where = () => `tensor ${quote(e.name)} (data_offsets [${begin}, ${end}])`;
    if (begin !== position || end < begin) {
      const problem = end < begin ? 'reversed' : begin > position ? 'gap' : 'overlap';
      const what = problem === 'reversed'
        ? 'ends before it begins'
        : problem === 'gap'
          ? `leaves a gap of ${begin - position} bytes after the previous tensor, which ended at ${position}`
          : `overlaps the previous tensor, which ended at ${position}`;
      fail('offsets_misaligned', `${where()} ${what}; tensors must tile the byte buffer in order with no gaps or overlaps. ${REPAIR}`, { tensor: e.name, dataOffsets: [begin, end], expectedBegin: position, problem });
    }
    position = end;
    let elements = 1n;
    for (const d of e.shape) {
      elements *= BigInt(d);
      if (elements >= USIZE_LIMIT) break;
    }
    const bits = elements * BigInt(SAFETENSORS_DTYPE_BITS[e.dtype]);
    if (elements >= USIZE_LIMIT || bits >= USIZE_LIMIT) {
      fail('shape_overflow', `${where()}: shape [${e.shape.join(', ')}] of ${e.dtype} overflows 64 bits. ${REPAIR}`, { tensor: e.name, shape: e.shape });
    }
    if (bits % 8n !== 0n) {
      fail('subbyte_misaligned', `${where()}: ${elements} elements of ${e.dtype} are ${bits} bits, not a whole number of bytes. ${REPAIR}`, { tensor: e.name, shape: e.shape, dtype: e.dtype });
    }
    if (BigInt(end - begin) !== bits / 8n) {
      fail('size_mismatch', `${where()} spans ${end - begin} bytes, but shape [${e.shape.join(', ')}] of ${e.dtype} needs ${bits / 8n}. ${REPAIR}`, { tensor: e.name, shape: e.shape, dtype: e.dtype, expectedBytes: (bits / 8n).toString() });
    }
    entries.push({ name: e.name, dtype: e.dtype, shape: e.shape, dataOffsets: [begin, end], byteLength: end - begin, numel: Number(elements) });
  }
  return { entries, bufferEnd: position };
}

// ---- writer side -----------------------------------------------------------------------------

export interface EntryToWrite {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  readonly byteLength: number;
}

const UTF8_ENCODER = new TextEncoder();

/** Upstream's order for names: Rust compares UTF-8 bytes, which differs from UTF-16 code units. */
function compareBytes(x: Uint8Array, y: Uint8Array): number {
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return x.length - y.length;
}

/** The write order: dtype rank descending (largest alignment first), then name. */
export function sortForWriting<T extends EntryToWrite>(entries: readonly T[]): T[] {
  const keyed = entries.map((e) => ({ e, rank: SAFETENSORS_DTYPES.indexOf(e.dtype), utf8: UTF8_ENCODER.encode(e.name) }));
  keyed.sort((a, b) => b.rank - a.rank || compareBytes(a.utf8, b.utf8));
  return keyed.map((k) => k.e);
}

/**
 * The 8-byte length and the space-padded JSON header for entries already in write order, exactly
 * as upstream's serializer lays them out (compact JSON, `__metadata__` first when given).
 */
export function encodeSafetensorsHeader(entries: readonly EntryToWrite[], metadata: ReadonlyMap<string, string> | null): Uint8Array {
  const parts: string[] = [];
  if (metadata) {
    const fields = [...metadata].map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`);
    parts.push(`"__metadata__":{${fields.join(',')}}`);
  }
  let offset = 0;
  for (const e of entries) {
    parts.push(`${JSON.stringify(e.name)}:{"dtype":"${e.dtype}","shape":[${e.shape.join(',')}],"data_offsets":[${offset},${offset + e.byteLength}]}`);
    offset += e.byteLength;
  }
  const json = UTF8_ENCODER.encode(`{${parts.join(',')}}`);
  const padded = Math.ceil(json.byteLength / 8) * 8;
  if (padded > MAX_HEADER_LENGTH) {
    throw new ArgumentError(`the safetensors header would be ${padded} bytes, over the ${MAX_HEADER_LENGTH}-byte limit readers enforce; split the tensors over several files (shards)`);
  }
  const out = new Uint8Array(8 + padded).fill(0x20, 8 + json.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}
