/**
 * Writes a language model as a Hugging Face model directory: config.json, generation_config.json,
 * model.safetensors and the tokenizer files (the model's tokenizer.json, or the byte-level one for
 * byte-level runs). `knobs merge` and `knobs extract-lora` round trips use it. The directory is
 * built under a temporary name and renamed into place whole; an existing path is refused.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../errors.js';
import { isAdapterTensorName } from './lora.js';
import { type RawTensor, saveSafetensors } from '../formats/safetensors.js';
import { type HfOutType, rawTensorOf } from '../models/gguf/export.js';
import { writeDirectoryAtomic, writeFileAtomic } from '../io/atomic.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { Tensor } from '../tensor.js';
import { tokenizerConfigJson } from '../tokenizer/config.js';
import { byteLevelTokenizerFiles, writeTokenizerFiles } from '../tokenizer/export.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';

/**
 * The model's weights by their checkpoint names, without the adapter tensors that hang on a merged
 * model's layers (they are not part of the model's weights).
 */
export function modelWeights(model: CausalLM): Map<string, Tensor> {
  return new Map([...model.stateDict()].filter(([name]) => !isAdapterTensorName(name)));
}

export interface SaveModelDirectoryOptions {
  /** Tensors written in another float type than f32, by checkpoint name (`knobs merge --dtype`). */
  dtypes?: ReadonlyMap<string, HfOutType>;
}

export async function saveModelDirectory(
  dir: string,
  model: CausalLM,
  tokenizer: Tokenizer | null,
  opts: SaveModelDirectoryOptions = {},
): Promise<void> {
  if (existsSync(dir)) throw new UsageError(`${dir} already exists; choose a new --out directory`, { path: dir });
  const json = (v: unknown): string => `${JSON.stringify(v, null, 2)}\n`;
  const config = model.config as { bos_token_id?: unknown; eos_token_id: unknown };
  await writeDirectoryAtomic(dir, async (staging) => {
    await writeFileAtomic(join(staging, 'config.json'), json(model.toHFConfig()), { syncParent: false });
    await writeFileAtomic(
      join(staging, 'generation_config.json'),
      json({ bos_token_id: config.bos_token_id ?? null, eos_token_id: config.eos_token_id }),
      { syncParent: false },
    );
    const weights = new Map<string, Tensor | RawTensor>(modelWeights(model));
    for (const [name, dtype] of opts.dtypes ?? []) {
      const t = weights.get(name);
      if (t !== undefined && dtype !== 'f32') weights.set(name, rawTensorOf(t as Tensor, dtype));
    }
    await saveSafetensors(join(staging, 'model.safetensors'), weights, { format: 'pt' });
    await writeTokenizerFiles(
      staging,
      tokenizer
        ? { tokenizer: tokenizer.toJSON(), config: tokenizerConfigJson({ modelMaxLength: model.contextLength }) }
        : byteLevelTokenizerFiles(model.contextLength),
    );
  });
}
