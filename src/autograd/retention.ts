/**
 * What the tape keeps of an op's inputs and output. A node must reach every input that requires
 * grad (backward walks through them), but it needs an input's *values* only when a gradient that
 * will actually be computed reads them: add needs no values at all, a product x·W needs W for dX
 * and x for dW, so a frozen W (LoRA, frozen layers) lets x go. An input whose values are not
 * needed is replaced on the node by a shape-only alias (same shape, strides, dtype, requiresGrad
 * and gradFn, empty storage), so its storage is freed as soon as the forward pass lets go of it.
 * backward() identifies a computed tensor by its gradFn node, so an alias and the original count
 * as one tensor.
 *
 * An op missing from INPUT_VALUES keeps every input and its output (always correct, never lean).
 */
import { type Storage, allocate } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { Tensor as TensorClass } from '../tensor.js';
import type { PrimitiveName } from './gradients.js';

/** For each input, whether its values are read, given which inputs get a gradient (and the inputs). */
type InputValues = (wanted: readonly boolean[], inputs: readonly (Tensor | null)[]) => readonly boolean[];

const NONE: InputValues = (wanted) => wanted.map(() => false);
/** Binary products: each input's gradient reads the other input. */
const CROSSED: InputValues = ([a, b]) => [!!b, !!a];

const INPUT_VALUES: Partial<Record<PrimitiveName, InputValues>> = {
  add: NONE,
  sub: NONE,
  neg: NONE,
  reshape: NONE,
  permute: NONE,
  slice: NONE,
  expand: NONE,
  contiguous: NONE,
  cast: NONE,
  gatherRows: NONE,
  concat: NONE,
  pad: NONE,
  sum: NONE,
  cumsum: NONE,
  where: NONE,
  maxPool2d: NONE,
  maxPoolBiasRelu: NONE, // reads its output (OUTPUT_READERS)
  avgPool2d: NONE,
  crossEntropy: NONE,
  quantizedMatmul: NONE,
  // These rules read the output (OUTPUT_READERS), not the input.
  exp: NONE,
  sqrt: NONE,
  rsqrt: NONE,
  tanh: NONE,
  sigmoid: NONE,
  softmax: NONE,
  logSoftmax: NONE,
  // Activations' rules read x only (the fused kernels and the composite formulas alike).
  relu: () => [true],
  gelu: () => [true],
  gelu_tanh: () => [true],
  silu: () => [true],
  log: () => [true],
  abs: () => [true],
  mul: CROSSED,
  matmul: CROSSED,
  conv2d: CROSSED,
  // act(x·W + b) (src/ops/linear.ts): x for dW, W for dx; the pre-activation h sits in the node's context.
  linear: ([x, w]) => [!!w, !!x, false],
  // da = g / b; db = −g·a / b².
  div: ([, b]) => [!!b, true],
  // [x, W, bias, h, A, B] (src/ops/lora-linear.ts): x for dW, and for dA when h is x (h null).
  loraLinear: ([x, w, , h, a], inputs) => {
    const shared = inputs[3] === null;
    return [!!w || (shared && !!a), !!x, false, !!a, (shared && !!x) || !!h, !!x || !!h || !!a];
  },
};

/** Listed ops whose rule reads the output; an unlisted op keeps its output too. */
const OUTPUT_READERS: ReadonlySet<PrimitiveName> = new Set<PrimitiveName>([
  'exp',
  'sqrt',
  'rsqrt',
  'tanh',
  'sigmoid',
  'softmax',
  'logSoftmax',
  'maxPoolBiasRelu',
]);

export function keepsOutput(op: PrimitiveName): boolean {
  return !(op in INPUT_VALUES) || OUTPUT_READERS.has(op);
}

const EMPTY = new Map<string, Storage>();

/** `t` without its values: what a node holds for an input whose values its rule does not read. */
function shapeOnly(t: Tensor): Tensor {
  let storage = EMPTY.get(t.dtype);
  if (!storage) EMPTY.set(t.dtype, (storage = allocate(t.dtype, 0)));
  const alias = new TensorClass(storage, t.shape, t.dtype, t.strides, 0);
  alias.requiresGrad = t.requiresGrad;
  alias.gradFn = t.gradFn;
  return alias;
}

/**
 * The inputs a node of `op` holds: each input itself where its values are needed — or where it is
 * a leaf that requires grad (a parameter: backward accumulates into that very tensor) — else a
 * shape-only alias.
 */
export function retainedInputs(op: PrimitiveName, inputs: readonly (Tensor | null)[]): readonly (Tensor | null)[] {
  const rule = INPUT_VALUES[op];
  if (!rule) return inputs;
  const needed = rule(
    inputs.map((t) => !!t?.requiresGrad),
    inputs,
  );
  return inputs.map((t, i) => {
    if (!t || needed[i] || (t.requiresGrad && !t.gradFn)) return t;
    return shapeOnly(t);
  });
}
