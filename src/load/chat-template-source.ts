/**
 * A model's chat template and the special tokens it may use, read through the same files the
 * model was opened from (a directory, a sealed directory's decrypted files, a verified bundle's
 * checked files, a GGUF file's metadata), so a sealed model's template never exists as plaintext
 * on disk. As transformers' from_pretrained does, `chat_template.jinja` beside tokenizer_config.json
 * wins over the config's `chat_template` (its tests/test_tokenization_common.py: "the file template
 * clobbers any template in the config").
 */
import type { LoadedGgufModel } from '../models/gguf/load.js';
import { type ModelFiles, directoryFiles, parseJsonObject, readTextFile } from '../models/hf/files.js';
import { TOKENIZER_CONFIG_NAME, parseTokenizerConfig } from '../tokenizer/config.js';

/** transformers' CHAT_TEMPLATE_FILE. */
export const CHAT_TEMPLATE_FILE = 'chat_template.jinja';

export interface ModelChatTemplate {
  /** Jinja source; null when the model has none (the server then uses its default). */
  template: string | null;
  bosToken: string;
  eosToken: string;
}

export const NO_CHAT_TEMPLATE: ModelChatTemplate = { template: null, bosToken: '', eosToken: '' };

/** From tokenizer_config.json and chat_template.jinja of `source` (a directory path or opened files); absent files are no error. */
export async function readChatTemplate(source: string | ModelFiles): Promise<ModelChatTemplate> {
  const files = typeof source === 'string' ? directoryFiles(source) : source;
  const configFile = await readTextFile(files, TOKENIZER_CONFIG_NAME);
  const config = configFile
    ? parseTokenizerConfig(parseJsonObject(configFile.text, configFile.path), configFile.path)
    : null;
  const jinja = await readTextFile(files, CHAT_TEMPLATE_FILE);
  return {
    template: jinja?.text ?? config?.chatTemplate ?? null,
    bosToken: config?.bosToken ?? '',
    eosToken: config?.eosToken ?? '',
  };
}

/** From a GGUF file's metadata: `tokenizer.chat_template`, and the bos/eos ids' token text. */
export function ggufChatTemplate(loaded: LoadedGgufModel): ModelChatTemplate {
  const meta = loaded.gguf.metadata;
  const value = meta.get('tokenizer.chat_template');
  const token = (key: string): string => {
    const id = meta.get(key);
    return id && (id.type === 'u32' || id.type === 'i32') ? (loaded.tokenizer?.idToToken(id.value) ?? '') : '';
  };
  return {
    template: value?.type === 'string' ? value.value : null,
    bosToken: token('tokenizer.ggml.bos_token_id'),
    eosToken: token('tokenizer.ggml.eos_token_id'),
  };
}
