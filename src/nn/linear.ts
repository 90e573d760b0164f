/**
 * Affine layers: Linear (weight [out, in], as torch.nn.Linear) and Conv1D (weight [in, out], as
 * GPT-2's transformers.Conv1D). Both compute y = x·Wᵀ + b (resp. x·W + b) over the last axis.
 *
 * The LoRA hook: `forward(x)` is `base(x)` plus `adapter(x)` when an adapter is attached. A LoRA
 * wrapper sets `layer.adapter = (x) => scale · B(A(dropout(x)))` (and registers its own parameters
 * on the layer, so they appear in namedParameters under the layer's path); merging writes into
 * `weight` directly. Subclasses may also override `forward` or `base`.
 */
import type { DType } from '../dtype.js';
import { ArgumentError, ShapeError } from '../errors.js';
import { add } from '../ops/elementwise.js';
import { activation, type LinearActivation, linear } from '../ops/linear.js';
import { zeros } from '../ops/creation.js';
import { transpose } from '../ops/view.js';
import type { Generator } from '../random.js';
import { formatShape } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { kaimingUniform_, normal_, uniform_, zeros_ } from './init.js';
import { type Layer, Module } from './module.js';

export interface LinearOptions {
  /** Add a bias (default true). */
  bias?: boolean;
  dtype?: Extract<DType, 'f32' | 'f64'>;
  generator?: Generator;
}

export type WeightLayout = 'out_in' | 'in_out';

/** y = x·Wᵀ + b with W [out, in]; PyTorch's default init (kaiming_uniform a=√5, bias ±1/√in). */
export class Linear extends Module implements Layer {
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** How `weight` is stored: [out, in] (nn.Linear) or [in, out] (GPT-2 Conv1D; PEFT's fan_in_fan_out). */
  readonly layout: WeightLayout = 'out_in';
  /** LoRA (or any additive) delta on the output; see the file comment. */
  adapter: ((x: Tensor) => Tensor) | null = null;

  constructor(inFeatures: number, outFeatures: number, opts: LinearOptions = {}) {
    super();
    for (const [name, v] of [
      ['inFeatures', inFeatures],
      ['outFeatures', outFeatures],
    ] as const) {
      if (!Number.isInteger(v) || v <= 0)
        throw new ArgumentError(`${new.target.name}: ${name} must be a positive integer, got ${v}`);
    }
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    const dtype = opts.dtype ?? 'f32';
    const shape = this.weightShape();
    this.registerParameter('weight', zeros(shape, { dtype }));
    this.registerParameter('bias', opts.bias === false ? null : zeros([outFeatures], { dtype }));
    this.resetParameters(opts.generator);
  }

  /** [out, in]; Conv1D overrides it. */
  protected weightShape(): number[] {
    return [this.outFeatures, this.inFeatures];
  }

  /** PyTorch's nn.Linear.reset_parameters. */
  resetParameters(generator?: Generator): void {
    kaimingUniform_(this.weight, { a: Math.sqrt(5), generator });
    const b = this.bias;
    if (b) {
      const bound = 1 / Math.sqrt(this.inFeatures);
      uniform_(b, -bound, bound, { generator });
    }
  }

  get weight(): Tensor {
    return this.param('weight');
  }

  get bias(): Tensor | null {
    return this.optionalParam('bias');
  }

  /** True when the weight is stored [in, out] (PEFT's `fan_in_fan_out`). */
  get fanInFanOut(): boolean {
    return this.layout === 'in_out';
  }

  /** The weight as [in, out] (a view; no copy), whatever the storage layout. */
  weightInOut(): Tensor {
    return this.layout === 'in_out' ? this.weight : transpose(this.weight, 0, 1);
  }

  /** x [..., in] → [..., out] without the adapter. */
  base(x: Tensor): Tensor {
    this.checkInput(x);
    return linear(x, this.weightInOut(), this.bias);
  }

  private checkInput(x: Tensor): void {
    if (x.rank === 0 || x.shape[x.rank - 1] !== this.inFeatures) {
      throw new ShapeError(
        `${this.constructor.name}(${this.inFeatures} → ${this.outFeatures}): input must end in ${this.inFeatures} features, got ${formatShape(x.shape)}`,
        { op: this.constructor.name, shapes: [x.shape], inFeatures: this.inFeatures },
      );
    }
  }

  forward(x: Tensor): Tensor {
    const y = this.base(x);
    return this.adapter ? add(y, this.adapter(x)) : y;
  }

  /**
   * act(forward(x)). With no adapter and neither `base` nor `forward` overridden, the activation
   * is fused into the layer's bias pass (src/ops/linear.ts); otherwise it follows `forward`.
   */
  forwardActivated(x: Tensor, act: LinearActivation): Tensor {
    if (this.adapter === null && this.base === Linear.prototype.base && this.forward === Linear.prototype.forward) {
      this.checkInput(x);
      return linear(x, this.weightInOut(), this.bias, act);
    }
    return activation(this.forward(x), act);
  }
}

/**
 * GPT-2's Conv1D: a linear layer whose weight is stored [in, out]. Initialised as Hugging Face
 * does (weight N(0, 0.02), bias 0); GPT re-initialises it anyway.
 */
export class Conv1D extends Linear {
  override readonly layout: WeightLayout = 'in_out';

  protected override weightShape(): number[] {
    return [this.inFeatures, this.outFeatures];
  }

  override resetParameters(generator?: Generator): void {
    normal_(this.weight, 0, 0.02, { generator });
    if (this.bias) zeros_(this.bias);
  }
}
