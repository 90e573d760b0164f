/** Scalar math the js backend needs beyond Math: erf (for exact GELU) and the activation formulas. */

const TWO_OVER_SQRT_PI = 1.1283791670955126;
const INV_SQRT_PI = 0.5641895835477563;

/**
 * Error function to ~1e-15 relative accuracy: the everywhere-positive series
 * erf(x) = 2/√π · e^(−x²) · Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1)) for |x| < 2.5 (no cancellation),
 * and 1 − erfc(x) with erfc's continued fraction (modified Lentz) beyond.
 */
export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  if (ax >= 6) return Math.sign(x);
  if (ax < 2.5) {
    const x2 = x * x;
    let term = x;
    let sum = x;
    for (let n = 1; n < 200; n++) {
      term *= (2 * x2) / (2 * n + 1);
      sum += term;
      if (Math.abs(term) < 1e-17 * Math.abs(sum)) break;
    }
    return TWO_OVER_SQRT_PI * Math.exp(-x2) * sum;
  }
  return Math.sign(x) * (1 - erfcContinuedFraction(ax));
}

/** erfc(x) for x ≥ 2.5: e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))). */
function erfcContinuedFraction(x: number): number {
  const tiny = 1e-300;
  let f = x;
  let c = x;
  let d = 0;
  for (let n = 1; n < 500; n++) {
    const a = n / 2;
    d = x + a * d;
    d = d === 0 ? tiny : d;
    c = x + a / c;
    c = c === 0 ? tiny : c;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return (Math.exp(-x * x) * INV_SQRT_PI) / f;
}

export const SQRT_2_OVER_PI = 0.7978845608028654;
export const GELU_TANH_COEF = 0.044715;
const INV_SQRT_2 = 0.7071067811865476;

export function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

export function gelu(x: number): number {
  return 0.5 * x * (1 + erf(x * INV_SQRT_2));
}

export function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_COEF * x * x * x)));
}

const bf16Bits = new Uint32Array(1);
const bf16Float = new Float32Array(bf16Bits.buffer);
/** x rounded to the nearest bfloat16 (ties to even), as an f32; NaN stays NaN. */
export function roundToBf16(x: number): number {
  bf16Float[0] = x;
  const u = bf16Bits[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return NaN;
  bf16Bits[0] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) << 16;
  return bf16Float[0]!;
}
