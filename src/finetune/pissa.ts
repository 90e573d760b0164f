/**
 * Inits that move part of W into the adapter, PiSSA and OLoRA, and the conversion on save they share.
 *
 * PiSSA (`init_lora_weights: "pissa"`; Meng et al. 2024) as PEFT does it,
 * huggingface/peft 5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40, src/peft/tuners/lora/layer.py
 * `LoraLayer.pissa_init`: with W [out, in] = V·S·Uᵀ (the exact thin SVD, in float64 here; PEFT's
 * in float32) and the top r components,
 *
 *   lora_A = diag(√(S_r / scaling))·U_rᵀ,   lora_B = V_r·diag(√(S_r / scaling)),
 *   the base weight becomes the residual W − scaling·B·A,
 *
 * so the model starts where it was, with the adapter holding the principal part of W.
 *
 * OLoRA (`"olora"`; Büyükakyüz 2024), PEFT's `LoraLayer.olora_init` (same file): W = Q·R (QR of
 * the weight as stored), lora_A = R[:r], lora_B = Q[:, :r], the base W − scaling·B·A. Here Q's
 * first r columns come from Gram–Schmidt on W's first r columns and R[:r] = Q_rᵀ·W: the same
 * factors as Householder QR up to the sign of each component, which B·A and AdamW's trajectory
 * do not see. PEFT takes the weight as stored, so on a Conv1D ([in, out]) A and B would not fit
 * the layer; knobs refuses OLoRA there.
 *
 * Saving converts the adapter back onto the *original* base, as PEFT's `save_pretrained` does with
 * `path_initial_model_for_weight_conversion` (src/peft/peft_model.py `save_pretrained`, and
 * src/peft/tuners/lora/model.py `subtract_mutated_init`): lora_A = [A; A₀], lora_B = [B, −B₀] (rank 2r, `lora_alpha`
 * doubled — ×√2 with rsLoRA — so the scaling is unchanged, `rank_pattern`/`alpha_pattern` doubled,
 * `init_lora_weights` true), since W_res + s·B·A = W + s·(B·A − B₀·A₀). That is a plain LoRA
 * adapter: it loads on the unmodified base, in knobs and in PEFT.
 */
import { noGrad } from '../autograd/tape.js';
import { FormatError } from '../errors.js';
import { neg } from '../ops/elementwise.js';
import { concat } from '../ops/shape-ops.js';
import type { Tensor } from '../tensor.js';
import { exactSvd, matrix } from './svd.js';
import type { LoraConfig } from './lora.js';

/** What a PiSSA init leaves: A₀ and B₀ (for the conversion at save time). */
export interface PissaInit {
  A0: Tensor;
  B0: Tensor;
}

/** A layer's weight W [out, in] (its values, row-major), the rank and the scaling. */
export interface InitInput {
  weightOutIn: Float32Array | Float64Array;
  out: number;
  inF: number;
  r: number;
  scaling: number;
}

/** A₀ [r, in], B₀ [out, r], and the residual W − scaling·B₀·A₀ [out, in] the base must hold. */
export interface InitFactors {
  A0: Float64Array;
  B0: Float64Array;
  residual: Float64Array;
}

/** PiSSA's factors from the SVD of W. */
export function pissaInit({ weightOutIn, out, inF, r, scaling }: InitInput): InitFactors {
  const svd = exactSvd(matrix(out, inF, Float64Array.from(weightOutIn)));
  const A0 = new Float64Array(r * inF);
  const B0 = new Float64Array(out * r);
  for (let k = 0; k < r; k++) {
    const root = Math.sqrt(svd.S[k]! / scaling);
    for (let i = 0; i < inF; i++) A0[k * inF + i] = root * svd.Vt.data[k * inF + i]!;
    for (let o = 0; o < out; o++) B0[o * r + k] = root * svd.U.data[o * svd.U.cols + k]!;
  }
  return { A0, B0, residual: residualOf({ weightOutIn, out, inF, r, scaling }, A0, B0) };
}

/** OLoRA's factors: A₀ = R[:r], B₀ = Q[:, :r] of W = Q·R. */
export function oloraInit({ weightOutIn, out, inF, r, scaling }: InitInput): InitFactors {
  const q = Array.from({ length: r }, (_, k) =>
    Float64Array.from({ length: out }, (_, o) => weightOutIn[o * inF + k]!),
  );
  for (let pass = 0; pass < 2; pass++)
    // modified Gram–Schmidt, twice for stability
    for (let k = 0; k < r; k++) {
      const c = q[k]!;
      for (let j = 0; j < k; j++) {
        const d = dot(q[j]!, c);
        for (let o = 0; o < out; o++) c[o]! -= d * q[j]![o]!;
      }
      const n = Math.sqrt(dot(c, c));
      for (let o = 0; o < out; o++) c[o] = n > 0 ? c[o]! / n : 0;
    }
  const A0 = new Float64Array(r * inF);
  const B0 = new Float64Array(out * r);
  for (let k = 0; k < r; k++)
    for (let o = 0; o < out; o++) {
      B0[o * r + k] = q[k]![o]!;
      for (let i = 0; i < inF; i++) A0[k * inF + i]! += q[k]![o]! * weightOutIn[o * inF + i]!;
    }
  return { A0, B0, residual: residualOf({ weightOutIn, out, inF, r, scaling }, A0, B0) };
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** W − scaling·B₀·A₀ [out, in]. */
function residualOf(
  { weightOutIn, out, inF, r, scaling }: InitInput,
  A0: Float64Array,
  B0: Float64Array,
): Float64Array {
  const residual = Float64Array.from(weightOutIn);
  for (let o = 0; o < out; o++)
    for (let k = 0; k < r; k++) {
      const b = scaling * B0[o * r + k]!;
      for (let i = 0; i < inF; i++) residual[o * inF + i]! -= b * A0[k * inF + i]!;
    }
  return residual;
}

/** The adapter's tensors converted onto the original base: A = [A; A₀], B = [B, −B₀]. */
export function pissaConvertedTensors(A: Tensor, B: Tensor, init: PissaInit): { A: Tensor; B: Tensor } {
  return noGrad(() => ({ A: concat([A.detach(), init.A0], 0), B: concat([B.detach(), neg(init.B0)], 1) }));
}

/** The saved config of a converted PiSSA adapter (PEFT's save_pretrained rules). */
export function pissaConvertedConfig(c: LoraConfig): LoraConfig {
  const double = (m: Record<string, number>): Record<string, number> =>
    Object.fromEntries(Object.entries(m).map(([k, v]) => [k, 2 * v]));
  return {
    ...c,
    init_lora_weights: true,
    r: 2 * c.r,
    lora_alpha: c.use_rslora ? c.lora_alpha * Math.SQRT2 : 2 * c.lora_alpha,
    rank_pattern: double(c.rank_pattern),
    alpha_pattern: double(c.alpha_pattern),
  };
}

/** The inits that move part of W into the adapter (the base then holds a residual). */
export const MUTATING_INITS = ['pissa', 'olora'] as const;
export type MutatingInit = (typeof MUTATING_INITS)[number];

export function mutatingInitRefused(init: MutatingInit, path: string, why: string): FormatError {
  return new FormatError('lora_unsupported', `init_lora_weights "${init}" on ${path}: ${why}`, {
    field: 'init_lora_weights',
    module: path,
  });
}
