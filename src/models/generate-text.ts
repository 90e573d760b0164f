/**
 * Text generation for causal language models (GPT or Llama), with stop strings and streaming:
 * through a tokenizer (a TextCodec), or byte-level (vocabulary 256: token = UTF-8 byte). Text is
 * streamed as soon as it can no longer turn into a stop string, and never in the middle of a
 * character.
 *
 * End of text: generation stops at config.eos_token_id (any of them, when it is a list) as Hugging Face
 * does, unless ignoreEos. Byte-level models trained by knobs have eos_token_id null (no byte
 * marks the end of a text), so they stop at a stop string or after maxTokens.
 */
import { ArgumentError } from '../errors.js';
import {
  type CausalLM,
  type EosTokenId,
  type GenerateOptions,
  type TokenStep,
  eosSet,
  tokenSteps,
} from './causal-lm.js';
import type { SamplingOptions } from './sampling.js';

export interface GenerateTextOptions extends SamplingOptions {
  /** Most new tokens (default 256). */
  maxTokens?: number;
  /** Sampler seed (default 0). */
  seed?: number;
  /** Stop when the text contains one of these; the returned text ends before it. */
  stop?: readonly string[];
  ignoreEos?: boolean;
  /** Receives the text as it is produced (concatenated, it is `text`). */
  onText?: (text: string) => void;
  /** Text ↔ token ids (default: UTF-8 bytes, for byte-level models with vocab_size 256). */
  codec?: TextCodec;
  /** The ids that end the text (default: the model's config.eos_token_id). */
  eosTokenId?: EosTokenId;
  /** See GenerateOptions.adjustLogits (logit biases, repetition penalties). */
  adjustLogits?: GenerateOptions['adjustLogits'];
}

/** How text becomes token ids and back. */
export interface TextCodec {
  encode(text: string): number[];
  /** A streaming decoder: the new text after each id, never ending inside a character; flush() ends it. */
  decoder(): { step(id: number): string; flush(): string };
}

/** Byte-level models: token = one UTF-8 byte. */
export const UTF8_BYTES: TextCodec = {
  encode: (text) => [...new TextEncoder().encode(text)],
  decoder() {
    const d = new TextDecoder('utf-8');
    return { step: (id) => d.decode(new Uint8Array([id]), { stream: true }), flush: () => d.decode() };
  },
};

export interface GenerateTextResult {
  promptIds: number[];
  /** Generated tokens, including an eos token or the tokens of a stop string that ended the text. */
  ids: number[];
  /** The generated text, without eos or the stop string. */
  text: string;
  /** 'stop' at eos or a stop string, 'length' after maxTokens (OpenAI's names). */
  finishReason: 'stop' | 'length';
  /** Seconds from the start to the first new token (the prompt's forward pass and one sample). */
  promptSeconds: number;
  /** Seconds from the first new token to the last (ids.length − 1 decode steps). */
  decodeSeconds: number;
}

/** The length of the longest end of `text` that begins one of `stops` (text that must wait). */
function pendingStopPrefix(text: string, stops: readonly string[]): number {
  let hold = 0;
  for (const s of stops) {
    for (let k = Math.min(s.length - 1, text.length); k > hold; k--) {
      if (text.endsWith(s.slice(0, k))) {
        hold = k;
        break;
      }
    }
  }
  return hold;
}

/**
 * The text of a growing list of tokens, let out as soon as it can no longer turn into one of the
 * stop strings (and never inside a character). Once a stop string appears the text ends before it.
 */
export class StopTextStream {
  readonly #decoder: ReturnType<TextCodec['decoder']>;
  readonly #stops: readonly string[];
  #full = ''; // decoded so far
  #emitted = 0; // characters of #full let out
  #cut = -1; // where a stop string begins, once found

  constructor(codec: TextCodec, stops: readonly string[]) {
    this.#decoder = codec.decoder();
    this.#stops = stops.filter((s) => s.length > 0);
  }

