/**
 * LoRA from a fine-tune (`knobs extract-lora`): for each targeted Linear/Conv1D, the difference
 * D = W_tuned − W_base (as [out, in]) is cut to its best rank-r approximation U·S·Vᵀ (svd.ts), and
 * the adapter gets lora_B = U·√S, lora_A = √S·Vᵀ with lora_alpha = r, so scaling · B·A = U·S·Vᵀ.
 * The share of the difference's energy (Σ kept S² / ‖D‖²_F) says how much of the fine-tune the
 * adapter holds. Parameters that moved but that LoRA cannot carry (biases, norms, embeddings, the
 * output head) are listed, not silently dropped.
 */
import { FormatError } from '../errors.js';
import { Linear } from '../nn/linear.js';
import type { Module } from '../nn/module.js';
import { contiguous } from '../ops/view.js';
import { formatShape, shapesEqual } from '../shape.js';
import type { Tensor } from '../tensor.js';
import {
  LORA_DEFAULTS,
  type LoraAdapter,
  applyLora,
  hfModules,
  isAdapterTensorName,
  knobsPath,
  planLora,
  resolveTargets,
} from './lora.js';
import { matrix, truncatedSvd } from './svd.js';

export interface ExtractOptions {
  rank: number;
  /** PEFT target_modules (suffixes or a regex); default: every Linear/Conv1D but the head whose weight moved. */
  targetModules?: string[] | string;
}

export interface ExtractedLayer {
  module: string;
  rank: number;
  /** Σ kept S² / ‖D‖²_F for this layer (1 when D is zero). */
  energyShare: number;
}

export interface ExtractResult {
  adapter: LoraAdapter;
  layers: ExtractedLayer[];
  /** Over every targeted layer: kept energy / the differences' energy. */
  energyShare: number;
  /** Parameters (checkpoint names) that differ between the models and are not in the adapter. */
  uncaptured: string[];
}

function values(t: Tensor): Float64Array {
  return Float64Array.from(contiguous(t).contiguousStorage() as Float32Array | Float64Array);
}

/** Checks that both models have the same parameters with the same shapes; returns tuned's by name. */
function pairParameters(base: Module, tuned: Module): Map<string, Tensor> {
  const mine = new Map(tuned.stateDict());
  for (const [name, t] of base.stateDict()) {
    const other = mine.get(name);
    if (!other || !shapesEqual(other.shape, t.shape))
      throw new FormatError(
        'extract_mismatch',
        `the tuned model ${other ? `has ${name} as ${formatShape(other.shape)}, the base as ${formatShape(t.shape)}` : `lacks ${name}`}; extract-lora needs two models of the same architecture and size`,
        { tensor: name },
      );
  }
  return mine;
}

function differs(a: Tensor, b: Tensor): boolean {
  const x = values(a);
  const y = values(b);
  return x.some((v, i) => v !== y[i]);
}

/**
 * Attaches to `base` an adapter holding the rank-`rank` part of (tuned − base) for the targeted
 * layers; `base` itself is left unchanged (its weights are the adapter's base).
 */
export function extractLora(base: Module, tuned: Module, opts: ExtractOptions): ExtractResult {
  const tunedParams = pairParameters(base, tuned);
  const linear = resolveTargets(base, { ...LORA_DEFAULTS, target_modules: 'all-linear' }).target_modules as string[];
  const moved = new Map(hfModules(base).filter(([p]) => linear.includes(p))) as Map<string, Linear>;
  const weightOf = (path: string): { base: Tensor; tuned: Tensor } => {
    const name = `${knobsPath(base, path)}.weight`;
    return { base: (moved.get(path) as Linear).weight, tuned: tunedParams.get(name)! };
  };
  let targets = opts.targetModules;
  if (targets === undefined) {
    targets = linear.filter((p) => {
      const w = weightOf(p);
      return differs(w.base, w.tuned);
    });
    if (targets.length === 0)
      throw new FormatError(
        'extract_no_difference',
        'no linear layer differs between the base and the tuned model; there is nothing to extract',
        {},
      );
  }
  // Probe which modules the targets select (and their sizes), then cap each rank at its layer.
  const probe = planLora(base, { ...LORA_DEFAULTS, r: 1, lora_alpha: 1, target_modules: targets });
  const rankPattern: Record<string, number> = {};
  for (const t of probe.targets) {
    const cap = Math.min(t.layer.inFeatures, t.layer.outFeatures);
    if (cap < opts.rank) rankPattern[t.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')] = cap;
  }
  const config = {
    ...LORA_DEFAULTS,
    r: opts.rank,
    lora_alpha: opts.rank,
    target_modules: targets,
    rank_pattern: rankPattern,
    alpha_pattern: { ...rankPattern },
    task_type: 'CAUSAL_LM',
  };
  const adapter = applyLora(base, planLora(base, config));
  const layers: ExtractedLayer[] = [];
  let total = 0;
  let captured = 0;
  for (const [path, layer] of adapter.layers) {
    const w = weightOf(path);
    const b = values(w.base);
    const t = values(w.tuned);
    const { inFeatures: nIn, outFeatures: nOut } = layer.layer;
    // D as [out, in], whatever the storage layout.
    const d = matrix(nOut, nIn);
    for (let o = 0; o < nOut; o++)
      for (let i = 0; i < nIn; i++) {
        const k = layer.storedInOut ? i * nOut + o : o * nIn + i;
        d.data[o * nIn + i] = t[k]! - b[k]!;
      }
    const svd = truncatedSvd(d, layer.r);
    const kept = svd.S.length;
    const A = layer.lora_A.weight.storage as Float32Array | Float64Array; // [r, in]
    const B = layer.lora_B.weight.storage as Float32Array | Float64Array; // [out, r]
    A.fill(0);
    B.fill(0);
    for (let j = 0; j < kept; j++) {
      const root = Math.sqrt(svd.S[j]!);
      for (let i = 0; i < nIn; i++) A[j * nIn + i] = root * svd.Vt.data[j * nIn + i]!;
      for (let o = 0; o < nOut; o++) B[o * layer.r + j] = root * svd.U.data[o * kept + j]!;
    }
    total += svd.totalEnergy;
    captured += svd.capturedEnergy;
    layers.push({
      module: path,
      rank: layer.r,
      energyShare: svd.totalEnergy > 0 ? svd.capturedEnergy / svd.totalEnergy : 1,
    });
  }
  const inAdapter = new Set([...adapter.layers.keys()].map((p) => `${knobsPath(base, p)}.weight`));
  const uncaptured = [...base.stateDict()]
    .filter(([name]) => !isAdapterTensorName(name) && !inAdapter.has(name))
    .filter(([name, t]) => differs(t, tunedParams.get(name)!))
    .map(([name]) => name);
  return { adapter, layers, energyShare: total > 0 ? captured / total : 1, uncaptured };
}
