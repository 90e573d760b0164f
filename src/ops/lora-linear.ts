/**
 * The fused LoRA linear: y = base(x) + s·(h·Aᵀ)·Bᵀ as one op with one backward, where base(x) is
 * x·W + b (W seen as [in, out]: a Linear's transposed weight, a Conv1D's own) or x·Wᵀ + b for a
 * quantized W, and h is dropout(x) (or x itself when there is no dropout: `h` null).
 *
 * Against the unfused layer (matmul, add bias, dropout, matmul A, scale, matmul B, add — each with
 * its own output and tape node) it saves the full-size passes: the bias and the low-rank product
 * are added into the base GEMM's output in one pass (the backend's fused `matmulAccumulate`, whose
 * rank-sized inner dimension makes it one pass over the output), the scale rides on its alpha, and
 * in backward the low-rank part of dX is accumulated into the base's
 * dX the same way (when h is x) instead of summing two [M, in] gradients. The tape holds x (for dA
 * or dW), h, W, A, B and t = s·h·Aᵀ [M, r]; nothing of size [M, out].
 *
 * Gradients (g = dL/dy as [M, N], u = s·g·B [M, r]):
 *   dX = g·Wᵀ (+ u·A when h is x), dH = u·A, dA = uᵀ·h, dB = gᵀ·t, dW = xᵀ·g, db = Σrows g,
 * u, dB and dA in one pass over g and h (the backend's fused `loraBackward`: a BLAS runs products
 * with a rank-sized side at a fraction of its rate, and would read g twice and h again), each computed
 * only when that input requires grad (a frozen W gets no dW). Without the fused kernels (the js
 * backend, f64) the same formulas run as plain ops: that composite is the reference.
 */
import { needsGrad, noGrad, record } from '../autograd/tape.js';
import type { QuantizedMatrix } from '../backends/backend.js';
import { fusedFor, getMatmulPrecision } from '../backends/dispatch.js';
import { ShapeError } from '../errors.js';
import { formatShape, numel } from '../shape.js';
import { Tensor } from '../tensor.js';
import { add, mul } from './elementwise.js';
import { matmul, matmulGradB, matmulPair } from './linalg.js';
import { quantizedMatmul, quantizedMatmulInputGrad } from './quantized.js';
import { sum } from './reduce.js';
import { reshape, transpose } from './view.js';
import { zeros } from './creation.js';

/** The frozen-or-not base of a LoRA linear: a float weight as [in, out] (a view is fine), or quantized blocks [out, in]. */
export type LoraBase =
  | { readonly weight: Tensor; readonly bias: Tensor | null }
  | { readonly quantized: QuantizedMatrix; readonly bias: Tensor | null };

/**
 * (c + bias) + alpha·(a·b) for 2-D a [M, K], b [K, N], bias [N] or null. `c`, when given, must be a
 * fresh contiguous tensor this op owns: the fused kernel adds into its storage (GEMM beta = 1)
 * instead of allocating, and with a LoRA rank as K adds the bias in the same pass.
 */
function addProduct(c: Tensor | null, a: Tensor, b: Tensor, alpha: number, bias: Tensor | null = null): Tensor {
  const fused =
    a.dtype === 'f32' && b.dtype === 'f32' && (!bias || bias.dtype === 'f32')
      ? fusedFor('matmulAccumulate', [a, b, ...(bias ? [bias] : [])])
      : null;
  if (fused && (!c || (c.dtype === 'f32' && c.offset === 0 && c.storage.length === c.size && c.isContiguous()))) {
    const out = c ?? zeros([a.shape[0]!, b.shape[1]!]);
    fused.matmulAccumulate(a, b, out.storage as Float32Array, alpha, bias);
    return out;
  }
  const p = alpha === 1 ? matmul(a, b) : mul(matmul(a, b), alpha);
  const base = c && bias ? add(c, bias) : (c ?? bias);
  return base ? add(base, p) : p;
}

/** x2·W (or x2·Wᵀ for quantized blocks) for x2 [M, K] as a fresh [M, N] tensor, without the bias. */
function baseProduct(x2: Tensor, base: LoraBase): Tensor {
  return 'quantized' in base ? quantizedMatmul(x2, base.quantized) : matmul(x2, base.weight);
}

/**
 * x [..., K] → [..., N]: base(x) + scaling·(h·Aᵀ)·Bᵀ with A [r, K], B [N, r] (PEFT's lora_A /
 * lora_B weights); `h` [..., K] is dropout(x), or null when it is x itself.
 */
