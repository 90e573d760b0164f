/**
 * The tokenizer files of a model directory: tokenizer.json + tokenizer_config.json, written
 * atomically. knobs' byte-level language models get a tokenizer whose id is the byte value
 * (a BPE with the 256 byte-level characters and no merges), so code written for Hugging Face
 * directories encodes text to exactly the model's inputs.
 */
import { join } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { BYTE_TO_CHAR } from './byte-level.js';
import { TOKENIZER_CONFIG_NAME, TOKENIZER_NAME, tokenizerConfigJson } from './config.js';
import { BYTE_LEVEL_DECODER, byteLevelBpeModel } from './train-bpe.js';

export interface TokenizerFiles {
  /** tokenizer.json's object. */
  tokenizer: Record<string, unknown>;
  /** tokenizer_config.json's object. */
  config: Record<string, unknown>;
}

/** tokenizer.json of a byte-level model: id b is byte b; no normalizer, no special tokens. */
export function byteLevelTokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  BYTE_TO_CHAR.forEach((c, b) => {
    vocab[c] = b;
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    post_processor: null,
    decoder: { ...BYTE_LEVEL_DECODER },
    model: byteLevelBpeModel(vocab, []),
  };
}

/** Both files for a knobs byte-level language model with context `modelMaxLength`. */
export function byteLevelTokenizerFiles(modelMaxLength: number): TokenizerFiles {
  return { tokenizer: byteLevelTokenizerJson(), config: tokenizerConfigJson({ modelMaxLength }) };
}

/** Writes tokenizer.json and tokenizer_config.json into `dir` (each atomically). */
export async function writeTokenizerFiles(dir: string, files: TokenizerFiles): Promise<void> {
  await writeFileAtomic(join(dir, TOKENIZER_NAME), `${JSON.stringify(files.tokenizer)}\n`);
  await writeFileAtomic(join(dir, TOKENIZER_CONFIG_NAME), `${JSON.stringify(files.config, null, 2)}\n`);
}
