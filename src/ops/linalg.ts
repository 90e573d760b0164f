/** Matrix multiplication with PyTorch's matmul semantics (1-D operands, batch broadcasting). */
import { needsGrad, record } from '../autograd/tape.js';
import { fusedFor, getMatmulPrecision, kernelFor } from '../backends/dispatch.js';
import { ShapeError } from '../errors.js';
import { broadcastShapes, formatShape, numel } from '../shape.js';
import { Tensor } from '../tensor.js';
import { requireFloat, promote } from './util.js';
import { cast, expand, reshape, squeeze, transpose, unsqueeze } from './view.js';

/** The matmul primitive: a [...B, M, K] · b [...B, K, N] with identical batch dims. */
export function batchedMatmul(a: Tensor, b: Tensor): Tensor {
  const r = a.rank;
  const out = new Tensor(
    kernelFor('matmul', [a, b]).matmul(a, b, a.dtype === 'f32' ? getMatmulPrecision() : 'f32'),
    [...a.shape.slice(0, r - 2), a.shape[r - 2]!, b.shape[r - 1]!],
    a.dtype,
  );
  return record('matmul', out, [a, b], {});
}

export function matmul(a: Tensor, b: Tensor): Tensor {
  requireFloat('matmul', a);
  requireFloat('matmul', b);
  if (a.rank === 0 || b.rank === 0) {
    throw new ShapeError(
      `matmul: both operands need at least one dimension, got ${formatShape(a.shape)} and ${formatShape(b.shape)}; use mul for scalars`,
      { op: 'matmul', shapes: [a.shape, b.shape] },
    );
  }
  const dtype = promote(a.dtype, b.dtype);
  let x = cast(a, dtype);
  let y = cast(b, dtype);
  const vecA = x.rank === 1;
  const vecB = y.rank === 1;
  if (vecA) x = unsqueeze(x, 0);
  if (vecB) y = unsqueeze(y, 1);
  const K = x.shape[x.rank - 1]!;
  if (y.shape[y.rank - 2] !== K) {
    const hint = y.shape[y.rank - 1] === K ? '; did you mean to transpose the second operand?' : '';
    throw new ShapeError(
      `matmul: inner dimensions differ: ${formatShape(a.shape)} · ${formatShape(b.shape)} (${K} vs ${y.shape[y.rank - 2]})${hint}`,
      { op: 'matmul', shapes: [a.shape, b.shape] },
    );
  }
  let out: Tensor;
  if (y.rank === 2 && x.rank > 2) {
    // [..., M, K] · [K, N]: one big 2-D product instead of broadcasting the weight over the batch.
    const lead = x.shape.slice(0, -1);
    out = reshape(batchedMatmul(reshape(x, [numel(lead), K]), y), [...lead, y.shape[1]!]);
  } else {
    const batch = broadcastShapes('matmul', x.shape.slice(0, -2), y.shape.slice(0, -2));
    x = expand(x, [...batch, ...x.shape.slice(-2)]);
    y = expand(y, [...batch, ...y.shape.slice(-2)]);
    out = batchedMatmul(x, y);
  }
  if (vecA) out = squeeze(out, -2);
  if (vecB) out = squeeze(out, -1);
  return out;
}

/**
 * dB = Aᵀ·g. When B is a transposed row-major matrix (an [out, in] weight used as Wᵀ), the
 * product is computed as (gᵀ·A)ᵀ: the same GEMM, but the gradient comes out in B's layout, so
 * the transpose's backward hands the weight a row-major gradient it can keep without a copy.
 */
export function matmulGradB(a: Tensor, b: Tensor, g: Tensor): Tensor {
  if (isTransposedRowMajor(b)) {
    return transpose(batchedMatmul(transpose(g, -2, -1), a), -2, -1);
  }
  return batchedMatmul(transpose(a, -2, -1), g);
}

/** B in the transposed row-major layout of an [out, in] weight used as Wᵀ (see matmulGradB). */
function isTransposedRowMajor(b: Tensor): boolean {
  return b.rank === 2 && b.strides[0] === 1 && b.strides[1] === b.shape[0] && b.shape[0]! > 1 && b.shape[1]! > 1;
}

/**
 * [a1·b1, a2·b2] for 2-D operands, two independent products: with the backend's `matmulPair` one
 * call runs each on its own share of the threads, which at two threads beats splitting each small
 * GEMM in two (docs/performance.md, "Pairs of GEMMs"). Each result is the plain product's value at
 * some thread count, so the same bits for a given count. Not recorded on the tape (it serves
 * backward rules): with grad enabled on an input that requires it, the plain products run.
 */
export function matmulPair(a1: Tensor, b1: Tensor, a2: Tensor, b2: Tensor): [Tensor, Tensor] {
  const operands = [a1, b1, a2, b2];
  const fused =
    operands.every((t) => t.rank === 2 && t.dtype === 'f32') && getMatmulPrecision() === 'f32' && !needsGrad(operands)
      ? fusedFor('matmulPair', operands)
      : null;
  if (!fused) return [batchedMatmul(a1, b1), batchedMatmul(a2, b2)];
  const [p1, p2] = fused.matmulPair(a1, b1, a2, b2);
  return [new Tensor(p1, [a1.shape[0]!, b1.shape[1]!], 'f32'), new Tensor(p2, [a2.shape[0]!, b2.shape[1]!], 'f32')];
}

/**
 * A linear layer's two gradients for x [M, K] · w [K, N] and g = dL/d(x·w) [M, N]:
 * [dX = g·wᵀ, dW = matmulGradB(x, w, g)], the two GEMMs as one matmulPair.
 */
export function matmulInputAndWeightGrads(x: Tensor, w: Tensor, g: Tensor): [Tensor, Tensor] {
  if (isTransposedRowMajor(w)) {
    const [dx, dwT] = matmulPair(g, transpose(w, 0, 1), transpose(g, 0, 1), x);
    return [dx, transpose(dwT, 0, 1)];
  }
  return matmulPair(g, transpose(w, 0, 1), transpose(x, 0, 1), g);
}
