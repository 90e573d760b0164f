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
import { type AdapterHook, Linear, type WeightLayout } from './linear.js';
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
  /** The file's block type when the weight was re-quantized to q8_0 at load (e.g. 'q4_K'), else null. */
  readonly requantizedFrom: string | null;
  /** LoRA (or any additive) delta on the output, as Linear.adapter. */
  adapter: AdapterHook | null = null;

  /** `weight` [out, in] in blocks; `bias` [out] (f32) or null; `requantizedFrom` see the field. */
  constructor(weight: QuantizedMatrix, bias: Tensor | null = null, requantizedFrom: string | null = null) {
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
    this.requantizedFrom = requantizedFrom;
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
    const q = new QuantizedLinear(quantizeMatrix(type, values, linear.outFeatures, linear.inFeatures), bias);
    q.train(linear.training); // the mode a LoRA attached later follows (its dropout)
    return q;
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
    if (this.adapter?.withBase) return this.adapter.withBase(x);
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
function swapChild(parent: Module, name: string, old: Module, next: Module & Layer): void {
  const fields = parent as unknown as Record<string, unknown>;
  if (parent instanceof Sequential) {
    const layers = parent.layers as Layer[];
    const i = layers.indexOf(old as unknown as Layer);
    if (i >= 0) layers[i] = next;
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
    replaceLinear(model, path, QuantizedLinear.fromLinear(m, type));
    result.quantized.push(path);
  }
  return result;
}

/**
 * How a model's weights are held, tensors per kind: {"q8_0": 85, "f32": 26} (`knobs generate --json`
 * and `inspect` report it). Quantized layers count under their block type, parameters under
 * their dtype, a tensor shared by two names (tied weights) once; layers re-quantized at load add
 * `requantized_from`: {"q4_K": 60, "q6_K": 25}.
 */
export function weightKinds(model: Module): Record<string, number | Record<string, number>> {
  const kinds: Record<string, number> = {};
  const from: Record<string, number> = {};
  const count = (table: Record<string, number>, kind: string): void => void (table[kind] = (table[kind] ?? 0) + 1);
  for (const [, m] of model.namedModules()) {
    if (!(m instanceof QuantizedLinear)) continue;
    count(kinds, m.weight.type);
    if (m.requantizedFrom) count(from, m.requantizedFrom);
  }
  for (const [, p] of model.namedParameters()) count(kinds, p.dtype);
  return Object.keys(from).length > 0 ? { ...kinds, requantized_from: from } : kinds;
}

/*
 * Hooks for a GGUF loader (src/models/gguf/load.ts reads each tensor through one function,
 * dequantized; these let it keep the blocks instead). nn/ may not import formats/, so the loader
 * passes bytes or a row decoder in.
 */

/**
 * A q8_0 / q4_0 GGUF tensor's bytes as W [rows, cols] (ggml dims [cols, rows]), the rows reordered
 * when `rowOrder` is given (row i of W = file row rowOrder[i]: llama.cpp's q/k permutation undone
 * on whole block rows, without decoding them). The bytes are copied when reordered, else kept.
 */
export function quantizedMatrixFromBlocks(
  type: QuantType,
  bytes: Uint8Array,
  rows: number,
  cols: number,
  rowOrder?: ArrayLike<number>,
): QuantizedMatrix {
  const rowBytes = (cols / QK) * QUANT_BLOCK_BYTES[type];
  if (cols % QK !== 0 || bytes.length !== rows * rowBytes)
    throw new ArgumentError(
      `quantizedMatrixFromBlocks: ${bytes.length} bytes are not a ${type} matrix [${rows}, ${cols}] (${rows * rowBytes} bytes, cols a multiple of ${QK})`,
    );
  if (!rowOrder) return { type, rows, cols, blocks: bytes };
  const blocks = new Uint8Array(bytes.length);
  for (let i = 0; i < rows; i++) {
    const from = rowOrder[i]!;
    blocks.set(bytes.subarray(from * rowBytes, (from + 1) * rowBytes), i * rowBytes);
  }
  return { type, rows, cols, blocks };
}

/**
 * Re-quantizes a matrix held in another block format (K-quants) to q8_0 one row at a time:
 * `row(i)` returns row i of W decoded to f32 (the loader's dequantizer), so the whole matrix is
 * never expanded. Pass the result to `new QuantizedLinear(w, bias, 'q4_K')`.
 */
export function requantizeToQ8_0(rows: number, cols: number, row: (i: number) => Float32Array): QuantizedMatrix {
  if (cols % QK !== 0)
    throw new ArgumentError(`requantizeToQ8_0: cols ${cols} is not a multiple of ${QK}; keep such a tensor in f32`);
  const rowBytes = (cols / QK) * QUANT_BLOCK_BYTES.q8_0;
  const blocks = new Uint8Array(rows * rowBytes);
  for (let i = 0; i < rows; i++) {
    const values = row(i);
    if (values.length !== cols)
      throw new ArgumentError(`requantizeToQ8_0: row ${i} has ${values.length} values, expected ${cols}`);
    blocks.set(quantizeBlocks('q8_0', values), i * rowBytes);
  }
  return { type: 'q8_0', rows, cols, blocks };
}

/**
 * Puts `layer` in place of the Linear at `path` of `model` (what quantizeModel does per layer; a
 * Linear back in place of a QuantizedLinear is how finetune/ dequantizes a layer for merging).
 */
export function replaceLinear(model: Module, path: string, layer: QuantizedLinear | Linear): void {
  const old = model.getModule(path);
  if (!(old instanceof Linear) && !(old instanceof QuantizedLinear))
    throw new ArgumentError(`replaceLinear: ${path} is a ${old.constructor.name}, not a Linear`);
  if (old.inFeatures !== layer.inFeatures || old.outFeatures !== layer.outFeatures)
    throw new ShapeError(
      `replaceLinear: ${path} maps ${old.inFeatures} → ${old.outFeatures}, the new layer ${layer.inFeatures} → ${layer.outFeatures}`,
      {
        op: 'replaceLinear',
        shapes: [
          [old.outFeatures, old.inFeatures],
          [layer.outFeatures, layer.inFeatures],
        ],
      },
    );
  const dot = path.lastIndexOf('.');
  swapChild(model.getModule(dot < 0 ? '' : path.slice(0, dot)), path.slice(dot + 1), old, layer);
}
