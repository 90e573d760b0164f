/** A GGUF file as an opened model: its tokenizer comes from its metadata. */
import { UsageError } from '../errors.js';
import type { ByteSource } from '../io/byte-source.js';
import { type LoadGgufOptions, loadGgufModel } from '../models/gguf/load.js';
import { samplingDefaults } from '../models/hf/generate.js';
import { tokenizerCodec } from '../models/hf/text.js';
import { ggufChatTemplate } from './chat-template-source.js';
import type { OpenedBase } from './language-model.js';

/**
 * `input` is the file's path or its bytes (a verified bundle's); `path` names it. `weights`: see
 * LoadGgufOptions (quantized matrices stay quantized by default).
 */
export async function openGgufLanguageModel(
  input: string | ByteSource,
  path: string,
  weights: LoadGgufOptions['weights'] = 'quantized',
): Promise<OpenedBase> {
  const loaded = await loadGgufModel(input, { weights });
  if (!loaded.tokenizer)
    throw new UsageError(
      `${path} has no tokenizer in its metadata (tokenizer.ggml.model is none); knobs needs one to turn text into tokens`,
    );
  return {
    kind: 'gguf',
    path,
    model: loaded.model,
    tokenizer: loaded.tokenizer,
    textOptions: { codec: tokenizerCodec(loaded.tokenizer), eosTokenId: loaded.eosTokenIds },
    defaults: samplingDefaults(loaded.generationConfig),
    chatTemplate: ggufChatTemplate(loaded),
  };
}
