/**
 * What a PEFT adapter directory holds (`knobs inspect ADAPTER_DIR`) and what it does to a base
 * (`knobs diff BASE ADAPTER`): per targeted module its rank, alpha, scaling, shapes and the norm of
 * its weight delta ‖scaling·B·A‖_F, computed from r×r products (‖BA‖²_F = Σ (BᵀB) ⊙ (AAᵀ)), so no
 * [out, in] matrix is formed; and the trained copies of base tensors (modules_to_save, bias) with
 * their norms. Against a base, each delta is set against ‖W‖_F, each copy's change ‖T − W‖_F too.
 */
import { join } from 'node:path';
import { FormatError } from '../errors.js';
import { isRawTensor, loadSafetensors } from '../formats/safetensors.js';
import type { Module } from '../nn/module.js';
import { cast, contiguous } from '../ops/view.js';
import { shapesEqual } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { ADAPTER_WEIGHTS_NAME, BASE_DIGEST_KEY, readAdapterConfig } from './adapter.js';
import { type LoraConfig, hfModules, patternValue } from './lora.js';
import { isSavedAlias } from './saved-tensors.js';

export interface AdapterModuleInfo {
  module: string;
  r: number;
  alpha: number;
  scaling: number;
  in_features: number;
  out_features: number;
  parameters: number;
  /** ‖scaling · B·A‖_F: the size of the change to the module's weight (for DoRA, before its rescaling by m / n). */
  delta_norm: number;
}

/** A trained copy of a base tensor (modules_to_save, bias; saved-tensors.ts). */
export interface AdapterSavedInfo {
  /** PEFT's key without `base_model.model.` (`transformer.ln_f.weight`, `….base_layer.bias`). */
  tensor: string;
  shape: number[];
  parameters: number;
  norm: number;
}

export interface AdapterInfo {
  dir: string;
  config: LoraConfig;
  base_digest: string | null;
  parameters: number;
  bytes: number;
  modules: AdapterModuleInfo[];
  saved: AdapterSavedInfo[];
}

const KEY = /^base_model\.model\.(.+)\.lora_(?:([AB])\.weight|magnitude_vector)$/;
const PREFIX = 'base_model.model.';

function values(t: Tensor): Float64Array {
  return Float64Array.from(contiguous(cast(t, 'f32')).contiguousStorage() as Float32Array);
}

function norm(v: Float64Array): number {
  return Math.sqrt(v.reduce((s, x) => s + x * x, 0));
}

/** ‖B·A‖_F for A [r, in], B [out, r]. */
function productNorm(a: Float64Array, b: Float64Array, r: number, nIn: number, nOut: number): number {
  let sum = 0;
  for (let i = 0; i < r; i++)
    for (let j = 0; j < r; j++) {
      let btb = 0;
      for (let o = 0; o < nOut; o++) btb += b[o * r + i]! * b[o * r + j]!;
      let aat = 0;
      for (let c = 0; c < nIn; c++) aat += a[i * nIn + c]! * a[j * nIn + c]!;
      sum += btb * aat;
    }
  return Math.sqrt(Math.max(sum, 0));
}

