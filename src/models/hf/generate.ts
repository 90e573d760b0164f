/**
 * Generation with a loaded Hugging Face model: stops at any of its end-of-sequence ids
 * (generation_config.json's eos_token_id, a number or a list, else config.json's), as transformers does.
 */
import type { GenerateOptions, GenerateResult } from '../gpt.js';
import type { LoadedHfModel } from './load.js';

export function generateHfTokens(loaded: LoadedHfModel, prompt: readonly number[], opts: Omit<GenerateOptions, 'eosTokenId'> = {}): GenerateResult {
  const eos = new Set(opts.ignoreEos ? [] : loaded.generationConfig.eosTokenIds);
  let atEos = false;
  const result = loaded.model.generate(prompt, {
    ...opts,
    eosTokenId: null,
    onToken: (id) => {
      if (opts.onToken?.(id) === false) return false;
      atEos = eos.has(id);
      return !atEos;
    },
  });
  return atEos ? { ...result, finishReason: 'eos' } : result;
}
