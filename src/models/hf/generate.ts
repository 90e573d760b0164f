/**
 * Generation with a loaded Hugging Face model, as transformers' generate() does it: stop at any
 * of the end-of-sequence ids (generation_config.json's eos_token_id, a number or a list, else
 * config.json's), and sample only when generation_config.json says do_sample.
 */
import type { GenerateOptions, GenerateResult } from '../causal-lm.js';
import type { GenerationConfig } from './config.js';
import type { LoadedHfModel } from './load.js';

export function generateHfTokens(
  loaded: LoadedHfModel,
  prompt: readonly number[],
  opts: Omit<GenerateOptions, 'eosTokenId'> = {},
): GenerateResult {
  return loaded.model.generate(prompt, { ...opts, eosTokenId: loaded.generationConfig.eosTokenIds });
}

/** The sampling settings generation_config.json implies, with transformers' GenerationConfig defaults (greedy unless do_sample; then top_k 50). */
export function samplingDefaults(config: GenerationConfig): {
  temperature: number;
  topK: number;
  topP: number;
  maxNewTokens?: number;
} {
  const sample = config.doSample === true;
  return {
    temperature: sample ? (config.temperature ?? 1) : 0,
    topK: sample ? (config.topK ?? 50) : 0,
    topP: sample ? (config.topP ?? 1) : 1,
    ...(config.maxNewTokens === undefined ? {} : { maxNewTokens: config.maxNewTokens }),
  };
}
