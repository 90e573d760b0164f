/** nn: modules with named parameters, standard layers, attention, initialisers. */
export {
  Module,
  ModuleList,
  Sequential,
  nameMatcher,
  type Layer,
  type NamePattern,
  type StateDict,
  type StateDictInput,
  type LoadStateDictOptions,
  type LoadStateDictResult,
} from './module.js';
export { Linear, Conv1D, type LinearOptions, type WeightLayout } from './linear.js';
export {
  QuantizedLinear,
  quantizeModel,
  quantizeMatrix,
  weightKinds,
  quantizedMatrixFromBlocks,
  requantizeToQ8_0,
  replaceLinear,
  QUANT_TYPES,
  type QuantType,
  type QuantizedMatrix,
  type QuantizeModelResult,
} from './quantized-linear.js';
export {
  Embedding,
  LayerNorm,
  RMSNorm,
  Dropout,
  Conv2d,
  MaxPool2d,
  AvgPool2d,
  ReLU,
  GELU,
  Tanh,
  Sigmoid,
  SiLU,
  Identity,
  Flatten,
  type EmbeddingOptions,
  type LayerNormOptions,
  type Conv2dLayerOptions,
} from './layers.js';
export {
  CausalSelfAttention,
  KVCache,
  type CausalSelfAttentionOptions,
  type KVCacheOptions,
  type LayerCache,
} from './attention.js';
export * as init from './init.js';
export type { Fans, InitOptions, KaimingOptions, XavierOptions, Nonlinearity } from './init.js';
