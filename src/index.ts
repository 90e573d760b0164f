/**
 * knobs — the public API. Everything a user imports comes from here, by name.
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
  sum, mean, max, min, argmax, argmin, variance, variance as var,
  // linear algebra, shape ops, nn
  matmul, concat, stack, split, pad, triu, tril, causalMask,
  softmax, logSoftmax, crossEntropy, layerNorm, rmsNorm, embedding, dropout, scaledDotProductAttention,
  conv2d, maxPool2d, avgPool2d,
  type CrossEntropyOptions, type DropoutOptions, type AttentionOptions, type Conv2dOptions, type Pool2dOptions,
} from './ops/index.js';
export {
  loadSafetensors, saveSafetensors, openSafetensors, readSafetensorsHeader, parseSafetensorsHeader, isRawTensor,
  type RawTensor, type SafetensorsValue, type SafetensorsEntry, type SafetensorsHeader, type SafetensorsDType,
} from './formats/safetensors.js';
