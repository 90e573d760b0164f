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
import { isUtf8 } from 'node:buffer';
import type { DType } from '../dtype.js';
import { ArgumentError, FormatError } from '../errors.js';
import { IndexedMap, IntegerColumn, NumberColumn, StringIndex, StringList } from './compact-tables.js';
import { Ch, JsonParseError, JsonScanner, type ScannedNumber, clip, scratchNumber } from './strict-json.js';

/** Upstream's dtypes, in upstream's enum order (the writer sorts by it, largest alignment first). */
export const SAFETENSORS_DTYPES = [
  'BOOL',
  'F4',
  'F6_E2M3',
  'F6_E3M2',
  'U8',
  'I8',
  'F8_E5M2',
  'F8_E4M3',
  'F8_E8M0',
  'F8_E4M3FNUZ',
  'F8_E5M2FNUZ',
  'I16',
  'U16',
  'F16',
  'BF16',
  'I32',
  'U32',
  'F32',
  'C64',
  'F64',
  'I64',
  'U64',
] as const;
export type SafetensorsDType = (typeof SAFETENSORS_DTYPES)[number];

/** Bits per element. */
export const SAFETENSORS_DTYPE_BITS: Readonly<Record<SafetensorsDType, number>> = {
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  F8_E4M3FNUZ: 8,
  F8_E5M2FNUZ: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
};

/** The safetensors dtypes knobs materialises as tensors; the rest stay raw bytes. */
const TO_KNOBS: Partial<Record<SafetensorsDType, DType>> = {
  BOOL: 'bool',
  U8: 'u8',
  I8: 'i8',
  F16: 'f16',
  BF16: 'bf16',
  I32: 'i32',
  F32: 'f32',
  F64: 'f64',
  I64: 'i64',
};
const FROM_KNOBS: Readonly<Record<DType, SafetensorsDType>> = {
  bool: 'BOOL',
  u8: 'U8',
  i8: 'I8',
  f16: 'F16',
  bf16: 'BF16',
  i32: 'I32',
  f32: 'F32',
  f64: 'F64',
  i64: 'I64',
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
/**
 * 2^53 − 1 has 16 digits: an integer written with more is refused once its digits are counted,
 * before any conversion (no BigInt of a 100-million-digit number).
 */
export const MAX_INTEGER_DIGITS = 16;
/** Errors quote at most this many dimensions of a shape (a valid shape can have 50 million). */
export const MAX_QUOTED_DIMS = 8;
/** Upstream computes sizes in usize; on the 64-bit machines it runs on, this is the overflow line. */
const USIZE_LIMIT = 1n << 64n;

/**
 * Stable names of the validation rules, in the order the reader applies them. The scan-time rules,
 * header_not_json to integer_too_large, apply at the first offending byte in header order; the
 * layout rules, offsets_misaligned on, once the whole header is read, tensor by tensor in offset order.
 */
export const SAFETENSORS_RULES = [
  'file_too_small',
  'header_too_large',
  'header_out_of_bounds',
  'header_not_utf8',
  'header_not_object',
  'header_not_json',
  'nul_padding',
  'duplicate_key',
  'header_invalid_entry',
  'metadata_not_string',
  'unknown_field',
  'unknown_dtype',
  'integer_too_large',
  'offsets_misaligned',
  'shape_overflow',
  'subbyte_misaligned',
  'size_mismatch',
  'truncated',
  'trailing_bytes',
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
  /**
   * Tensors in file order (by offset). A read-only Map, so any name — `__proto__` included — is
   * just a key. Stored compactly: each `get` or iteration step builds a fresh entry object.
   */
  readonly entries: ReadonlyMap<string, SafetensorsEntry>;
  /** `__metadata__` in header order, or null when the header has none. */
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
    fail(
      'file_too_small',
      `the file is ${size} bytes; a safetensors file starts with an 8-byte header length. ${REPAIR}`,
      { fileSize: size },
    );
  }
  if (prefix.byteLength < 8) throw new ArgumentError('readHeaderLength needs the first 8 bytes of the file');
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_LENGTH)) {
    fail(
      'header_too_large',
      `the header length field says ${n} bytes, over the limit of ${MAX_HEADER_LENGTH}; this is not a safetensors file or its first 8 bytes are damaged`,
      { headerLength: n.toString(), limit: MAX_HEADER_LENGTH },
    );
  }
  const length = Number(n);
  if (8 + length > size) {
    fail(
      'header_out_of_bounds',
      `the header length field says ${length} bytes, but the file has only ${size - 8} bytes after it. ${REPAIR}`,
      { headerLength: length, fileSize: size },
    );
  }
  return length;
}

