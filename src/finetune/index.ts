/** Fine-tuning: freezing by name, LoRA as PEFT defines it, PEFT adapter directories (docs/finetune.md). */
export { applyFreeze, type FreezeSpec, type FreezeResult } from './freeze.js';
export {
  applyLora,
  planLora,
  parseLoraConfig,
  isTargetModule,
  resolveTargets,
  LoraAdapter,
  LoraLayer,
  LORA_DEFAULTS,
  PEFT_COMMIT,
  type LoraConfig,
  type LoraPlan,
  type LoraTarget,
  type LoraBaseLayer,
  type ApplyLoraOptions,
} from './lora.js';
export {
  saveLoraAdapter,
  loadLoraAdapter,
  readAdapterConfig,
  loraConfigDict,
  baseDigest,
  ADAPTER_CONFIG_NAME,
  ADAPTER_WEIGHTS_NAME,
  BASE_DIGEST_KEY,
  type SaveAdapterOptions,
  type LoadAdapterOptions,
  type LoadedAdapter,
} from './adapter.js';
export { AdapterSet } from './adapter-set.js';
export { loadAdapters } from './adapter.js';
export { extractLora, type ExtractOptions, type ExtractResult, type ExtractedLayer } from './extract.js';
export { truncatedSvd, exactSvd, type Matrix, type Svd, type TruncatedSvd, type TruncatedSvdOptions } from './svd.js';
export {
  describeAdapter,
  adapterEffect,
  type AdapterInfo,
  type AdapterModuleInfo,
  type AdapterEffect,
} from './adapter-info.js';
export { saveModelDirectory } from './model-dir.js';
export {
  quantizeBase,
  dequantizeLayers,
  dequantizeMatrix,
  quantizedLayers,
  quantizedElements,
} from './quantized-base.js';
