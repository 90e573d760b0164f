/**
 * Opens any language model knobs can run, by path, for generation, evaluation and serving: a run
 * directory made by `knobs train` (byte-level or with its tokenizer.json), a Hugging Face model
 * directory, or a GGUF file (`.gguf`: llama, qwen2, gpt2; its tokenizer from its metadata). Every front end (generate, eval, serve) opens models here, so a new kind of source
 * (GGUF, sealed or signed bundles, adapters) is added once.
 */
import { UsageError } from '../errors.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { GenerateTextOptions } from '../models/generate-text.js';
import { samplingDefaults } from '../models/hf/generate.js';
import { loadHfModel } from '../models/hf/load.js';
import { loadHfTokenizer, tokenizerCodec } from '../models/hf/text.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { isLanguageModelInstance } from '../train/build.js';
import { isRunDir, loadRun } from '../train/run-dir.js';
import { openGgufLanguageModel } from './gguf-model.js';
import { openVerifiedLanguageModel } from './verified-model.js';

export type SamplingDefaults = ReturnType<typeof samplingDefaults>;

export interface OpenedLanguageModel {
  /** Where it came from: a knobs run directory, a Hugging Face model directory or a GGUF file. */
  kind: 'run' | 'hf' | 'gguf';
  path: string;
  model: CausalLM;
  /** The model's tokenizer; null for byte-level runs (ids are UTF-8 bytes). */
  tokenizer: Tokenizer | null;
  /** What generateText needs besides sampling: the codec and the end-of-sequence ids. */
  textOptions: Pick<GenerateTextOptions, 'codec' | 'eosTokenId'>;
  /** Sampling when the caller says nothing: generation_config.json's for Hugging Face, temperature 1 for runs. */
  defaults: SamplingDefaults;
}

/** Whether `path` names a GGUF file (by its extension: a directory is never one). */
export function isGgufPath(path: string): boolean {
  return path.toLowerCase().endsWith('.gguf');
}

export interface OpenLanguageModelOptions {
  /**
   * The publisher's public key (SPKI PEM): `path` must then be a bundle signed by `knobs release`
   * (or OpenSSF model-signing), and every file is checked against the signature as it is read.
   */
  publicKey?: string;
}

export async function openLanguageModel(
  path: string,
  options: OpenLanguageModelOptions = {},
): Promise<OpenedLanguageModel> {
  if (options.publicKey !== undefined) return openVerifiedLanguageModel(path, options.publicKey);
  if (isGgufPath(path)) return openGgufLanguageModel(path, path);
  if (await isRunDir(path)) {
    const { model, recipe } = await loadRun(path);
    if (!isLanguageModelInstance(model))
      throw new UsageError(
        `${path} holds a ${model.constructor.name}, not a language model; use 'knobs eval' for classifiers`,
      );
    // A run trained with a tokenizer.json has it copied into the directory; byte-level runs need none.
    const tokenizer = recipe.tokenizer === 'bytes' ? null : await loadHfTokenizer(path, model.config.vocab_size);
    return {
      kind: 'run',
      path,
      model,
      tokenizer,
      textOptions: tokenizer ? { codec: tokenizerCodec(tokenizer) } : {},
      defaults: { temperature: 1, topK: 0, topP: 1 },
    };
  }
  const loaded = await loadHfModel(path);
  const tokenizer = await loadHfTokenizer(path, loaded.config.vocab_size);
  return {
    kind: 'hf',
    path,
    model: loaded.model,
    tokenizer,
    textOptions: { codec: tokenizerCodec(tokenizer), eosTokenId: loaded.generationConfig.eosTokenIds },
    defaults: samplingDefaults(loaded.generationConfig),
  };
}
