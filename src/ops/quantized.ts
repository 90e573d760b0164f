/**
 * Products with quantized weights: x · Wᵀ for W held as ggml q8_0 / q4_0 blocks, never expanded
 * to f32. The current backend's fused kernel runs when it has one (native: int8 dot products per
 * block), else the js reference (src/backends/js/qmatmul.ts). Recorded as one primitive whose
 * gradient is the input's only: dx = g · W, dequantizing on the fly (a quantized weight is frozen).
 */
import { record } from '../autograd/tape.js';
import type { QuantizedMatrix } from '../backends/backend.js';
import { fusedFor } from '../backends/dispatch.js';
import { qmatmul, qmatmulBackward } from '../backends/js/qmatmul.js';
import { DTypeError, ShapeError } from '../errors.js';
import { formatShape, numel } from '../shape.js';
import { Tensor } from '../tensor.js';
import { contiguous } from './view.js';

/** The elements of a contiguous f32 tensor as one array (a view, or a copy when x is strided). */
function denseValues(x: Tensor): Float32Array {
  const c = x.isContiguous() ? x : contiguous(x);
  return (c.storage as Float32Array).subarray(c.offset, c.offset + numel(c.shape));
}

/** x [..., K] · Wᵀ → [..., N] for a quantized W [N, K] (x f32; its rows are quantized to q8_0 first). */
export function quantizedMatmul(x: Tensor, w: QuantizedMatrix): Tensor {
  if (x.dtype !== 'f32')
    throw new DTypeError(`quantizedMatmul: input must be f32, got ${x.dtype}`, {
      op: 'quantizedMatmul',
      dtypes: [x.dtype],
    });
  if (x.rank === 0 || x.shape[x.rank - 1] !== w.cols) {
    throw new ShapeError(
      `quantizedMatmul: input ${formatShape(x.shape)} must end in ${w.cols} features for a ${w.type} weight [${w.rows}, ${w.cols}]`,
      { op: 'quantizedMatmul', shapes: [x.shape, [w.rows, w.cols]] },
    );
  }
  const shape = [...x.shape.slice(0, -1), w.rows];
  const fused = fusedFor('quantizedMatmul', [x]);
  const y = fused ? fused.quantizedMatmul(x, w) : qmatmul(denseValues(x), numel(x.shape) / w.cols, w);
  return record('quantizedMatmul', new Tensor(y, shape, 'f32'), [x], { w });
}

/** The gradient rule's kernel: g [..., N] · W → [..., K]. */
export function quantizedMatmulInputGrad(g: Tensor, w: QuantizedMatrix): Tensor {
  const fused = fusedFor('quantizedMatmul', [g]);
  const dx = fused ? fused.quantizedMatmulBackward(g, w) : qmatmulBackward(denseValues(g), numel(g.shape) / w.rows, w);
  return new Tensor(dx, [...g.shape.slice(0, -1), w.cols], 'f32');
}
