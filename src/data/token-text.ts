/**
 * A text corpus as token ids from a tokenizer (a recipe's tokenizer.json): the byte corpus's train
 * and validation splits are each decoded as UTF-8 and encoded whole, then laid end to end, so
 * windows and evaluation work on tokens exactly as they do on bytes. The text must fit in memory.
 */
import { ArgumentError } from '../errors.js';
import type { ByteRange, ByteTextCorpus, TextCorpus, TextSplit } from './text.js';

export class TokenTextCorpus implements TextCorpus {
  readonly path: string;
  private readonly ids: Int32Array;
  private readonly ranges: Record<TextSplit, ByteRange>;
  private readonly bytes: Record<TextSplit, number>;

  private constructor(path: string, ids: Int32Array, trainTokens: number, bytes: Record<TextSplit, number>) {
    this.path = path;
    this.ids = ids;
    this.ranges = { train: { start: 0, end: trainTokens }, validation: { start: trainTokens, end: ids.length } };
    this.bytes = bytes;
  }

  /** Encodes both splits of `corpus` with `encode` (text → ids); `corpus` may be closed afterwards. */
  static async encode(corpus: ByteTextCorpus, encode: (text: string) => ArrayLike<number>): Promise<TokenTextCorpus> {
    if (corpus.streaming)
      throw new ArgumentError(`${corpus.path} is too large to tokenize in memory (${corpus.size} bytes)`, {
        path: corpus.path,
      });
    const decoder = new TextDecoder('utf-8');
    const parts: ArrayLike<number>[] = [];
    const bytes = { train: 0, validation: 0 };
    for (const split of ['train', 'validation'] as const) {
      const r = corpus.range(split);
      bytes[split] = r.end - r.start;
      parts.push(r.end > r.start ? encode(decoder.decode(await corpus.read(r.start, r.end - r.start))) : []);
    }
    const ids = new Int32Array(parts[0]!.length + parts[1]!.length);
    ids.set(parts[0]!, 0);
    ids.set(parts[1]!, parts[0]!.length);
    return new TokenTextCorpus(corpus.path, ids, parts[0]!.length, bytes);
  }

  range(split: TextSplit): ByteRange {
    return this.ranges[split];
  }

  async read(start: number, length: number): Promise<Int32Array> {
    if (
      !Number.isSafeInteger(start) ||
      !Number.isSafeInteger(length) ||
      start < 0 ||
      length < 0 ||
      start + length > this.ids.length
    ) {
      throw new ArgumentError(
        `${this.path}: read of ${length} tokens at ${start} is outside the corpus (${this.ids.length} tokens)`,
      );
    }
    return this.ids.subarray(start, start + length);
  }

  bytesPerToken(split: TextSplit): number {
    const r = this.ranges[split];
    return r.end > r.start ? this.bytes[split] / (r.end - r.start) : 1;
  }

  async close(): Promise<void> {}
}