/**
 * Validates a whole header. `bytes` holds the file's first bytes: at least min(fileSize, 8 + N)
 * of them (more is fine, e.g. the whole file). Throws FormatError naming the first rule broken.
 * Memory stays within a small multiple of N whatever the header holds: the JSON is validated
 * as it is scanned (no tree), numbers are judged by their digits before any conversion, and the
 * result keeps shapes and offsets in typed arrays.
 */
export function parseSafetensorsHeader(bytes: Uint8Array, fileSize: number | bigint): SafetensorsHeader {
  const size = toSafeSize(fileSize, 'fileSize');
  if (bytes.byteLength > size)
    throw new ArgumentError(`parseSafetensorsHeader: ${bytes.byteLength} bytes given for a file of ${size}`);
  const headerLength = readHeaderLength(bytes, size);
  const dataStart = 8 + headerLength;
  if (bytes.byteLength < dataStart) {
    throw new ArgumentError(
      `parseSafetensorsHeader needs the first ${dataStart} bytes of the file, got ${bytes.byteLength}`,
    );
  }
  const declared = scanHeader(bytes.subarray(8, dataStart));
  const { order, bufferEnd } = checkLayout(declared);
  const expected = dataStart + bufferEnd;
  if (expected > size) {
    fail(
      'truncated',
      `the tensors end at byte ${expected} but the file is ${size} bytes (${expected - size} missing); the file was cut short — download or copy it again`,
      { expectedSize: expected, fileSize: size },
    );
  }
  if (expected < size) {
    fail(
      'trailing_bytes',
      `the tensors end at byte ${expected} but the file is ${size} bytes (${size - expected} extra bytes after the last tensor). ${REPAIR}`,
      { expectedSize: expected, fileSize: size },
    );
  }
  return {
    headerLength,
    dataStart,
    fileSize: size,
    entries: new IndexedMap(declared.names, (i) => declared.entry(i), order),
    metadata: declared.metadataKeys && new IndexedMap(declared.metadataKeys, (i) => declared.metadataValues.at(i)),
  };
}

// ---- header bytes → declared entries ---------------------------------------------------------

function scanHeader(json: Uint8Array): DeclaredHeader {
  // One pass of a validating decoder that builds no string (a UTF-8 check in C++).
  if (!isUtf8(json)) fail('header_not_utf8', `the ${json.byteLength}-byte header is not valid UTF-8. ${REPAIR}`);
  if (json[0] !== Ch.OpenBrace) {
    // A byte-order mark or leading space fails here too, as upstream's reader refuses them.
    const first = json.byteLength === 0 ? 'nothing' : `byte 0x${json[0]!.toString(16).padStart(2, '0')}`;
    fail('header_not_object', `the header must be a JSON object starting with '{' but starts with ${first}. ${REPAIR}`);
  }
  try {
    return new HeaderReader(json).read();
  } catch (err) {
    if (!(err instanceof JsonParseError)) throw err;
    fail('header_not_json', `the header is not valid JSON: ${err.message}. ${REPAIR}`, { position: err.position });
  }
}

const ENTRY_FIELDS = ['dtype', 'shape', 'data_offsets'] as const;
const MAX_SAFE_DIGITS = String(Number.MAX_SAFE_INTEGER);

// Per tensor, in header order, FIELDS numbers in DeclaredHeader.fields:
const DTYPE = 0,
  SHAPE_START = 1,
  RANK = 2,
  BEGIN = 3,
  END = 4,
  NEEDED = 5,
  FIELDS = 6;
