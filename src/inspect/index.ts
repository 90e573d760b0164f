/** Inspecting and comparing weights in any format knobs reads (docs/inspect.md). */
export { inspect, type InspectOptions, type InspectedTensor, type ModelInspection } from './inspect.js';
export {
  diff,
  type DiffOptions,
  type DiffStatus,
  type TensorDiff,
  type LayerDiff,
  type DiffSide,
  type ModelDiff,
} from './diff.js';
export { HISTOGRAM_BINS, type TensorStats } from './stats.js';
export {
  openWeights,
  type WeightsReader,
  type WeightsTensor,
  type WeightsFormat,
  type TensorValues,
} from './reader.js';
export { canonicalName, layerOf } from './canonical.js';
