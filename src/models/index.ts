/** Model architectures: one file each, parameter names as in their ecosystem's checkpoints. */
export {
  GPT, Block as GPTBlock, MLP as GPTMLP, gptConfig, gptConfigFromHF, normalizeGPT2Keys,
  type GPTConfig, type GPTConfigInput, type GPTOptions, type GenerateOptions, type GenerateResult,
} from './gpt.js';
export { MLPClassifier, mlpConfig, type MLPConfig, type ModelOptions } from './mlp.js';
export { CNNClassifier, cnnConfig, cnnFeatureSize, type CNNConfig } from './cnn.js';
export { sampleToken, checkSamplingOptions, type SamplingOptions } from './sampling.js';
