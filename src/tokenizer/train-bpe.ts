/**
 * Training a byte-level BPE (GPT-2 style): the text is cut with GPT-2's pattern, each piece
 * becomes its UTF-8 bytes (as byte-level characters), and the most frequent adjacent pair is
 * merged until the vocabulary is full. Pair counts are kept incrementally: a merge only revisits
 * the words that contain the pair, and a max-heap with lazy re-checks picks the next pair.
 * Ties go to the pair whose ids are smallest, so training is deterministic.
 *
 * Ids: byte b is id b (as in knobs' byte-level models), merges follow in order, then the special
 * tokens. The result is a tokenizer.json object that Hugging Face tokenizers reads.
 */
import { ArgumentError } from '../errors.js';
import { BYTE_TO_CHAR } from './byte-level.js';
import { JsonReader } from './errors.js';
import { parsePreTokenizer } from './pre-tokenizers.js';

export interface TrainBpeOptions {
  /** Total vocabulary: 256 bytes + merges + special tokens. */
  vocabSize: number;
  /** Added as special tokens after the merges (default ["<|endoftext|>"]). */
  specialTokens?: string[];
  /** Pairs seen fewer times than this are never merged (default 2). */
  minFrequency?: number;
  /** Called after each merge with (merges done, merges wanted). */
  onProgress?: (done: number, total: number) => void;
}

export const BYTE_LEVEL_PRE_TOKENIZER = {
  type: 'ByteLevel',
  add_prefix_space: false,
  trim_offsets: true,
  use_regex: true,
} as const;
/** tokenizer.json's `model` of a byte-level BPE: every option at Hugging Face's default. */
export function byteLevelBpeModel(
  vocab: Record<string, number>,
  merges: readonly (string | readonly [string, string])[],
) {
  return {
    type: 'BPE',
    dropout: null,
    unk_token: null,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: false,
    byte_fallback: false,
    ignore_merges: false,
    vocab,
    merges,
  };
}

export const BYTE_LEVEL_DECODER = {
  type: 'ByteLevel',
  add_prefix_space: true,
  trim_offsets: true,
  use_regex: true,
} as const;

