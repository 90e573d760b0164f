/** 2-D convolution and pooling over NCHW tensors (PyTorch's conventions). */
import { record } from '../autograd/tape.js';
import type { Conv2dParams, Pool2dParams } from '../backends/backend.js';
import { fusedFor, kernelFor } from '../backends/dispatch.js';
import { ArgumentError, DTypeError, ShapeError } from '../errors.js';
import { convOutSize, formatShape } from '../shape.js';
import { Tensor } from '../tensor.js';
import { add, relu } from './elementwise.js';
import { requireFloat } from './util.js';
import { reshape } from './view.js';

type Pair = number | readonly [number, number];

function pair(op: string, name: string, v: Pair, min: number): [number, number] {
  const p: [number, number] = typeof v === 'number' ? [v, v] : [v[0], v[1]];
  if (!p.every((x) => Number.isInteger(x) && x >= min)) {
    throw new ArgumentError(`${op}: ${name} must be an integer ≥ ${min} or a pair of them, got ${JSON.stringify(v)}`);
  }
  return p;
}

export interface Conv2dOptions {
  stride?: Pair;
  padding?: Pair;
  dilation?: Pair;
  groups?: number;
}

/** x [N, Cin, H, W] ⋆ w [Cout, Cin/groups, kH, kW] (+ bias [Cout]) → [N, Cout, Ho, Wo]. */
export function conv2d(x: Tensor, w: Tensor, bias?: Tensor | null, opts: Conv2dOptions = {}): Tensor {
  requireFloat('conv2d', x);
  requireFloat('conv2d', w);
  if (x.rank !== 4 || w.rank !== 4) {
    throw new ShapeError(
      `conv2d: input must be [N, C, H, W] and weight [Cout, Cin/groups, kH, kW], got ${formatShape(x.shape)} and ${formatShape(w.shape)}`,
      { op: 'conv2d', shapes: [x.shape, w.shape] },
    );
  }
  const groups = opts.groups ?? 1;
  const p: Conv2dParams = {
    stride: pair('conv2d', 'stride', opts.stride ?? 1, 1),
    padding: pair('conv2d', 'padding', opts.padding ?? 0, 0),
    dilation: pair('conv2d', 'dilation', opts.dilation ?? 1, 1),
    groups,
  };
  const [N, Cin, H, W] = x.shape as [number, number, number, number];
  const [Cout, cinPerGroup, kH, kW] = w.shape as [number, number, number, number];
  if (!Number.isInteger(groups) || groups < 1 || Cin !== cinPerGroup * groups || Cout % groups !== 0) {
    throw new ShapeError(
      `conv2d: input has ${Cin} channels but weight ${formatShape(w.shape)} with groups=${groups} expects ${cinPerGroup * groups} (and Cout divisible by groups)`,
      { op: 'conv2d', shapes: [x.shape, w.shape], groups },
    );
  }
  const Ho = convOutSize(H, kH, p.stride[0], p.padding[0], p.dilation[0]);
  const Wo = convOutSize(W, kW, p.stride[1], p.padding[1], p.dilation[1]);
  if (Ho <= 0 || Wo <= 0) {
    throw new ShapeError(
      `conv2d: kernel ${kH}×${kW} (dilation ${p.dilation.join('×')}) is larger than the padded input ${H}×${W}`,
      { op: 'conv2d', shapes: [x.shape, w.shape] },
    );
  }
  if (x.dtype !== w.dtype)
    throw new DTypeError(`conv2d: input is ${x.dtype} but weight is ${w.dtype}; convert one with .to()`, {
      op: 'conv2d',
      dtypes: [x.dtype, w.dtype],
    });
  const out = new Tensor(kernelFor('conv2d', [x, w]).conv2d(x, w, p), [N, Cout, Ho, Wo], x.dtype);
  const y = record('conv2d', out, [x, w], { params: p });
  if (!bias) return y;
  if (bias.rank !== 1 || bias.shape[0] !== Cout)
    throw new ShapeError(`conv2d: bias must be [${Cout}], got ${formatShape(bias.shape)}`, {
      op: 'conv2d',
      shapes: [x.shape, w.shape, bias.shape],
    });
  return add(y, reshape(bias, [1, Cout, 1, 1]));
}

