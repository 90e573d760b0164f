/**
 * The BPE model of tokenizer.json (`model.type: "BPE"`): vocab, ranked merges, byte fallback,
 * unk token, ignore_merges. Encoding one word follows Hugging Face's Word::merge_all: a min-heap of
 * candidate merges ordered by (rank, position); a popped merge whose pair no longer exists at that
 * position is stale and skipped. Words seen before come from a cache.
 */
import { ArgumentError } from '../errors.js';
import { type JsonReader, invalidTokenizer, unsupportedComponent } from './errors.js';

export interface Encoded {
  ids: number[];
  tokens: string[];
}

/** Words longer than this are not cached (as in Hugging Face), nor are more than CACHE_CAPACITY words. */
const CACHE_MAX_WORD = 256;
const CACHE_CAPACITY = 100_000;

const encoder = new TextEncoder();

export class BpeModel {
  readonly vocab: Map<string, number>;
  readonly vocabR: Map<number, string>;
  /** (left id · 2^21 + right id) → rank · 2^21 + merged id. Ids < 2^21 (checked), ranks < 2^31. */
  private readonly merges = new Map<number, number>();
  private readonly cache = new Map<string, Encoded>();

  constructor(
    vocab: Map<string, number>,
    merges: [string, string][],
    readonly opts: {
      unkToken: string | null;
      byteFallback: boolean;
      ignoreMerges: boolean;
      fuseUnk: boolean;
      continuingSubwordPrefix: string | null;
      endOfWordSuffix: string | null;
    },
    private readonly source: string,
  ) {
    this.vocab = vocab;
    this.vocabR = new Map();
    for (const [token, id] of vocab) {
      if (id >= ID_LIMIT)
        throw invalidTokenizer(
          source,
          `model.vocab[${JSON.stringify(token)}]`,
          `is ${id}; knobs reads ids below ${ID_LIMIT}`,
        );
      if (!this.vocabR.has(id)) this.vocabR.set(id, token);
    }
    if (merges.length >= POS_LIMIT)
      throw invalidTokenizer(
        source,
        'model.merges',
        `has ${merges.length} entries; knobs reads fewer than ${POS_LIMIT}`,
      );
    const prefixLength = opts.continuingSubwordPrefix?.length ?? 0;
    const idOf = (t: string, rank: number, a: string, b: string): number => {
      const id = vocab.get(t);
      if (id === undefined)
        throw invalidTokenizer(
          source,
          `model.merges[${rank}]`,
          `(${JSON.stringify(a)} ${JSON.stringify(b)}) uses ${JSON.stringify(t)}, which is not in model.vocab`,
        );
      return id;
    };
    for (let rank = 0; rank < merges.length; rank++) {
      const [a, b] = merges[rank]!;
      const left = idOf(a, rank, a, b); // checked in Hugging Face's order: left, right, merged
      const right = idOf(b, rank, a, b);
      const merged = idOf(prefixLength ? a + b.slice(prefixLength) : a + b, rank, a, b);
      this.merges.set(left * ID_LIMIT + right, rank * ID_LIMIT + merged);
    }
  }

  static fromJSON(o: Record<string, unknown>, r: JsonReader): BpeModel {
    const vocabJson = r.object(o.vocab, 'model.vocab');
    const vocab = new Map<string, number>();
    for (const [token, id] of Object.entries(vocabJson)) {
      // The field path is only formatted on error: 100k+ entries.
      vocab.set(
        token,
        Number.isSafeInteger(id) && (id as number) >= 0
          ? (id as number)
          : r.uint(id, `model.vocab[${JSON.stringify(token)}]`),
      );
    }
    // "#version" lines of a merges.txt pasted in as strings are skipped, as Hugging Face skips them.
    const listed = r
      .array(o.merges ?? [], 'model.merges')
      .filter((m) => !(typeof m === 'string' && m.startsWith('#version')));
    const merges = listed.map((m, i): [string, string] => {
      if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string')
        return [m[0], m[1]];
      const parts = typeof m === 'string' ? m.split(' ') : [];
      if (parts.length !== 2)
        throw invalidTokenizer(r.source, `model.merges[${i}]`, `must be "a b" or ["a", "b"], got ${JSON.stringify(m)}`);
      return [parts[0]!, parts[1]!];
    });
    if (o.dropout !== undefined && o.dropout !== null && o.dropout !== 0)
      throw unsupportedComponent(r.source, 'model.dropout', 'is random at encode time and not supported');
    return new BpeModel(
      vocab,
      merges,
      {
        unkToken: r.optionalString(o.unk_token, 'model.unk_token'),
        byteFallback: r.bool(o.byte_fallback, 'model.byte_fallback', false),
        ignoreMerges: r.bool(o.ignore_merges, 'model.ignore_merges', false),
        fuseUnk: r.bool(o.fuse_unk, 'model.fuse_unk', false),
        continuingSubwordPrefix: r.optionalString(o.continuing_subword_prefix, 'model.continuing_subword_prefix'),
        endOfWordSuffix: r.optionalString(o.end_of_word_suffix, 'model.end_of_word_suffix'),
      },
      r.source,
    );
  }