export function loraLinear(
  x: Tensor,
  base: LoraBase,
  h: Tensor | null,
  loraA: Tensor,
  loraB: Tensor,
  scaling: number,
): Tensor {
  const K = x.shape[x.rank - 1];
  const N = loraB.shape[0]!;
  const r = loraA.shape[0]!;
  const baseIn = 'quantized' in base ? base.quantized.cols : base.weight.shape[0];
  const baseOut = 'quantized' in base ? base.quantized.rows : base.weight.shape[1];
  if (
    x.rank === 0 ||
    K !== baseIn ||
    baseOut !== N ||
    loraA.rank !== 2 ||
    loraA.shape[1] !== K ||
    loraB.rank !== 2 ||
    loraB.shape[1] !== r ||
    (h !== null && h.size !== x.size)
  ) {
    throw new ShapeError(
      `loraLinear: x ${formatShape(x.shape)} with a base [${baseIn} → ${baseOut}], lora_A ${formatShape(loraA.shape)} and lora_B ${formatShape(loraB.shape)} do not fit (x must end in in, A be [r, in], B [out, r])`,
      { op: 'loraLinear', shapes: [x.shape, loraA.shape, loraB.shape] },
    );
  }
  const lead = x.shape.slice(0, -1);
  const M = numel(lead);
  const { y, t } = noGrad(() => {
    const x2 = reshape(x, [M, K]);
    const h2 = h ? reshape(h, [M, K]) : x2;
    const t = addProduct(null, h2, transpose(loraA, 0, 1), scaling);
    // (x·W + b) + t·Bᵀ: the bias and the low-rank product go into the GEMM's output in one pass
    return { y: addProduct(baseProduct(x2, base), t, transpose(loraB, 0, 1), 1, base.bias), t };
  });
  const out = noGrad(() => reshape(y, [...lead, N]));
  const weight = 'weight' in base ? base.weight : null;
  const quantized = 'quantized' in base ? base.quantized : null;
  return record('loraLinear', out, [x, weight, base.bias, h, loraA, loraB], { scaling, quantized, t });
}

/** The gradient rule (src/autograd/gradients.ts); inputs [x, W as [in, out] | null, bias, h | null, A, B]. */
export function loraLinearGrad(
  g: Tensor,
  [x, w, bias, h, loraA, loraB]: readonly (Tensor | null)[],
  { scaling, quantized, t }: { scaling: number; quantized: QuantizedMatrix | null; t: Tensor },
): (Tensor | null)[] {
  const K = x!.shape[x!.rank - 1]!;
  const N = g.shape[g.rank - 1]!;
  const M = g.size / N;
  const g2 = reshape(g, [M, N]);
  const x2 = (): Tensor => reshape(x!, [M, K]);
  const shared = h === null;
  const wantX = x!.requiresGrad;
  const wantH = !!h?.requiresGrad;
  const wantA = loraA!.requiresGrad;
  const wantU = wantX || wantH || wantA;
  const wantB = loraB!.requiresGrad;
  const hIn = wantA ? (shared ? x2() : reshape(h!, [M, K])) : null;
  const sB = wantU ? mul(loraB!, scaling) : null;
  // u, dB and dA: one pass over g and h where the backend has the kernel (the usual training case);
  // else u and dB (both products of g) side by side as one matmulPair, then dA
  const lowRank =
    wantA && wantB && getMatmulPrecision() === 'f32' && !needsGrad([g2, sB!, t, hIn!])
      ? fusedFor('loraBackward', [g2, sB!, t, hIn!])
      : null;
  let u: Tensor | null = null;
  let db: Tensor | null = null;
  let da: Tensor | null = null;
  if (lowRank) {
    const r = t.shape[1]!;
    const got = lowRank.loraBackward(g2, sB!, t, hIn!);
    u = new Tensor(got.u, [M, r], 'f32');
    db = new Tensor(got.dB, [N, r], 'f32');
    da = new Tensor(got.dA, [r, K], 'f32');
  } else {
    [u, db] =
      wantU && wantB
        ? matmulPair(g2, sB!, transpose(g2, 0, 1), t)
        : [wantU ? matmul(g2, sB!) : null, wantB ? matmul(transpose(g2, 0, 1), t) : null];
    da = wantA ? matmul(transpose(u!, 0, 1), hIn!) : null;
  }
  let dx: Tensor | null = null;
  if (wantX) {
    dx = quantized ? quantizedMatmulInputGrad(g2, quantized) : matmul(g2, transpose(w!, 0, 1));
    if (shared) dx = addProduct(dx, u!, loraA!, 1);
    dx = reshape(dx, x!.shape);
  }
  const dh = wantH ? reshape(matmul(u!, loraA!), h!.shape) : null;
  const dw = w?.requiresGrad ? matmulGradB(x2(), w, g2) : null; // W as [in, out]
  const dbias = bias?.requiresGrad ? sum(g2, 0) : null;
  return [dx, dw, dbias, dh, da, db];
}
