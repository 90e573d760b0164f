/**
 * The paged KV cache of continuous batching: for every layer one pool of keys and one of values,
 * [blocks, KVH, BLOCK, D] each, cut into blocks of BLOCK positions. The pools hold f32, or IEEE half
 * ('f16': half the memory, so twice the positions in one budget; the values are rounded to nearest
 * even as they are stored, as llama.cpp's F16 cache does). A sequence owns a list of blocks (its
 * block table) and position t lives in block table[t / BLOCK] at slot t % BLOCK, so sequences of
 * any length share one budget without fragmenting it.
 *
 * A sequence is given every block it can ever need when it is admitted (prompt + max new tokens):
 * it can never run out mid-generation, and the scheduler only has to wait for room before
 * admitting. Blocks go back to the free list the moment a sequence ends or is cancelled.
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
  }

  /** Bytes one block takes over all layers, keys and values. */
  static blockBytes(shape: PagedKvShape, dtype: KvCacheDtype = 'f32'): number {
    return 2 * shape.layers * shape.kvHeads * KV_BLOCK * shape.headDim * (dtype === 'f16' ? 2 : 4);
  }

  /** Blocks that hold `positions` positions. */
  static blocksFor(positions: number): number {
    return Math.ceil(positions / KV_BLOCK);
  }

  get freeBlocks(): number {
    return this.#free.length;
  }

  get usedBlocks(): number {
    return this.totalBlocks - this.#free.length;
  }

  /** `n` blocks, or null when fewer are free (nothing is taken then). */
  allocate(n: number): Int32Array | null {
    if (n > this.#free.length) return null;
    const table = new Int32Array(n);
    for (let i = 0; i < n; i++) table[i] = this.#free.pop()!;
    return table;
  }

  release(table: Int32Array): void {
    for (const b of table) this.#free.push(b);
  }
}
