/**
 * Opens any language model knobs can run, by path, for generation, evaluation and serving: a run
 * directory made by `knobs train` (byte-level or with its tokenizer.json) or a Hugging Face model
 * directory. Every front end (generate, eval, serve) opens models here, so a new kind of source
 * (GGUF, sealed or signed bundles, adapters) is added once.
 */
import { UsageError } from '../errors.js';
import { type LoadAdapterOptions, loadAdapters } from '../finetune/adapter.js';
import type { LoraAdapter } from '../finetune/lora.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { GenerateTextOptions } from '../models/generate-text.js';
import { samplingDefaults } from '../models/hf/generate.js';
import { loadHfModel } from '../models/hf/load.js';
import { loadHfTokenizer, tokenizerCodec } from '../models/hf/text.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { isLanguageModelInstance } from '../train/build.js';
import { isRunDir, loadRun } from '../train/run-dir.js';

export type SamplingDefaults = ReturnType<typeof samplingDefaults>;

export interface OpenedLanguageModel {
  /** Where it came from: a knobs run directory or a Hugging Face model directory. */
  kind: 'run' | 'hf';
  path: string;
  model: CausalLM;
  /** The model's tokenizer; null for byte-level runs (ids are UTF-8 bytes). */
  tokenizer: Tokenizer | null;
  /** What generateText needs besides sampling: the codec and the end-of-sequence ids. */
  textOptions: Pick<GenerateTextOptions, 'codec' | 'eosTokenId'>;
  /** Sampling when the caller says nothing: generation_config.json's for Hugging Face, temperature 1 for runs. */
  defaults: SamplingDefaults;
  /** The LoRA adapters attached (OpenOptions.adapters), in order. */
  adapters: LoraAdapter[];
}

export interface OpenOptions extends LoadAdapterOptions {
  /** PEFT adapter directories to attach to the base (their targets must not overlap). */
  adapters?: readonly string[];
}

export async function openLanguageModel(path: string, opts: OpenOptions = {}): Promise<OpenedLanguageModel> {
  const opened = await openBase(path);
  const adapters = await loadAdapters(opened.model, opts.adapters ?? [], opts);
  return { ...opened, adapters };
}

async function openBase(path: string): Promise<Omit<OpenedLanguageModel, 'adapters'>> {
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
