/**
 * Merging an adapter into its base (`knobs merge`), float or quantized. A quantized base is checked
 * against the adapter's digest as quantized (what the adapter was tuned on); then every quantized
 * layer is decoded to f32 (quantized-base.ts): a delta cannot be added into blocks, and a Hugging
 * Face model directory holds no blocks; for a GGUF output only the targeted layers are decoded.
 */
import { type LoadAdapterOptions, loadLoraAdapter } from './adapter.js';
import { type LoraAdapter, knobsPath } from './lora.js';
import { type QuantType, dequantizeLayers, quantizedLayers } from './quantized-base.js';
import type { Module } from '../nn/module.js';

/** What mergeAdapter did (for `knobs merge` to report). */
export interface MergeResult {
  adapter: LoraAdapter;
  /** Checkpoint names of the weights the adapter's deltas were added into. */
  merged: string[];
  /** Quantized layers decoded to f32 to take the delta (targeted) or to be written at all (the rest, unless kept). */
  dequantized: { path: string; type: QuantType; targeted: boolean }[];
}

/**
 * Loads the adapter directory `dir` onto `model` and merges it; on a quantized base the adapter is
 * checked on the blocks, detached, the layers decoded, and the adapter attached again and merged.
 */
export async function mergeAdapter(
  model: Module,
  dir: string,
  opts: LoadAdapterOptions & { dequantizeUntargeted?: boolean } = {},
): Promise<MergeResult> {
  const first = (await loadLoraAdapter(dir, model, opts)).adapter;
  const names = (a: LoraAdapter): string[] => [...a.layers.keys()].map((p) => `${knobsPath(model, p)}.weight`);
  if (quantizedLayers(model).length === 0) {
    first.merge();
    return { adapter: first, merged: names(first), dequantized: [] };
  }
  const targeted = new Set([...first.layers.keys()].map((p) => knobsPath(model, p)));
  first.detach();
  // A model directory holds no blocks: every quantized layer is decoded; a GGUF output keeps the untargeted ones.
  const paths = opts.dequantizeUntargeted === false ? [...targeted] : undefined;
  const dequantized = dequantizeLayers(model, paths).map((d) => ({ ...d, targeted: targeted.has(d.path) }));
  // The digest was checked on the quantized base above; the decoded base hashes differently.
  const adapter = (await loadLoraAdapter(dir, model, { ...opts, allowBaseMismatch: true })).adapter;
  adapter.merge();
  return { adapter, merged: names(adapter), dequantized };
}
