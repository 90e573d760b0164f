/** GGUF model files ↔ knobs models with Hugging Face names (docs/gguf.md). */
export { loadGgufModel, ggufTensorToModel, type LoadedGgufModel, type LoadGgufOptions } from './load.js';
export {
  ggufFromModel,
  hfFilesFromGguf,
  ggufTensorType,
  GGUF_OUT_TYPES,
  HF_OUT_TYPES,
  type GgufOutType,
  type HfOutType,
} from './export.js';
export { ggufTokenizerMetadata, tokenizerJsonFromGguf, tokenizerFromGguf, KNOWN_PRE } from './tokenizer.js';
export { ggufTensorName, hfTensorName, GGUF_ARCHES, type GgufArch } from './names.js';
