/**
 * Opens any language model knobs can run, by path, for generation, evaluation and serving: a run
 * directory made by `knobs train` (byte-level or with its tokenizer.json), a Hugging Face model
 * directory, a GGUF file (`.gguf`: llama, qwen2, gpt2; its tokenizer from its metadata), a sealed
 * directory (decrypted into memory) or a signed bundle (verified as it is read). Every front end
 * (generate, eval, serve) opens models here, so a new kind of source is added once.
 */
import { KeyError, UsageError } from '../errors.js';
import { type LoadAdapterOptions, loadAdapters } from '../finetune/adapter.js';
import type { LoraAdapter } from '../finetune/lora.js';
import { type QuantType, quantizeBase } from '../finetune/quantized-base.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { GenerateTextOptions } from '../models/generate-text.js';
import { samplingDefaults } from '../models/hf/generate.js';
import type { ModelFiles } from '../models/hf/files.js';
import { type LoadedHfModel, loadHfModel } from '../models/hf/load.js';
import { loadHfTokenizer, tokenizerCodec } from '../models/hf/text.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { isLanguageModelInstance } from '../train/build.js';
import { type LoadedRun, RECIPE_NAME, isRunDir, loadRun, loadRunFiles } from '../train/run-dir.js';
import { MANIFEST_NAME } from '../seal/format.js';
import { MASTER_KEY_ENV } from '../seal/keys.js';
import { isSealedDir, sealedFiles } from '../seal/open.js';
import { type ModelChatTemplate, readChatTemplate } from './chat-template-source.js';
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
  /** The LoRA adapters attached (OpenLanguageModelOptions.adapters), in order. */
  adapters: LoraAdapter[];
  /** The chat template, read through the same opened files as the weights (never from plaintext on disk). */
  chatTemplate: ModelChatTemplate;
}

/** Whether `path` names a GGUF file (by its extension: a directory is never one). */
export function isGgufPath(path: string): boolean {
  return path.toLowerCase().endsWith('.gguf');
}

/** A model as its source gives it, before adapters are attached. */
export type OpenedBase = Omit<OpenedLanguageModel, 'adapters'>;

export interface OpenLanguageModelOptions extends LoadAdapterOptions {
  /** The master key (32 bytes) of a sealed model; not needed for plain directories. */
  masterKey?: Uint8Array | null;
  /**
   * The publisher's public key (SPKI PEM): `path` must then be a bundle signed by `knobs release`
   * (or OpenSSF model-signing), and every file is checked against the signature as it is read.
   */
  publicKey?: string;
  /** PEFT adapter directories to attach to the base (their targets must not overlap). */
  adapters?: readonly string[];
  /**
   * Quantize the base's float linear layers (q8_0 / q4_0) before the adapters attach, so an
   * adapter tuned on that quantized base (`knobs tune --quantize`) finds its base digest, and the
   * adapters stay on the layers that run (quantizing after attaching would drop them).
   */
  quantize?: QuantType;
}

/**
 * Opens the model at `path`, then attaches `opts.adapters`. A sealed directory (docs/sealing.md) is
 * opened with `masterKey` like the directory it was sealed from, its files decrypted chunk by chunk
 * as the loaders read them;
 * nothing plaintext touches disk.
 */
export async function openLanguageModel(
  path: string,
  opts: OpenLanguageModelOptions = {},
): Promise<OpenedLanguageModel> {
  const opened = await openBase(path, opts);
  if (opts.quantize !== undefined) quantizeBase(opened.model, opts.quantize);
  // Opened for inference: every layer (a quantized one a loader swapped in included) in eval mode,
  // so an adapter's dropout, which follows its layer's mode, is off.
  opened.model.eval();
  const adapters = await loadAdapters(opened.model, opts.adapters ?? [], opts);
  return { ...opened, adapters };
}

async function openBase(path: string, opts: OpenLanguageModelOptions): Promise<OpenedBase> {
  if (opts.publicKey !== undefined) return openVerifiedLanguageModel(path, opts.publicKey);
  // Quantized as `knobs tune` loads it, adapters or not: LoRA attaches to quantized layers too, and an
  // adapter tuned on the file's blocks records their digest (a dequantized load would not match it).
  if (isGgufPath(path)) return openGgufLanguageModel(path, path);
  if (await isSealedDir(path)) return openSealedLanguageModel(path, opts.masterKey ?? null);
  if (await isRunDir(path)) {
    const run = await loadRun(path);
    return fromRun(path, run, await runTokenizer(path, run), await readChatTemplate(path));
  }
  const loaded = await loadHfModel(path);
  return fromHf(path, loaded, await loadHfTokenizer(path, loaded.config.vocab_size), await readChatTemplate(path));
}

async function openSealedLanguageModel(path: string, masterKey: Uint8Array | null): Promise<OpenedBase> {
  if (!masterKey)
    throw new KeyError(
      `${path} is sealed (it has ${MANIFEST_NAME}); give its master key with --master-key-file FILE or ${MASTER_KEY_ENV}`,
      { dir: path },
    );
  const files = await sealedFiles(path, masterKey);
  const recipe = await files.open(RECIPE_NAME);
  if (recipe) {
    await recipe.close();
    const run = await loadRunFiles(files);
    return fromRun(path, run, await runTokenizer(files, run), await readChatTemplate(files));
  }
  const loaded = await loadHfModel(files);
  return fromHf(path, loaded, await loadHfTokenizer(files, loaded.config.vocab_size), await readChatTemplate(files));
}

/** A run trained with a tokenizer.json has it copied into the directory; byte-level runs need none. */
function runTokenizer(dir: string | ModelFiles, run: LoadedRun): Promise<Tokenizer | null> | null {
  if (!isLanguageModelInstance(run.model))
    throw new UsageError(
      `${run.dir} holds a ${run.model.constructor.name}, not a language model; use 'knobs eval' for classifiers`,
    );
  return run.recipe.tokenizer === 'bytes' ? null : loadHfTokenizer(dir, run.model.config.vocab_size);
}

function fromRun(
  path: string,
  run: LoadedRun,
  tokenizer: Tokenizer | null,
  chatTemplate: ModelChatTemplate,
): OpenedBase {
  return {
    kind: 'run',
    path,
    model: run.model as CausalLM,
    tokenizer,
    textOptions: tokenizer ? { codec: tokenizerCodec(tokenizer) } : {},
    defaults: { temperature: 1, topK: 0, topP: 1 },
    chatTemplate,
  };
}

function fromHf(
  path: string,
  loaded: LoadedHfModel,
  tokenizer: Tokenizer,
  chatTemplate: ModelChatTemplate,
): OpenedBase {
  return {
    kind: 'hf',
    path,
    model: loaded.model,
    tokenizer,
    textOptions: { codec: tokenizerCodec(tokenizer), eosTokenId: loaded.generationConfig.eosTokenIds },
    defaults: samplingDefaults(loaded.generationConfig),
    chatTemplate,
  };
}
