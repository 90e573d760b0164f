/**
 * The canonical form both sides of a diff are mapped to: Hugging Face tensor names and shapes.
 * GPT-2 checkpoints come with or without the `transformer.` prefix of GPT2LMHeadModel's state
 * dict (the Hub's gpt2 files have none); the canonical name has none. Readers of other formats
 * (GGUF) map their names to these too, so any two copies of the same weights line up.
 */

const GPT2_PREFIX = 'transformer.';

/**
 * The canonical name of tensor `name` of a model of `architecture` (config.json's model_type, or
 * null when the files do not say). Only GPT-2 (or an unknown architecture) drops `transformer.`.
 */
export function canonicalName(name: string, architecture: string | null): string {
  if ((architecture === null || architecture === 'gpt2') && name.startsWith(GPT2_PREFIX))
    return name.slice(GPT2_PREFIX.length);
  return name;
}

/** `h.{i}.` (GPT-2), `layers.{i}.` (`model.layers.{i}.`: Llama, Mistral, Qwen2), `blocks.{i}.`. */
const LAYER = /(?:^|\.)(?:h|layers|blocks)\.(\d+)\./;

/** The index of the transformer layer a canonical name belongs to, or null (embeddings, final norm, head). */
export function layerOf(name: string): number | null {
  const m = LAYER.exec(name);
  return m ? Number(m[1]) : null;
}
