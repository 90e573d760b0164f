/**
 * The seam between HTTP handling and the model: the server asks a `TextGenerator` for text and
 * never touches tokens or tensors. `ModelGenerator` runs one sequence per call, token by token,
 * yielding to the event loop between tokens so that other requests, timers and client disconnects
 * are handled while it runs; a batched decoder (continuous batching) implements the same interface
 * and takes over the interleaving.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { AdapterSet } from '../finetune/adapter-set.js';
import type { OpenedLanguageModel } from '../load/language-model.js';
import { type TextCodec, UTF8_BYTES, textSteps } from '../models/generate-text.js';
import type { SamplingOptions } from '../models/sampling.js';

export interface GenerationParams {
  /** Text, or token ids as they are. */
  prompt: string | readonly number[];
  maxTokens: number;
  /** 0: greedy. */
  temperature: number;
  topP: number;
  seed: number;
  stop: readonly string[];
  ignoreEos: boolean;
  /** How many alternatives per token to report with logprobs; null: no logprobs. */
  topLogprobs: number | null;
  presencePenalty: number;
  frequencyPenalty: number;
  /** Token id → added to its logit. */
  logitBias: ReadonlyMap<number, number>;
}

export interface TokenAlternative {
  token: string;
  logprob: number;
  bytes: number[];
}

export interface TokenLogprob extends TokenAlternative {
  top: TokenAlternative[];
}

/** Text let out by one token (possibly ''), and that token's logprob when asked for. */
export interface GenerationChunk {
  text: string;
  logprob: TokenLogprob | null;
}

export interface GenerationResult {
  text: string;
  /** 'cancelled': the signal fired (client gone, deadline); the text is what was produced by then. */
  finishReason: 'stop' | 'length' | 'cancelled';
  promptTokens: number;
  /** Tokens produced, an eos token included: what the caller is billed for. */
  completionTokens: number;
}

export interface TextGenerator {
  /** Positions the model sees at once: prompt plus new tokens must fit. */
  readonly contextLength: number;
  readonly vocabSize: number;
  promptTokens(prompt: string | readonly number[]): number;
  /** Throws an ApiError when a request of this size can never run (the batching engine's KV budget). */
  checkFits?(promptTokens: number, maxTokens: number): void;
  /** Runs to the end, the signal or maxTokens; `onChunk` receives text as it can be let out. */
  generate(
    params: GenerationParams,
    signal: AbortSignal,
    onChunk: (chunk: GenerationChunk) => void,
  ): Promise<GenerationResult>;
}

export interface ModelGeneratorOptions {
  /**
   * The LoRA adapters served on this base, and the one this generator runs with (null: the base
   * alone). Every decoding step runs inside `set.use`, so sequences of different adapters
   * interleave token by token and each step sees only its own delta. When a base has adapters,
   * its own generator must go through the set too (name null), or it could run while one is attached.
   */
  adapters?: { set: AdapterSet; name: string | null };
}

export class ModelGenerator implements TextGenerator {
  readonly contextLength: number;
  readonly vocabSize: number;
  private readonly codec: TextCodec;
  private readonly adapters: ModelGeneratorOptions['adapters'];

  constructor(
    private readonly opened: OpenedLanguageModel,
    opts: ModelGeneratorOptions = {},
  ) {
    this.contextLength = opened.model.contextLength;
    this.vocabSize = opened.model.config.vocab_size;
    this.codec = opened.textOptions.codec ?? UTF8_BYTES;
    this.adapters = opts.adapters;
  }

  promptTokens(prompt: string | readonly number[]): number {
    return typeof prompt === 'string' ? this.codec.encode(prompt).length : prompt.length;
  }

  async generate(
    p: GenerationParams,
    signal: AbortSignal,
    onChunk: (chunk: GenerationChunk) => void,
  ): Promise<GenerationResult> {
    const steps = textSteps(this.opened.model, p.prompt, {
      ...this.opened.textOptions,
      ...samplingOf(p),
      maxTokens: p.maxTokens,
      seed: p.seed,
      stop: p.stop,
      ignoreEos: p.ignoreEos,
      adjustLogits: penalties(p),
    });
    let produced = 0;
    let text = '';
    const promptTokens = this.promptTokens(p.prompt);
    try {
      for (;;) {
        // Yield before each token: the prefill of a long prompt and every step let others in.
        await nextTurn();
        if (signal.aborted) return { text, finishReason: 'cancelled', promptTokens, completionTokens: produced };
        const step = this.adapters ? await this.adapters.set.use(this.adapters.name, () => steps.next()) : steps.next();
        if (step.done) {
          text += step.value.tail;
          if (step.value.tail) onChunk({ text: step.value.tail, logprob: null });
          return {
            text,
            finishReason: step.value.finishReason,
            promptTokens: step.value.promptIds.length,
            completionTokens: step.value.ids.length,
          };
        }
        produced++;
        text += step.value.text;
        const { id, logits } = step.value.token;
        onChunk({
          text: step.value.text,
          logprob: p.topLogprobs === null ? null : tokenLogprob(this.codec, id, logits, p.topLogprobs),
        });
      }
    } finally {
      steps.return(undefined as never);
    }
  }
}

/** The chosen token's log-probability under the model (before penalties and temperature), and the `top` likeliest. */
export function tokenLogprob(codec: TextCodec, id: number, logits: ArrayLike<number>, top: number): TokenLogprob {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const logZ = max + Math.log(sum);
  const best: number[] = [];
  for (let i = 0; i < logits.length; i++) {
    if (best.length === top && logits[i]! <= logits[best[top - 1]!]!) continue;
    let at = Math.min(best.length, top - 1);
    if (best.length < top) best.push(i);
    while (at > 0 && logits[best[at - 1]!]! < logits[i]!) {
      best[at] = best[at - 1]!;
      at--;
    }
    best[at] = i;
  }
  const alt = (t: number): TokenAlternative => {
    const token = tokenText(codec, t);
    return { token, logprob: logits[t]! - logZ, bytes: [...Buffer.from(token, 'utf8')] };
  };
  return { ...alt(id), top: top > 0 ? best.map(alt) : [] };
}

function tokenText(codec: TextCodec, id: number): string {
  const d = codec.decoder();
  return d.step(id) + d.flush();
}

/** The sampler's options for OpenAI's temperature and top_p (either at 0: greedy). */
export function samplingOf(p: GenerationParams): SamplingOptions {
  return { temperature: p.temperature, topP: p.topP === 0 ? 1 : p.topP, greedy: p.temperature === 0 || p.topP === 0 };
}

/** OpenAI's presence and frequency penalties and logit_bias, as a logits adjustment (undefined when all are neutral). */
export function penalties(
  p: GenerationParams,
): ((logits: Float32Array | Float64Array, produced: readonly number[]) => Float32Array | Float64Array) | undefined {
  if (p.presencePenalty === 0 && p.frequencyPenalty === 0 && p.logitBias.size === 0) return undefined;
  return (logits, produced) => {
    for (const [id, bias] of p.logitBias) logits[id] = logits[id]! + bias;
    const counts = new Map<number, number>();
    for (const id of produced) counts.set(id, (counts.get(id) ?? 0) + 1);
    for (const [id, count] of counts) logits[id] = logits[id]! - p.presencePenalty - p.frequencyPenalty * count;
    return logits;
  };
}
