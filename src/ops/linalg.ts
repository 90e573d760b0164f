/** Matrix multiplication with PyTorch's matmul semantics (1-D operands, batch broadcasting). */
import { record } from '../autograd/tape.js';
import { getMatmulPrecision, kernelFor } from '../backends/dispatch.js';
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
  if (b.rank === 2 && b.strides[0] === 1 && b.strides[1] === b.shape[0] && b.shape[0]! > 1 && b.shape[1]! > 1) {
    return transpose(batchedMatmul(transpose(g, -2, -1), a), -2, -1);
  }
  return batchedMatmul(transpose(a, -2, -1), g);
}
