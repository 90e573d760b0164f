/**
 * Continuous batching: every running sequence's next token comes out of one shared forward pass
 * (a BatchedModel: BatchedLlama, BatchedGpt) per step. Between steps sequences join (admitted when
 * the KV cache has room for their prompt) and leave (finished, stopped or cancelled — their blocks
 * are given back at once: emptied, or kept as cached blocks for later requests); prompts are
 * fed in chunks of at most `prefillChunk` tokens per step next to the decode rows, so a long prompt
 * never stalls the sequences already decoding. The event loop gets a turn after every step (new
 * requests, client disconnects, timers).
 *
 * A sequence's blocks are taken as it grows, one when its next position starts a block, not all its
 * `maxTokens` might need up front: most answers end well before their limit, and the blocks they
 * never fill would hold other requests out. When a growing sequence finds no free block, the
 * sequence admitted last is preempted (vLLM's policy): its blocks are given back and it waits at
 * the head of the queue to be computed again from its prompt and the tokens it has produced. The
 * kernels are batch-invariant, so the recomputed keys and values, and every later token, are the
 * same bits: a preemption costs time, never a different answer. So that preemptions stay rare,
 * admission leaves room for what every running sequence is expected to grow by: the share of its
 * remaining tokens that recent answers used (expectedShare; all of them until answers are seen).
 *
 * Each sequence keeps its own sampling state — seeded generator, sampling options, penalties — and
 * picks its tokens with the same sampler as single-sequence generation (models/sampling.ts). Since
 * the forward pass is batch-invariant, a sequence's tokens and logits are the same bits whether
 * it runs alone or next to any others (test/serve-batching.test.ts).
 */
import { createHash, randomUUID } from 'node:crypto';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { ArgumentError } from '../errors.js';
import type { AdapterSet } from '../finetune/adapter-set.js';
import type { LoraAdapter } from '../finetune/lora.js';
import { checkSamplingOptions, sampleToken, type SamplingOptions } from '../models/sampling.js';
import { Generator as Random } from '../random.js';
import type { KvCacheGauges } from '../server/metrics.js';
import type { BatchedModel, BatchRow } from './batched-decoder.js';
import { KV_BLOCK, PagedKvCache, type KvCacheDtype } from './paged-kv.js';

/** A sequence needs more KV cache than the whole budget holds: it could never run. */
export class KvBudgetError extends ArgumentError {
  constructor(message: string, neededBlocks: number, totalBlocks: number) {
    super(message, { field: 'kv_cache', neededBlocks, totalBlocks });
  }
}

export interface SequenceRequest {
  prompt: readonly number[];
  /** Most new tokens (≥ 0). */
  maxTokens: number;
  sampling: SamplingOptions;
  seed: number;
  /** Token ids that end the sequence (produced, then it stops). */
  eos: ReadonlySet<number>;
  /** A LoRA adapter of the engine's AdapterSet, or null for the base. */
  adapter: string | null;
  /** As GenerateOptions.adjustLogits: penalties and biases, on a copy of the row. */
  adjustLogits?: (logits: Float32Array, produced: readonly number[]) => ArrayLike<number>;
  /** Each produced token with the model's logits it was drawn from; return false to stop (a stop string). */
  onToken?: (id: number, logits: Float32Array) => boolean | void;
  signal?: AbortSignal;
}

export interface SequenceResult {
  tokens: number[];
  finishReason: 'eos' | 'length' | 'stop' | 'cancelled';
}

export interface BatchEngineOptions {
  /** KV cache budget in bytes (all layers, keys and values). */
  kvCacheBytes: number;
  /** What the KV cache stores (default 'f32'; 'f16' fits twice the positions in the budget). */
  kvCacheDtype?: KvCacheDtype;
  /** Most prompt tokens fed per step, over all sequences (default 64). */
  prefillChunk?: number;
  /** Adapters a request may name. */
  adapters?: AdapterSet;
  /**
   * Reuse the cached keys and values of whole 16-token blocks a new request shares with an earlier
   * one (same tokens from the start — prompt or produced —, same adapter) instead of computing them
   * again (default true). Tokens and logits are the same bits either way.
   */
  prefixCache?: boolean;
  /**
   * What admission leaves room for as running sequences grow (default 'expected'): the share of their
   * remaining tokens recent answers used (expectedShare), or 'whole': all of their `maxTokens`, so no
   * sequence is ever preempted — fewer run at once when answers end early, in exchange for never
   * recomputing one.
   */
  kvReserve?: KvReserve;
}

