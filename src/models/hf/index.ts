/** Hugging Face model directories (docs/hf-models.md). */
export { loadHfModel, type LoadedHfModel, type HfModel } from './load.js';
export { generateHfTokens } from './generate.js';
export { directoryFiles, memoryFiles, type ModelFiles } from './files.js';
export {
  parseHfConfig,
  parseGenerationConfig,
  type HfModelConfig,
  type HfModelType,
  type GenerationConfig,
} from './config.js';
export { openModelWeights, type ModelWeights, type TensorLocation } from './weights.js';
export { loadHfTokenizer, tokenizerCodec, evaluateText, type TextEval } from './text.js';
