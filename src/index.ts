/**
 * knobs — the public API. Everything a user imports comes from here, by name; each name is a
 * promise to keep it. Other entry points (package.json `exports`):
 *   knobs/checkpoint   the crash-safe checkpoint store, for training loops of your own
 *   knobs/cli          main(argv, io): the command line, callable in process
 *   knobs/internal/*   any module by its path under src/ (e.g. knobs/internal/train/build), for
 *                      tools, benchmarks and tests; no stability promise
 */
export { Tensor, type NestedArray, type TensorOrScalar } from './tensor.js';
export {
  type DType, DTYPES, BYTES_PER_ELEMENT, isDType, f32ToF16Bits, f16BitsToF32, f32ToBF16Bits, bf16BitsToF32,
} from './dtype.js';
export {
  KnobsError, ShapeError, DTypeError, ArgumentError, AutogradError, BackendError, FormatError, IOError, UsageError,
  type ErrorCode,
} from './errors.js';
export { Generator, manualSeed, getDefaultGenerator } from './random.js';
export { noGrad, enableGrad, isGradEnabled } from './autograd/tape.js';
export { gradcheck, type GradcheckOptions, type GradcheckResult } from './autograd/gradcheck.js';
export { backends, getBackend, setBackend, withBackend, registerBackend } from './backends/dispatch.js';
export type { Backend, KernelView, KernelName, UnaryOp, BinaryOp, ReduceOp } from './backends/backend.js';
export {
  // creation
  tensor, fromArray, zeros, ones, full, zerosLike, onesLike, fullLike, arange, rand, randn, randint,
  type CreateOptions, type RandomOptions,
  // views and layout
  reshape, flatten, permute, transpose, slice, expand, unsqueeze, squeeze, contiguous, clone, cast,
  // elementwise
  neg, exp, log, sqrt, rsqrt, abs, tanh, sigmoid, relu, gelu, silu, sign,
  add, sub, mul, div, pow, maximum, minimum, eq, ne, lt, le, gt, ge, logicalAnd, logicalOr, where, clamp,
  // reductions
  sum, mean, max, min, argmax, argmin, variance, variance as var, cumsum,
  // linear algebra, shape ops, nn
  matmul, concat, stack, split, pad, triu, tril, causalMask,
  softmax, logSoftmax, crossEntropy, layerNorm, rmsNorm, embedding, dropout, scaledDotProductAttention,
  conv2d, maxPool2d, avgPool2d,
  type CrossEntropyOptions, type DropoutOptions, type AttentionOptions, type Conv2dOptions, type Pool2dOptions,
} from './ops/index.js';
export {
  loadSafetensors, saveSafetensors, encodeSafetensors, openSafetensors, readSafetensorsHeader, parseSafetensorsHeader, isRawTensor,
  type RawTensor, type SafetensorsInput, type SafetensorsValue, type SafetensorsEntry, type SafetensorsHeader, type SafetensorsDType,
} from './formats/safetensors.js';
export {
  readGguf, readGgufTensor, dequantizeGguf, GGUF_RULES, GGML_TYPES,
  type GgufFile, type GgufTensorInfo, type GgufValue, type GgufValueType, type GgufItemType, type GgufArrayItems, type GgmlType, type GgufRule,
} from './formats/gguf.js';
export { writeGguf, encodeGguf, quantizeQ8_0, quantizeQ4_0, type GgufWriteInput, type GgufWriteTensor, type GgufWriteType } from './formats/gguf-write.js';
export * as nn from './nn/index.js';
export {
  Module, ModuleList, Sequential, Linear, Conv1D, Embedding, LayerNorm, RMSNorm, Dropout, Conv2d, MaxPool2d, AvgPool2d,
  ReLU, GELU, Tanh, Sigmoid, SiLU, Identity, Flatten, CausalSelfAttention, KVCache, init,
  type Layer, type StateDict, type LoadStateDictOptions, type LoadStateDictResult,
} from './nn/index.js';
export {
  GPT, gptConfig, gptConfigFromHF, MLPClassifier, mlpConfig, CNNClassifier, cnnConfig, sampleToken,
  type GPTConfig, type GPTConfigInput, type GenerateOptions, type GenerateResult, type MLPConfig, type CNNConfig,
  type SamplingOptions,
  Llama, llamaConfig, llamaConfigFromHF, type LlamaConfig, type LlamaConfigInput, type RopeScaling, type CausalLM, type EosTokenId,
} from './models/index.js';
export {
  loadHfModel, generateHfTokens, directoryFiles, memoryFiles, parseHfConfig, parseGenerationConfig,
  loadHfTokenizer, tokenizerCodec, evaluateText, type TextEval,
  type LoadedHfModel, type HfModel, type HfModelConfig, type HfModelType, type GenerationConfig, type ModelFiles,
} from './models/hf/index.js';
export { generateText, UTF8_BYTES, type GenerateTextOptions, type GenerateTextResult, type TextCodec } from './models/generate-text.js';
export {
  Optimizer, SGD, Adam, AdamW, decayMatricesOnly, cosineSchedule, constantSchedule, clipGradNorm, accumulateGradients,
  type OptimizerState, type ParamGroupInput, type SGDOptions, type AdamOptions, type AdamWOptions, type Schedule,
  type CosineScheduleOptions,
} from './optim/index.js';
export {
  readIdx, parseIdx, readIdxImages, readIdxLabels, type IdxArray, type IdxImages,
} from './data/idx.js';
export {
  loadIdxDataset, loadFashionMnist, ImageLoader, FASHION_MNIST_DIR, FASHION_MNIST_CLASSES, FASHION_MNIST_NORMALIZE,
  type ImageDataset, type ImageBatch, type ImageLoaderOptions, type ImageLoaderState,
} from './data/images.js';
export {
  ByteTextCorpus, TextBatcher, sequentialTextBatches, encodeBytes, decodeBytes, BYTE_VOCAB_SIZE,
  type TextCorpus, type TextCorpusOptions, type TextBatch, type TextBatcherOptions, type TextBatcherState, type TextSplit,
} from './data/text.js';
export { TokenTextCorpus } from './data/token-text.js';
export { writeFileAtomic, type AtomicWriteOptions } from './io/atomic.js';
export { openFileSource, memorySource, type ByteSource } from './io/byte-source.js';
export {
  applyFreeze, applyLora, parseLoraConfig, LoraAdapter, saveLoraAdapter, loadLoraAdapter, baseDigest,
  type FreezeSpec, type FreezeResult, type LoraConfig, type ApplyLoraOptions, type SaveAdapterOptions,
  type LoadAdapterOptions, type LoadedAdapter,
} from './finetune/index.js';
export { parseRecipe, loadRecipe, recipeSchema, type Recipe } from './train/recipe.js';
export { train, type TrainOptions, type TrainResult, type TrainEvent } from './train/trainer.js';
export {
  evaluateClassifier, evaluateLanguageModel, type ClassifierEval, type LanguageModelEval, type ImageLayout,
} from './train/evaluate.js';
export { evaluateRun, type RunEval } from './train/eval-run.js';
export { loadRun, type LoadedRun } from './train/run-dir.js';
export { type TrainRow, type EvalRow } from './train/metrics.js';
export {
  Tokenizer, DecodeStream, checkTokenizerFitsVocab, MAX_TOKENIZER_JSON_BYTES, type EncodeOptions, type DecodeOptions,
} from './tokenizer/tokenizer.js';
export type { Encoded } from './tokenizer/bpe.js';
export {
  loadTokenizerDir, parseTokenizerConfig, tokenizerConfigJson, TOKENIZER_NAME, TOKENIZER_CONFIG_NAME,
  type TokenizerConfig, type TokenizerConfigOptions, type TokenizerDir,
} from './tokenizer/config.js';
export {
  byteLevelTokenizerJson, byteLevelTokenizerFiles, writeTokenizerFiles, type TokenizerFiles,
} from './tokenizer/export.js';
export { trainByteLevelBpe, type TrainBpeOptions } from './tokenizer/train-bpe.js';
export {
  inspect, diff, HISTOGRAM_BINS,
  type InspectOptions, type InspectedTensor, type ModelInspection, type DiffOptions, type DiffStatus, type TensorDiff,
  type LayerDiff, type DiffSide, type ModelDiff, type TensorStats,
} from './inspect/index.js';
