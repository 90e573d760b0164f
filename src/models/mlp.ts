/**
 * MLP classifier: input → (Linear → ReLU → Dropout) × len(hidden) → Linear head → logits.
 *
 * Legend: B batch, I input features, Hi width of hidden layer i, K classes.
 *
 *   layers.{i}.weight [Hi, H(i−1)] (H(−1) = I), layers.{i}.bias [Hi]
 *   head.weight       [K, H(last)],               head.bias        [K]
 *
 * Config fields match the recipe's `model` section for `type: "mlp"`. Init: PyTorch's Linear default.
 */
import type { DType } from '../dtype.js';
import { ArgumentError } from '../errors.js';
import { relu } from '../ops/elementwise.js';
import { flatten } from '../ops/view.js';
import { Generator } from '../random.js';
import type { Tensor } from '../tensor.js';
import { Dropout } from '../nn/layers.js';
import { Linear } from '../nn/linear.js';
import { type Layer, Module, ModuleList } from '../nn/module.js';

export interface MLPConfig {
  /** Input features (784 for 28×28 images). */
  input: number;
  /** Widths of the hidden layers. */
  hidden: number[];
  classes: number;
  /** Dropout after each hidden activation (0 = none). */
  dropout: number;
}

export interface ModelOptions {
  /** Initialisation and dropout masks (default: a Generator seeded with `seed`). */
  generator?: Generator;
  seed?: number;
  dtype?: Extract<DType, 'f32' | 'f64'>;
}

export function mlpConfig(input: Partial<MLPConfig> & Pick<MLPConfig, 'hidden'>): MLPConfig {
  const c: MLPConfig = {
    input: input.input ?? 784,
    hidden: [...input.hidden],
    classes: input.classes ?? 10,
    dropout: input.dropout ?? 0,
  };
  for (const [name, v] of [
    ['input', c.input],
    ['classes', c.classes],
    ...c.hidden.map((h, i) => [`hidden[${i}]`, h] as const),
  ] as const) {
    if (!Number.isInteger(v) || v <= 0)
      throw new ArgumentError(`MLP config: ${name} must be a positive integer, got ${v}`);
  }
  if (!(c.dropout >= 0 && c.dropout <= 1))
    throw new ArgumentError(`MLP config: dropout must be in [0, 1], got ${c.dropout}`);
  return c;
}

export class MLPClassifier extends Module implements Layer {
  readonly config: MLPConfig;
  readonly layers: ModuleList<Linear>;
  readonly drop: Dropout;
  readonly head: Linear;

  constructor(config: Partial<MLPConfig> & Pick<MLPConfig, 'hidden'>, opts: ModelOptions = {}) {
    super();
    const c = mlpConfig(config);
    this.config = c;
    const generator = opts.generator ?? new Generator(opts.seed ?? 0);
    const lin = { dtype: opts.dtype, generator };
    const widths = [c.input, ...c.hidden];
    this.layers = this.registerModule('layers', new ModuleList(c.hidden.map((h, i) => new Linear(widths[i]!, h, lin))));
    this.drop = this.registerModule('drop', new Dropout(c.dropout, { generator }));
    this.head = this.registerModule('head', new Linear(widths[widths.length - 1]!, c.classes, lin));
  }

  /** x [B, I] (or [B, ...] with I elements per example, e.g. images) → logits [B, K]. */
  forward(x: Tensor): Tensor {
    let h = x.rank > 2 ? flatten(x, 1) : x; // [B, I]
    for (const layer of this.layers) h = this.drop.forward(relu(layer.forward(h))); // [B, Hi]
    return this.head.forward(h); // [B, K]
  }
}