export interface Pool2dOptions {
  /** Defaults to the kernel size. */
  stride?: Pair;
  padding?: Pair;
}

function poolParams(op: string, x: Tensor, kernelSize: Pair, opts: Pool2dOptions): Pool2dParams {
  requireFloat(op, x);
  if (x.rank !== 4)
    throw new ShapeError(`${op}: input must be [N, C, H, W], got ${formatShape(x.shape)}`, { op, shapes: [x.shape] });
  const kernel = pair(op, 'kernelSize', kernelSize, 1);
  const p: Pool2dParams = {
    kernel,
    stride: pair(op, 'stride', opts.stride ?? kernel, 1),
    padding: pair(op, 'padding', opts.padding ?? 0, 0),
  };
  if (p.padding[0] * 2 > kernel[0] || p.padding[1] * 2 > kernel[1]) {
    throw new ArgumentError(
      `${op}: padding ${p.padding.join('×')} must be at most half the kernel ${kernel.join('×')}`,
    );
  }
  const Ho = convOutSize(x.shape[2]!, kernel[0], p.stride[0], p.padding[0]);
  const Wo = convOutSize(x.shape[3]!, kernel[1], p.stride[1], p.padding[1]);
  if (Ho <= 0 || Wo <= 0)
    throw new ShapeError(`${op}: kernel ${kernel.join('×')} is larger than the padded input ${formatShape(x.shape)}`, {
      op,
      shapes: [x.shape],
      kernel,
    });
  return p;
}

function pooledShape(x: Tensor, p: Pool2dParams): number[] {
  return [
    x.shape[0]!,
    x.shape[1]!,
    convOutSize(x.shape[2]!, p.kernel[0], p.stride[0], p.padding[0]),
    convOutSize(x.shape[3]!, p.kernel[1], p.stride[1], p.padding[1]),
  ];
}

export function maxPool2d(x: Tensor, kernelSize: Pair, opts: Pool2dOptions = {}): Tensor {
  const p = poolParams('maxPool2d', x, kernelSize, opts);
  const shape = pooledShape(x, p);
  const { out, indices } = kernelFor('maxPool2d', [x]).maxPool2d(x, p);
  return record('maxPool2d', new Tensor(out, shape, x.dtype), [x], {
    indices: new Tensor(indices, shape, 'i32'),
    xShape: x.shape,
  });
}

/**
 * relu(maxPool2d(x) + bias) with bias [C] per channel of x [N, C, H, W]: a CNN block's tail when the
 * block pools its convolution before the bias and ReLU (src/models/cnn.ts). One pass over x with a
 * backend's fused kernel (and one back), else the composite.
 */
export function maxPool2dBiasRelu(x: Tensor, bias: Tensor, kernelSize: Pair, opts: Pool2dOptions = {}): Tensor {
  const p = poolParams('maxPool2dBiasRelu', x, kernelSize, opts);
  const C = x.shape[1]!;
  if (bias.rank !== 1 || bias.shape[0] !== C)
    throw new ShapeError(`maxPool2dBiasRelu: bias must be [${C}], got ${formatShape(bias.shape)}`, {
      op: 'maxPool2dBiasRelu',
      shapes: [x.shape, bias.shape],
    });
  const fused = x.dtype === 'f32' && bias.dtype === 'f32' ? fusedFor('maxPoolBiasRelu', [x, bias]) : null;
  if (!fused) return relu(add(maxPool2d(x, kernelSize, opts), reshape(bias, [1, C, 1, 1])));
  const shape = pooledShape(x, p);
  const { out, indices } = fused.maxPoolBiasRelu(x, bias, p);
  return record('maxPoolBiasRelu', new Tensor(out, shape, x.dtype), [x, bias], {
    indices: new Tensor(indices, shape, 'i32'),
    xShape: x.shape,
  });
}

/** Average pooling; zero padding counts toward the divisor (count_include_pad=True). */
export function avgPool2d(x: Tensor, kernelSize: Pair, opts: Pool2dOptions = {}): Tensor {
  const p = poolParams('avgPool2d', x, kernelSize, opts);
  const out = kernelFor('avgPool2d', [x]).avgPool2d(x, p);
  return record('avgPool2d', new Tensor(out, pooledShape(x, p), x.dtype), [x], { xShape: x.shape, params: p });
}
