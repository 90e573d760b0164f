/**
 * Standard layers as modules: Embedding, LayerNorm, RMSNorm, Dropout, Conv2d, pooling,
 * activations, Flatten, Identity. Parameter names and initialisations follow torch.nn.
 */
import type { DType } from '../dtype.js';
import { ArgumentError, ShapeError } from '../errors.js';
import { conv2d, maxPool2d, avgPool2d, type Conv2dOptions, type Pool2dOptions } from '../ops/conv.js';
import { ones, zeros } from '../ops/creation.js';
import { gelu, relu, sigmoid, silu, tanh } from '../ops/elementwise.js';
import { dropout, embedding, layerNorm, rmsNorm } from '../ops/nn.js';
import { flatten } from '../ops/view.js';
import type { Generator } from '../random.js';
import { formatShape } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { kaimingUniform_, normal_, uniform_ } from './init.js';
import { type Layer, Module } from './module.js';

type FloatDType = Extract<DType, 'f32' | 'f64'>;

function positiveInt(op: string, name: string, v: number): void {
  if (!Number.isInteger(v) || v <= 0) throw new ArgumentError(`${op}: ${name} must be a positive integer, got ${v}`);
}

export interface EmbeddingOptions {
  dtype?: FloatDType;
  generator?: Generator;
}

/** A lookup table weight [num, dim]; ids of any shape → [...ids.shape, dim]. Init N(0, 1) as PyTorch. */
export class Embedding extends Module implements Layer {
  readonly numEmbeddings: number;
  readonly embeddingDim: number;

  constructor(numEmbeddings: number, embeddingDim: number, opts: EmbeddingOptions = {}) {
    super();
    positiveInt('Embedding', 'numEmbeddings', numEmbeddings);
    positiveInt('Embedding', 'embeddingDim', embeddingDim);
    this.numEmbeddings = numEmbeddings;
    this.embeddingDim = embeddingDim;
    this.registerParameter('weight', zeros([numEmbeddings, embeddingDim], { dtype: opts.dtype ?? 'f32' }));
    normal_(this.weight, 0, 1, { generator: opts.generator });
  }

  get weight(): Tensor {
    return this.param('weight');
  }

  forward(ids: Tensor): Tensor {
    return embedding(ids, this.weight);
  }
}

export interface LayerNormOptions {
  eps?: number;
  /** Learnable weight (and bias); default true. */
  elementwiseAffine?: boolean;
  /** Learnable bias when affine; default true. */
  bias?: boolean;
  dtype?: FloatDType;
}

/** Layer norm over the trailing `normalizedShape` axes; weight 1, bias 0. */
export class LayerNorm extends Module implements Layer {
  readonly normalizedShape: readonly number[];
  readonly eps: number;

  constructor(normalizedShape: number | readonly number[], opts: LayerNormOptions = {}) {
    super();
    this.normalizedShape = typeof normalizedShape === 'number' ? [normalizedShape] : [...normalizedShape];
    this.normalizedShape.forEach((d) => positiveInt('LayerNorm', 'normalizedShape', d));
    this.eps = opts.eps ?? 1e-5;
    const dtype = opts.dtype ?? 'f32';
    const affine = opts.elementwiseAffine ?? true;
    this.registerParameter('weight', affine ? ones(this.normalizedShape, { dtype }) : null);
    this.registerParameter('bias', affine && opts.bias !== false ? zeros(this.normalizedShape, { dtype }) : null);
  }

  get weight(): Tensor | null {
    return this.optionalParam('weight');
  }

  get bias(): Tensor | null {
    return this.optionalParam('bias');
  }

  forward(x: Tensor): Tensor {
    return layerNorm(x, this.normalizedShape, this.weight, this.bias, this.eps);
  }
}

/** RMS norm over the last axis with a learnable scale (Llama's RMSNorm); weight 1. */
export class RMSNorm extends Module implements Layer {
  readonly dim: number;
  readonly eps: number;

  constructor(dim: number, opts: { eps?: number; dtype?: FloatDType } = {}) {
    super();
    positiveInt('RMSNorm', 'dim', dim);
    this.dim = dim;
    this.eps = opts.eps ?? 1e-6;
    this.registerParameter('weight', ones([dim], { dtype: opts.dtype ?? 'f32' }));
  }

  get weight(): Tensor {
    return this.param('weight');
  }

  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.weight, this.eps);
  }
}

/** Zeroes elements with probability p in training mode (survivors scaled by 1/(1−p)); identity in eval mode. */
export class Dropout extends Module implements Layer {
  readonly p: number;
  /** Where the masks come from; the default generator when null. */
  generator: Generator | null;

  constructor(p = 0.5, opts: { generator?: Generator } = {}) {
    super();
    if (!(p >= 0 && p <= 1)) throw new ArgumentError(`Dropout: p must be in [0, 1], got ${p}`);
    this.p = p;
    this.generator = opts.generator ?? null;
  }

