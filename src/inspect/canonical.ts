/**
 * The canonical form both sides of a diff are mapped to: Hugging Face tensor names and shapes, as
 * the *ForCausalLM classes name them. GPT-2 checkpoints come with or without the `transformer.`
 * prefix of GPT2LMHeadModel's state dict (the Hub's gpt2 files have none); the canonical name has
 * none. Llama-family checkpoints saved from the bare LlamaModel (Mistral, Qwen2 alike) lack the
 * `model.` prefix of LlamaForCausalLM; the canonical name has it. Readers of other formats (GGUF)
 * map their names to these too, so any two copies of the same weights line up.
 */

const GPT2_PREFIX = 'transformer.';
const LLAMA_PREFIX = 'model.';
/** model_type values of the Llama family knobs loads (docs/hf-models.md). */
const LLAMA_FAMILY = new Set(['llama', 'mistral', 'qwen2']);
/** What LlamaModel's own tensors are called: the embedding, the layers, the final norm. */
const LLAMA_BARE = /^(?:embed_tokens\.|layers\.\d+\.|norm\.)/;

/**
 * The canonical name of tensor `name` of a model of `architecture` (config.json's model_type, or
 * null when the files do not say). GPT-2 (or an unknown architecture) drops `transformer.`; the
 * Llama family gains `model.` where LlamaModel left it out.
 */
export function canonicalName(name: string, architecture: string | null): string {
  if ((architecture === null || architecture === 'gpt2') && name.startsWith(GPT2_PREFIX))
    return name.slice(GPT2_PREFIX.length);
  if (architecture !== null && LLAMA_FAMILY.has(architecture) && LLAMA_BARE.test(name)) return LLAMA_PREFIX + name;
  return name;
}

/** `h.{i}.` (GPT-2), `layers.{i}.` (`model.layers.{i}.`: Llama, Mistral, Qwen2), `blocks.{i}.`. */
const LAYER = /(?:^|\.)(?:h|layers|blocks)\.(\d+)\./;

/** The index of the transformer layer a canonical name belongs to, or null (embeddings, final norm, head). */
export function layerOf(name: string): number | null {
  const m = LAYER.exec(name);
  return m ? Number(m[1]) : null;
}
