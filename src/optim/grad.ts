/** Gradient utilities: clipping by global norm, and accumulation over micro-batches. */
import { fusedFor } from '../backends/dispatch.js';
import type { FloatStorage } from '../dtype.js';
import { ArgumentError } from '../errors.js';
import { mul } from '../ops/elementwise.js';
import { flatView } from './adam.js';
import type { Tensor } from '../tensor.js';
import { namedParamsOf, type ParamsInput } from './optimizer.js';

/**
 * Scales all gradients in place so that their global norm is at most maxNorm, as
 * torch.nn.utils.clip_grad_norm_ (coefficient maxNorm / (norm + 1e-6), only when below 1).
 * Returns the norm before clipping. When it is not finite (NaN/Inf gradients) nothing is
 * scaled: check the returned value and skip the step.
 */
export function clipGradNorm(params: ParamsInput, maxNorm: number, opts: { normType?: number } = {}): number {
  const normType = opts.normType ?? 2;
  if (!(maxNorm > 0)) throw new ArgumentError(`clipGradNorm: maxNorm must be > 0, got ${maxNorm}`);
  if (!(normType > 0)) throw new ArgumentError(`clipGradNorm: normType must be > 0 (or Infinity), got ${normType}`);
  const grads: Tensor[] = [];
  for (const [, p] of namedParamsOf(params)) if (p.grad) grads.push(p.grad);
  if (normType === 2) {
    const owned = ownedF32(grads);
    const fused = owned && owned.length > 0 ? fusedFor('gradNorm', [flatView(owned[0]!)]) : null;
    if (fused) {
      const norm = Math.sqrt(fused.sumOfSquares(owned!));
      const coef = maxNorm / (norm + 1e-6);
      if (Number.isFinite(norm) && coef < 1) fused.scaleInPlace(owned!, coef);
      return norm;
    }
  }
  let acc = 0;
  for (const g of grads) {
    const d = g.contiguousStorage() as FloatStorage;
    for (let i = 0; i < d.length; i++) {
      const a = Math.abs(d[i]!);
      if (normType === Infinity) acc = a > acc || Number.isNaN(a) ? a : acc;
      else if (normType === 2) acc += a * a;
      else acc += a ** normType;
    }
  }
  const norm = normType === Infinity ? acc : normType === 2 ? Math.sqrt(acc) : acc ** (1 / normType);
  const coef = maxNorm / (norm + 1e-6);
  if (Number.isFinite(norm) && coef < 1) {
    for (const [, p] of namedParamsOf(params)) {
      const g = p.grad;
      if (!g) continue;
      if (g.isContiguous() && g.offset === 0 && g.storage.length === g.size) {
        const d = g.storage as FloatStorage;
        for (let i = 0; i < d.length; i++) d[i] = d[i]! * coef;
      } else p.grad = mul(g, coef);
    }
  }
  return norm;
}

/** The gradients' storages when each is an f32 tensor owning all of its storage (scaled in place), else null. */
function ownedF32(grads: readonly Tensor[]): Float32Array[] | null {
  const out: Float32Array[] = [];
  for (const g of grads) {
    if (!(g.storage instanceof Float32Array) || g.offset !== 0 || g.storage.length !== g.size || !g.isContiguous())
      return null;
    out.push(g.storage);
  }
  return out;
}

/**
 * Gradient accumulation: runs `microSteps` forward passes, back-propagating each loss scaled by
 * 1/microSteps, so the summed gradients equal those of one batch microSteps times as large
 * (when the loss is a mean). Returns the mean loss. The pattern it implements:
 *
 *   optimizer.zeroGrad();
 *   for (let i = 0; i < n; i++) model.loss(x[i], y[i]).mul(1 / n).backward();
 *   clipGradNorm(model, 1.0); optimizer.step();
 */
export function accumulateGradients(microSteps: number, lossOf: (micro: number) => Tensor): number {
  if (!Number.isInteger(microSteps) || microSteps <= 0)
    throw new ArgumentError(`accumulateGradients: microSteps must be a positive integer, got ${microSteps}`);
  let total = 0;
  for (let i = 0; i < microSteps; i++) {
    const loss = lossOf(i);
    if (loss.size !== 1) throw new ArgumentError(`accumulateGradients: lossOf(${i}) must return a scalar loss`);
    total += loss.item();
    mul(loss, 1 / microSteps).backward();
  }
  return total / microSteps;
}