// NEEDED is the byte count the shape needs, Infinity above 2^53 − 1 (no range can match), or:
const OVERFLOW = -1,
  SUBBYTE = -2;

/**
 * product(shape) as upstream's checked multiplication computes it: a double while it stays below
 * 2^53, a BigInt above (from 2^53 to 2^64 there is room for at most 11 factors of 2 or more, so
 * that path is short), and `overflow` from the first product that reaches 2^64 on (upstream's
 * first failed checked_mul; a later 0 does not undo it).
 */
class ElementCounter {
  private small = 1;
  private big: bigint | null = null;
  overflow = false;

  reset(): void {
    this.small = 1;
    this.big = null;
    this.overflow = false;
  }

  multiply(d: number): void {
    if (this.overflow || d === 1) return;
    if (this.big === null) {
      const p = this.small * d;
      // Exact: a product of integers below 2^53 rounds only when it is 2^53 or more.
      if (p <= Number.MAX_SAFE_INTEGER) {
        this.small = p;
        return;
      }
      this.big = BigInt(this.small);
    }
    this.big *= BigInt(d);
    if (this.big >= USIZE_LIMIT) this.overflow = true;
    else if (this.big === 0n) [this.big, this.small] = [null, 0];
  }

  get value(): bigint {
    return this.big ?? BigInt(this.small);
  }

  /** What NEEDED records for elements of `bits` bits. */
  bytesFor(bits: number): number {
    if (this.overflow) return OVERFLOW;
    // Below 2^47 elements, elements × 64 bits is still an exact double.
    if (this.big === null && this.small < 2 ** 47) {
      const total = this.small * bits;
      return total % 8 !== 0 ? SUBBYTE : total / 8;
    }
    const total = this.value * BigInt(bits);
    if (total >= USIZE_LIMIT) return OVERFLOW;
    if (total % 8n !== 0n) return SUBBYTE;
    return total / 8n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(total / 8n) : Infinity;
  }
}

/** What the header declares, kept compactly: names in a StringIndex, numbers in columns. */
class DeclaredHeader {
  readonly names = new StringIndex();
  readonly fields = new NumberColumn();
  /** Every tensor's dimensions, one after another. */
  readonly dims = new IntegerColumn();
  sawMetadata = false;
  metadataKeys: StringIndex | null = null;
  readonly metadataValues = new StringList();
  private readonly counter = new ElementCounter();

  at(i: number, field: number): number {
    return this.fields.at(i * FIELDS + field);
  }

  dtypeOf(i: number): SafetensorsDType {
    return SAFETENSORS_DTYPES[this.at(i, DTYPE)]!;
  }

  /** Exact product(shape) of tensor i (never called for an overflowing shape). */
  elementsOf(i: number): bigint {
    const start = this.at(i, SHAPE_START);
    const rank = this.at(i, RANK);
    this.counter.reset();
    for (let k = 0; k < rank; k++) this.counter.multiply(this.dims.at(start + k));
    return this.counter.value;
  }

  entry(i: number): SafetensorsEntry {
    const start = this.at(i, SHAPE_START);
    const rank = this.at(i, RANK);
    // Sized once: pushing 50 million dimensions would copy the array as it grows.
    const shape = new Array<number>(rank);
    for (let k = 0; k < rank; k++) shape[k] = this.dims.at(start + k);
    const begin = this.at(i, BEGIN);
    const end = this.at(i, END);
    return {
      name: this.names.key(i),
      dtype: this.dtypeOf(i),
      shape,
      dataOffsets: [begin, end],
      byteLength: end - begin,
      numel: Number(this.elementsOf(i)),
    };
  }

  /** At most MAX_QUOTED_DIMS dimensions of tensor i, for messages and error details. */
  quotedShape(i: number): { shape: number[]; rank: number } {
    const start = this.at(i, SHAPE_START);
    const rank = this.at(i, RANK);
    const shape: number[] = [];
    for (let k = 0; k < Math.min(rank, MAX_QUOTED_DIMS); k++) shape.push(this.dims.at(start + k));
    return { shape, rank };
  }

