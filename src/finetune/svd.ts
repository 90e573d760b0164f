/**
 * Truncated singular value decomposition, for `knobs extract-lora` (a weight difference D ≈ U·S·Vᵀ
 * kept to rank r is the best rank-r approximation in the Frobenius norm: Eckart–Young).
 *
 *  - exactSvd: one-sided Jacobi (Hestenes): plane rotations orthogonalise the columns of the
 *    matrix (the side with fewer columns) until every pair is orthogonal to f64 precision; the
 *    column norms are the singular values. Slow for big matrices, accurate for any.
 *  - truncatedSvd: the randomized range finder of Halko, Martinsson & Tropp (2011, algorithm 4.4):
 *    Y = D·Ω for a Gaussian Ω with r + oversample columns, a few power iterations (re-orthogonalised
 *    each time) to sharpen a slowly decaying spectrum, Q = orth(Y), then the exact SVD of the
 *    small B = Qᵀ·D. When r + oversample reaches min(rows, cols) it is exactSvd itself.
 * Everything is f64, row-major.
 */
import { ArgumentError } from '../errors.js';
import { Generator } from '../random.js';

export interface Matrix {
  rows: number;
  cols: number;
  /** Row-major, rows × cols. */
  data: Float64Array;
}

export interface Svd {
  /** rows × k, orthonormal columns. */
  U: Matrix;
  /** k singular values, descending. */
  S: Float64Array;
  /** k × cols, orthonormal rows. */
  Vt: Matrix;
}

export interface TruncatedSvd extends Svd {
  /** ‖D‖²_F: the whole energy of the matrix. */
  totalEnergy: number;
  /** Σ S², the energy the kept components capture (≤ totalEnergy). */
  capturedEnergy: number;
}

export function matrix(rows: number, cols: number, data = new Float64Array(rows * cols)): Matrix {
  if (data.length !== rows * cols) throw new ArgumentError(`matrix: ${data.length} values for ${rows}×${cols}`);
  return { rows, cols, data };
}

export function transposeMatrix(m: Matrix): Matrix {
  const out = matrix(m.cols, m.rows);
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.cols; j++) out.data[j * m.rows + i] = m.data[i * m.cols + j]!;
  return out;
}

/** a·b, or aᵀ·b with `transposeA` (no copy of a). */
export function matmulMatrix(a: Matrix, b: Matrix, transposeA = false): Matrix {
  const [n, inner] = transposeA ? [a.cols, a.rows] : [a.rows, a.cols];
  if (inner !== b.rows) throw new ArgumentError(`matmul: ${n}×${inner} by ${b.rows}×${b.cols}`);
  const out = matrix(n, b.cols);
  for (let i = 0; i < n; i++) {
    const row = i * b.cols;
    for (let k = 0; k < inner; k++) {
      const x = transposeA ? a.data[k * a.cols + i]! : a.data[i * a.cols + k]!;
      if (x === 0) continue;
      const bk = k * b.cols;
      for (let j = 0; j < b.cols; j++) out.data[row + j]! += x * b.data[bk + j]!;
    }
  }
  return out;
}

/** Columns of a row-major matrix as separate arrays (Jacobi works column by column). */
function columns(m: Matrix): Float64Array[] {
  const out: Float64Array[] = [];
  for (let j = 0; j < m.cols; j++) {
    const c = new Float64Array(m.rows);
    for (let i = 0; i < m.rows; i++) c[i] = m.data[i * m.cols + j]!;
    out.push(c);
  }
  return out;
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** Applies the rotation [c −s; s c] to the column pair (p, q). */
function rotate(p: Float64Array, q: Float64Array, c: number, s: number): void {
  for (let i = 0; i < p.length; i++) {
    const x = p[i]!;
    const y = q[i]!;
    p[i] = c * x - s * y;
    q[i] = s * x + c * y;
  }
}

const MAX_SWEEPS = 80;

/** One-sided Jacobi on m (rows ≥ cols): m = U·diag(S)·Vᵀ with U rows × cols, V cols × cols. */
function jacobi(m: Matrix): Svd {
  const a = columns(m);
  const n = m.cols;
  const v = Array.from({ length: n }, (_, j) => {
    const c = new Float64Array(n);
    c[j] = 1;
    return c;
  });
  for (let sweep = 0; sweep < MAX_SWEEPS; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const alpha = dot(a[p]!, a[p]!);
        const beta = dot(a[q]!, a[q]!);
        const gamma = dot(a[p]!, a[q]!);
        if (gamma === 0 || Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        rotate(a[p]!, a[q]!, c, s);
        rotate(v[p]!, v[q]!, c, s);
      }
    }
    if (!rotated) break;
  }
  const order = a.map((col, j) => ({ j, s: Math.sqrt(dot(col, col)) })).sort((x, y) => y.s - x.s);
  const U = matrix(m.rows, n);
  const Vt = matrix(n, n);
  const S = new Float64Array(n);
  order.forEach(({ j, s }, k) => {
    S[k] = s;
    const col = a[j]!;
    for (let i = 0; i < m.rows; i++) U.data[i * n + k] = s > 0 ? col[i]! / s : 0;
    Vt.data.set(v[j]!, k * n);
  });
  return { U, S, Vt };
}