export type KvReserve = 'expected' | 'whole';
export const KV_RESERVES: readonly KvReserve[] = ['expected', 'whole'];

interface Sequence {
  req: SequenceRequest;
  adapter: LoraAdapter | null;
  table: Int32Array | null;
  /** Tokens to feed, in order: the prompt's remainder (after a preemption: the prompt and every produced token), then the last sampled token. */
  pending: number[];
  /** Positions already in the cache. */
  cached: number;
  /** The prefix-index keys of its whole blocks (the prompt's, then those of produced tokens as they fill), and how many of its blocks are indexed. */
  keys: string[];
  registered: number;
  produced: number[];
  generator: Random;
  done: boolean;
  finish: (r: SequenceResult) => void;
  fail: (e: unknown) => void;
  onAbort: () => void;
}

export interface BatchEngineStats {
  totalBlocks: number;
  usedBlocks: number;
  freeBlocks: number;
  running: number;
  waiting: number;
  steps: number;
  /** Cached blocks (prompt or produced tokens) no running request holds (counted in freeBlocks). */
  cachedBlocks: number;
  /** Positions to feed (prompt tokens; after a preemption, the produced ones too) whose keys and values came from the prefix cache instead of a forward pass. */
  reusedPromptTokens: number;
  /** Running sequences sent back to the queue because a growing one found no free block. */
  preemptions: number;
}

export class BatchEngine {
  readonly kv: PagedKvCache;
  private readonly prefillChunk: number;
  /** Whether whole blocks are shared between requests (BatchEngineOptions.prefixCache). */
  readonly prefixCache: boolean;
  /** What admission leaves room for (BatchEngineOptions.kvReserve). */
  readonly kvReserve: KvReserve;
  private readonly waiting: Sequence[] = [];
  private readonly running: Sequence[] = [];
  private pumping = false;
  private steps = 0;
  private reusedPromptTokens = 0;
  private preemptions = 0;
  /** What share of its maxTokens each of the last finished sequences produced (expectedShare). */
  private readonly recentShares: number[] = [];
  /** A tag per adapter object for the prefix keys (a reloaded adapter is another object: another tag). */
  private readonly adapterTags = new WeakMap<LoraAdapter, string>();

  constructor(
    readonly model: BatchedModel,
    private readonly opts: BatchEngineOptions,
  ) {
    const dtype = opts.kvCacheDtype ?? 'f32';
    const blockBytes = PagedKvCache.blockBytes(model.shape, dtype);
    const blocks = Math.floor(opts.kvCacheBytes / blockBytes);
    if (blocks < 1)
      throw new ArgumentError(
        `the KV cache budget of ${(opts.kvCacheBytes / 2 ** 20).toFixed(2)} MiB holds no block; one block of this model takes ${(blockBytes / 2 ** 20).toFixed(2)} MiB (${dtype})`,
      );
    this.kv = new PagedKvCache(model.shape, blocks, dtype);
    this.prefillChunk = opts.prefillChunk ?? 64;
    this.prefixCache = opts.prefixCache ?? true;
    this.kvReserve = opts.kvReserve ?? 'expected';
    if (!KV_RESERVES.includes(this.kvReserve))
      throw new ArgumentError(`kvReserve is one of ${KV_RESERVES.join(', ')}, got ${String(this.kvReserve)}`);
    if (!Number.isInteger(this.prefillChunk) || this.prefillChunk < 1)
      throw new ArgumentError(`prefillChunk must be a positive integer, got ${this.prefillChunk}`);
  }

  /** Blocks a sequence of `promptTokens` + `maxTokens` may fill (the last token is sampled, never fed). */
  blocksFor(promptTokens: number, maxTokens: number): number {
    return PagedKvCache.blocksFor(Math.max(1, promptTokens + maxTokens - 1));
  }

  /** Throws KvBudgetError when such a sequence can never fit the budget. */
  checkFits(promptTokens: number, maxTokens: number): void {
    const need = this.blocksFor(promptTokens, maxTokens);
    if (need > this.kv.totalBlocks)
      throw new KvBudgetError(
        `a prompt of ${promptTokens} tokens with up to ${maxTokens} new ones needs ${need} KV cache blocks, and the whole cache holds ${this.kv.totalBlocks}; ask for fewer tokens or raise --kv-cache-mb${this.kv.dtype === 'f32' ? ' (or serve with --kv-cache-dtype f16, which holds twice the positions)' : ''}`,
        need,
        this.kv.totalBlocks,
      );
  }

