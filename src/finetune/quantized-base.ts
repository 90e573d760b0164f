/**
 * Quantized bases for fine-tuning (QLoRA-style): the base's linear layers stay q8_0 / q4_0 blocks
 * (nn/quantized-linear.ts) and only the LoRA matrices are f32 and train.
 *
 *  - `quantizeBase`: quantizes a float base in memory before tuning (`knobs tune --quantize`, the
 *    tune recipe's `"quantize"`); layers already quantized (a q8_0/q4_0 GGUF loaded as blocks) are
 *    left as they are.
 *  - `dequantizeLayers`: turns quantized layers back into f32 Linear / Conv1D layers, for merging an
 *    adapter into a quantized base (merge.ts `mergeAdapter`, `knobs merge`): a delta cannot be added into blocks.
 *  - `hashQuantizedLayers`: the part of the base digest (adapter.ts `baseDigest`) a quantized layer
 *    contributes — its block type, shape and block bytes, not dequantized values. So an adapter
 *    tuned on a q8_0 base records that base, and loading it onto the f32 model the blocks came from
 *    is a mismatch (allowed with --allow-base-mismatch: the shapes fit).
 */
import type { Hash } from 'node:crypto';
import { ArgumentError } from '../errors.js';
import { GGML_TYPE, GGML_TYPES, dequantizeBlocks } from '../formats/gguf.js';
import { GPT } from '../models/gpt.js';
import { Conv1D, Linear } from '../nn/linear.js';
import type { Module } from '../nn/module.js';
import {
  type QuantType,
  type QuantizeModelResult,
  type QuantizedMatrix,
  QUANT_TYPES,
  QuantizedLinear,
  quantizeModel,
  replaceLinear,
} from '../nn/quantized-linear.js';
import { noGrad } from '../autograd/tape.js';
import { fromArray } from '../ops/creation.js';
import { transpose } from '../ops/view.js';

export { QUANT_TYPES, type QuantType };

/** A base's quantized layers, by knobs module path. */
export function quantizedLayers(model: Module): [string, QuantizedLinear][] {
  return model.namedModules().filter((e): e is [string, QuantizedLinear] => e[1] instanceof QuantizedLinear);
}

/** Elements the quantized layers' weights hold (they are not parameters, so numParameters() leaves them out). */
export function quantizedElements(model: Module): number {
  return quantizedLayers(model).reduce((n, [, q]) => n + q.weight.rows * q.weight.cols, 0);
}

/** Quantizes every float Linear / Conv1D of `model` to `type` in place (see quantizeModel); quantized layers stay. */
export function quantizeBase(model: Module, type: QuantType): QuantizeModelResult {
  if (!QUANT_TYPES.includes(type))
    throw new ArgumentError(`quantize must be one of ${QUANT_TYPES.join(', ')}, got ${JSON.stringify(type)}`);
  return quantizeModel(model, type);
}

/** W [rows, cols] of a q8_0 / q4_0 matrix in f32, decoded block by block as ggml does. */
export function dequantizeMatrix(w: QuantizedMatrix): Float32Array {
  const type = GGML_TYPES.get(w.type === 'q8_0' ? GGML_TYPE.Q8_0 : GGML_TYPE.Q4_0)!;
  const out = new Float32Array(w.rows * w.cols);
  dequantizeBlocks(type, w.blocks, out);
  return out;
}

/**
 * An f32 layer computing what `q` computes with its weight decoded: a Conv1D (weight [in, out])
 * inside GPT-2, whose Hugging Face layers are Conv1D, else a Linear ([out, in]).
 */
export function dequantizedLayer(q: QuantizedLinear, conv1d: boolean): Linear {
  const bias = q.bias !== null;
  const layer = conv1d
    ? new Conv1D(q.inFeatures, q.outFeatures, { bias })
    : new Linear(q.inFeatures, q.outFeatures, { bias });
  noGrad(() => {
    const w = fromArray(dequantizeMatrix(q.weight), [q.outFeatures, q.inFeatures]);
    const stored = conv1d ? transpose(w, 0, 1).contiguousStorage() : w.contiguousStorage();
    (layer.weight.storage as Float32Array).set(stored as Float32Array);
    if (q.bias) (layer.bias!.storage as Float32Array).set(q.bias.contiguousStorage() as Float32Array);
  });
  layer.train(q.training); // an adapter attached later follows the layer's mode (its dropout)
  return layer;
}

/** Whether a quantized layer of `model` stands for a weight stored [in, out] (GPT-2's Conv1D). */
export function quantizedLayerIsConv1D(model: Module): boolean {
  return model instanceof GPT;
}

/**
 * Replaces the quantized layers at `paths` (all of them when absent) by their f32 decoding, in
 * place; returns the paths replaced with their block types. Must run before an adapter is attached
 * to those layers.
 */
export function dequantizeLayers(model: Module, paths?: readonly string[]): { path: string; type: QuantType }[] {
  const wanted = paths === undefined ? null : new Set(paths);
  const done: { path: string; type: QuantType }[] = [];
  for (const [path, q] of quantizedLayers(model)) {
    if (wanted !== null && !wanted.has(path)) continue;
    replaceLinear(model, path, dequantizedLayer(q, quantizedLayerIsConv1D(model)));
    done.push({ path, type: q.weight.type });
  }
  return done;
}

/** Feeds the quantized layers of `model` (path, block type, shape, block bytes) to a digest. */
export function hashQuantizedLayers(model: Module, hash: Hash): void {
  for (const [path, q] of quantizedLayers(model)) {
    const w = q.weight;
    hash.update(`${path}.weight\0${w.type}\0${w.rows},${w.cols}\0`);
    hash.update(w.blocks);
  }
}
