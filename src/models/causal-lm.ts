/**
 * What GPT and Llama share as causal language models: next-token loss, a forward pass over a
 * KV cache, and generation on top of that. `generateText`, evaluation and the trainer take any
 * `CausalLM`, so a new architecture only has to provide these members.
 */
import { noGrad } from '../autograd/tape.js';
import { ArgumentError, DTypeError, ShapeError } from '../errors.js';
import { fromArray } from '../ops/creation.js';
import type { CrossEntropyOptions } from '../ops/nn.js';
import { slice } from '../ops/view.js';
import { Generator as Random } from '../random.js';
import { formatShape } from '../shape.js';
import type { Tensor } from '../tensor.js';
import type { KVCache } from '../nn/attention.js';
import type { Module } from '../nn/module.js';
import { checkSamplingOptions, sampleToken, type SamplingOptions } from './sampling.js';

/** Checks that `ids` are token ids [B, T] (i32 or i64); `op` names the model in the error. */
export function checkTokenIds(ids: Tensor, op: string): void {
  if (ids.rank !== 2)
    throw new ShapeError(`${op}: ids must be [B, T], got ${formatShape(ids.shape)}`, { op, shapes: [ids.shape] });
  if (ids.dtype !== 'i32' && ids.dtype !== 'i64')
    throw new DTypeError(`${op}: ids must be i32 or i64 token ids, got ${ids.dtype}`, { op, dtypes: [ids.dtype] });
}

/** Hugging Face's eos_token_id: one id, a list (generation stops at any), or none. */
export type EosTokenId = number | readonly number[] | null;

export interface GenerateOptions extends SamplingOptions {
  /** Most new tokens to produce (default 32). */
  maxNewTokens?: number;
  /** Seeds the sampler (ignored when `generator` is given). Default 0. */
  seed?: number;
  generator?: Random;
  /** Stop at this token, or at any of these (default: config.eos_token_id); null never stops early. */
  eosTokenId?: EosTokenId;
  /** Keep going past eos (default false, as Hugging Face). */
  ignoreEos?: boolean;
  /** Called with each new token; return false to stop. */
  onToken?: (id: number) => boolean | void;
  /**
   * Changes a row of logits before sampling (the server's logit_bias and penalties); receives the
   * tokens produced so far and returns the row to sample from (it may edit and return its argument).
   */
  adjustLogits?: (logits: Float32Array | Float64Array, produced: readonly number[]) => ArrayLike<number>;
}

/** One produced token, and the model's logits [V] it was drawn from (before adjustLogits). */
export interface TokenStep {
  id: number;
  logits: Float32Array | Float64Array;
}

export interface GenerateResult {
  /** The new tokens (the prompt is not repeated); includes the eos token when it ended the text. */
  tokens: number[];
  /** 'eos' when an eos token was produced, 'stop' when onToken asked to stop, else 'length'. */
  finishReason: 'eos' | 'length' | 'stop';
}

export interface CausalLM extends Module {
  readonly config: { readonly vocab_size: number; readonly eos_token_id: EosTokenId };
  /** The most positions one forward pass may hold (GPT-2's n_positions, Llama's max_position_embeddings). */
  readonly contextLength: number;
  /** ids [B, T] → logits [B, T, V]. */
  forward(ids: Tensor): Tensor;
  /** Mean next-token cross-entropy of ids [B, T] against targets [B, T]. */
  loss(ids: Tensor, targets: Tensor, opts?: CrossEntropyOptions): Tensor;
  /** An empty cache for `batch` sequences of up to contextLength positions. */
  createCache(batch?: number): KVCache;
  /** ids [B, T] after the cache's positions → logits [B, T, V]; advances the cache; no gradients. */
  forwardWithCache(ids: Tensor, cache: KVCache): Tensor;
  generate(prompt: readonly number[], opts?: GenerateOptions): GenerateResult;
  /** The config.json content Hugging Face transformers reads for this model. */
  toHFConfig(): Record<string, unknown>;
}

