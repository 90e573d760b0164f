/**
 * Compact storage for what a file header lists, when it may list millions of things: a header
 * of 100 MB can name 1.8 million tensors or 8 million metadata keys, and one JS object, array and
 * Map entry per item costs more than ten times the header's own bytes. These keep numbers in
 * typed arrays and build the objects callers see only when asked.
 */

const CHUNK_SHIFT = 13;
const CHUNK = 1 << CHUNK_SHIFT;
const CHUNK_MASK = CHUNK - 1;

/**
 * An append-only list of numbers in fixed-size Float64Array chunks: 8 bytes a number, and it
 * grows without copying, so there is no moment with both an old and a doubled array alive.
 */
export class NumberColumn {
  private readonly chunks: Float64Array[] = [];
  length = 0;

  push(v: number): void {
    const slot = this.length & CHUNK_MASK;
    if (slot === 0) this.chunks.push(new Float64Array(CHUNK));
    this.chunks[this.chunks.length - 1]![slot] = v;
    this.length++;
  }

  at(i: number): number {
    return this.chunks[i >>> CHUNK_SHIFT]![i & CHUNK_MASK]!;
  }
}

/**
 * Like NumberColumn for non-negative integers that are nearly always below 2^32 (tensor
 * dimensions): 4 bytes each, with the rare larger value kept aside in a Map.
 */
export class IntegerColumn {
  private readonly chunks: Uint32Array[] = [];
  private readonly large = new Map<number, number>();
  length = 0;

  push(v: number): void {
    const slot = this.length & CHUNK_MASK;
    if (slot === 0) this.chunks.push(new Uint32Array(CHUNK));
    if (v >= LARGE) this.large.set(this.length, v);
    this.chunks[this.chunks.length - 1]![slot] = Math.min(v, LARGE);
    this.length++;
  }

  at(i: number): number {
    const v = this.chunks[i >>> CHUNK_SHIFT]![i & CHUNK_MASK]!;
    return v === LARGE ? this.large.get(i)! : v;
  }
}
/** Marks a value kept in IntegerColumn's side Map. */
const LARGE = 0xffff_ffff;

/**
 * An append-only list of strings kept as one joined string per chunk of CHUNK strings, plus each
 * string's end offset: once a chunk is full, its strings cost their characters and 4 bytes,
 * not a heap object each (millions of small strings also make every major GC copy them around).
 * `at` returns a fresh string each time.
 */
export class StringList {
  private readonly joined: string[] = [];
  /** The chunk being filled. */
  private pending: string[] = [];
  private pendingChars = 0;
  /** End of each string within its chunk's joined string. */
  private readonly ends = new IntegerColumn();

  get length(): number {
    return this.ends.length;
  }

  push(s: string): void {
    this.pending.push(s);
    this.pendingChars += s.length;
    this.ends.push(this.pendingChars);
    if (this.pending.length === CHUNK) {
      this.joined.push(this.pending.join(''));
      this.pending = [];
      this.pendingChars = 0;
    }
  }

  at(i: number): string {
    const chunk = i >>> CHUNK_SHIFT;
    if (chunk === this.joined.length) return this.pending[i & CHUNK_MASK]!;
    const start = (i & CHUNK_MASK) === 0 ? 0 : this.ends.at(i - 1);
    return this.joined[chunk]!.slice(start, this.ends.at(i));
  }
}

/**
 * Strings numbered in the order they were added, with lookup by value: an open-addressing hash
 * table in one Int32Array of [key index + 1, hash] pairs (a probe reads one cache line and
 * compares strings only when the hashes agree; growing never re-reads a string). A
 * Map<string, number> costs about 110 bytes a key (measured: 917 MB for 8.4 million short keys);
 * this costs 11 to 22. The hash is seeded per table, so a crafted header cannot choose names that
 * all land in one slot.
 */