  forward(x: Tensor): Tensor {
    if (!this.training || this.p === 0) return x;
    return dropout(x, this.p, { training: true, ...(this.generator ? { generator: this.generator } : {}) });
  }
}

export interface Conv2dLayerOptions extends Conv2dOptions {
  bias?: boolean;
  dtype?: FloatDType;
  generator?: Generator;
}

/** 2-D convolution over NCHW; weight [out, in/groups, kH, kW]; PyTorch's default init. */
export class Conv2d extends Module implements Layer {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: readonly [number, number];
  readonly options: Conv2dOptions;

  constructor(
    inChannels: number,
    outChannels: number,
    kernelSize: number | readonly [number, number],
    opts: Conv2dLayerOptions = {},
  ) {
    super();
    positiveInt('Conv2d', 'inChannels', inChannels);
    positiveInt('Conv2d', 'outChannels', outChannels);
    const groups = opts.groups ?? 1;
    if (inChannels % groups !== 0 || outChannels % groups !== 0) {
      throw new ArgumentError(
        `Conv2d: inChannels ${inChannels} and outChannels ${outChannels} must both be divisible by groups ${groups}`,
      );
    }
    const k: [number, number] =
      typeof kernelSize === 'number' ? [kernelSize, kernelSize] : [kernelSize[0], kernelSize[1]];
    k.forEach((d) => positiveInt('Conv2d', 'kernelSize', d));
    this.inChannels = inChannels;
    this.outChannels = outChannels;
    this.kernelSize = k;
    this.options = { stride: opts.stride ?? 1, padding: opts.padding ?? 0, dilation: opts.dilation ?? 1, groups };
    const dtype = opts.dtype ?? 'f32';
    this.registerParameter('weight', zeros([outChannels, inChannels / groups, k[0], k[1]], { dtype }));
    this.registerParameter('bias', opts.bias === false ? null : zeros([outChannels], { dtype }));
    this.resetParameters(opts.generator);
  }

  /** PyTorch's _ConvNd.reset_parameters: kaiming_uniform(a=√5), bias U(±1/√fanIn). */
  resetParameters(generator?: Generator): void {
    kaimingUniform_(this.weight, { a: Math.sqrt(5), generator });
    const b = this.bias;
    if (b) {
      const fanIn = (this.inChannels / (this.options.groups ?? 1)) * this.kernelSize[0] * this.kernelSize[1];
      const bound = 1 / Math.sqrt(fanIn);
      uniform_(b, -bound, bound, { generator });
    }
  }

  get weight(): Tensor {
    return this.param('weight');
  }

  get bias(): Tensor | null {
    return this.optionalParam('bias');
  }

  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias, this.options);
  }
}

type Pair = number | readonly [number, number];

export class MaxPool2d extends Module implements Layer {
  constructor(
    readonly kernelSize: Pair,
    readonly options: Pool2dOptions = {},
  ) {
    super();
  }

  forward(x: Tensor): Tensor {
    return maxPool2d(x, this.kernelSize, this.options);
  }
}

/** Average pooling (zero padding counts toward the divisor, as PyTorch's default). */
export class AvgPool2d extends Module implements Layer {
  constructor(
    readonly kernelSize: Pair,
    readonly options: Pool2dOptions = {},
  ) {
    super();
  }

  forward(x: Tensor): Tensor {
    return avgPool2d(x, this.kernelSize, this.options);
  }
}

export class ReLU extends Module implements Layer {
  forward(x: Tensor): Tensor {
    return relu(x);
  }
}

/** GELU, exact (erf) by default; `'tanh'` is GPT-2's `gelu_new`. */
export class GELU extends Module implements Layer {
  constructor(readonly approximate: 'none' | 'tanh' = 'none') {
    super();
  }

  forward(x: Tensor): Tensor {
    return gelu(x, this.approximate);
  }
}

export class Tanh extends Module implements Layer {
  forward(x: Tensor): Tensor {
    return tanh(x);
  }
}

export class Sigmoid extends Module implements Layer {
  forward(x: Tensor): Tensor {
    return sigmoid(x);
  }
}

export class SiLU extends Module implements Layer {
  forward(x: Tensor): Tensor {
    return silu(x);
  }
}

export class Identity extends Module implements Layer {
  forward(x: Tensor): Tensor {
    return x;
  }
}

/** Merges axes startAxis..endAxis (default 1..−1: everything but the batch axis). */
export class Flatten extends Module implements Layer {
  constructor(
    readonly startAxis = 1,
    readonly endAxis = -1,
  ) {
    super();
  }

  forward(x: Tensor): Tensor {
    if (x.rank <= this.startAxis)
      throw new ShapeError(`Flatten: input ${formatShape(x.shape)} has no axis ${this.startAxis}`, {
        op: 'Flatten',
        shapes: [x.shape],
        axis: this.startAxis,
      });
    return flatten(x, this.startAxis, this.endAxis);
  }
}
