/** optim: optimizers, learning-rate schedules, gradient clipping and accumulation. */
export {
  Optimizer,
  namedParamsOf,
  type BaseOptions,
  type HasNamedParameters,
  type OptimizerState,
  type ParamGroup,
  type ParamGroupInput,
  type ParamState,
  type ParamsInput,
} from './optimizer.js';
export { SGD, sgdUpdate, type SGDOptions, type SGDHyper } from './sgd.js';
export {
  Adam,
  AdamW,
  adamUpdate,
  decayMatricesOnly,
  type AdamOptions,
  type AdamWOptions,
  type AdamHyper,
} from './adam.js';
export { cosineSchedule, constantSchedule, type Schedule, type CosineScheduleOptions } from './schedule.js';
export { clipGradNorm, accumulateGradients } from './grad.js';
export { loraPlusGroups, type LoraPlusOptions } from './loraplus.js';
