/**
 * Text as byte-level tokens (vocabulary 256: token = byte), for character-level language models.
 *
 * A corpus is one file split by position: the first part trains, the last `validationFraction`
 * of the bytes validates. The split is a pure function of the file size, so it is the same on
 * every run. Small files are read into memory once; files over `inMemoryLimit` stay on disk and
 * each window is read by offset through a FileHandle, so a corpus larger than memory still trains.
 *
 * Shapes: B batch, T block size (context length). A batch is B random windows of T + 1 bytes;
 * inputs are bytes [0, T) and targets bytes [1, T + 1) of each window, both i32 [B, T].
 */
import * as fsp from 'node:fs/promises';
import { ArgumentError, FormatError, IOError, KnobsError } from '../errors.js';
import { openRegularFile } from '../io/regular-file.js';
import { Generator } from '../random.js';
import { Tensor } from '../tensor.js';

export const BYTE_VOCAB_SIZE = 256;
/** Files up to this size are read into memory; larger ones are read window by window. */
export const TEXT_IN_MEMORY_LIMIT = 256 * 1024 * 1024;
export const DEFAULT_VALIDATION_FRACTION = 0.1;

export type TextSplit = 'train' | 'validation';

export interface TextCorpusOptions {
  /** The last this fraction of the bytes is the validation split (default 0.1; 0 = none). */
  validationFraction?: number;
  /** Read the whole file into memory when it is at most this many bytes (default 256 MiB). */
  inMemoryLimit?: number;
}

/** A byte range [start, end) of the corpus. */
export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

/**
 * What batching reads: a sequence of token ids (bytes for ByteTextCorpus) split into train and
 * validation ranges. `bytesPerToken` converts a loss per token into bits per byte.
 */
export interface TextCorpus {
  readonly path: string;
  range(split: TextSplit): ByteRange;
  /** `length` token ids from absolute position `start`. */
  read(start: number, length: number): Promise<ArrayLike<number>>;
  /** Bytes of text per token in `split` (1 for bytes). */
  bytesPerToken(split: TextSplit): number;
  close(): Promise<void>;
}

/** A text corpus split into train and validation byte ranges, read from memory or by offset. */
export class ByteTextCorpus implements TextCorpus {
  readonly path: string;
  readonly size: number;
  readonly train: ByteRange;
  readonly validation: ByteRange;
  /** True when windows are read from disk (file over inMemoryLimit). */
  readonly streaming: boolean;
  private readonly bytes: Uint8Array | null;
  private handle: fsp.FileHandle | null;

  private constructor(
    path: string,
    size: number,
    fraction: number,
    bytes: Uint8Array | null,
    handle: fsp.FileHandle | null,
  ) {
    this.path = path;
    this.size = size;
    const validationBytes = Math.floor(size * fraction);
    this.train = { start: 0, end: size - validationBytes };
    this.validation = { start: size - validationBytes, end: size };
    this.bytes = bytes;
    this.handle = handle;
    this.streaming = bytes === null;
  }

