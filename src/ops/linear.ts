/**
 * The linear layer as one op: act(x·w + bias). Its composite is matmul, add and the activation;
 * with a backend's fused `biasActivation` the bias add and the activation run as one pass over the
 * GEMM's fresh output (no extra tensors), and the backward computes the activation's gradient and
 * the bias gradient (its column sums) in one pass too. Both paths give the same forward values.
 */
import { record } from '../autograd/tape.js';
import type { ActivationOp } from '../backends/backend.js';
import { fusedFor, getMatmulPrecision, kernelFor } from '../backends/dispatch.js';
import { ShapeError } from '../errors.js';
import { formatShape, numel } from '../shape.js';
import { Tensor } from '../tensor.js';
import { add, gelu, relu, silu } from './elementwise.js';
import { matmul } from './linalg.js';
import { reshape } from './view.js';

/** The activation a linear op may fuse: relu, gelu (erf), gelu_tanh (GPT-2's gelu_new), silu. */
export type LinearActivation = ActivationOp;

// Arrows, not the functions themselves: this module sits in an import cycle (autograd → ops), and
// reading `relu` while elementwise.js is still loading throws.
const ACTIVATIONS: Readonly<Record<LinearActivation, (x: Tensor) => Tensor>> = {
  relu: (x) => relu(x),
  gelu: (x) => gelu(x),
  gelu_tanh: (x) => gelu(x, 'tanh'),
  silu: (x) => silu(x),
};

/** The activation `act` applied on its own (the composite's last step). */
export function activation(x: Tensor, act: LinearActivation): Tensor {
  return ACTIVATIONS[act](x);
}

/**
 * act(x·w + bias) for x [..., K], w [K, N] (any 2-D view: an [N, K] weight transposed is fine),
 * bias [N] or null, act null for none → [..., N].
 */
export function linear(x: Tensor, w: Tensor, bias: Tensor | null, act: LinearActivation | null = null): Tensor {
  const K = x.shape[x.rank - 1];
  const N = w.shape[1]!;
  if (w.rank !== 2 || x.rank === 0 || K !== w.shape[0] || (bias && (bias.rank !== 1 || bias.shape[0] !== N))) {
    throw new ShapeError(
      `linear: x ${formatShape(x.shape)}, weight ${formatShape(w.shape)} and bias ${bias ? formatShape(bias.shape) : 'none'} do not fit: x must end in K, the weight be [K, N] and the bias [N]`,
      { op: 'linear', shapes: [x.shape, w.shape, ...(bias ? [bias.shape] : [])] },
    );
  }
  const fused =
    x.dtype === 'f32' && w.dtype === 'f32' && (!bias || bias.dtype === 'f32')
      ? fusedFor('biasActivation', [x, w, ...(bias ? [bias] : [])])
      : null;
  if (!fused) {
    const y = bias ? add(matmul(x, w), bias) : matmul(x, w);
    return act ? activation(y, act) : y;
  }
  const lead = x.shape.slice(0, -1);
  const M = numel(lead);
  const x2 = x.rank === 2 ? x : reshape(x, [M, K]); // [M, K]
  const h = new Tensor(kernelFor('matmul', [x2, w]).matmul(x2, w, getMatmulPrecision()), [M, N], 'f32'); // [M, N]
  const y = fused.biasActivation(h.storage as Float32Array, M, N, bias, act);
  const out = y ? new Tensor(y, [M, N], 'f32') : h;
  record('linear', out, [x2, w, bias], { act, h: act ? h : null });
  return x.rank === 2 ? out : reshape(out, [...lead, N]);
}
