/**
 * Generation with a loaded Hugging Face model: stops at any of its end-of-sequence ids
 * (generation_config.json's eos_token_id, a number or a list, else config.json's), as transformers does.
 */
import type { GenerateOptions, GenerateResult } from '../causal-lm.js';
import type { LoadedHfModel } from './load.js';

export function generateHfTokens(loaded: LoadedHfModel, prompt: readonly number[], opts: Omit<GenerateOptions, 'eosTokenId'> = {}): GenerateResult {
  return loaded.model.generate(prompt, { ...opts, eosTokenId: loaded.generationConfig.eosTokenIds });
}