  shapeText(i: number): string {
    const { shape, rank } = this.quotedShape(i);
    return rank > shape.length
      ? `[${shape.join(', ')}, … (${rank.toLocaleString('en-US')} dimensions)]`
      : `[${shape.join(', ')}]`;
  }
}

const isDigit = (c: number) => c >= Ch.Digit0 && c <= Ch.Digit9;

/**
 * Reads the header JSON in one pass, checking each value against what a safetensors header may
 * hold as soon as it is reached: a wrong value fails there, before the rest is read, and nothing
 * is built for a value that is about to be refused. The JSON is already known to be UTF-8 that
 * starts with `{`.
 */
class HeaderReader {
  private readonly s: JsonScanner;
  private readonly out = new DeclaredHeader();
  private readonly num: ScannedNumber = scratchNumber();
  private readonly counter = new ElementCounter();
  /** Byte offset of the key read last. */
  private keyAt = 0;
  /** The current entry's data_offsets and how many there were. */
  private readonly offsets = new Float64Array(2);
  private offsetCount = 0;

  constructor(json: Uint8Array) {
    this.s = new JsonScanner(json);
  }

  read(): DeclaredHeader {
    const s = this.s;
    if (s.enter(Ch.OpenBrace, Ch.CloseBrace)) {
      do this.member();
      while (s.nextElement(Ch.CloseBrace));
    }
    s.skipWhitespace();
    if (!s.atEnd) {
      const at = s.pos;
      if (s.bytes.subarray(at).includes(0)) {
        fail(
          'nul_padding',
          `the header is padded with NUL bytes after the JSON (from byte ${at}); safetensors pads with spaces. ${REPAIR}`,
          { position: at },
        );
      }
      s.fail('unexpected text after the JSON value', at, 'trailing_text');
    }
    return this.out;
  }

  /** Reads `"key":` and the whitespace after it; the cursor is left on the value. */
  private readKey(): string {
    const s = this.s;
    s.skipWhitespace();
    if (s.peek() !== Ch.Quote) s.fail('expected a string key');
    this.keyAt = s.pos;
    const key = s.readString();
    s.expect(Ch.Colon, "':'");
    s.skipWhitespace();
    return key;
  }

  private duplicate(key: string): never {
    fail(
      'duplicate_key',
      `duplicate key ${quote(key)} at byte ${this.keyAt}; JSON readers disagree on which copy wins, so the file is refused. ${REPAIR}`,
      { position: this.keyAt },
    );
  }

  private member(): void {
    const name = this.readKey();
    if (name === '__metadata__') {
      if (this.out.sawMetadata) this.duplicate(name);
      this.out.sawMetadata = true;
      this.metadata();
    } else {
      if (this.out.names.add(name) < 0) this.duplicate(name);
      this.entry(name);
    }
  }

  /**
   * Names the value at the cursor for a message. Literals and numbers are read (so their syntax
   * is checked and a number is quoted by a bounded prefix); strings and containers are named by
   * their first byte and not read at all.
   */
  private describeValue(): string {
    const s = this.s;
    const c = s.peek();
    if (c === Ch.Quote) return 'a string';
    if (c === Ch.OpenBracket) return 'a list';
    if (c === Ch.OpenBrace) return 'an object';
    if (c === Ch.Minus || isDigit(c)) return `the number ${this.numberText(s.scanNumber(this.num))}`;
    return String(s.readLiteral());
  }

  /** The number's text, at most 40 characters of it. */
  private numberText(n: ScannedNumber): string {
    const head = this.s.bytes.subarray(n.start, Math.min(n.end, n.start + 41));
    return clip(String.fromCharCode(...head), 40);
  }

  private metadata(): void {
    const s = this.s;
    if (s.peek() !== Ch.OpenBrace) {
      const got = this.describeValue();
      if (got === 'null') return; // upstream reads `"__metadata__": null` as no metadata
      fail('header_invalid_entry', `"__metadata__" must be an object of strings, got ${got}. ${REPAIR}`);
    }
    const keys = (this.out.metadataKeys = new StringIndex());
    if (!s.enter(Ch.OpenBrace, Ch.CloseBrace)) return;
    do {
      const key = this.readKey();
      if (keys.add(key) < 0) this.duplicate(key);
      if (s.peek() !== Ch.Quote) {
        fail(
          'metadata_not_string',
          `"__metadata__" value for key ${quote(key)} is ${this.describeValue()}; metadata values must be strings (encode numbers and lists as text). ${REPAIR}`,
          { key },
        );
      }
      this.out.metadataValues.push(s.readString());
    } while (s.nextElement(Ch.CloseBrace));
  }

