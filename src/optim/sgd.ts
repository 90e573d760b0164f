/** Stochastic gradient descent with momentum, dampening, Nesterov momentum and (L2) weight decay, as torch.optim.SGD. */
import type { FloatStorage } from '../dtype.js';
import { ArgumentError } from '../errors.js';
import { type BaseOptions, Optimizer, type ParamGroupInput, type ParamState, type ParamsInput } from './optimizer.js';

export interface SGDOptions extends BaseOptions {
  momentum: number;
  dampening: number;
  nesterov: boolean;
}

export interface SGDHyper {
  lr: number;
  momentum: number;
  dampening: number;
  nesterov: boolean;
  weightDecay: number;
  /** True on a parameter's first update: the momentum buffer starts as the gradient. */
  first: boolean;
}

/**
 * One SGD update in place (torch.optim.SGD's single-tensor path):
 *   g ← g + wd·p;  buf ← g (first step) or μ·buf + (1 − dampening)·g;
 *   g ← g + μ·buf (Nesterov) or buf;  p ← p − lr·g
 */
export function sgdUpdate(param: FloatStorage, grad: FloatStorage, buf: FloatStorage | null, h: SGDHyper): void {
  const { lr, momentum, dampening, nesterov, weightDecay, first } = h;
  const n = param.length;
  for (let i = 0; i < n; i++) {
    let g = grad[i]!;
    if (weightDecay !== 0) g += weightDecay * param[i]!;
    if (buf !== null) {
      const b = first ? g : momentum * buf[i]! + (1 - dampening) * g;
      buf[i] = b;
      g = nesterov ? g + momentum * buf[i]! : buf[i]!;
    }
    param[i] = param[i]! - lr * g;
  }
}

export class SGD extends Optimizer<SGDOptions> {
  readonly type = 'sgd';

  constructor(
    params: ParamsInput | readonly ParamGroupInput<SGDOptions>[],
    opts: Partial<SGDOptions> & { lr: number },
  ) {
    super(params, {
      lr: opts.lr,
      momentum: opts.momentum ?? 0,
      dampening: opts.dampening ?? 0,
      nesterov: opts.nesterov ?? false,
      weightDecay: opts.weightDecay ?? 0,
    });
  }

  protected slots(o: SGDOptions): readonly string[] {
    return o.momentum !== 0 ? ['momentum_buffer'] : [];
  }

  protected checkOptions(o: SGDOptions): void {
    if (!(o.momentum >= 0)) throw new ArgumentError(`SGD: momentum must be ≥ 0, got ${o.momentum}`);
    if (o.nesterov && (o.momentum <= 0 || o.dampening !== 0))
      throw new ArgumentError('SGD: Nesterov momentum needs momentum > 0 and dampening 0');
  }

  protected update(param: FloatStorage, grad: FloatStorage, state: ParamState, o: SGDOptions): void {
    sgdUpdate(param, grad, state.buffers.momentum_buffer ?? null, { ...o, first: state.step === 1 });
  }
}
