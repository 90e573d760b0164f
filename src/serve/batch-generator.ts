/**
 * The server's TextGenerator on the continuous-batching engine: text in, text out, as
 * ModelGenerator, but every request's tokens come from the engine's shared steps. One engine
 * serves the base and all its adapters: each model id gets a BatchGenerator naming its adapter.
 * Sampling options, penalties, logprobs and stop strings are the same code as ModelGenerator's.
 */
import type { OpenedLanguageModel } from '../load/language-model.js';
import { eosSet } from '../models/causal-lm.js';
import { StopTextStream, type TextCodec, UTF8_BYTES } from '../models/generate-text.js';
import { invalidRequest } from '../server/api-error.js';
import {
  type GenerationChunk,
  type GenerationParams,
  type GenerationResult,
  type TextGenerator,
  penalties,
  samplingOf,
  tokenLogprob,
} from '../server/generation.js';
import type { BatchEngine } from './engine.js';

export class BatchGenerator implements TextGenerator {
  readonly contextLength: number;
  readonly vocabSize: number;
  private readonly codec: TextCodec;

  constructor(
    private readonly opened: OpenedLanguageModel,
    private readonly engine: BatchEngine,
    /** The adapter of this model id (null: the base). */
    private readonly adapter: string | null = null,
  ) {
    this.contextLength = opened.model.contextLength;
    this.vocabSize = opened.model.config.vocab_size;
    this.codec = opened.textOptions.codec ?? UTF8_BYTES;
  }

  promptTokens(prompt: string | readonly number[]): number {
    return typeof prompt === 'string' ? this.codec.encode(prompt).length : prompt.length;
  }

  /** Refuses (400 kv_cache_too_small) a request that could never fit in the KV cache budget. */
  checkFits(promptTokens: number, maxTokens: number): void {
    const need = this.engine.blocksFor(promptTokens, maxTokens);
    const total = this.engine.kv.totalBlocks;
    if (need > total)
      throw invalidRequest(
        'kv_cache_too_small',
        `this request (${promptTokens} prompt tokens, up to ${maxTokens} new) needs ${need} KV cache blocks and the server's whole cache holds ${total}; lower max_tokens or shorten the prompt`,
        'max_tokens',
      );
  }

  async generate(
    p: GenerationParams,
    signal: AbortSignal,
    onChunk: (chunk: GenerationChunk) => void,
  ): Promise<GenerationResult> {
    const promptIds = typeof p.prompt === 'string' ? this.codec.encode(p.prompt) : [...p.prompt];
    const eosTokenId =
      this.opened.textOptions.eosTokenId === undefined
        ? this.opened.model.config.eos_token_id
        : this.opened.textOptions.eosTokenId;
    const eos = eosSet(p.ignoreEos ? null : eosTokenId);
    const text = new StopTextStream(this.codec, p.stop);
    this.checkFits(promptIds.length, p.maxTokens);
    const result = await this.engine.submit({
      prompt: promptIds,
      maxTokens: p.maxTokens,
      sampling: samplingOf(p),
      seed: p.seed,
      eos,
      adapter: this.adapter,
      adjustLogits: penalties(p) as ((l: Float32Array, produced: readonly number[]) => Float32Array) | undefined,
      signal,
      onToken: (id, logits) => {
        if (eos.has(id)) return true;
        const out = text.push(id);
        onChunk({
          text: out.text,
          logprob: p.topLogprobs === null ? null : tokenLogprob(this.codec, id, logits, p.topLogprobs),
        });
        return !out.stopped;
      },
    });
    const base = { promptTokens: promptIds.length, completionTokens: result.tokens.length };
    if (result.finishReason === 'cancelled') return { text: text.text, finishReason: 'cancelled', ...base };
    const tail = text.finish();
    if (tail) onChunk({ text: tail, logprob: null });
    return { text: text.text, finishReason: result.finishReason === 'length' ? 'length' : 'stop', ...base };
  }
}