  private entry(name: string): void {
    const s = this.s;
    const out = this.out;
    if (s.peek() !== Ch.OpenBrace) {
      fail(
        'header_invalid_entry',
        `tensor ${quote(name)} must be an object with dtype, shape and data_offsets, got ${this.describeValue()}. ${REPAIR}`,
        { tensor: name },
      );
    }
    let seen = 0; // one bit per ENTRY_FIELDS
    let dtype = 0;
    let shapeStart = 0;
    let rank = 0;
    if (s.enter(Ch.OpenBrace, Ch.CloseBrace)) {
      do {
        const f = this.fieldKey(name);
        if (seen & (1 << f)) this.duplicate(ENTRY_FIELDS[f]!);
        seen |= 1 << f;
        if (f === 0) {
          dtype = this.dtype(name);
        } else if (f === 1) {
          shapeStart = out.dims.length;
          this.counter.reset();
          rank = this.integers(name, 'shape');
        } else if (this.integers(name, 'data_offsets') !== 2) {
          fail(
            'header_invalid_entry',
            `tensor ${quote(name)}: data_offsets must be [begin, end], got ${this.offsetCount} numbers. ${REPAIR}`,
            { tensor: name },
          );
        }
      } while (s.nextElement(Ch.CloseBrace));
    }
    for (let f = 0; f < ENTRY_FIELDS.length; f++) {
      if (!(seen & (1 << f)))
        fail('header_invalid_entry', `tensor ${quote(name)} has no "${ENTRY_FIELDS[f]}" field. ${REPAIR}`, {
          tensor: name,
          field: ENTRY_FIELDS[f],
        });
    }
    const fields = out.fields;
    fields.push(dtype);
    fields.push(shapeStart);
    fields.push(rank);
    fields.push(this.offsets[0]!);
    fields.push(this.offsets[1]!);
    fields.push(this.counter.bytesFor(SAFETENSORS_DTYPE_BITS[SAFETENSORS_DTYPES[dtype]!]));
  }

  /** Reads an entry's `"field":` and returns the field's index in ENTRY_FIELDS. */
  private fieldKey(name: string): number {
    const s = this.s;
    s.skipWhitespace();
    if (s.peek() !== Ch.Quote) s.fail('expected a string key');
    this.keyAt = s.pos;
    let f = s.matchWord(ENTRY_FIELDS);
    if (f < 0) {
      // Spelled with escapes, or not a field at all.
      const field = s.readString();
      f = (ENTRY_FIELDS as readonly string[]).indexOf(field);
      if (f < 0) {
        fail(
          'unknown_field',
          `tensor ${quote(name)} has an unknown field ${quote(field)}; an entry has exactly dtype, shape and data_offsets. ${REPAIR}`,
          { tensor: name, field: clip(field) },
        );
      }
    }
    s.expect(Ch.Colon, "':'");
    s.skipWhitespace();
    return f;
  }

  private dtype(name: string): number {
    const s = this.s;
    if (s.peek() !== Ch.Quote) {
      fail(
        'header_invalid_entry',
        `tensor ${quote(name)}: dtype must be a string, got ${this.describeValue()}. ${REPAIR}`,
        { tensor: name },
      );
    }
    const code = s.matchWord(SAFETENSORS_DTYPES);
    if (code >= 0) return code;
    const dtype = s.readString();
    if (isSafetensorsDType(dtype)) return SAFETENSORS_DTYPES.indexOf(dtype); // spelled with escapes
    fail(
      'unknown_dtype',
      `tensor ${quote(name)} has unknown dtype ${quote(dtype)}; known dtypes are ${SAFETENSORS_DTYPES.join(', ')}. The file may come from a newer safetensors version.`,
      { tensor: name, dtype: clip(dtype) },
    );
  }

