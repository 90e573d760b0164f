/**
 * The paged KV cache of continuous batching: for every layer one pool of keys and one of values,
 * [blocks, KVH, BLOCK, D] each, cut into blocks of BLOCK positions. The pools hold f32, or IEEE half
 * ('f16': half the memory, so twice the positions in one budget; the values are rounded to nearest
 * even as they are stored, as llama.cpp's F16 cache does). A sequence owns a list of blocks (its
 * block table) and position t lives in block table[t / BLOCK] at slot t % BLOCK, so sequences of
 * any length share one budget without fragmenting it.
 *
 * A table grows a block at a time as its sequence does (`allocate(n, table)`); blocks come back the
 * moment a sequence ends, is cancelled or is preempted (the engine's scheduling: engine.ts).
 *
 * Blocks are shared (prefix caching): a block whose 16 positions are all written is indexed under a
 * key naming everything its keys and values depend on (the tokens up to its end, prompt or
 * produced, and the adapter), and a later sequence whose tokens start the same way takes it instead
 * of computing it again — the same bits, since every kernel is batch-invariant. Blocks count their
 * sequences; an indexed block no sequence holds stays cached (least recently used first out) until
 * an allocation needs its room. `freeBlocks` counts those as free.
 */
import { ArgumentError } from '../errors.js';

/** Positions per block. */
export const KV_BLOCK = 16;

export interface PagedKvShape {
  layers: number;
  kvHeads: number;
  headDim: number;
}

/** What the cache stores keys and values as. */
export type KvCacheDtype = 'f32' | 'f16';
export const KV_CACHE_DTYPES: readonly KvCacheDtype[] = ['f32', 'f16'];

/** One layer's pool: f32 values, or f16 bit patterns. */
export type KvPool = Float32Array | Uint16Array;

export class PagedKvCache {
  readonly keys: KvPool[];
  readonly values: KvPool[];
  readonly totalBlocks: number;
  readonly shape: PagedKvShape;
  readonly dtype: KvCacheDtype;
  readonly #free: number[];
  /** Sequences holding each block. */
  readonly #refs: Int32Array;
  /** The prefix index: key → block, and each indexed block's key. */
  readonly #index = new Map<string, number>();
  readonly #keyOf = new Map<number, string>();
  /** Indexed blocks no sequence holds, least recently used first (a Map keeps insertion order). */
  readonly #cached = new Map<number, true>();

  constructor(shape: PagedKvShape, totalBlocks: number, dtype: KvCacheDtype = 'f32') {
    if (!Number.isInteger(totalBlocks) || totalBlocks < 1)
      throw new ArgumentError(`PagedKvCache: needs at least one block, got ${totalBlocks}`);
    if (!KV_CACHE_DTYPES.includes(dtype))
      throw new ArgumentError(`PagedKvCache: the cache holds ${KV_CACHE_DTYPES.join(' or ')}, not ${String(dtype)}`);
    this.shape = shape;
    this.totalBlocks = totalBlocks;
    this.dtype = dtype;
    const size = totalBlocks * shape.kvHeads * KV_BLOCK * shape.headDim;
    const pool = (): KvPool => (dtype === 'f16' ? new Uint16Array(size) : new Float32Array(size));
    try {
      this.keys = Array.from({ length: shape.layers }, pool);
      this.values = Array.from({ length: shape.layers }, pool);
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      throw new ArgumentError(
        `PagedKvCache: cannot allocate ${totalBlocks} blocks (${((totalBlocks * PagedKvCache.blockBytes(shape, dtype)) / 2 ** 20).toFixed(0)} MiB): ${e.message}; lower --kv-cache-mb`,
      );
    }
    // Popped from the end: block 0 first.
    this.#free = Array.from({ length: totalBlocks }, (_, i) => totalBlocks - 1 - i);
    this.#refs = new Int32Array(totalBlocks);
  }

  /** Bytes one block takes over all layers, keys and values. */
  static blockBytes(shape: PagedKvShape, dtype: KvCacheDtype = 'f32'): number {
    return 2 * shape.layers * shape.kvHeads * KV_BLOCK * shape.headDim * (dtype === 'f16' ? 2 : 4);
  }

  /** Blocks that hold `positions` positions. */
  static blocksFor(positions: number): number {
    return Math.ceil(positions / KV_BLOCK);
  }

  /** Blocks an allocation can take: empty ones and cached blocks no sequence holds. */
  get freeBlocks(): number {
    return this.#free.length + this.#cached.size;
  }

  /** Blocks held by sequences. */
  get usedBlocks(): number {
    return this.totalBlocks - this.freeBlocks;
  }

  /** Cached blocks no sequence holds (part of freeBlocks). */
  get cachedBlocks(): number {
    return this.#cached.size;
  }

  /**
   * `reused` (blocks from `lookup`, or a table to extend: already held) followed by `n` new blocks, or null when fewer
   * are free (nothing is taken then). Cached blocks are given up oldest first when the empty ones
   * run out.
   */
  allocate(n: number, reused: ArrayLike<number> = []): Int32Array | null {
    if (n > this.freeBlocks) return null;
    const table = new Int32Array(reused.length + n);
    table.set(reused);
    for (let i = reused.length; i < table.length; i++) {
      let b = this.#free.pop();
      if (b === undefined) {
        b = this.#cached.keys().next().value!;
        this.#cached.delete(b);
        this.#index.delete(this.#keyOf.get(b)!);
        this.#keyOf.delete(b);
      }
      this.#refs[b] = 1;
      table[i] = b;
    }
    return table;
  }

  /**
   * The indexed blocks of the longest run of `keys` from the first, each now held once more by the
   * caller (pass them to `allocate` as `reused`, or to `release`).
   */
  lookup(keys: readonly string[]): number[] {
    const found: number[] = [];
    for (const key of keys) {
      const b = this.#index.get(key);
      if (b === undefined) break;
      if (this.#refs[b]++ === 0) this.#cached.delete(b);
      found.push(b);
    }
    return found;
  }

  /** Indexes `block` under `key`, unless another block has that key. The caller holds the block and has written all its positions. */
  register(block: number, key: string): void {
    if (this.#index.has(key) || this.#keyOf.has(block)) return;
    this.#index.set(key, block);
    this.#keyOf.set(block, key);
  }

  /**
   * The caller's hold on each block ends; a block no one holds is cached if indexed, else emptied.
   * A table is released from its end, so a prompt's later blocks are evicted before its first ones
   * (a lookup stops at the first missing block: without block 0 the rest could never be found).
   */
  release(table: ArrayLike<number>): void {
    for (let i = table.length - 1; i >= 0; i--) {
      const b = table[i]!;
      if (--this.#refs[b]! > 0) continue;
      if (this.#keyOf.has(b)) this.#cached.set(b, true);
      else this.#free.push(b);
    }
  }
}
