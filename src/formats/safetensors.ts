/**
 * safetensors files: read tensors by byte range, write atomically.
 *
 * Byte layout (validated in safetensors-header.ts, which documents it in full):
 *
 *   [0, 8)            u64 little-endian N
 *   [8, 8 + N)        JSON header: {"__metadata__"?: {str: str}, name: {dtype, shape, data_offsets}}
 *   [8 + N, EOF)      byte buffer; tensor `name` lives at [8 + N + begin, 8 + N + end)
 *
 * Nothing here reads a whole file at once: reads go through a ByteSource (a file, or bytes in
 * memory) by range — files over 2 GiB cannot go through fs.readFile, and a header (at most
 * 100 MB) plus one tensor at a time is all a caller ever needs in memory.
 * Dtypes knobs has (F32, F64, F16, BF16, I32, I64, U8, I8, BOOL) load as Tensors; the others
 * (I16, U16, U32, U64, C64, F8_*, F6_*, F4) load as RawTensors whose bytes write back unchanged.
 */
import { storageBytes, storageFromBytes } from '../dtype.js';
import { ArgumentError, FormatError } from '../errors.js';
import { asIOError, writeFileAtomic } from '../io/atomic.js';
import { type ByteSource, openFileSource } from '../io/byte-source.js';
import { Tensor } from '../tensor.js';
import {
  type EntryToWrite,
  type SafetensorsDType,
  type SafetensorsEntry,
  type SafetensorsHeader,
  SAFETENSORS_DTYPE_BITS,
  encodeSafetensorsHeader,
  isSafetensorsDType,
  knobsDTypeOf,
  parseSafetensorsHeader,
  readHeaderLength,
  safetensorsDTypeOf,
  sortForWriting,
} from './safetensors-header.js';

export {
  MAX_HEADER_LENGTH,
  SAFETENSORS_DTYPES,
  SAFETENSORS_DTYPE_BITS,
  SAFETENSORS_RULES,
  isSafetensorsDType,
  knobsDTypeOf,
  parseSafetensorsHeader,
  readHeaderLength,
  safetensorsDTypeOf,
  type SafetensorsDType,
  type SafetensorsEntry,
  type SafetensorsHeader,
  type SafetensorsRule,
} from './safetensors-header.js';

/** A tensor kept as its file bytes, for dtypes knobs does not compute in (or by choice). */
export interface RawTensor {
  readonly kind: 'raw';
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  /** Row-major, little-endian; sub-byte dtypes packed as the file packs them. */
  readonly bytes: Uint8Array;
}

export type SafetensorsValue = Tensor | RawTensor;

export interface SafetensorsFile {
  /** The path, or the source's name. */
  readonly path: string;
  readonly header: SafetensorsHeader;
  readonly entries: ReadonlyMap<string, SafetensorsEntry>;
  readonly metadata: ReadonlyMap<string, string> | null;
  /** The tensor's bytes, read from its range of the file only. */
  readBytes(name: string): Promise<Uint8Array>;
  /**
   * Reads the tensor's bytes into `target` (exactly its byte length): no intermediate copy. With
   * `at`, reads target.byteLength bytes from byte `at` of the tensor instead, so a large tensor can
   * be walked in bounded chunks.
   */
  readInto(name: string, target: Uint8Array, at?: number): Promise<void>;
  /** A Tensor for knobs' dtypes, else a RawTensor. */
  read(name: string): Promise<SafetensorsValue>;
  close(): Promise<void>;
}

export interface LoadedSafetensors {
  /** In file order. */
  readonly tensors: Map<string, SafetensorsValue>;
  readonly metadata: Map<string, string> | null;
}

export function isRawTensor(value: unknown): value is RawTensor {
  return typeof value === 'object' && value !== null && (value as { kind?: unknown }).kind === 'raw';
}

// ---- reading ---------------------------------------------------------------------------------

/** A file path, or any ByteSource (bytes in memory, …). */
export type SafetensorsInput = string | ByteSource;

/** Reads and validates only the header (8 + N bytes). A path is opened and closed; a source is left open. */
export async function readSafetensorsHeader(input: SafetensorsInput): Promise<SafetensorsHeader> {
  const source = typeof input === 'string' ? await openFileSource(input) : input;
  try {
    return await readHeader(source);
  } finally {
    if (typeof input === 'string') await source.close();
  }
}