export class StringIndex {
  private readonly keys = new StringList();
  /** Pairs [key index + 1 (0 = empty), hash]. At most 3/4 full. */
  private slots = new Int32Array(2 * 16);
  private readonly seed = (Math.random() * 0x1_0000_0000) | 0;

  get size(): number {
    return this.keys.length;
  }

  key(i: number): string {
    return this.keys.at(i);
  }

  /** Adds `key` and returns its index, or returns -1 when it is already present. */
  add(key: string): number {
    if ((this.keys.length + 1) * 8 > this.slots.length * 3) this.grow();
    const h = this.hash(key);
    const slot = this.find(key, h);
    if (this.slots[slot] !== 0) return -1;
    this.keys.push(key);
    this.slots[slot] = this.keys.length;
    this.slots[slot + 1] = h;
    return this.keys.length - 1;
  }

  indexOf(key: string): number {
    return this.slots[this.find(key, this.hash(key))]! - 1;
  }

  /** The slot (an even offset) holding `key`, or the empty slot where it would go. */
  private find(key: string, h: number): number {
    const slots = this.slots;
    const mask = slots.length - 2;
    for (let slot = (h << 1) & mask; ; slot = (slot + 2) & mask) {
      const entry = slots[slot]!;
      if (entry === 0 || (slots[slot + 1] === h && this.keys.at(entry - 1) === key)) return slot;
    }
  }

  private grow(): void {
    const old = this.slots;
    const slots = (this.slots = new Int32Array(old.length * 2));
    const mask = slots.length - 2;
    for (let i = 0; i < old.length; i += 2) {
      if (old[i] === 0) continue;
      let slot = (old[i + 1]! << 1) & mask;
      while (slots[slot] !== 0) slot = (slot + 2) & mask;
      slots[slot] = old[i]!;
      slots[slot + 1] = old[i + 1]!;
    }
  }

  /** FNV-1a over UTF-16 code units from a random basis, then murmur3's finaliser. */
  private hash(s: string): number {
    let h = this.seed ^ s.length;
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
    return h ^ (h >>> 16);
  }
}

/**
 * A read-only Map over a StringIndex whose values are built on demand from their index, in
 * index order or in a given `order` (a permutation of the indices). It extends Map (with nothing
 * stored in the Map itself) so that code which checks `instanceof Map` before iterating, such as
 * saveSafetensors for its metadata argument, treats it as the Map it is; the mutators throw.
 */
export class IndexedMap<V> extends Map<string, V> implements ReadonlyMap<string, V> {
  constructor(
    private readonly index: StringIndex,
    private readonly valueAt: (i: number) => V,
    private readonly order: Uint32Array | null = null,
  ) {
    super();
  }

  override get size(): number {
    return this.index.size;
  }

  override get(key: string): V | undefined {
    const i = this.index.indexOf(key);
    return i < 0 ? undefined : this.valueAt(i);
  }

  override has(key: string): boolean {
    return this.index.indexOf(key) >= 0;
  }

  override set(): never {
    throw new TypeError('this Map is read-only (a file header); copy it with new Map(...) to change it');
  }

  override delete(): never {
    return this.set();
  }

  override clear(): never {
    return this.set();
  }

  override forEach(callback: (value: V, key: string, map: Map<string, V>) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) callback.call(thisArg, v, k, this);
  }

  private *indices(): Generator<number, undefined> {
    const n = this.index.size;
    for (let k = 0; k < n; k++) yield this.order ? this.order[k]! : k;
  }

  override *keys(): MapIterator<string> {
    for (const i of this.indices()) yield this.index.key(i);
  }

  override *values(): MapIterator<V> {
    for (const i of this.indices()) yield this.valueAt(i);
  }

  override *entries(): MapIterator<[string, V]> {
    for (const i of this.indices()) yield [this.index.key(i), this.valueAt(i)];
  }

  override [Symbol.iterator](): MapIterator<[string, V]> {
    return this.entries();
  }
}
