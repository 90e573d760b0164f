/**
 * The tape. When gradients are on and an op has an input that requires grad, the op records one
 * Node on its output: the primitive's name, its inputs, whatever the gradient rule needs (`ctx`)
 * and, for rules that read it, the output. backward() (./backward.ts) walks these nodes; the rules
 * live in ./gradients.ts. Inputs whose values no rule will read are held without them
 * (./retention.ts), so the tape keeps only what backward needs.
 */
import type { Tensor } from '../tensor.js';
import type { GradContexts, PrimitiveName } from './gradients.js';
import { keepsOutput, retainedInputs } from './retention.js';

export type Node = {
  [K in PrimitiveName]: {
    readonly op: K;
    readonly inputs: readonly (Tensor | null)[];
    readonly ctx: GradContexts[K];
    /** The op's output, for rules that read it (absent otherwise, so the tape does not hold it). */
    readonly out?: Tensor;
  };
}[PrimitiveName];

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` with gradient recording off (inference, optimizer updates). Synchronous `fn` only. */
export function noGrad<T>(fn: () => T): T {
  const previous = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = previous;
  }
}

/** Runs `fn` with gradient recording on, even inside noGrad. */
export function enableGrad<T>(fn: () => T): T {
  const previous = gradEnabled;
  gradEnabled = true;
  try {
    return fn();
  } finally {
    gradEnabled = previous;
  }
}

/** Whether an op on these inputs must be recorded. */
export function needsGrad(inputs: readonly (Tensor | null | undefined)[]): boolean {
  if (!gradEnabled) return false;
  for (const t of inputs) if (t && t.requiresGrad) return true;
  return false;
}

/** Records `out` as produced by primitive `op` from `inputs` when any input requires grad. */
export function record<K extends PrimitiveName>(
  op: K,
  out: Tensor,
  inputs: readonly (Tensor | null)[],
  ctx: GradContexts[K],
): Tensor {
  if (needsGrad(inputs)) {
    out.requiresGrad = true;
    const kept = retainedInputs(op, inputs);
    out.gradFn = (keepsOutput(op) ? { op, inputs: kept, ctx, out } : { op, inputs: kept, ctx }) as Node;
  }
  return out;
}