/**
 * Opens safetensors bytes for reading tensors one at a time, from a path or a ByteSource. The
 * returned file owns the source: its close() closes the source.
 */
export async function openSafetensors(input: SafetensorsInput): Promise<SafetensorsFile> {
  const source = typeof input === 'string' ? await openFileSource(input) : input;
  const path = source.name;
  let header: SafetensorsHeader;
  try {
    header = await readHeader(source);
  } catch (err) {
    await source.close();
    throw err;
  }
  let closed = false;
  const entryOf = (name: string): SafetensorsEntry => {
    if (closed) throw new ArgumentError(`${path}: read after close()`);
    const entry = header.entries.get(name);
    if (!entry) {
      const some = [...header.entries.keys()]
        .slice(0, 5)
        .map((n) => JSON.stringify(n))
        .join(', ');
      throw new ArgumentError(
        `${path} has no tensor named ${JSON.stringify(name)}; it has ${header.entries.size} tensors${some ? ` (${some}${header.entries.size > 5 ? ', …' : ''})` : ''}`,
      );
    }
    return entry;
  };
  // A private copy: a memory source's reads are views of its buffer.
  const bytesOf = async (entry: SafetensorsEntry): Promise<Uint8Array> => {
    const bytes = new Uint8Array(entry.byteLength);
    await source.readInto(bytes, header.dataStart + entry.dataOffsets[0]);
    return bytes;
  };
  return {
    path,
    header,
    entries: header.entries,
    metadata: header.metadata,
    readBytes: (name) => bytesOf(entryOf(name)),
    async readInto(name, target, at) {
      const entry = entryOf(name);
      if (at === undefined ? target.byteLength !== entry.byteLength : !withinTensor(at, target.byteLength, entry)) {
        throw new ArgumentError(
          `${path}: tensor ${JSON.stringify(name)} has ${entry.byteLength} bytes; cannot read ${target.byteLength} of them from byte ${at ?? 0}`,
          { path, tensor: name, at, length: target.byteLength },
        );
      }
      await source.readInto(target, header.dataStart + entry.dataOffsets[0] + (at ?? 0));
    },
    async read(name) {
      const entry = entryOf(name);
      return toValue(entry, await bytesOf(entry));
    },
    async close() {
      if (closed) return;
      closed = true;
      await source.close();
    },
  };
}

function withinTensor(at: number, length: number, entry: SafetensorsEntry): boolean {
  return Number.isSafeInteger(at) && at >= 0 && at + length <= entry.byteLength;
}

/** Reads every tensor. Validates the whole header before reading any tensor bytes. */
export async function loadSafetensors(input: SafetensorsInput): Promise<LoadedSafetensors> {
  const file = await openSafetensors(input);
  try {
    const tensors = new Map<string, SafetensorsValue>();
    for (const name of file.entries.keys()) tensors.set(name, await file.read(name));
    return { tensors, metadata: file.metadata ? new Map(file.metadata) : null };
  } finally {
    await file.close();
  }
}

function toValue(entry: SafetensorsEntry, bytes: Uint8Array): SafetensorsValue {
  const dtype = knobsDTypeOf(entry.dtype);
  if (dtype === null) return { kind: 'raw', dtype: entry.dtype, shape: entry.shape, bytes };
  // `bytes` is a fresh allocation at offset 0, so this is a view, never a copy.
  return Tensor.fromStorage(storageFromBytes(dtype, bytes), entry.shape, dtype);
}

async function readHeader(source: ByteSource): Promise<SafetensorsHeader> {
  const path = source.name;
  try {
    const size = source.size;
    const first = new Uint8Array(Math.min(8, size));
    await source.readInto(first, 0);
    // Checks N against the limit and the file size before the header buffer is allocated.
    const headerLength = readHeaderLength(first, size);
    const bytes = new Uint8Array(8 + headerLength);
    bytes.set(first);
    await source.readInto(bytes.subarray(8), 8);
    return parseSafetensorsHeader(bytes, size);
  } catch (err) {
    if (err instanceof FormatError && !err.message.startsWith(`${path}: `)) {
      throw new FormatError(err.rule, `${path}: ${err.message}`, { ...err.details, path });
    }
    if (err instanceof FormatError) throw err;
    throw asIOError(err, path, 'read');
  }
}

