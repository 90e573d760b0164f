/**
 * What a PEFT adapter directory holds (`knobs inspect ADAPTER_DIR`) and what it does to a base
 * (`knobs diff BASE ADAPTER`): per targeted module its rank, alpha, scaling, shapes and the norm of
 * its weight delta ‖scaling·B·A‖_F, computed from r×r products (‖BA‖²_F = Σ (BᵀB) ⊙ (AAᵀ)), so no
 * [out, in] matrix is formed. Against a base, each delta is set against ‖W‖_F.
 */
import { join } from 'node:path';
import { FormatError } from '../errors.js';
import { isRawTensor, loadSafetensors } from '../formats/safetensors.js';
import type { Module } from '../nn/module.js';
import { cast, contiguous } from '../ops/view.js';
import type { Tensor } from '../tensor.js';
import { ADAPTER_WEIGHTS_NAME, BASE_DIGEST_KEY, readAdapterConfig } from './adapter.js';
import { type LoraConfig, hfModules, patternValue } from './lora.js';

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

export interface AdapterInfo {
  dir: string;
  config: LoraConfig;
  base_digest: string | null;
  parameters: number;
  bytes: number;
  modules: AdapterModuleInfo[];
}

const KEY = /^base_model\.model\.(.+)\.lora_(?:([AB])\.weight|magnitude_vector)$/;

function values(t: Tensor): Float64Array {
  return Float64Array.from(contiguous(cast(t, 'f32')).contiguousStorage() as Float32Array);
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
  let bytes = 0;
  for (const [key, t] of tensors) {
    const m = KEY.exec(key);
    if (!m || isRawTensor(t))
      throw new FormatError('lora_unexpected_tensor', `${path}: ${key} is not a LoRA tensor knobs reads`, {
        file: path,
        tensor: key,
      });
    const entry = pairs.get(m[1]!) ?? {};
    entry[(m[2] as 'A' | 'B' | undefined) ?? 'magnitude'] = t; // DoRA's magnitude: lora_magnitude_vector
    pairs.set(m[1]!, entry);
    bytes += t.size * 4;
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
    parameters: modules.reduce((n, m) => n + m.parameters, 0),
    bytes,
    modules,
  };
}

export interface AdapterEffect {
  module: string;
  delta_norm: number;
  weight_norm: number;
  /** ‖ΔW‖_F / ‖W‖_F. */
  rel_change: number;
}

/** Each targeted module's delta set against the base's weight; modules missing from `base` are an error. */
export function adapterEffect(base: Module, info: AdapterInfo): AdapterEffect[] {
  const byPath = new Map(hfModules(base));
  return info.modules.map((m) => {
    const layer = byPath.get(m.module) as { weight?: Tensor } | undefined;
    if (!layer?.weight)
      throw new FormatError('lora_unexpected_tensor', `${info.dir} targets ${m.module}, which the base does not have`, {
        module: m.module,
      });
    const w = values(layer.weight);
    const weightNorm = Math.sqrt(w.reduce((s, x) => s + x * x, 0));
    return {
      module: m.module,
      delta_norm: m.delta_norm,
      weight_norm: weightNorm,
      rel_change: m.delta_norm / weightNorm,
    };
  });
}
