/**
 * Text in and out of a Hugging Face model directory: its tokenizer.json (checked against the
 * model's vocabulary), a TextCodec over it for generateText, and evaluation of a text file —
 * loss per token and bits per byte over consecutive windows of the context.
 */
import { join } from 'node:path';
import { noGrad } from '../../autograd/tape.js';
import { FormatError, IOError } from '../../errors.js';
import { fromArray } from '../../ops/creation.js';
import { TOKENIZER_NAME } from '../../tokenizer/config.js';
import { Tokenizer, checkTokenizerFitsVocab } from '../../tokenizer/tokenizer.js';
import type { CausalLM } from '../causal-lm.js';
import type { TextCodec } from '../generate-text.js';
import { CONFIG_NAME } from './config.js';
import { type ModelFiles, readTextFile } from './files.js';

/**
 * DIR/tokenizer.json (DIR a path, or files opened by name such as a sealed model decrypted into
 * memory), checked to produce only ids below `vocabSize`.
 */
export async function loadHfTokenizer(input: string | ModelFiles, vocabSize: number): Promise<Tokenizer> {
  const dir = typeof input === 'string' ? input : input.label;
  const noTokenizer = () =>
    new FormatError(
      'hf_no_tokenizer',
      `${dir} has no ${TOKENIZER_NAME}; knobs needs the model's tokenizer to turn text into tokens`,
      { dir },
    );
  let tokenizer: Tokenizer;
  if (typeof input === 'string') {
    tokenizer = await Tokenizer.fromFile(join(dir, TOKENIZER_NAME)).catch((err: unknown) => {
      if (err instanceof IOError && (err.details as { errno?: string }).errno === 'ENOENT') throw noTokenizer();
      throw err;
    });
  } else {
    const file = await readTextFile(input, TOKENIZER_NAME);
    if (!file) throw noTokenizer();
    tokenizer = Tokenizer.fromJSON(file.text, file.path);
  }
  checkTokenizerFitsVocab(tokenizer, vocabSize, join(dir, CONFIG_NAME));
  return tokenizer;
}

/** Encodes with the tokenizer's special tokens (BOS where its post-processor adds one); decodes without them. */
export function tokenizerCodec(tokenizer: Tokenizer): TextCodec {
  return {
    encode: (text) => tokenizer.encode(text).ids,
    decoder() {
      const stream = tokenizer.decodeStream({ skipSpecialTokens: true });
      return { step: (id) => stream.step(id), flush: () => '' };
    },
  };
}

/** f32 logits one evaluation batch may hold (128 MiB): a real vocabulary (128k) times a 1k context is already 0.5 GiB per window. */
const LOGITS_BUDGET = 1 << 25;

export interface TextEval {
  /** Mean next-token cross-entropy in nats. */
  loss: number;
  /** Total loss in bits divided by the text's UTF-8 bytes: comparable across tokenizers. */
  bits_per_byte: number;
  /** Tokens predicted (every token after the first). */
  tokens: number;
  bytes: number;
}

/**
 * Scores `text`: tokenized whole, then cut into consecutive windows of `context` predicted tokens
 * (each window sees only its own tokens, as Hugging Face's perplexity with stride = context), the
 * last one shorter, so every token after the first is predicted exactly once.
 */
export function evaluateText(
  model: CausalLM,
  tokenizer: Tokenizer,
  text: string,
  opts: { context: number; batchSize?: number },
): TextEval {
  const ids = tokenizer.encode(text).ids;
  const bytes = new TextEncoder().encode(text).byteLength;
  const T = opts.context;
  // Windows per forward pass: as many as keep the logits [B, T, V] under LOGITS_BUDGET elements.
  const B = opts.batchSize ?? Math.max(1, Math.min(8, Math.floor(LOGITS_BUDGET / (T * model.config.vocab_size))));
  if (ids.length < 2)
    throw new FormatError('too_short', `the text gives ${ids.length} token(s); evaluation needs at least 2`, {
      tokens: ids.length,
    });
  const wasTraining = model.training;
  model.eval();
  let nats = 0;
  let tokens = 0;
  const score = (starts: number[], length: number): void => {
    const inputs = starts.flatMap((s) => ids.slice(s, s + length));
    const targets = starts.flatMap((s) => ids.slice(s + 1, s + length + 1));
    const n = starts.length * length;
    const loss = noGrad(() =>
      model
        .loss(
          fromArray(inputs, [starts.length, length], { dtype: 'i32' }),
          fromArray(targets, [starts.length, length], { dtype: 'i32' }),
        )
        .item(),
    );
    nats += loss * n;
    tokens += n;
  };
  try {
    const full = Math.floor((ids.length - 1) / T);
    for (let w = 0; w < full; w += B) {
      score(
        Array.from({ length: Math.min(B, full - w) }, (_, k) => (w + k) * T),
        T,
      );
    }
    const rest = ids.length - 1 - full * T;
    if (rest > 0) score([full * T], rest);
  } finally {
    model.train(wasTraining);
  }
  return { loss: nats / tokens, bits_per_byte: nats / Math.LN2 / bytes, tokens, bytes };
}