// ---- writing ---------------------------------------------------------------------------------

interface Prepared extends EntryToWrite {
  readonly bytes: Uint8Array;
}

/**
 * Encodes tensors (Tensor or RawTensor) and optional string metadata as the chunks of a
 * safetensors file — the header, then each tensor's bytes — in upstream's order (dtype by size,
 * largest first, then name). Concatenated, the chunks are the file.
 */
export function encodeSafetensors(
  tensors: ReadonlyMap<string, SafetensorsValue> | Readonly<Record<string, SafetensorsValue>>,
  metadata?: ReadonlyMap<string, string> | Readonly<Record<string, string>> | null,
): Uint8Array[] {
  const items = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  const ordered = sortForWriting(items.map(([name, value]) => prepare(name, value)));
  const meta = metadata == null ? null : new Map(metadata instanceof Map ? metadata : Object.entries(metadata));
  if (meta) {
    for (const [k, v] of meta) {
      if (typeof v !== 'string')
        throw new ArgumentError(
          `saveSafetensors: metadata value for ${JSON.stringify(k)} is ${typeof v}; safetensors metadata values are strings`,
        );
      checkText(k, 'metadata key');
      checkText(v, `metadata value for ${JSON.stringify(k)}`);
    }
  }
  return [encodeSafetensorsHeader(ordered, meta), ...ordered.map((item) => item.bytes)];
}

/**
 * Writes tensors and optional metadata as a safetensors file (see `encodeSafetensors`),
 * atomically: on failure an existing file at `path` is left untouched.
 */
export async function saveSafetensors(
  path: string,
  tensors: ReadonlyMap<string, SafetensorsValue> | Readonly<Record<string, SafetensorsValue>>,
  metadata?: ReadonlyMap<string, string> | Readonly<Record<string, string>> | null,
): Promise<void> {
  await writeFileAtomic(path, encodeSafetensors(tensors, metadata));
}

function prepare(name: string, value: SafetensorsValue): Prepared {
  checkText(name, 'tensor name');
  if (name === '__metadata__') {
    throw new ArgumentError('saveSafetensors: "__metadata__" is reserved for the metadata; rename the tensor');
  }
  if (value instanceof Tensor) {
    const bytes = storageBytes(value.contiguousStorage());
    return { name, dtype: safetensorsDTypeOf(value.dtype), shape: value.shape, byteLength: bytes.byteLength, bytes };
  }
  if (!isRawTensor(value)) {
    throw new ArgumentError(
      `saveSafetensors: tensor ${JSON.stringify(name)} is neither a Tensor nor a RawTensor ({kind: 'raw', dtype, shape, bytes})`,
    );
  }
  const { dtype, shape, bytes } = value;
  if (!isSafetensorsDType(dtype))
    throw new ArgumentError(
      `saveSafetensors: tensor ${JSON.stringify(name)} has unknown dtype ${JSON.stringify(dtype)}`,
    );
  let bits = BigInt(SAFETENSORS_DTYPE_BITS[dtype]);
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0)
      throw new ArgumentError(
        `saveSafetensors: tensor ${JSON.stringify(name)} has an invalid dimension ${d} in shape [${shape.join(', ')}]`,
      );
    bits *= BigInt(d);
  }
  if (bits % 8n !== 0n || BigInt(bytes.byteLength) !== bits / 8n) {
    throw new ArgumentError(
      `saveSafetensors: tensor ${JSON.stringify(name)}: shape [${shape.join(', ')}] of ${dtype} is ${bits} bits, which needs ${bits % 8n === 0n ? `${bits / 8n} bytes` : 'whole bytes'}, but ${bytes.byteLength} bytes were given`,
    );
  }
  return { name, dtype, shape, byteLength: bytes.byteLength, bytes };
}

/** Text must survive UTF-8: a lone surrogate would be replaced, and the name would change. */
function checkText(text: string, what: string): void {
  if (typeof text !== 'string' || /\p{Surrogate}/u.test(text)) {
    throw new ArgumentError(
      `saveSafetensors: ${what} ${JSON.stringify(text)} is not well-formed Unicode text (it has a lone surrogate)`,
    );
  }
}