  get stats(): BatchEngineStats {
    return {
      totalBlocks: this.kv.totalBlocks,
      usedBlocks: this.kv.usedBlocks,
      freeBlocks: this.kv.freeBlocks,
      running: this.running.length,
      waiting: this.waiting.length,
      steps: this.steps,
      cachedBlocks: this.kv.cachedBlocks,
      reusedPromptTokens: this.reusedPromptTokens,
      preemptions: this.preemptions,
    };
  }

  /** What /metrics shows of the cache. */
  kvGauges(): KvCacheGauges {
    const { usedBlocks: used, freeBlocks: free, cachedBlocks: cached, ...counts } = this.stats;
    const { reusedPromptTokens, preemptions, running, waiting } = counts;
    return { used, free, cached, reusedPromptTokens, preemptions, running, waiting };
  }

  /** What every prefix key of a sequence on `adapter` starts from (a reloaded adapter is another object: another tag). */
  private tagOf(adapter: LoraAdapter | null): string {
    if (!adapter) return 'base';
    let tag = this.adapterTags.get(adapter);
    if (tag === undefined) this.adapterTags.set(adapter, (tag = `adapter ${randomUUID()}`));
    return tag;
  }

  /**
   * Extends the sequence's prefix-index keys to its first `blocks` whole 16-token blocks of fed
   * tokens (the prompt, then the produced ones): each a hash chained from the one before.
   */
  private extendKeys(seq: Sequence, blocks: number): void {
    const { prompt } = seq.req;
    for (let b = seq.keys.length; b < blocks; b++) {
      const tokens = Int32Array.from({ length: KV_BLOCK }, (_, i) => {
        const p = b * KV_BLOCK + i;
        return p < prompt.length ? prompt[p]! : seq.produced[p - prompt.length]!;
      });
      const previous = seq.keys[b - 1] ?? this.tagOf(seq.adapter);
      seq.keys.push(createHash('sha256').update(previous).update(new Uint8Array(tokens.buffer)).digest('base64'));
    }
  }

