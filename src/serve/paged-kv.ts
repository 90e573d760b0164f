/**
 * The paged KV cache of continuous batching: for every layer one pool of keys and one of values,
 * [blocks, KVH, BLOCK, D] f32 each, cut into blocks of BLOCK positions. A sequence owns a list of
 * blocks (its block table) and position t lives in block table[t / BLOCK] at slot t % BLOCK, so
 * sequences of any length share one budget without fragmenting it.
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

export class PagedKvCache {
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
  readonly totalBlocks: number;
  readonly shape: PagedKvShape;
  readonly #free: number[];

  constructor(shape: PagedKvShape, totalBlocks: number) {
    if (!Number.isInteger(totalBlocks) || totalBlocks < 1)
      throw new ArgumentError(`PagedKvCache: needs at least one block, got ${totalBlocks}`);
    this.shape = shape;
    this.totalBlocks = totalBlocks;
    const size = totalBlocks * shape.kvHeads * KV_BLOCK * shape.headDim;
    try {
      this.keys = Array.from({ length: shape.layers }, () => new Float32Array(size));
      this.values = Array.from({ length: shape.layers }, () => new Float32Array(size));
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      throw new ArgumentError(
        `PagedKvCache: cannot allocate ${totalBlocks} blocks (${((totalBlocks * PagedKvCache.blockBytes(shape)) / 2 ** 20).toFixed(0)} MiB): ${e.message}; lower --kv-cache-mb`,
      );
    }
    // Popped from the end: block 0 first.
    this.#free = Array.from({ length: totalBlocks }, (_, i) => totalBlocks - 1 - i);
  }

  /** Bytes one block takes over all layers, keys and values. */
  static blockBytes(shape: PagedKvShape): number {
    return 2 * shape.layers * shape.kvHeads * KV_BLOCK * shape.headDim * 4;
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
