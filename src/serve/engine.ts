/**
 * Continuous batching: every running sequence's next token comes out of one shared forward pass
 * (a BatchedModel: BatchedLlama, BatchedGpt) per step. Between steps sequences join (admitted when
 * the KV cache has room for all they may need) and leave (finished, stopped or cancelled — their
 * blocks are given back at once: emptied, or kept as cached prompt blocks for later requests);
 * prompts are fed in chunks of at most `prefillChunk` tokens per step next to the decode rows, so
 * a long prompt never stalls the sequences already decoding. The event loop gets a turn after
 * every step (new requests, client disconnects, timers).
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
   * Reuse the cached keys and values of whole 16-token prompt blocks a new request shares with an
   * earlier one (same tokens from the start, same adapter) instead of computing them again (default
   * true). Tokens and logits are the same bits either way.
   */
  prefixCache?: boolean;
}

interface Sequence {
  req: SequenceRequest;
  adapter: LoraAdapter | null;
  needBlocks: number;
  table: Int32Array | null;
  /** Tokens to feed, in order: the prompt's remainder, then the last sampled token. */
  pending: number[];
  /** Positions already in the cache. */
  cached: number;
  /** The prefix-index keys of the prompt's whole blocks, and how many of its blocks are indexed. */
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
  /** Cached prompt blocks no running request holds (counted in freeBlocks). */
  cachedBlocks: number;
  /** Prompt tokens whose keys and values came from the prefix cache instead of a forward pass. */
  reusedPromptTokens: number;
}

export class BatchEngine {
  readonly kv: PagedKvCache;
  private readonly prefillChunk: number;
  /** Whether whole prompt blocks are shared between requests (BatchEngineOptions.prefixCache). */
  readonly prefixCache: boolean;
  private readonly waiting: Sequence[] = [];
  private readonly running: Sequence[] = [];
  private pumping = false;
  private steps = 0;
  private reusedPromptTokens = 0;
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
    };
  }

  /** What /metrics shows of the cache. */
  kvGauges(): KvCacheGauges {
    const { usedBlocks: used, freeBlocks: free, cachedBlocks: cached, reusedPromptTokens } = this.stats;
    return { used, free, cached, reusedPromptTokens };
  }

  /** The prefix-index key of each whole 16-token block of `prompt`: a hash chained from the start. */
  private prefixKeys(prompt: readonly number[], adapter: LoraAdapter | null): string[] {
    if (!this.prefixCache) return [];
    let tag = adapter ? this.adapterTags.get(adapter) : 'base';
    if (tag === undefined) this.adapterTags.set(adapter!, (tag = `adapter ${randomUUID()}`));
    const keys: string[] = [];
    let key = tag;
    for (let b = 0; (b + 1) * KV_BLOCK <= prompt.length; b++) {
      const tokens = Int32Array.from(prompt.slice(b * KV_BLOCK, (b + 1) * KV_BLOCK));
      key = createHash('sha256').update(key).update(new Uint8Array(tokens.buffer)).digest('base64');
      keys.push(key);
    }
    return keys;
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
    // The batched projections add B·A only; DoRA's per-output magnitude would be silently dropped.
    if (adapter && [...adapter.layers.values()].some((l) => l.magnitude))
      throw new ArgumentError(
        `generate: adapter ${JSON.stringify(req.adapter)} is a DoRA adapter (use_dora), which the batched engine does not apply yet; merge it into the base (knobs merge) and serve the merged model`,
      );
    this.checkFits(req.prompt.length, req.maxTokens);
    if (req.maxTokens === 0 || req.signal?.aborted)
      return Promise.resolve({ tokens: [], finishReason: req.signal?.aborted ? 'cancelled' : 'length' });
    return new Promise<SequenceResult>((resolve, reject) => {
      const seq: Sequence = {
        req,
        adapter,
        needBlocks: this.blocksFor(req.prompt.length, req.maxTokens),
        table: null,
        pending: [...req.prompt],
        cached: 0,
        keys: this.prefixKeys(req.prompt, adapter),
        registered: 0,
        produced: [],
        generator: new Random(req.seed),
        done: false,
        finish: (r) => {
          if (seq.done) return;
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
   * starvation). Its prompt's leading blocks come from the prefix cache where they are there — all
   * but the block of the last prompt position, whose row must run to give the first logits.
   */
  private admit(): void {
    while (this.waiting.length > 0) {
      const seq = this.waiting[0]!;
      const hits = this.kv.lookup(seq.keys.slice(0, Math.floor((seq.req.prompt.length - 1) / KV_BLOCK)));
      const table = this.kv.allocate(seq.needBlocks - hits.length, hits);
      if (!table) {
        this.kv.release(hits);
        return;
      }
      seq.table = table;
      seq.registered = hits.length; // reused blocks are indexed already
      seq.cached = hits.length * KV_BLOCK;
      seq.pending.splice(0, seq.cached);
      this.reusedPromptTokens += seq.cached;
      this.waiting.shift();
      this.running.push(seq);
    }
  }

  /** Indexes the sequence's prompt blocks whose positions are all written now. */
  private registerPrompt(seq: Sequence): void {
    const whole = Math.min(seq.keys.length, Math.floor(seq.cached / KV_BLOCK));
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
    const rows: BatchRow[] = [];
    const fed: { seq: Sequence; n: number }[] = [];
    let budget = this.prefillChunk;
    for (const seq of this.running) {
      const prefill = seq.cached < seq.req.prompt.length;
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
      if (!seq.done) this.registerPrompt(seq); // an earlier row's callback may have cancelled it
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
