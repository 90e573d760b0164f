/**
 * DoRA (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation") as PEFT computes it for a
 * Linear / Conv1D layer, huggingface/peft 5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40,
 * src/peft/tuners/lora/dora.py `DoraLinearLayer` and src/peft/tuners/lora/variants.py
 * `DoraLinearVariant`:
 *
 *   n = ‖W + scaling·B·A‖ per output (torch.linalg.norm(weight, dim=1) of the [out, in] weight),
 *       *detached* (the paper's section 4.3: it follows ΔW but gets no gradient);
 *   m = a trained vector [out], initialised to n (so an untrained adapter changes nothing);
 *   y = bias + (m / n) ⊙ (x·Wᵀ + scaling·B·A·x)           (no dropout, or in eval)
 *   y = base(x) + (m/n − 1) ⊙ (x̃·Wᵀ) + (m/n) ⊙ scaling·B·A·x̃   (x̃ = dropout(x), training)
 *   merged weight (m / n) ⊙ (W + scaling·B·A), row by row; unmerge divides by the same m / n.
 *
 * PEFT stores m as the child `lora_magnitude_vector.<adapter>.weight` and saves it under
 * `<module>.lora_magnitude_vector` (no `.weight`: lora/model.py `_get_adapter_state_dict`); knobs
 * registers the child `lora_magnitude_vector` with the parameter `weight` the same way.
 *
 * n is computed without forming W (so a quantized base stays quantized): with G = A·Wᵀ [r, out]
 * (the layer's own kernel applied to A's rows) ‖W_o + sΔ_o‖² = ‖W_o‖² + 2s·Σ_k B_ok·G_ko +
 * s²·(B·A·Aᵀ·Bᵀ)_oo, and ‖W_o‖² once per layer from the layer applied to the identity, as PEFT's
 * own `get_lora_weight` uses an identity to read the adapter's matrix.
 */
import { noGrad } from '../autograd/tape.js';
import { add, clamp, mul, sqrt, sub } from '../ops/elementwise.js';
import { matmul } from '../ops/linalg.js';
import { fromArray } from '../ops/creation.js';
import { sum } from '../ops/reduce.js';
import { transpose } from '../ops/view.js';
import { Module } from '../nn/module.js';
import type { Tensor } from '../tensor.js';

/** PEFT's DoraLinearLayer: the magnitude vector `weight` [out] of one layer. */
export class DoraMagnitude extends Module {
  constructor(init: Tensor) {
    super();
    this.registerParameter('weight', init.detach());
  }

  get weight(): Tensor {
    return this.param('weight');
  }
}

/** What DoRA needs of the layer it adapts: x ↦ x·Wᵀ + bias, and the bias. */
export interface DoraBase {
  base(x: Tensor): Tensor;
  readonly bias: Tensor | null;
  readonly inFeatures: number;
}

/** x·Wᵀ without the bias. */
export function withoutBias(layer: DoraBase, x: Tensor): Tensor {
  const y = layer.base(x);
  return layer.bias ? sub(y, layer.bias) : y;
}

/** ‖W_o‖² per output [out]: the layer applied to the identity gives Wᵀ. */
export function baseRowNormsSquared(layer: DoraBase, dtype: 'f32' | 'f64'): Tensor {
  return noGrad(() => {
    const n = layer.inFeatures;
    const eye = new Float64Array(n * n);
    for (let i = 0; i < n; i++) eye[i * n + i] = 1;
    const wt = withoutBias(layer, fromArray(eye, [n, n], { dtype })); // [in, out]
    return sum(mul(wt, wt), 0);
  });
}

/** n = ‖W + scaling·B·A‖ per output, detached (see the header for the expansion). */
export function doraWeightNorm(
  layer: DoraBase,
  baseNorm2: Tensor,
  loraA: Tensor,
  loraB: Tensor,
  scaling: number,
): Tensor {
  return noGrad(() => {
    const A = loraA.detach();
    const B = loraB.detach();
    const g = withoutBias(layer, A); // [r, out] = A·Wᵀ
    const cross = sum(mul(B, transpose(g, 0, 1)), 1);
    const delta2 = sum(mul(matmul(B, matmul(A, transpose(A, 0, 1))), B), 1);
    // ≥ 0 in exact arithmetic; the clamp keeps f32 rounding of a near-zero row out of sqrt's domain.
    return sqrt(clamp(add(add(baseNorm2, mul(cross, 2 * scaling)), mul(delta2, scaling * scaling)), 0));
  });
}
