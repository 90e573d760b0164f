/** Model architectures: one file each, parameter names as in their ecosystem's checkpoints. */
export {
  GPT,
  Block as GPTBlock,
  MLP as GPTMLP,
  gptConfig,
  gptConfigFromHF,
  normalizeGPT2Keys,
  type GPTConfig,
  type GPTConfigInput,
  type GPTOptions,
} from './gpt.js';
export {
  type CausalLM,
  type EosTokenId,
  type GenerateOptions,
  type GenerateResult,
  generateTokens,
  eosSet,
} from './causal-lm.js';
export {
  Llama,
  LlamaModel,
  LlamaDecoderLayer,
  LlamaAttention,
  LlamaMLP,
  llamaConfig,
  llamaConfigFromHF,
  ropeInverseFrequencies,
  ropeTables,
  applyRotary,
  type LlamaConfig,
  type LlamaConfigInput,
  type LlamaModelType,
  type LlamaOptions,
  type RopeScaling,
} from './llama.js';
export { MLPClassifier, mlpConfig, type MLPConfig, type ModelOptions } from './mlp.js';
export { CNNClassifier, cnnConfig, cnnFeatureSize, type CNNConfig } from './cnn.js';
export { sampleToken, checkSamplingOptions, type SamplingOptions } from './sampling.js';