  /** Appends the ids and tokens of one pre-tokenized piece to `out`. */
  encodeWord(word: string, out: Encoded): void {
    if (word.length === 0) return;
    let hit = this.cache.get(word);
    if (hit === undefined) {
      hit = this.ignoreMergesHit(word) ?? this.merge(word);
      if (word.length < CACHE_MAX_WORD && this.cache.size < CACHE_CAPACITY) this.cache.set(word, hit);
    }
    for (let i = 0; i < hit.ids.length; i++) {
      out.ids.push(hit.ids[i]!);
      out.tokens.push(hit.tokens[i]!);
    }
  }

  private ignoreMergesHit(word: string): Encoded | undefined {
    if (!this.opts.ignoreMerges) return undefined;
    const id = this.vocab.get(word);
    return id === undefined ? undefined : { ids: [id], tokens: [word] };
  }

  /** The initial symbols (characters, byte fallback, unk) and then merge_all. */
  private merge(word: string): Encoded {
    const symbols: number[] = [];
    const { unkToken, byteFallback, fuseUnk, continuingSubwordPrefix: prefix, endOfWordSuffix: suffix } = this.opts;
    let pendingUnk = false;
    const chars = Array.from(word);
    chars.forEach((ch, i) => {
      let s = ch;
      if (i > 0 && prefix !== null) s = prefix + s;
      if (i === chars.length - 1 && suffix !== null) s += suffix;
      const id = this.vocab.get(s);
      if (id !== undefined) {
        if (pendingUnk) symbols.push(this.unkId());
        pendingUnk = false;
        symbols.push(id);
        return;
      }
      if (byteFallback) {
        const ids = Array.from(encoder.encode(s), (b) =>
          this.vocab.get(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`),
        );
        if (ids.every((x) => x !== undefined)) {
          symbols.push(...(ids as number[]));
          return;
        }
      }
      if (unkToken !== null) {
        if (pendingUnk && !fuseUnk) symbols.push(this.unkId());
        pendingUnk = true;
      }
    });
    if (pendingUnk) symbols.push(this.unkId());
    const ids = this.mergeAll(symbols);
    return { ids, tokens: ids.map((id) => this.vocabR.get(id)!) };
  }

  private unkId(): number {
    const id = this.vocab.get(this.opts.unkToken!);
    // Checked when first needed, as Hugging Face does: a file whose unk is never used still works.
    if (id === undefined)
      throw invalidTokenizer(
        this.source,
        'model.unk_token',
        `${JSON.stringify(this.opts.unkToken)} is not in model.vocab`,
      );
    return id;
  }

  /** Word::merge_all with a binary min-heap of (rank, position) packed into one number. */
  private mergeAll(symbols: number[]): number[] {
    const n = symbols.length;
    if (n < 2) return symbols;
    if (n >= POS_LIMIT)
      throw new ArgumentError(
        `a pre-tokenized piece of ${n} symbols is longer than the ${POS_LIMIT} BPE encodes at once; split the text`,
        { symbols: n },
      );
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = new MinHeap();
    const push = (pos: number) => {
      const right = next[pos]!;
      if (right < 0) return;
      const m = this.merges.get(symbols[pos]! * ID_LIMIT + symbols[right]!);
      if (m !== undefined) heap.push(Math.floor(m / ID_LIMIT) * POS_LIMIT + pos, m % ID_LIMIT);
    };
    for (let i = 0; i + 1 < n; i++) push(i);
    while (heap.size > 0) {
      const { key, value: newId } = heap.pop();
      const pos = key % POS_LIMIT;
      if (!alive[pos]) continue;
      const right = next[pos]!;
      if (right < 0) continue;
      const m = this.merges.get(symbols[pos]! * ID_LIMIT + symbols[right]!);
      if (m === undefined || m % ID_LIMIT !== newId) continue;
      symbols[pos] = newId;
      alive[right] = 0;
      next[pos] = next[right]!;
      if (next[right]! >= 0) prev[next[right]!] = pos;
      if (prev[pos]! >= 0) push(prev[pos]!);
      push(pos);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]!) out.push(symbols[i]!);
    return out;
  }
}

/** Ids are packed below 2^21 (2M tokens); heap keys are rank · 2^26 + position, so both stay below 2^26. */
const ID_LIMIT = 2 ** 21;
const POS_LIMIT = 2 ** 26;

/** A binary min-heap of (key, value) pairs on parallel arrays. */
class MinHeap {
  private keys: number[] = [];
  private values: number[] = [];
  get size(): number {
    return this.keys.length;
  }

  push(key: number, value: number): void {
    const keys = this.keys;
    const values = this.values;
    let i = keys.length;
    keys.push(key);
    values.push(value);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (keys[parent]! <= key) break;
      keys[i] = keys[parent]!;
      values[i] = values[parent]!;
      i = parent;
    }
    keys[i] = key;
    values[i] = value;
  }

  pop(): { key: number; value: number } {
    const keys = this.keys;
    const values = this.values;
    const top = { key: keys[0]!, value: values[0]! };
    const lastKey = keys.pop()!;
    const lastValue = values.pop()!;
    const n = keys.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const c = l + 1 < n && keys[l + 1]! < keys[l]! ? l + 1 : l;
        if (keys[c]! >= lastKey) break;
        keys[i] = keys[c]!;
        values[i] = values[c]!;
        i = c;
      }
      keys[i] = lastKey;
      values[i] = lastValue;
    }
    return top;
  }
}