  /** The text token `id` lets out (often ''); `stopped` once a stop string has appeared. */
  push(id: number): { text: string; stopped: boolean } {
    this.#full += this.#decoder.step(id);
    // Text before #emitted cannot begin a stop string: it was held back while it could.
    for (const s of this.#stops) {
      const at = this.#full.indexOf(s, this.#emitted);
      if (at >= 0 && (this.#cut < 0 || at < this.#cut)) this.#cut = at;
    }
    if (this.#cut >= 0) return { text: this.#emitUpTo(this.#cut), stopped: true };
    return { text: this.#emitUpTo(this.#full.length - pendingStopPrefix(this.#full, this.#stops)), stopped: false };
  }

  /** At the end: what is left to let out (nothing after a stop string). */
  finish(): string {
    if (this.#cut >= 0) return '';
    this.#full += this.#decoder.flush();
    return this.#emitUpTo(this.#full.length);
  }

  /** All the text, without a stop string and what followed it. */
  get text(): string {
    return this.#full.slice(0, this.#cut >= 0 ? this.#cut : this.#full.length);
  }

  #emitUpTo(end: number): string {
    const text = end > this.#emitted ? this.#full.slice(this.#emitted, end) : '';
    this.#emitted = Math.max(this.#emitted, end);
    return text;
  }
}

/** One generated token and the text it let out (often '', while a character or a possible stop string is incomplete). */
export interface TextStep {
  token: TokenStep;
  text: string;
}

export function generateText(model: CausalLM, prompt: string, opts: GenerateTextOptions = {}): GenerateTextResult {
  const steps = textSteps(model, prompt, opts);
  for (let step = steps.next(); ; step = steps.next()) {
    if (step.done) {
      const { tail, ...result } = step.value;
      if (tail) opts.onText?.(tail);
      return result;
    }
    if (step.value.text) opts.onText?.(step.value.text);
  }
}

/**
 * generateText one token at a time (see tokenSteps): yields each token except an eos one, with the
 * text it lets out; the text a final flush lets out is in `tail` of the result. `prompt` is text,
 * or token ids as they are. `opts.onText` is not called: the caller passes each step's text on.
 */
export function* textSteps(
  model: CausalLM,
  prompt: string | readonly number[],
  opts: GenerateTextOptions = {},
): Generator<TextStep, GenerateTextResult & { tail: string }, void> {
  if (!opts.codec && model.config.vocab_size !== 256) {
    throw new ArgumentError(
      `generate: without a tokenizer, only byte-level models (vocab_size 256) can turn tokens into text; this model has vocab_size ${model.config.vocab_size}`,
    );
  }
  const codec = opts.codec ?? UTF8_BYTES;
  const promptIds = typeof prompt === 'string' ? codec.encode(prompt) : [...prompt];
  const text = new StopTextStream(codec, opts.stop ?? []);
  const eosTokenId = opts.eosTokenId === undefined ? model.config.eos_token_id : opts.eosTokenId;
  const eos = eosSet(opts.ignoreEos ? null : eosTokenId);
  const start = performance.now();
  let firstToken = 0;
  let lastToken = 0;
  const ids: number[] = [];
  const tokens = tokenSteps(model, promptIds, {
    ...opts,
    eosTokenId,
    maxNewTokens: opts.maxTokens ?? 256,
    seed: opts.seed ?? 0,
    ignoreEos: opts.ignoreEos ?? false,
  });
  let finishReason: 'eos' | 'length' | 'stop' = 'stop';
  try {
    for (let step = tokens.next(); ; step = tokens.next()) {
      if (step.done) {
        finishReason = step.value;
        break;
      }
      const id = step.value.id;
      ids.push(id);
      lastToken = performance.now();
      if (firstToken === 0) firstToken = lastToken;
      if (eos.has(id)) continue;
      const out = text.push(id);
      yield { token: step.value, text: out.text };
      if (out.stopped) break;
    }
  } finally {
    tokens.return('length');
  }
  const tail = text.finish();
  return {
    promptIds,
    ids,
    text: text.text,
    finishReason: finishReason === 'length' ? 'length' : 'stop',
    tail,
    promptSeconds: firstToken === 0 ? 0 : (firstToken - start) / 1000,
    decodeSeconds: (lastToken - firstToken) / 1000,
  };
}