export function trainByteLevelBpe(text: string, opts: TrainBpeOptions): Record<string, unknown> {
  const specials = opts.specialTokens ?? ['<|endoftext|>'];
  const minFrequency = opts.minFrequency ?? 2;
  const wanted = opts.vocabSize - 256 - specials.length;
  if (!Number.isSafeInteger(opts.vocabSize) || wanted < 0)
    throw new ArgumentError(
      `vocab size ${opts.vocabSize} is smaller than the 256 bytes plus ${specials.length} special tokens`,
      { vocabSize: opts.vocabSize },
    );

  const { words, counts } = countWords(text);
  const tokens: string[] = [...BYTE_TO_CHAR];
  const merges: [string, string][] = [];
  const pairs = new PairStats(words, counts);
  while (merges.length < wanted) {
    const best = pairs.popBest(minFrequency);
    if (best === null) break;
    const [a, b] = best;
    const id = tokens.length;
    tokens.push(tokens[a]! + tokens[b]!);
    merges.push([tokens[a]!, tokens[b]!]);
    pairs.merge(a, b, id);
    opts.onProgress?.(merges.length, wanted);
  }

  // No prototype: a merged token may well be "__proto__" in a corpus of code.
  const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
  tokens.forEach((t, id) => {
    vocab[t] = id;
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, i) => ({
      id: tokens.length + i,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: { ...BYTE_LEVEL_PRE_TOKENIZER },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { ...BYTE_LEVEL_DECODER },
    model: byteLevelBpeModel(vocab, merges),
  };
}

/** Distinct pre-tokenized words (as byte ids) and how often each occurs. */
function countWords(text: string): { words: number[][]; counts: number[] } {
  const preTokenize = parsePreTokenizer(BYTE_LEVEL_PRE_TOKENIZER, new JsonReader('(trainer)'));
  const seen = new Map<string, number>();
  const counts: number[] = [];
  const words: number[][] = [];
  for (const piece of preTokenize({ text, first: true })) {
    const index = seen.get(piece.text);
    if (index !== undefined) {
      counts[index]!++;
      continue;
    }
    seen.set(piece.text, words.length);
    words.push(Array.from(piece.text, (c) => CHAR_ID.get(c)!));
    counts.push(1);
  }
  return { words, counts };
}

const CHAR_ID = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

/** Ids are below 2^24 here, so a pair packs into one safe integer. */
const PAIR = 2 ** 24;

class PairStats {
  private readonly count = new Map<number, number>();
  private readonly where = new Map<number, Set<number>>();
  private readonly heap = new MaxHeap();

  constructor(
    private readonly words: number[][],
    private readonly freq: number[],
  ) {
    words.forEach((w, wi) => {
      for (let i = 0; i + 1 < w.length; i++) this.add(w[i]! * PAIR + w[i + 1]!, freq[wi]!, wi);
    });
    for (const [pair, c] of this.count) this.heap.push(c, pair);
  }

  private add(pair: number, delta: number, word: number): void {
    this.count.set(pair, (this.count.get(pair) ?? 0) + delta);
    if (delta > 0) {
      let set = this.where.get(pair);
      if (!set) this.where.set(pair, (set = new Set()));
      set.add(word);
    }
  }

  /** The most frequent pair with at least `min` occurrences, or null. */
  popBest(min: number): [number, number] | null {
    while (this.heap.size > 0) {
      const { count, pair } = this.heap.pop();
      const current = this.count.get(pair) ?? 0;
      if (current !== count) {
        if (current > 0) this.heap.push(current, pair);
        continue;
      }
      if (count < min) return null;
      return [Math.floor(pair / PAIR), pair % PAIR];
    }
    return null;
  }

  /** Replaces every (a, b) by `id` in the words that contain it, updating the counts. */
  merge(a: number, b: number, id: number): void {
    const pair = a * PAIR + b;
    const touched = new Set<number>();
    for (const wi of this.where.get(pair) ?? []) {
      const w = this.words[wi]!;
      const f = this.freq[wi]!;
      const out: number[] = [];
      let changed = false;
      for (let i = 0; i < w.length; i++) {
        if (i + 1 < w.length && w[i] === a && w[i + 1] === b) {
          out.push(id);
          i++;
          changed = true;
        } else out.push(w[i]!);
      }
      if (!changed) continue;
      for (let i = 0; i + 1 < w.length; i++) this.add(w[i]! * PAIR + w[i + 1]!, -f, wi);
      for (let i = 0; i + 1 < out.length; i++) {
        const p = out[i]! * PAIR + out[i + 1]!;
        this.add(p, f, wi);
        touched.add(p);
      }
      this.words[wi] = out;
    }
    this.where.delete(pair);
    this.count.delete(pair);
    for (const p of touched) {
      const c = this.count.get(p) ?? 0;
      if (c > 0) this.heap.push(c, p);
    }
  }
}

/** Max-heap on count; ties to the smaller pair key. */
class MaxHeap {
  private readonly items: { count: number; pair: number }[] = [];
  get size(): number {
    return this.items.length;
  }

  private static before(x: { count: number; pair: number }, y: { count: number; pair: number }): boolean {
    return x.count > y.count || (x.count === y.count && x.pair < y.pair);
  }

  push(count: number, pair: number): void {
    const items = this.items;
    const item = { count, pair };
    let i = items.length;
    items.push(item);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!MaxHeap.before(item, items[parent]!)) break;
      items[i] = items[parent]!;
      i = parent;
    }
    items[i] = item;
  }

  pop(): { count: number; pair: number } {
    const items = this.items;
    const top = items[0]!;
    const last = items.pop()!;
    const n = items.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const c = l + 1 < n && MaxHeap.before(items[l + 1]!, items[l]!) ? l + 1 : l;
        if (!MaxHeap.before(items[c]!, last)) break;
        items[i] = items[c]!;
        i = c;
      }
      items[i] = last;
    }
    return top;
  }
}