  /**
   * Reads a list of plain non-negative integers: a shape's go to `dims` (and the element
   * counter), data_offsets' to `offsets` (more than two fail at the third). Returns the count.
   */
  private integers(name: string, field: 'shape' | 'data_offsets'): number {
    const s = this.s;
    if (s.peek() !== Ch.OpenBracket) {
      fail(
        'header_invalid_entry',
        `tensor ${quote(name)}: ${field} must be a list of integers, got ${this.describeValue()}. ${REPAIR}`,
        { tensor: name, field },
      );
    }
    let count = 0;
    if (s.enter(Ch.OpenBracket, Ch.CloseBracket)) {
      do {
        s.skipWhitespace();
        if (field === 'data_offsets' && count === 2) {
          fail(
            'header_invalid_entry',
            `tensor ${quote(name)}: data_offsets must be [begin, end], got more than 2 numbers. ${REPAIR}`,
            { tensor: name, field },
          );
        }
        const c = s.peek();
        const n = c === Ch.Minus || isDigit(c) ? s.scanNumber(this.num) : null;
        if (!n || n.negative || n.hasFraction || n.hasExponent) {
          const got = n ? `the number ${this.numberText(n)}` : this.describeValue();
          fail(
            'header_invalid_entry',
            `tensor ${quote(name)}: ${field} must hold non-negative integers written without sign, fraction or exponent, got ${got}. ${REPAIR}`,
            { tensor: name, field },
          );
        }
        const v = this.integerValue(n, name, field);
        if (field === 'shape') {
          this.out.dims.push(v);
          this.counter.multiply(v);
        } else {
          this.offsets[count] = v;
        }
        count++;
      } while (s.nextElement(Ch.CloseBracket));
    }
    if (field === 'data_offsets') this.offsetCount = count;
    return count;
  }

  /** The value of a plain integer, refused from its digit count alone when it is too long. */
  private integerValue(n: ScannedNumber, name: string, field: string): number {
    const b = this.s.bytes;
    let tooLarge = n.integerDigits > MAX_INTEGER_DIGITS;
    if (n.integerDigits === MAX_INTEGER_DIGITS) {
      // Same length: compare digit by digit, never through a double (2^53 + 1 would round).
      for (let k = 0; k < MAX_INTEGER_DIGITS; k++) {
        const diff = b[n.start + k]! - MAX_SAFE_DIGITS.charCodeAt(k);
        if (diff !== 0) {
          tooLarge = diff > 0;
          break;
        }
      }
    }
    if (tooLarge) {
      const text = this.numberText(n);
      fail(
        'integer_too_large',
        `tensor ${quote(name)}: ${field} holds ${text} (${n.integerDigits.toLocaleString('en-US')} digits), above 2^53 − 1, which cannot be represented exactly. ${REPAIR}`,
        { tensor: name, field, value: text, digits: n.integerDigits },
      );
    }
    let v = 0;
    for (let p = n.start; p < n.end; p++) v = v * 10 + (b[p]! - Ch.Digit0);
    return v;
  }
}

// ---- layout ----------------------------------------------------------------------------------

/**
 * Entry indices sorted by [begin, end], stably, as upstream orders entries before validating
 * them; null when the header already lists them in that order (writers do).
 */
function offsetOrder(h: DeclaredHeader): Uint32Array | null {
  const n = h.names.size;
  let sorted = true;
  for (let i = 1; i < n && sorted; i++) {
    const before = h.at(i - 1, BEGIN);
    const begin = h.at(i, BEGIN);
    sorted = before < begin || (before === begin && h.at(i - 1, END) <= h.at(i, END));
  }
  if (sorted) return null;
  const begins = new Float64Array(n);
  const ends = new Float64Array(n);
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    begins[i] = h.at(i, BEGIN);
    ends[i] = h.at(i, END);
    order[i] = i;
  }
  return order.sort((a, b) => begins[a]! - begins[b]! || ends[a]! - ends[b]! || a - b);
}

