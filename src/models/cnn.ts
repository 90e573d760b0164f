/**
 * CNN classifier: (Conv2d 'same' → ReLU → MaxPool 2×2) per entry of `channels`, then
 * flatten → Linear(hidden) → ReLU → Dropout → Linear head → logits.
 *
 * Legend: B batch, Ci channels after conv i (C(−1) = in_channels), S image size, Si size after
 * pool i (S(i) = ⌊(S(i−1) + 2⌊k/2⌋ − k + 1) / 2⌋), k kernel size, F = C(last)·S(last)², Hd hidden, K classes.
 *
 *   convs.{i}.weight [Ci, C(i−1), k, k], convs.{i}.bias [Ci]
 *   fc.weight        [Hd, F],            fc.bias        [Hd]
 *   head.weight      [K, Hd],            head.bias      [K]
 *
 * Config fields match the recipe's `model` section for `type: "cnn"`. Init: PyTorch's defaults.
 */
import { ArgumentError } from '../errors.js';
import { relu } from '../ops/elementwise.js';
import { flatten } from '../ops/view.js';
import { conv2d, maxPool2d, maxPool2dBiasRelu } from '../ops/conv.js';
import { Generator } from '../random.js';
import { formatShape } from '../shape.js';
import { ShapeError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { Conv2d, Dropout } from '../nn/layers.js';
import { Linear } from '../nn/linear.js';
import { type Layer, Module, ModuleList } from '../nn/module.js';
import type { ModelOptions } from './mlp.js';

export interface CNNConfig {
  in_channels: number;
  /** Height = width of the (square) input images. */
  image_size: number;
  /** Output channels of each conv layer. */
  channels: number[];
  kernel_size: number;
  /** Width of the fully connected layer before the head. */
  hidden: number;
  classes: number;
  dropout: number;
}

export function cnnConfig(input: Partial<CNNConfig> = {}): CNNConfig {
  const c: CNNConfig = {
    in_channels: input.in_channels ?? 1,
    image_size: input.image_size ?? 28,
    channels: [...(input.channels ?? [32, 64])],
    kernel_size: input.kernel_size ?? 3,
    hidden: input.hidden ?? 128,
    classes: input.classes ?? 10,
    dropout: input.dropout ?? 0,
  };
  const ints: [string, number][] = [
    ['in_channels', c.in_channels],
    ['image_size', c.image_size],
    ['kernel_size', c.kernel_size],
    ['hidden', c.hidden],
    ['classes', c.classes],
    ...c.channels.map((ch, i): [string, number] => [`channels[${i}]`, ch]),
  ];
  for (const [name, v] of ints)
    if (!Number.isInteger(v) || v <= 0)
      throw new ArgumentError(`CNN config: ${name} must be a positive integer, got ${v}`);
  if (c.channels.length === 0) throw new ArgumentError('CNN config: channels needs at least one conv layer');
  if (!(c.dropout >= 0 && c.dropout <= 1))
    throw new ArgumentError(`CNN config: dropout must be in [0, 1], got ${c.dropout}`);
  if (cnnFeatureSize(c) <= 0) {
    throw new ArgumentError(
      `CNN config: ${c.channels.length} conv+pool stages shrink a ${c.image_size}×${c.image_size} image to nothing; use fewer channels entries or larger images`,
    );
  }
  return c;
}

/** Spatial size after every conv + 2×2 pool stage. */
function finalSize(c: CNNConfig): number {
  const pad = Math.floor(c.kernel_size / 2);
  let s = c.image_size;
  for (let i = 0; i < c.channels.length; i++) s = Math.floor((s + 2 * pad - c.kernel_size + 1) / 2);
  return s;
}

/** F: features entering the fully connected layer. */
export function cnnFeatureSize(c: CNNConfig): number {
  const s = finalSize(c);
  return s > 0 ? c.channels[c.channels.length - 1]! * s * s : 0;
}

export class CNNClassifier extends Module implements Layer {
  readonly config: CNNConfig;
  readonly convs: ModuleList<Conv2d>;
  readonly fc: Linear;
  readonly drop: Dropout;
  readonly head: Linear;

  constructor(config: Partial<CNNConfig> = {}, opts: ModelOptions = {}) {
    super();
    const c = cnnConfig(config);
    this.config = c;
    const generator = opts.generator ?? new Generator(opts.seed ?? 0);
    const layer = { dtype: opts.dtype, generator };
    const ins = [c.in_channels, ...c.channels];
    const padding = Math.floor(c.kernel_size / 2);
    this.convs = this.registerModule(
      'convs',
      new ModuleList(c.channels.map((ch, i) => new Conv2d(ins[i]!, ch, c.kernel_size, { ...layer, padding }))),
    );
    this.fc = this.registerModule('fc', new Linear(cnnFeatureSize(c), c.hidden, layer));
    this.drop = this.registerModule('drop', new Dropout(c.dropout, { generator }));
    this.head = this.registerModule('head', new Linear(c.hidden, c.classes, layer));
  }

  /** x [B, C, S, S] (or [B, S·S] flat images when in_channels is 1) → logits [B, K]. */
  forward(x: Tensor): Tensor {
    const { in_channels: C, image_size: S } = this.config;
    let h = x.rank === 2 && C === 1 && x.shape[1] === S * S ? x.reshape([x.shape[0]!, 1, S, S]) : x; // [B, C, S, S]
    if (h.rank !== 4 || h.shape[1] !== C || h.shape[2] !== S || h.shape[3] !== S) {
      throw new ShapeError(`CNNClassifier: input must be [B, ${C}, ${S}, ${S}], got ${formatShape(x.shape)}`, {
        op: 'CNNClassifier',
        shapes: [x.shape],
        expected: ['B', C, S, S],
      });
    }
    for (const conv of this.convs) h = convBlock(conv, h); // [B, Ci, Si, Si]
    h = flatten(h, 1); // [B, F]
    h = this.drop.forward(relu(this.fc.forward(h))); // [B, Hd]
    return this.head.forward(h); // [B, K]
  }
}

/*
 * relu(conv(h) + b) pooled 2×2, computed as relu(maxPool(conv(h)) + b): the bias add and ReLU run on
 * the pooled quarter of the activations, fused with the pool where the backend can (and so do their
 * backward passes). Equal values: a per-channel constant and ReLU are monotone, so they commute with
 * the max (float addition rounds monotonically too), and ReLU's gradient is 0 exactly where the
 * pooled value is ≤ 0 either way. Only the tap a tie sends the gradient to can differ (a tie created
 * by the rounding of x + b), as with any argmax rule.
 */
function convBlock(conv: Conv2d, h: Tensor): Tensor {
  const y = conv2d(h, conv.weight, null, conv.options);
  return conv.bias ? maxPool2dBiasRelu(y, conv.bias, 2) : relu(maxPool2d(y, 2));
}