/** The full thin SVD of m (k = min(rows, cols) components). */
export function exactSvd(m: Matrix): Svd {
  if (m.rows >= m.cols) return jacobi(m);
  // mᵀ = U'·S·V'ᵀ, so m = V'·S·U'ᵀ.
  const t = jacobi(transposeMatrix(m));
  return { U: transposeMatrix(t.Vt), S: t.S, Vt: transposeMatrix(t.U) };
}

/** Orthonormal columns spanning m's (modified Gram–Schmidt, twice for stability); in place. */
function orthonormalize(m: Matrix): Matrix {
  const cols = columns(m);
  for (let pass = 0; pass < 2; pass++) {
    for (let j = 0; j < cols.length; j++) {
      const cj = cols[j]!;
      for (let i = 0; i < j; i++) {
        const ci = cols[i]!;
        const d = dot(ci, cj);
        for (let r = 0; r < cj.length; r++) cj[r]! -= d * ci[r]!;
      }
      const norm = Math.sqrt(dot(cj, cj));
      for (let r = 0; r < cj.length; r++) cj[r] = norm > 0 ? cj[r]! / norm : 0;
    }
  }
  for (let j = 0; j < cols.length; j++) for (let i = 0; i < m.rows; i++) m.data[i * m.cols + j] = cols[j]![i]!;
  return m;
}

function keep(svd: Svd, r: number): Svd {
  const k = Math.min(r, svd.S.length);
  const U = matrix(svd.U.rows, k);
  for (let i = 0; i < svd.U.rows; i++) U.data.set(svd.U.data.subarray(i * svd.U.cols, i * svd.U.cols + k), i * k);
  return { U, S: svd.S.slice(0, k), Vt: matrix(k, svd.Vt.cols, svd.Vt.data.slice(0, k * svd.Vt.cols)) };
}

export interface TruncatedSvdOptions {
  /** Extra random directions beyond r (default 10). */
  oversample?: number;
  /** Power iterations (default 4). */
  powerIterations?: number;
  /** Seed of the Gaussian test matrix (default 0): the result is deterministic. */
  seed?: number;
}

/** The best rank-r approximation of m, with the energy it captures; see the file comment. */
export function truncatedSvd(m: Matrix, r: number, opts: TruncatedSvdOptions = {}): TruncatedSvd {
  if (!Number.isInteger(r) || r < 1) throw new ArgumentError(`truncatedSvd: rank must be a positive integer, got ${r}`);
  const totalEnergy = dot(m.data, m.data);
  const small = Math.min(m.rows, m.cols);
  const k = Math.min(r + (opts.oversample ?? 10), small);
  let svd: Svd;
  if (k === small) svd = keep(exactSvd(m), r);
  else {
    const gen = new Generator(opts.seed ?? 0);
    const omega = matrix(m.cols, k);
    for (let i = 0; i < omega.data.length; i++) omega.data[i] = gen.normal();
    let q = orthonormalize(matmulMatrix(m, omega));
    for (let i = 0; i < (opts.powerIterations ?? 4); i++) {
      const z = orthonormalize(matmulMatrix(m, q, true));
      q = orthonormalize(matmulMatrix(m, z));
    }
    const b = matmulMatrix(q, m, true); // k × cols
    const small = exactSvd(b);
    svd = keep({ U: matmulMatrix(q, small.U), S: small.S, Vt: small.Vt }, r);
  }
  const capturedEnergy = svd.S.reduce((s, x) => s + x * x, 0);
  return { ...svd, totalEnergy, capturedEnergy: Math.min(capturedEnergy, totalEnergy) };
}