  /** Opens a text file. Throws FormatError (rule `empty`) for an empty file. */
  static async open(path: string, opts: TextCorpusOptions = {}): Promise<ByteTextCorpus> {
    const fraction = checkFraction(opts.validationFraction);
    const limit = opts.inMemoryLimit ?? TEXT_IN_MEMORY_LIMIT;
    if (!(limit >= 0)) throw new ArgumentError(`inMemoryLimit must be >= 0, got ${limit}`);
    let fh: fsp.FileHandle;
    try {
      fh = await openRegularFile(path, 'text file');
    } catch (err) {
      throw ioError(err, path, 'open');
    }
    try {
      const size = (await fh.stat()).size;
      if (size === 0) throw emptyError(path);
      if (size > limit) return new ByteTextCorpus(path, size, fraction, null, fh);
      const bytes = new Uint8Array(size);
      await readAt(fh, bytes, 0, path);
      await fh.close();
      return new ByteTextCorpus(path, size, fraction, bytes, null);
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
  }

  /** A corpus from bytes or text already in memory. */
  static fromBytes(data: Uint8Array | string, opts: TextCorpusOptions = {}, name = '(memory)'): ByteTextCorpus {
    const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    if (bytes.byteLength === 0) throw emptyError(name);
    return new ByteTextCorpus(name, bytes.byteLength, checkFraction(opts.validationFraction), bytes, null);
  }

  range(split: TextSplit): ByteRange {
    return split === 'train' ? this.train : this.validation;
  }

  bytesPerToken(): number {
    return 1;
  }

  /** `length` bytes from absolute offset `start` (within the file). */
  async read(start: number, length: number): Promise<Uint8Array> {
    if (
      !Number.isSafeInteger(start) ||
      !Number.isSafeInteger(length) ||
      start < 0 ||
      length < 0 ||
      start + length > this.size
    ) {
      throw new ArgumentError(
        `${this.path}: read of ${length} bytes at ${start} is outside the corpus (${this.size} bytes)`,
      );
    }
    if (this.bytes) return this.bytes.subarray(start, start + length);
    if (!this.handle) throw new ArgumentError(`${this.path}: read after close()`);
    const out = new Uint8Array(length);
    await readAt(this.handle, out, start, this.path);
    return out;
  }

  /** Releases the file handle of a streaming corpus (no-op for an in-memory one). */
  async close(): Promise<void> {
    const h = this.handle;
    this.handle = null;
    await h?.close();
  }
}

function checkFraction(f: number | undefined): number {
  const fraction = f ?? DEFAULT_VALIDATION_FRACTION;
  if (!(fraction >= 0 && fraction < 1)) throw new ArgumentError(`validationFraction must be in [0, 1), got ${f}`);
  return fraction;
}

function emptyError(path: string): FormatError {
  return new FormatError('empty', `${path} is empty; a text corpus needs at least blockSize + 1 bytes of text`, {
    path,
  });
}

async function readAt(fh: fsp.FileHandle, target: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < target.byteLength) {
    const { bytesRead } = await fh
      .read(target, done, target.byteLength - done, position + done)
      .catch((err: unknown) => {
        throw ioError(err, path, 'read');
      });
    if (bytesRead === 0) {
      throw new IOError(`${path} ended at byte ${position + done} while reading; the file shrank after it was opened`, {
        path,
        position: position + done,
      });
    }
    done += bytesRead;
  }
}

function ioError(err: unknown, path: string, action: string): KnobsError {
  if (err instanceof KnobsError) return err;
  const e = err as NodeJS.ErrnoException;
  return new IOError(`cannot ${action} ${path}: ${e.message}`, { path, ...(e.code ? { errno: e.code } : {}) });
}

export interface TextBatch {
  /** i32 [B, T] */
  readonly inputs: Tensor;
  /** i32 [B, T]: inputs shifted by one. */
  readonly targets: Tensor;
  /** Absolute file offset of each window. */
  readonly offsets: readonly number[];
}

export interface TextBatcherOptions {
  split?: TextSplit;
  batchSize: number;
  /** T, the context length. */
  blockSize: number;
  seed?: number;
}

/** Everything needed to continue the same stream of batches; JSON-serialisable. */
export interface TextBatcherState {
  readonly generator: { words: number[]; spareNormal: number | null };
}

/**
 * Random windows of one split. Each batch draws B window starts uniformly from the split, so the
 * generator's state is the whole position: save getState() in the checkpoint, setState() on resume.
 */
export class TextBatcher {
  readonly corpus: TextCorpus;
  readonly split: TextSplit;
  readonly batchSize: number;
  readonly blockSize: number;
  private readonly gen: Generator;

