/**
 * Adam (L2 weight decay added to the gradient, as torch.optim.Adam) and AdamW (decoupled weight
 * decay, as torch.optim.AdamW). AdamW given a module or a flat parameter list decays only
 * tensors of rank ≥ 2 (matrices, embeddings) by default, as nanoGPT does: biases and norm
 * weights get weightDecay 0. Pass explicit groups or `decay` to choose otherwise.
 */
import type { AdamStep, AdamUpdate, KernelView } from '../backends/backend.js';
import { fusedFor } from '../backends/dispatch.js';
import type { FloatStorage } from '../dtype.js';
import { ArgumentError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import {
  type BaseOptions,
  Optimizer,
  type ParamGroupInput,
  type ParamState,
  type ParamsInput,
  type ParamUpdate,
} from './optimizer.js';

export interface AdamOptions extends BaseOptions {
  betas: readonly [number, number];
  eps: number;
}

export type AdamHyper = AdamStep;

/** A dense f32 array as a kernel view (for `fusedFor`). */
export const flatView = (s: Float32Array): KernelView => ({
  dtype: 'f32',
  storage: s,
  shape: [s.length],
  strides: [1],
  offset: 0,
});

/**
 * One update in place: the current backend's fused kernel when it has one for f32 (native:
 * one pass, threaded), else `adamUpdate`.
 */
export function adamStep(
  param: FloatStorage,
  grad: FloatStorage,
  expAvg: FloatStorage,
  expAvgSq: FloatStorage,
  h: AdamHyper,
): void {
  if (
    param instanceof Float32Array &&
    grad instanceof Float32Array &&
    expAvg instanceof Float32Array &&
    expAvgSq instanceof Float32Array
  ) {
    const fused = fusedFor('adam', [flatView(param)]);
    if (fused) return fused.adam(param, grad, expAvg, expAvgSq, h);
  }
  adamUpdate(param, grad, expAvg, expAvgSq, h);
}

/**
 * One Adam/AdamW update in place (torch's single-tensor path):
 *   m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²
 *   p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
 */
export function adamUpdate(
  param: FloatStorage,
  grad: FloatStorage,
  expAvg: FloatStorage,
  expAvgSq: FloatStorage,
  h: AdamHyper,
): void {
  const { lr, beta1, beta2, eps, weightDecay, decoupled, step } = h;
  const stepSize = lr / (1 - beta1 ** step);
  const bc2Sqrt = Math.sqrt(1 - beta2 ** step);
  const shrink = decoupled ? 1 - lr * weightDecay : 1;
  const l2 = decoupled ? 0 : weightDecay;
  const n = param.length;
  for (let i = 0; i < n; i++) {
    let p = param[i]!;
    let g = grad[i]!;
    if (l2 !== 0) g += l2 * p;
    p *= shrink;
    const m = beta1 * expAvg[i]! + (1 - beta1) * g;
    const v = beta2 * expAvgSq[i]! + (1 - beta2) * g * g;
    expAvg[i] = m;
    expAvgSq[i] = v;
    // read back the stored (rounded) moments, as torch computes from its f32 state
    param[i] = p - (stepSize * expAvg[i]!) / (Math.sqrt(expAvgSq[i]!) / bc2Sqrt + eps);
  }
}

function adamDefaults(opts: Partial<AdamOptions> & { lr: number }, weightDecay: number): AdamOptions {
  return {
    lr: opts.lr,
    betas: opts.betas ?? [0.9, 0.999],
    eps: opts.eps ?? 1e-8,
    weightDecay: opts.weightDecay ?? weightDecay,
  };
}

function checkAdam(who: string, o: AdamOptions): void {
  const [b1, b2] = o.betas;
  if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1))
    throw new ArgumentError(`${who}: betas must be in [0, 1), got [${b1}, ${b2}]`);
  if (!(o.eps >= 0)) throw new ArgumentError(`${who}: eps must be ≥ 0, got ${o.eps}`);
}

const ADAM_SLOTS = ['exp_avg', 'exp_avg_sq'] as const;

/** Shared by Adam and AdamW; they differ only in how weight decay applies. */
abstract class AdamBase extends Optimizer<AdamOptions> {
  protected abstract readonly decoupled: boolean;

  protected slots(): readonly string[] {
    return ADAM_SLOTS;
  }

  protected checkOptions(o: AdamOptions): void {
    checkAdam(this.constructor.name, o);
  }

  private hyper(o: AdamOptions, step: number): AdamHyper {
    return {
      lr: o.lr,
      beta1: o.betas[0],
      beta2: o.betas[1],
      eps: o.eps,
      weightDecay: o.weightDecay,
      decoupled: this.decoupled,
      step,
    };
  }

  protected update(param: FloatStorage, grad: FloatStorage, state: ParamState, o: AdamOptions): void {
    adamStep(param, grad, state.buffers.exp_avg!, state.buffers.exp_avg_sq!, this.hyper(o, state.step));
  }

  /** The f32 parameters in one fused call when the backend has it (the same results as one by one). */
  protected override updateAll(work: readonly ParamUpdate<AdamOptions>[]): void {
    const f32: AdamUpdate[] = [];
    const rest: ParamUpdate<AdamOptions>[] = [];
    for (const w of work) {
      const { param, grad } = w;
      const { exp_avg: m, exp_avg_sq: v } = w.state.buffers;
      if (
        param instanceof Float32Array &&
        grad instanceof Float32Array &&
        m instanceof Float32Array &&
        v instanceof Float32Array
      )
        f32.push({ param, grad, expAvg: m, expAvgSq: v, h: this.hyper(w.options, w.state.step) });
      else rest.push(w);
    }
    const fused = f32.length > 1 ? fusedFor('adam', [flatView(f32[0]!.param)]) : null;
    if (!fused) return super.updateAll(work);
    fused.adamMany(f32);
    super.updateAll(rest);
  }
}

/** torch.optim.Adam: weight decay (default 0) is added to the gradient, for every parameter. */
export class Adam extends AdamBase {
  readonly type = 'adam';
  protected readonly decoupled = false;

  constructor(
    params: ParamsInput | readonly ParamGroupInput<AdamOptions>[],
    opts: Partial<AdamOptions> & { lr: number },
  ) {
    super(params, adamDefaults(opts, 0));
  }
}

export interface AdamWOptions extends Partial<AdamOptions> {
  lr: number;
  /** Which parameters get weight decay when `params` is one collection (default: decayMatricesOnly). */
  decay?: (name: string, p: Tensor) => boolean;
}

/** nanoGPT's rule: decay matrices and embeddings (rank ≥ 2), not biases or norm weights. */
export const decayMatricesOnly = (_name: string, p: Tensor): boolean => p.rank >= 2;

/**
 * torch.optim.AdamW: decoupled weight decay (default 0.01). Given one collection of parameters,
 * only those `decay` accepts are decayed (default rank ≥ 2); explicit groups are taken as given.
 */
export class AdamW extends AdamBase {
  readonly type = 'adamw';
  protected readonly decoupled = true;

  constructor(params: ParamsInput | readonly ParamGroupInput<AdamOptions>[], opts: AdamWOptions) {
    super(params, adamDefaults(opts, 0.01), opts.decay ?? decayMatricesOnly);
  }
}
