/**
 * QuantizedLinear: a Linear whose weight [out, in] is kept as ggml q8_0 / q4_0 blocks (the bytes a
 * GGUF file holds) and multiplied without expanding it (src/ops/quantized.ts). The weight is
 * frozen: the backward gives the input's gradient only, which is what LoRA on a quantized base
 * needs. It keeps Linear's LoRA hook (`adapter`, `base`, `forward`, `inFeatures`/`outFeatures`,
 * `layout`), so an adapter wraps it as it wraps a Linear.
 *
 * `quantizeModel(model, type)` swaps every Linear / Conv1D of a model for one of these, so Llama
 * and GPT forward and generate run on quantized weights. The weight is not a parameter: it is
 * absent from namedParameters() and stateDict() (export a quantized model as GGUF instead).
 */
import type { QuantizedMatrix, QuantType } from '../backends/backend.js';
import { QUANT_BLOCK_BYTES, QK, quantizeBlocks } from '../backends/js/qmatmul.js';
import { ArgumentError, ShapeError } from '../errors.js';
import { add } from '../ops/elementwise.js';
import { quantizedMatmul } from '../ops/quantized.js';
import { cast, contiguous, transpose } from '../ops/view.js';
import { formatShape, numel } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { Linear, type WeightLayout } from './linear.js';
import { type Layer, Module, Sequential } from './module.js';

export type { QuantType, QuantizedMatrix } from '../backends/backend.js';
export const QUANT_TYPES: readonly QuantType[] = ['q8_0', 'q4_0'];

/** Blocks of W [rows, cols] (f32, row-major), quantized as ggml's reference quantizers do. */
export function quantizeMatrix(type: QuantType, values: Float32Array, rows: number, cols: number): QuantizedMatrix {
  if (cols % QK !== 0 || values.length !== rows * cols)
    throw new ArgumentError(
      `quantizeMatrix: ${type} needs a [rows, cols] matrix with cols a multiple of ${QK}, got [${rows}, ${cols}] (${values.length} values)`,
    );
  return { type, rows, cols, blocks: quantizeBlocks(type, values) };
}

export class QuantizedLinear extends Module implements Layer {
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** The blocks hold rows of W [out, in], whatever layout the layer it replaced had. */
  readonly layout: WeightLayout = 'out_in';
  readonly weight: QuantizedMatrix;
  /** LoRA (or any additive) delta on the output, as Linear.adapter. */
  adapter: ((x: Tensor) => Tensor) | null = null;

  /** `weight` [out, in] in blocks; `bias` [out] (f32) or null. */
  constructor(weight: QuantizedMatrix, bias: Tensor | null = null) {
    super();
    const need = (weight.rows * weight.cols * QUANT_BLOCK_BYTES[weight.type]) / QK;
    if (weight.cols % QK !== 0 || weight.blocks.length !== need)
      throw new ArgumentError(
        `QuantizedLinear: a ${weight.type} weight [${weight.rows}, ${weight.cols}] needs cols a multiple of ${QK} and ${need} bytes of blocks, got ${weight.blocks.length}`,
      );
    if (bias && (bias.rank !== 1 || bias.shape[0] !== weight.rows))
      throw new ShapeError(`QuantizedLinear: bias ${formatShape(bias.shape)} must be [${weight.rows}]`, {
        op: 'QuantizedLinear',
        shapes: [bias.shape],
      });
    this.weight = weight;
    this.inFeatures = weight.cols;
    this.outFeatures = weight.rows;
    this.registerParameter('bias', bias);
  }

  /** A layer with `linear`'s weight quantized to `type` (Conv1D's [in, out] weight is transposed first). */
  static fromLinear(linear: Linear, type: QuantType): QuantizedLinear {
    const w = contiguous(linear.layout === 'out_in' ? linear.weight : transpose(linear.weight, 0, 1)); // [out, in]
    const values = Float32Array.from(
      (w.storage as Float32Array | Float64Array).subarray(w.offset, w.offset + numel(w.shape)),
    );
    const bias = linear.bias ? cast(linear.bias.detach(), 'f32') : null;
    return new QuantizedLinear(quantizeMatrix(type, values, linear.outFeatures, linear.inFeatures), bias);
  }

  get bias(): Tensor | null {
    return this.optionalParam('bias');
  }

  /** x [..., in] → [..., out] without the adapter. */
  base(x: Tensor): Tensor {
    const y = quantizedMatmul(x, this.weight);
    const b = this.bias;
    return b ? add(y, b) : y;
  }

  forward(x: Tensor): Tensor {
    const y = this.base(x);
    return this.adapter ? add(y, this.adapter(x)) : y;
  }
}

/**
 * Puts `next` where `old` was: in the module registry and where forward() finds it, which is a
 * field of the module's name (`this.q_proj = this.registerModule('q_proj', …)`, the house style)
 * or Sequential's layer list. A parent that reaches the layer some other way is refused rather
 * than left running the old one.
 */
function swapChild(parent: Module, name: string, old: Module, next: Module): void {
  const fields = parent as unknown as Record<string, unknown>;
  if (parent instanceof Sequential) {
    const layers = parent.layers as Layer[];
    const i = layers.indexOf(old as unknown as Layer);
    if (i >= 0) layers[i] = next as QuantizedLinear;
  } else if (fields[name] === old) {
    Reflect.set(parent, name, next);
  } else {
    throw new ArgumentError(
      `quantizeModel: ${parent.constructor.name} holds its layer '${name}' in a way knobs cannot swap (not a field of that name)`,
    );
  }
  parent.registerModule(name, next);
}

/** What quantizeModel did: layers now quantized, and the Linear layers left in f32 (with why). */
export interface QuantizeModelResult {
  type: QuantType;
  quantized: string[];
  kept: { name: string; reason: string }[];
}

/**
 * Replaces every Linear / Conv1D of `model` (in place) by a QuantizedLinear of `type`. A layer
 * whose input size is not a multiple of 32 stays f32 (ggml keeps such tensors unquantized too).
 * Embeddings and a head tied to them stay f32. Returns the names of both kinds.
 */
export function quantizeModel(model: Module, type: QuantType): QuantizeModelResult {
  if (!QUANT_TYPES.includes(type))
    throw new ArgumentError(`quantizeModel: type must be one of ${QUANT_TYPES.join(', ')}, got ${String(type)}`);
  const result: QuantizeModelResult = { type, quantized: [], kept: [] };
  for (const [path, m] of model.namedModules()) {
    if (!(m instanceof Linear)) continue;
    if (m.inFeatures % QK !== 0) {
      result.kept.push({ name: path, reason: `input size ${m.inFeatures} is not a multiple of ${QK}` });
      continue;
    }
    const dot = path.lastIndexOf('.');
    const parent = model.getModule(dot < 0 ? '' : path.slice(0, dot));
    const name = path.slice(dot + 1);
    const q = QuantizedLinear.fromLinear(m, type);
    swapChild(parent, name, m, q);
    result.quantized.push(path);
  }
  return result;
}

/**
 * How a model's weights are held, tensors per kind: {"q8_0": 85, "f32": 26} (`knobs generate --json`
 * and `inspect` report it). Quantized layers count under their block type, parameters under
 * their dtype, a tensor shared by two names (tied weights) once.
 */
export function weightKinds(model: Module): Record<string, number> {
  const kinds: Record<string, number> = {};
  const count = (kind: string): void => void (kinds[kind] = (kinds[kind] ?? 0) + 1);
  for (const [, m] of model.namedModules()) if (m instanceof QuantizedLinear) count(m.weight.type);
  for (const [, p] of model.namedParameters()) count(p.dtype);
  return kinds;
}
