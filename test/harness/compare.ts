/** Comparison helpers: closeness with a tolerance, NaN/Inf aware, with a readable worst failure. */
import type { Tolerance } from './tolerance.js';

export interface Mismatch {
  index: number;
  actual: number;
  expected: number;
  error: number;
  allowed: number;
  count: number;
}

/** atol + rtol·max(|e|, floor) + slack. */
export function allowedError(e: number, tol: Tolerance, slack = 0, floor = 0): number {
  return tol.atol + tol.rtol * Math.max(Math.abs(e), floor) + slack;
}

/**
 * True when `a` is within tolerance of `e` (NaN ≡ NaN, ±Inf only equal to itself). `floor` is a
 * magnitude below which |e| does not shrink the relative part (for normwise comparisons).
 */
export function isClose(a: number, e: number, tol: Tolerance, slack = 0, floor = 0): boolean {
  if (Number.isNaN(e)) return Number.isNaN(a);
  if (!Number.isFinite(e)) return a === e;
  if (!Number.isFinite(a)) return false;
  return Math.abs(a - e) <= allowedError(e, tol, slack, floor);
}

/** Root mean square of the finite values (0 for none): the typical magnitude of a tensor. */
export function rms(values: readonly number[]): number {
  let s = 0;
  let n = 0;
  for (const v of values) {
    if (Number.isFinite(v)) {
      s += v * v;
      n++;
    }
  }
  return n === 0 ? 0 : Math.sqrt(s / n);
}

/**
 * Whether knobs' f32 value `a` agrees with torch's f32 value `e32`, or, failing that, is at least
 * as accurate as torch f32: within tolerance of torch's f64 value `e64`, widened by torch f32's own
 * error |e32 − e64|. The second clause only matters where torch's float32 result is itself off
 * (ill-conditioned inputs, e.g. layer norm of values far from zero) and knobs errs the other way,
 * or where torch f32 gave NaN/Inf from an internal overflow and f64 a finite value.
 */
export function isCloseF32(a: number, e32: number, e64: number, tol: Tolerance): boolean {
  if (isClose(a, e32, tol)) return true;
  if (!Number.isFinite(e64)) return false;
  // torch f32 overflowed inside its formula (e.g. x³ in tanh-GELU's gradient at |x| = 1e20), f64 did not.
  if (!Number.isFinite(e32)) return isClose(a, e64, tol);
  return isClose(a, e64, tol, Math.abs(e32 - e64));
}

/** The worst mismatch (largest error over allowance) and how many elements fail, or null if all pass. */
export interface CompareOptions {
  /** torch's f64 values when comparing with torch's f32 ones: enables isCloseF32. */
  truth?: readonly number[];
  /** Normwise: the relative part uses max(|e|, floor), e.g. floor = rms(expected). */
  floor?: number;
}

export function findMismatch(
  actual: readonly number[],
  expected: readonly number[],
  tol: Tolerance,
  opts: CompareOptions = {},
): Mismatch | null {
  const { truth, floor = 0 } = opts;
  let worst: Mismatch | null = null;
  let count = 0;
  let worstRatio = -1;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (truth ? isCloseF32(a, e, truth[i]!, tol) : isClose(a, e, tol, 0, floor)) continue;
    count++;
    const error = Number.isFinite(a) && Number.isFinite(e) ? Math.abs(a - e) : Infinity;
    const allowed = Number.isFinite(e) ? allowedError(e, tol, 0, floor) : 0;
    const ratio = Number.isFinite(error) ? error / allowed : Infinity;
    if (ratio > worstRatio || worst === null) {
      worstRatio = ratio;
      worst = { index: i, actual: a, expected: e, error, allowed, count: 0 };
    }
  }
  if (worst) worst.count = count;
  return worst;
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/**
 * Throws an Error naming `what`, the shapes, the worst element and the failure count. With
 * `opts.truth` (torch's f64 values for an f32 comparison) elements may also pass by isCloseF32.
 */
export function assertClose(
  what: string,
  actual: readonly number[],
  actualShape: readonly number[],
  expected: readonly number[],
  expectedShape: readonly number[],
  tol: Tolerance,
  opts: CompareOptions = {},
): void {
  if (actualShape.length !== expectedShape.length || actualShape.some((d, i) => d !== expectedShape[i])) {
    throw new Error(`${what}: shape ${fmtShape(actualShape)}, expected ${fmtShape(expectedShape)}`);
  }
  if (actual.length !== expected.length) {
    throw new Error(`${what}: ${actual.length} values, expected ${expected.length}`);
  }
  const m = findMismatch(actual, expected, tol, opts);
  const truth = opts.truth;
  if (m) {
    const near = truth ? `; torch f64 says ${truth[m.index]}` : '';
    throw new Error(
      `${what}: ${m.count}/${expected.length} values out of tolerance (rtol ${tol.rtol}, atol ${tol.atol}${opts.floor ? `, normwise floor ${opts.floor.toExponential(3)}` : ''}); ` +
        `worst at flat index ${m.index}: got ${m.actual}, expected ${m.expected}${near} (|error| ${m.error.toExponential(3)}, allowed ${m.allowed.toExponential(3)})`,
    );
  }
}