/** Reads an adapter directory's config and tensors and describes each module. */
export async function describeAdapter(dir: string): Promise<AdapterInfo> {
  const config = await readAdapterConfig(dir);
  const path = join(dir, ADAPTER_WEIGHTS_NAME);
  const { tensors, metadata } = await loadSafetensors(path);
  const pairs = new Map<string, { A?: Tensor; B?: Tensor; magnitude?: Tensor }>();
  const saved: AdapterSavedInfo[] = [];
  const savesCopies = config.modules_to_save !== null || config.bias !== 'none';
  let bytes = 0;
  for (const [key, t] of tensors) {
    const m = KEY.exec(key);
    if (isRawTensor(t) || (!m && !(savesCopies && key.startsWith(PREFIX))))
      throw new FormatError('lora_unexpected_tensor', `${path}: ${key} is not a LoRA tensor knobs reads`, {
        file: path,
        tensor: key,
      });
    bytes += t.size * 4;
    if (!m && isSavedAlias(key)) continue; // the same tensor again
    if (!m) {
      saved.push({ tensor: key.slice(PREFIX.length), shape: [...t.shape], parameters: t.size, norm: norm(values(t)) });
      continue;
    }
    const entry = pairs.get(m[1]!) ?? {};
    entry[(m[2] as 'A' | 'B' | undefined) ?? 'magnitude'] = t; // DoRA's magnitude: lora_magnitude_vector
    pairs.set(m[1]!, entry);
  }
  const modules: AdapterModuleInfo[] = [];
  for (const [module, { A, B, magnitude }] of pairs) {
    if (!A || !B)
      throw new FormatError('lora_missing_tensor', `${path}: ${module} has lora_${A ? 'B' : 'A'} missing`, {
        file: path,
        module,
      });
    const [r, nIn] = A.shape as [number, number];
    const nOut = B.shape[0]!;
    const alpha = patternValue(config.alpha_pattern, 'alpha_pattern', module, config.lora_alpha);
    const scaling = config.use_rslora ? alpha / Math.sqrt(r) : alpha / r;
    modules.push({
      module,
      r,
      alpha,
      scaling,
      in_features: nIn,
      out_features: nOut,
      parameters: A.size + B.size + (magnitude?.size ?? 0),
      delta_norm: scaling * productNorm(values(A), values(B), r, nIn, nOut),
    });
  }
  return {
    dir,
    config,
    base_digest: metadata?.get(BASE_DIGEST_KEY) ?? null,
    parameters: modules.reduce((n, m) => n + m.parameters, 0) + saved.reduce((n, s) => n + s.parameters, 0),
    bytes,
    modules,
    saved: saved.sort((a, b) => (a.tensor < b.tensor ? -1 : 1)),
  };
}

export interface AdapterEffect {
  module: string;
  delta_norm: number;
  weight_norm: number;
  /** ‖ΔW‖_F / ‖W‖_F. */
  rel_change: number;
}

/**
 * Each targeted module's delta set against the base's weight, then each trained copy's change
 * ‖T − W‖ against the base tensor it replaces; modules or tensors missing from `base` are an error.
 */
export async function adapterEffect(base: Module, info: AdapterInfo): Promise<AdapterEffect[]> {
  const byPath = new Map(hfModules(base));
  const missing = (what: string): FormatError =>
    new FormatError('lora_unexpected_tensor', `${info.dir} holds ${what}, which the base does not have`, {
      module: what,
    });
  const deltas = info.modules.map((m) => {
    const layer = byPath.get(m.module) as { weight?: Tensor } | undefined;
    if (!layer?.weight) throw missing(m.module);
    const weightNorm = norm(values(layer.weight));
    return {
      module: m.module,
      delta_norm: m.delta_norm,
      weight_norm: weightNorm,
      rel_change: m.delta_norm / weightNorm,
    };
  });
  if (info.saved.length === 0) return deltas;
  const { tensors } = await loadSafetensors(join(info.dir, ADAPTER_WEIGHTS_NAME));
  const copies = info.saved.map((s) => {
    // A targeted layer's bias is saved as `<module>.base_layer.bias`: the module's own bias.
    const name = s.tensor.replace(/\.base_layer\.(?=[^.]+$)/, '.');
    const dot = name.lastIndexOf('.');
    const original = byPath
      .get(name.slice(0, dot))
      ?.namedParameters()
      .find(([local]) => local === name.slice(dot + 1))?.[1];
    if (!original || !shapesEqual(original.shape, s.shape)) throw missing(s.tensor);
    const w = values(original);
    const t = values(tensors.get(PREFIX + s.tensor) as Tensor);
    const change = norm(t.map((x, i) => x - w[i]!));
    const weightNorm = norm(w);
    return { module: s.tensor, delta_norm: change, weight_norm: weightNorm, rel_change: change / weightNorm };
  });
  return [...deltas, ...copies];
}