/**
 * Upstream's per-tensor checks, in its order: offsets tile the buffer, shape × bits fits in
 * 64 bits, sub-byte tensors fill whole bytes, byte range = size. Returns the file order and the
 * buffer's length.
 */
function checkLayout(h: DeclaredHeader): { order: Uint32Array | null; bufferEnd: number } {
  const order = offsetOrder(h);
  let position = 0;
  for (let k = 0; k < h.names.size; k++) {
    const i = order ? order[k]! : k;
    const name = h.names.key(i);
    const begin = h.at(i, BEGIN);
    const end = h.at(i, END);
    const where = () => `tensor ${quote(name)} (data_offsets [${begin}, ${end}])`;
    if (begin !== position || end < begin) {
      const problem = end < begin ? 'reversed' : begin > position ? 'gap' : 'overlap';
      const what =
        problem === 'reversed'
          ? 'ends before it begins'
          : problem === 'gap'
            ? `leaves a gap of ${begin - position} bytes after the previous tensor, which ended at ${position}`
            : `overlaps the previous tensor, which ended at ${position}`;
      fail(
        'offsets_misaligned',
        `${where()} ${what}; tensors must tile the byte buffer in order with no gaps or overlaps. ${REPAIR}`,
        { tensor: name, dataOffsets: [begin, end], expectedBegin: position, problem },
      );
    }
    position = end;
    const needed = h.at(i, NEEDED);
    if (needed >= 0 && end - begin === needed) continue;
    const dtype = h.dtypeOf(i);
    const details = { tensor: name, ...h.quotedShape(i), dtype };
    if (needed === OVERFLOW) {
      fail('shape_overflow', `${where()}: shape ${h.shapeText(i)} of ${dtype} overflows 64 bits. ${REPAIR}`, details);
    }
    const bits = h.elementsOf(i) * BigInt(SAFETENSORS_DTYPE_BITS[dtype]);
    if (needed === SUBBYTE) {
      fail(
        'subbyte_misaligned',
        `${where()}: ${h.elementsOf(i)} elements of ${dtype} are ${bits} bits, not a whole number of bytes. ${REPAIR}`,
        details,
      );
    }
    fail(
      'size_mismatch',
      `${where()} spans ${end - begin} bytes, but shape ${h.shapeText(i)} of ${dtype} needs ${bits / 8n}. ${REPAIR}`,
      { ...details, expectedBytes: (bits / 8n).toString() },
    );
  }
  return { order, bufferEnd: position };
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
  const keyed = entries.map((e) => ({
    e,
    rank: SAFETENSORS_DTYPES.indexOf(e.dtype),
    utf8: UTF8_ENCODER.encode(e.name),
  }));
  keyed.sort((a, b) => b.rank - a.rank || compareBytes(a.utf8, b.utf8));
  return keyed.map((k) => k.e);
}

/**
 * The 8-byte length and the space-padded JSON header for entries already in write order, exactly
 * as upstream's serializer lays them out (compact JSON, `__metadata__` first when given).
 */
export function encodeSafetensorsHeader(
  entries: readonly EntryToWrite[],
  metadata: ReadonlyMap<string, string> | null,
): Uint8Array {
  const parts: string[] = [];
  if (metadata) {
    const fields = [...metadata].map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`);
    parts.push(`"__metadata__":{${fields.join(',')}}`);
  }
  let offset = 0;
  for (const e of entries) {
    parts.push(
      `${JSON.stringify(e.name)}:{"dtype":"${e.dtype}","shape":[${e.shape.join(',')}],"data_offsets":[${offset},${offset + e.byteLength}]}`,
    );
    offset += e.byteLength;
  }
  const json = UTF8_ENCODER.encode(`{${parts.join(',')}}`);
  const padded = Math.ceil(json.byteLength / 8) * 8;
  if (padded > MAX_HEADER_LENGTH) {
    throw new ArgumentError(
      `the safetensors header would be ${padded} bytes, over the ${MAX_HEADER_LENGTH}-byte limit readers enforce; split the tensors over several files (shards)`,
    );
  }
  const out = new Uint8Array(8 + padded).fill(0x20, 8 + json.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}