/** A forwardWithCache body: `logitsOf` runs without gradients, then the cache moves past the T new positions. */
export function stepWithCache(cache: KVCache, T: number, logitsOf: () => Tensor): Tensor {
  const logits = noGrad(logitsOf);
  cache.length += T;
  return logits;
}

/** The eos ids as a set (empty for null). */
export function eosSet(eos: EosTokenId): ReadonlySet<number> {
  return new Set(eos === null ? [] : typeof eos === 'number' ? [eos] : eos);
}

/**
 * Produces tokens after `prompt` (one sequence) with the KV cache. Greedy when `greedy` or
 * temperature 0; otherwise samples with temperature/top-k/top-p from a seeded generator. Stops at
 * an eos id (unless ignoreEos or eosTokenId null), after maxNewTokens, or when onToken returns
 * false. Once the context is longer than contextLength, each step recomputes the last
 * contextLength tokens from an empty cache (nanoGPT's crop). Runs in eval mode and restores the
 * previous mode.
 */
export function generateTokens(model: CausalLM, prompt: readonly number[], opts: GenerateOptions = {}): GenerateResult {
  const tokens: number[] = [];
  const steps = tokenSteps(model, prompt, opts);
  for (let step = steps.next(); ; step = steps.next()) {
    if (step.done) return { tokens, finishReason: step.value };
    tokens.push(step.value.id);
    if (opts.onToken?.(step.value.id) === false) {
      steps.return('length');
      return { tokens, finishReason: 'stop' };
    }
  }
}

/**
 * generateTokens one token at a time: each `next()` computes and yields one token (an eos token
 * included), so a caller can pause between tokens (the server yields to its event loop, notices a
 * client that left and calls `return()`). Returns 'eos' or 'length' when it ends by itself. Checks
 * its options on the first `next()`.
 */
export function* tokenSteps(
  model: CausalLM,
  prompt: readonly number[],
  opts: GenerateOptions = {},
): Generator<TokenStep, 'eos' | 'length', void> {
  const { maxNewTokens = 32 } = opts;
  checkSamplingOptions(opts);
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0)
    throw new ArgumentError(`generate: maxNewTokens must be a non-negative integer, got ${maxNewTokens}`);
  if (prompt.length === 0)
    throw new ArgumentError('generate: the prompt needs at least one token (e.g. the bos token)');
  const V = model.config.vocab_size;
  const bad = prompt.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= V);
  if (bad >= 0)
    throw new ArgumentError(
      `generate: prompt token ${prompt[bad]} at position ${bad} is outside the vocabulary [0, ${V})`,
    );
  const eos = eosSet(
    opts.ignoreEos ? null : opts.eosTokenId === undefined ? model.config.eos_token_id : opts.eosTokenId,
  );
  const generator = opts.generator ?? new Random(opts.seed ?? 0);
  const P = model.contextLength;
  const wasTraining = model.training;
  model.eval();
  try {
    const cache = model.createCache(1);
    const context = [...prompt];
    const tokens: number[] = [];
    const feed = (ids: readonly number[]): Float32Array | Float64Array => {
      const logits = model.forwardWithCache(fromArray(ids, [1, ids.length], { dtype: 'i32' }), cache); // [1, T, V]
      const last = slice(logits, 1, ids.length - 1, ids.length); // [1, 1, V]
      return last.contiguousStorage() as Float32Array | Float64Array;
    };
    let logits = feed(context.length > P ? context.slice(-P) : context);
    for (let n = 0; n < maxNewTokens; n++) {
      const row = opts.adjustLogits ? opts.adjustLogits(logits.slice(), tokens) : logits;
      const next = sampleToken(row, opts, generator);
      tokens.push(next);
      context.push(next);
      yield { id: next, logits };
      if (eos.has(next)) return 'eos';
      if (n === maxNewTokens - 1) break;
      if (cache.length >= P) {
        cache.reset();
        logits = feed(context.slice(-P));
      } else logits = feed([next]);
    }
    return 'length';
  } finally {
    model.train(wasTraining);
  }
}
