/**
 * Finite-difference gradient checking: compares backward() against central differences of a
 * scalar function. Run it in f64 on the js backend, where differences are accurate.
 */
import { AutogradError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { noGrad } from './tape.js';

export interface GradcheckOptions {
  eps?: number;
  rtol?: number;
  atol?: number;
}

export interface GradcheckResult {
  ok: boolean;
  /** Worst mismatch: input index, flat element, analytic and numeric values. */
  worst: { input: number; element: number; analytic: number; numeric: number; error: number } | null;
}

/**
 * Checks d fn(inputs) / d inputs. `fn` must return a scalar tensor; inputs must be contiguous
 * f64 leaves with requiresGrad (their storage is perturbed in place and restored).
 */
export function gradcheck(
  fn: (...inputs: Tensor[]) => Tensor,
  inputs: Tensor[],
  opts: GradcheckOptions = {},
): GradcheckResult {
  const { eps = 1e-6, rtol = 1e-5, atol = 1e-7 } = opts;
  for (const t of inputs) {
    if (t.dtype !== 'f64' || !t.isContiguous())
      throw new AutogradError('gradcheck: inputs must be contiguous f64 tensors');
    t.grad = null;
  }
  const out = fn(...inputs);
  if (out.size !== 1) throw new AutogradError('gradcheck: fn must return a scalar');
  out.backward();
  let worst: GradcheckResult['worst'] = null;
  let ok = true;
  inputs.forEach((t, i) => {
    if (!t.requiresGrad) return;
    const data = t.storage as Float64Array;
    const analytic = t.grad ? t.grad.toFlatArray() : new Array<number>(t.size).fill(0);
    for (let e = 0; e < t.size; e++) {
      const at = t.offset + e;
      const saved = data[at]!;
      data[at] = saved + eps;
      const plus = noGrad(() => fn(...inputs).item());
      data[at] = saved - eps;
      const minus = noGrad(() => fn(...inputs).item());
      data[at] = saved;
      const numeric = (plus - minus) / (2 * eps);
      const error = Math.abs(analytic[e]! - numeric);
      const bad = !(error <= atol + rtol * Math.abs(numeric));
      if (bad) ok = false;
      if (!worst || error > worst.error || (bad && Number.isNaN(error)))
        worst = { input: i, element: e, analytic: analytic[e]!, numeric, error };
    }
  });
  return { ok, worst };
}