  constructor(corpus: TextCorpus, opts: TextBatcherOptions) {
    const { batchSize, blockSize } = opts;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1)
      throw new ArgumentError(`TextBatcher: batchSize must be an integer >= 1, got ${batchSize}`);
    if (!Number.isSafeInteger(blockSize) || blockSize < 1)
      throw new ArgumentError(`TextBatcher: blockSize must be an integer >= 1, got ${blockSize}`);
    const seed = opts.seed ?? 0;
    if (!Number.isSafeInteger(seed)) throw new ArgumentError(`TextBatcher: seed must be an integer, got ${seed}`);
    if (opts.split !== undefined && opts.split !== 'train' && opts.split !== 'validation') {
      throw new ArgumentError(`TextBatcher: split must be 'train' or 'validation', got ${JSON.stringify(opts.split)}`);
    }
    this.split = opts.split ?? 'train';
    const r = corpus.range(this.split);
    if (r.end - r.start < blockSize + 1) {
      throw new ArgumentError(
        `TextBatcher: the ${this.split} split of ${corpus.path} has ${r.end - r.start} bytes; a window needs blockSize + 1 = ${blockSize + 1}. Use a longer text, a smaller blockSize${this.split === 'validation' ? ' or a larger validationFraction' : ''}`,
        { split: this.split, bytes: r.end - r.start, blockSize },
      );
    }
    this.corpus = corpus;
    this.batchSize = batchSize;
    this.blockSize = blockSize;
    this.gen = new Generator(seed);
  }

  async next(): Promise<TextBatch> {
    const { batchSize: B, blockSize: T } = this;
    const r = this.corpus.range(this.split);
    const span = r.end - r.start - (T + 1) + 1;
    // All starts are drawn before any read, so the stream of starts never depends on I/O timing.
    const offsets: number[] = [];
    for (let b = 0; b < B; b++) offsets.push(r.start + this.gen.integer(span));
    const windows = await Promise.all(offsets.map((o) => this.corpus.read(o, T + 1)));
    return toBatch(windows, offsets, T);
  }

  getState(): TextBatcherState {
    return { generator: this.gen.getState() };
  }

  setState(state: TextBatcherState): void {
    if (!state || !state.generator)
      throw new ArgumentError('TextBatcher.setState: expected {generator: {words, spareNormal}}');
    this.gen.setState(state.generator);
  }
}

function toBatch(windows: readonly ArrayLike<number>[], offsets: readonly number[], T: number): TextBatch {
  const B = windows.length;
  const x = new Int32Array(B * T); // [B, T]
  const y = new Int32Array(B * T); // [B, T]
  for (let b = 0; b < B; b++) {
    const w = windows[b]!;
    for (let t = 0; t < T; t++) {
      x[b * T + t] = w[t]!;
      y[b * T + t] = w[t + 1]!;
    }
  }
  return { inputs: Tensor.fromStorage(x, [B, T], 'i32'), targets: Tensor.fromStorage(y, [B, T], 'i32'), offsets };
}

/**
 * Deterministic evaluation batches: consecutive windows of the split, starting every T bytes
 * (each byte is predicted once), B at a time, at most `maxBatches` batches (default: all).
 */
export async function* sequentialTextBatches(
  corpus: TextCorpus,
  opts: { split?: TextSplit; batchSize: number; blockSize: number; maxBatches?: number },
): AsyncGenerator<TextBatch> {
  const { batchSize: B, blockSize: T } = opts;
  if (!Number.isSafeInteger(B) || B < 1 || !Number.isSafeInteger(T) || T < 1)
    throw new ArgumentError(`sequentialTextBatches: batchSize and blockSize must be integers >= 1, got ${B} and ${T}`);
  const r = corpus.range(opts.split ?? 'validation');
  const windows = Math.floor((r.end - r.start - 1) / T);
  const maxBatches = opts.maxBatches ?? Infinity;
  let produced = 0;
  for (let w = 0; w < windows && produced < maxBatches; w += B, produced++) {
    const offsets: number[] = [];
    for (let k = w; k < Math.min(windows, w + B); k++) offsets.push(r.start + k * T);
    const data = await Promise.all(offsets.map((o) => corpus.read(o, T + 1)));
    yield toBatch(data, offsets, T);
  }
}

/** Text → byte tokens (UTF-8). */
export function encodeBytes(text: string): Int32Array {
  return Int32Array.from(new TextEncoder().encode(text));
}

/** Byte tokens → text; invalid UTF-8 (a sample cut mid-character) becomes U+FFFD. */
export function decodeBytes(tokens: ArrayLike<number>): string {
  const bytes = new Uint8Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (!(t >= 0 && t < BYTE_VOCAB_SIZE))
      throw new ArgumentError(`decodeBytes: token ${t} at ${i} is not a byte (0..255)`);
    bytes[i] = t;
  }
  return new TextDecoder('utf-8').decode(bytes);
}
