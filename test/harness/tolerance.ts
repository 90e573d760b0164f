/**
 * Tolerance families for the conformance suite. A value passes when
 *   |actual − expected| ≤ atol + rtol · |expected|
 * and NaN matches only NaN, ±Inf only the same infinity.
 *
 * f32 runs compare knobs' float32 results with torch's float32 results; f64 runs compare with
 * torch's float64 results (both computed from the same float32-rounded inputs). Every fixture
 * case names the family of its forward outputs; gradients always use `gradient`.
 */
export type ToleranceFamily = 'exact' | 'elementwise' | 'reduction' | 'gradient';
export type RunDType = 'f32' | 'f64';

export interface Tolerance {
  rtol: number;
  atol: number;
}

export const TOLERANCES: Readonly<Record<RunDType, Readonly<Record<ToleranceFamily, Tolerance>>>> = {
  f32: {
    // integer / bool results and pure data movement (concat, pad, embedding, triu, ...)
    exact: { rtol: 0, atol: 0 },
    // one rounding per element: unary math, broadcasting arithmetic, max pooling
    elementwise: { rtol: 1e-5, atol: 1e-6 },
    // accumulations whose order differs between libraries: reductions, matmul, softmax,
    // cross-entropy, norms, attention, convolution, average pooling
    reduction: { rtol: 1e-4, atol: 1e-6 },
    // every gradient, whatever the op
    gradient: { rtol: 1e-4, atol: 1e-6 },
  },
  f64: {
    exact: { rtol: 0, atol: 0 },
    elementwise: { rtol: 1e-10, atol: 1e-12 },
    reduction: { rtol: 1e-10, atol: 1e-12 },
    gradient: { rtol: 1e-10, atol: 1e-12 },
  },
};

export function toleranceFor(dtype: RunDType, family: ToleranceFamily): Tolerance {
  const t = TOLERANCES[dtype][family];
  if (!t) throw new Error(`unknown tolerance family '${family}'`);
  return t;
}