  /** Generates one sequence among the others; resolves when it ends (never rejects for a cancel). */
  submit(req: SequenceRequest): Promise<SequenceResult> {
    checkSamplingOptions(req.sampling);
    const V = this.model.vocabSize;
    if (req.prompt.length === 0) throw new ArgumentError('generate: the prompt needs at least one token');
    const bad = req.prompt.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= V);
    if (bad >= 0)
      throw new ArgumentError(`generate: prompt token ${req.prompt[bad]} at position ${bad} is outside [0, ${V})`);
    if (!Number.isInteger(req.maxTokens) || req.maxTokens < 0)
      throw new ArgumentError(`generate: maxTokens must be a non-negative integer, got ${req.maxTokens}`);
    if (
      req.prompt.length + req.maxTokens > this.model.contextLength + 1 ||
      req.prompt.length > this.model.contextLength
    )
      throw new ArgumentError(
        `generate: ${req.prompt.length} prompt tokens and ${req.maxTokens} new ones exceed the context of ${this.model.contextLength}`,
      );
    const adapter = req.adapter === null ? null : (this.opts.adapters?.get(req.adapter) ?? null);
    if (req.adapter !== null && !adapter)
      throw new ArgumentError(`generate: no adapter named ${JSON.stringify(req.adapter)} is loaded`);
    const unread = adapter && this.model.unreadCopy(adapter);
    if (unread)
      throw new ArgumentError(
        `generate: adapter ${JSON.stringify(req.adapter)} trains a copy of ${unread}, which batched decoding does not read`,
      );
    this.checkFits(req.prompt.length, req.maxTokens);
    if (req.maxTokens === 0 || req.signal?.aborted)
      return Promise.resolve({ tokens: [], finishReason: req.signal?.aborted ? 'cancelled' : 'length' });
    return new Promise<SequenceResult>((resolve, reject) => {
      const seq: Sequence = {
        req,
        adapter,
        table: null,
        pending: [...req.prompt],
        cached: 0,
        keys: [],
        registered: 0,
        produced: [],
        generator: new Random(req.seed),
        done: false,
        finish: (r) => {
          if (seq.done) return;
          if (r.finishReason !== 'cancelled') this.recordShare(seq);
          this.leave(seq);
          resolve(r);
        },
        fail: (e) => {
          if (seq.done) return;
          this.leave(seq);
          reject(e);
        },
        onAbort: () => seq.finish({ tokens: seq.produced, finishReason: 'cancelled' }),
      };
      if (this.prefixCache) this.extendKeys(seq, Math.floor(req.prompt.length / KV_BLOCK));
      req.signal?.addEventListener('abort', seq.onAbort, { once: true });
      this.waiting.push(seq);
      void this.pump();
    });
  }

  /** Takes a sequence out of the engine and gives its blocks back, at once. */
  private leave(seq: Sequence): void {
    seq.done = true;
    seq.req.signal?.removeEventListener('abort', seq.onAbort);
    for (const list of [this.waiting, this.running]) {
      const i = list.indexOf(seq);
      if (i >= 0) list.splice(i, 1);
    }
    if (seq.table) this.kv.release(seq.table);
    seq.table = null;
  }

  /**
   * First come, first served: a sequence that does not fit yet holds back those behind it (no
   * starvation). It is given the blocks of every position it has to feed (its prompt; after a
   * preemption, its produced tokens too), and it must leave room for what it and every running
   * sequence are expected to grow by (expectedGrowth) — unless it would run alone, which always
   * fits. Its leading blocks come from the prefix cache where they are there — all but the block of
   * the last position to feed, whose row must run to give the next logits — and where the next of
   * them is being computed by a running sequence, it waits for that (computing).
   */
  private admit(): void {
    const share = this.expectedShare();
    let reserved = 0;
    for (const r of this.running)
      reserved += this.expectedGrowth(r, r.cached + r.pending.length, r.table!.length, share);
    while (this.waiting.length > 0) {
      const seq = this.waiting[0]!;
      const reusable = Math.floor((seq.pending.length - 1) / KV_BLOCK);
      const hits = this.kv.lookup(seq.keys.slice(0, reusable));
      if (this.prefixCache && hits.length < reusable && this.computing(seq.keys[hits.length]!)) {
        this.kv.release(hits);
        return;
      }
      const held = PagedKvCache.blocksFor(seq.pending.length);
      const growth = this.expectedGrowth(seq, seq.pending.length, held, share);
      const room = this.running.length === 0 || held - hits.length + growth + reserved <= this.kv.freeBlocks;
      const table = room ? this.kv.allocate(held - hits.length, hits) : null;
      if (!table) {
        this.kv.release(hits);
        return;
      }
      reserved += growth;
      seq.table = table;
      seq.registered = hits.length; // reused blocks are indexed already
      seq.cached = hits.length * KV_BLOCK;
      seq.pending.splice(0, seq.cached);
      this.reusedPromptTokens += seq.cached;
      this.waiting.shift();
      this.running.push(seq);
    }
  }

  /**
   * Whether a running sequence is computing the block of prefix key `key` (its tokens from the
   * start are the same) and has not written it yet. A request that would need it waits for it —
   * a step or a few, as prompts are read in chunks — and reads it then: a burst of requests on one
   * new system prompt computes it once, not once each from the same prefill budget.
   */
  private computing(key: string): boolean {
    return this.running.some((r) => r.keys.lastIndexOf(key) >= r.registered);
  }

  /**
   * The share of its remaining tokens a sequence is expected to produce: the 90th percentile of
   * the share of maxTokens the last finished sequences produced (1 until there are 8). Most answers
   * end well before their limit; reserving all of it would keep others out, reserving nothing
   * would admit so many that preemptions undo the work. With kvReserve 'whole', always 1.
   */
  private expectedShare(): number {
    const n = this.recentShares.length;
    if (n < 8 || this.kvReserve === 'whole') return 1;
    return [...this.recentShares].sort((a, b) => a - b)[Math.floor(0.9 * (n - 1))]!;
  }

  /** Blocks beyond `held` a sequence with `fed` positions (written or to write) is expected to take. */
  private expectedGrowth(seq: Sequence, fed: number, held: number, share: number): number {
    const remaining = seq.req.maxTokens - seq.produced.length - 1; // the last token is never fed
    return Math.max(0, PagedKvCache.blocksFor(fed + Math.ceil(share * remaining)) - held);
  }

  /** Records what share of its maxTokens a finished sequence produced (the last 64). */
  private recordShare(seq: Sequence): void {
    this.recentShares.push(seq.produced.length / seq.req.maxTokens);
    if (this.recentShares.length > 64) this.recentShares.shift();
  }

  /**
   * Gives each running sequence the block its next position needs, oldest first. Where none is
   * free, the sequence admitted last gives its blocks back (preempt) — the one growing, when it is
   * the last. A sequence alone always fits: checkFits held its whole length to the budget.
   */
  private grow(): void {
    for (let i = 0; i < this.running.length; i++) {
      const seq = this.running[i]!;
      const need = PagedKvCache.blocksFor(seq.cached + 1) - seq.table!.length;
      if (need <= 0) continue;
      let table = this.kv.allocate(need, seq.table!);
      while (!table && this.running.length - 1 > i) {
        this.preempt(this.running[this.running.length - 1]!);
        table = this.kv.allocate(need, seq.table!);
      }
      if (table) seq.table = table;
      else this.preempt(seq);
    }
  }

  /** Sends a running sequence back to the head of the queue, its blocks given back, to be fed again from its first token. */
  private preempt(seq: Sequence): void {
    this.running.splice(this.running.indexOf(seq), 1);
    this.kv.release(seq.table!);
    seq.table = null;
    seq.cached = 0;
    seq.registered = 0;
    seq.pending = [...seq.req.prompt, ...seq.produced];
    this.waiting.unshift(seq);
    this.preemptions++;
  }

  /**
   * Indexes the sequence's blocks whose positions are all written now, prompt and produced tokens
   * alike: a later request that starts with the same tokens (a conversation's next turn) reads them,
   * and so does this one if it is preempted.
   */
  private registerBlocks(seq: Sequence): void {
    if (!this.prefixCache) return;
    const whole = Math.floor(seq.cached / KV_BLOCK);
    this.extendKeys(seq, whole);
    for (; seq.registered < whole; seq.registered++)
      this.kv.register(seq.table![seq.registered]!, seq.keys[seq.registered]!);
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (;;) {
        this.admit();
        if (this.running.length === 0) return;
        this.step();
        await nextTurn();
      }
    } finally {
      this.pumping = false;
    }
  }

  /** One forward pass: a decode row for each sequence past its prompt, then prompt chunks up to the budget. */
  private step(): void {
    this.grow();
    const rows: BatchRow[] = [];
    const fed: { seq: Sequence; n: number }[] = [];
    let budget = this.prefillChunk;
    for (const seq of this.running) {
      const prefill = seq.pending.length > 1;
      const n = prefill ? Math.min(seq.pending.length, budget) : 1;
      if (n === 0) continue;
      if (prefill) budget -= n;
      for (let i = 0; i < n; i++)
        rows.push({
          token: seq.pending[i]!,
          position: seq.cached + i,
          table: seq.table!,
          adapter: seq.adapter,
          wantLogits: i === n - 1 && n === seq.pending.length,
        });
      fed.push({ seq, n });
    }
    if (rows.length === 0) return;
    this.steps++;
    let logits: Float32Array[];
    try {
      logits = this.model.forward(rows, this.kv);
    } catch (e) {
      for (const { seq } of fed) seq.fail(e);
      return;
    }
    let next = 0;
    for (const { seq, n } of fed) {
      seq.cached += n;
      seq.pending.splice(0, n);
      if (!seq.done) this.registerBlocks(seq); // an earlier row's callback may have cancelled it
      if (seq.pending.length > 0) continue; // more of the prompt next step
      this.sample(seq, logits[next++]!);
    }
  }

  private sample(seq: Sequence, logits: Float32Array): void {
    if (seq.done) return; // cancelled while its row was in flight
    const { req } = seq;
    let id: number;
    let keep: boolean | void;
    try {
      // A throwing callback (penalties, the text stream) fails its own sequence, never the engine.
      const row = req.adjustLogits ? req.adjustLogits(logits.slice(), seq.produced) : logits;
      id = sampleToken(row, req.sampling, seq.generator);
      seq.produced.push(id);
      keep = req.onToken?.(id, logits);
    } catch (e) {
      seq.fail(e);
      return;
    }
    if (seq.done) return; // the callback cancelled it
    if (req.eos.has(id)) seq.finish({ tokens: seq.produced, finishReason: 'eos' });
    else if (keep === false) seq.finish({ tokens: seq.produced, finishReason: 'stop' });
    else if (seq.produced.length >= req.maxTokens) seq.finish({ tokens: seq.produced, finishReason: 'length' });
    else seq.pending.push(id);
  }
}
