/**
 * Neural-network ops written as composites of primitives: softmax, log-softmax, cross-entropy,
 * layer/RMS norm, dropout and attention; plus the embedding gather (a primitive).
 *
 * softmax, logSoftmax, crossEntropy, layerNorm, rmsNorm and causal self-attention take a fused
 * kernel instead when the current backend has one for the inputs (`fusedFor`); the result is then
 * recorded as one primitive of that name, whose gradient rule calls the fused backward. The
 * composites stay the definition: each fused kernel must match its composite (test/fused.test.ts,
 * docs/design.md, decision 3).
 */
import { needsGrad, noGrad, record } from '../autograd/tape.js';
import type { Storage } from '../dtype.js';
import { fusedFor, kernelFor } from '../backends/dispatch.js';
import { ArgumentError, DTypeError, ShapeError } from '../errors.js';
import { getDefaultGenerator, type Generator } from '../random.js';
import { formatShape, normalizeAxis, numel, shapesEqual } from '../shape.js';
import { Tensor } from '../tensor.js';
import { add, div, exp, log, mul, neg, rsqrt, sub, where } from './elementwise.js';
import { matmul } from './linalg.js';
import { max, mean, sum } from './reduce.js';
import { causalMask, split } from './shape-ops.js';
import { requireFloat } from './util.js';
import { reshape, transpose } from './view.js';

/** softmax(x) = exp(x − max) / Σ exp(x − max) along `axis` (the shift keeps large logits finite). */
export function softmax(x: Tensor, axis = -1): Tensor {
  requireFloat('softmax', x);
  const ax = normalizeAxis('softmax', axis, x.rank);
  // (An empty softmax axis goes to the composite, which rejects it.)
  const fused = ax === x.rank - 1 && x.shape[ax]! > 0 ? fusedFor('softmax', [x]) : null;
  if (fused) return record('softmax', new Tensor(fused.softmax(x, false), x.shape, x.dtype), [x], {});
  const shifted = sub(
    x,
    noGrad(() => max(x, ax, true)),
  );
  const e = exp(shifted);
  return div(e, sum(e, ax, true));
}

/** log softmax(x) = (x − max) − log Σ exp(x − max) along `axis`. */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  requireFloat('logSoftmax', x);
  const ax = normalizeAxis('logSoftmax', axis, x.rank);
  // (An empty softmax axis goes to the composite, which rejects it.)
  const fused = ax === x.rank - 1 && x.shape[ax]! > 0 ? fusedFor('softmax', [x]) : null;
  if (fused) return record('logSoftmax', new Tensor(fused.softmax(x, true), x.shape, x.dtype), [x], {});
  const shifted = sub(
    x,
    noGrad(() => max(x, ax, true)),
  );
  return sub(shifted, log(sum(exp(shifted), ax, true)));
}

export interface CrossEntropyOptions {
  /** Targets equal to this are skipped (default −100, as PyTorch). */
  ignoreIndex?: number;
  /** ε in [0, 1]: the target distribution is (1 − ε)·one-hot + ε/C. */
  labelSmoothing?: number;
  reduction?: 'mean' | 'sum' | 'none';
}

/**
 * Cross-entropy between logits [N, C] and integer class targets [N] (i32 or i64), as
 * torch.nn.functional.cross_entropy: 'mean' averages over the targets that are not ignored.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const { ignoreIndex = -100, labelSmoothing = 0, reduction = 'mean' } = opts;
  requireFloat('crossEntropy', logits);
  if (logits.rank !== 2) {
    throw new ShapeError(
      `crossEntropy: logits must be [N, C], got ${formatShape(logits.shape)}; flatten leading axes, e.g. logits.reshape([-1, C])`,
      { op: 'crossEntropy', shapes: [logits.shape] },
    );
  }
  const [N, C] = logits.shape as [number, number];
  if (targets.dtype !== 'i32' && targets.dtype !== 'i64') {
    throw new DTypeError(`crossEntropy: targets must be class indices (i32 or i64), got ${targets.dtype}`, {
      op: 'crossEntropy',
      dtypes: [logits.dtype, targets.dtype],
    });
  }
  if (targets.rank !== 1 || targets.shape[0] !== N) {
    throw new ShapeError(
      `crossEntropy: targets must be [${N}] for logits ${formatShape(logits.shape)}, got ${formatShape(targets.shape)}`,
      { op: 'crossEntropy', shapes: [logits.shape, targets.shape] },
    );
  }
  if (!(labelSmoothing >= 0 && labelSmoothing <= 1))
    throw new ArgumentError(`crossEntropy: labelSmoothing must be in [0, 1], got ${labelSmoothing}`);
  const ids = targets.toFlatArray();
  const keep = new Float32Array(N);
  const picked = new Int32Array(N);
  ids.forEach((t, i) => {
    if (t === ignoreIndex) return;
    if (!Number.isInteger(t) || t < 0 || t >= C) {
      throw new ArgumentError(
        `crossEntropy: target ${t} at position ${i} is outside [0, ${C}); targets must be class indices or ignoreIndex (${ignoreIndex})`,
      );
    }
    keep[i] = 1;
    picked[i] = i * C + t;
  });
  const count = keep.reduce((a, b) => a + b, 0);
  // The fused kernel computes the mean (and its gradient) in one pass; 'sum' is that times the count.
  const fused =
    labelSmoothing === 0 &&
    reduction !== 'none' &&
    (reduction === 'mean' || count > 0) &&
    Number.isInteger(ignoreIndex) &&
    ignoreIndex >= -(2 ** 31) &&
    ignoreIndex < 2 ** 31
      ? fusedFor('crossEntropy', [logits])
      : null;
  if (fused) {
    const ids32 = targets.dtype === 'i32' ? (targets.contiguousStorage() as Int32Array) : Int32Array.from(ids);
    const grad = needsGrad([logits]);
    const { loss, dlogits } = fused.crossEntropy(logits, ids32, ignoreIndex, grad);
    const k = reduction === 'sum' ? count : 1;
    const out = new Tensor(Float32Array.of(loss * k), [], logits.dtype);
    if (!grad) return out;
    let d = new Tensor(dlogits!, [N, C], logits.dtype);
    if (k !== 1) d = noGrad(() => mul(d, k));
    return record('crossEntropy', out, [logits], { dlogits: d });
  }
  const lsm = logSoftmax(logits, -1);
  // −log p(target) for each row: gather the picked log-probabilities from the flattened [N·C] table.
  const pickedLogProbs = reshape(gatherRows(reshape(lsm, [N * C, 1]), new Tensor(picked, [N], 'i32')), [N]);
  let perRow = neg(pickedLogProbs);
  if (labelSmoothing > 0) {
    const uniform = neg(mean(lsm, -1));
    perRow = add(mul(perRow, 1 - labelSmoothing), mul(uniform, labelSmoothing));
  }
  const weights = new Tensor(logits.dtype === 'f64' ? Float64Array.from(keep) : keep, [N], logits.dtype);
  const masked = mul(perRow, weights);
  if (reduction === 'none') return masked;
  const total = sum(masked);
  if (reduction === 'sum') return total;
  return mul(total, 1 / count);
}

/** Layer norm over the trailing `normalizedShape` axes (biased variance, as PyTorch). */
export function layerNorm(
  x: Tensor,
  normalizedShape: readonly number[],
  weight?: Tensor | null,
  bias?: Tensor | null,
  eps = 1e-5,
): Tensor {
  const C = checkLayerNorm(x, normalizedShape, weight, bias);
  const k = normalizedShape.length;
  const fused = fusedFor('layerNorm', [x, ...(weight ? [weight] : []), ...(bias ? [bias] : [])]);
  if (fused) {
    const r = fused.layerNorm(x, C, weight ?? null, bias ?? null, eps);
    return recordLayerNorm(x, k, r, weight, bias, C, eps);
  }
  const axes = Array.from({ length: k }, (_, i) => x.rank - k + i);
  const centered = sub(x, mean(x, axes, true));
  const variance = mean(mul(centered, centered), axes, true);
  let y = mul(centered, rsqrt(add(variance, eps)));
  if (weight) y = mul(y, weight);
  if (bias) y = add(y, bias);
  return y;
}

/**
 * A residual add and the layer norm that reads it — s = x + r and layerNorm(s) — as
 * `[s, layerNorm(s)]`. With a fused kernel (x and r of one shape) both come from one pass over the
 * rows, recorded as the add and the norm they replace: the same values and the same gradients.
 */
export function addLayerNorm(
  x: Tensor,
  r: Tensor,
  normalizedShape: readonly number[],
  weight?: Tensor | null,
  bias?: Tensor | null,
  eps = 1e-5,
): [Tensor, Tensor] {
  const fused =
    shapesEqual(x.shape, r.shape) && x.dtype === r.dtype
      ? fusedFor('layerNorm', [x, r, ...(weight ? [weight] : []), ...(bias ? [bias] : [])])
      : null;
  if (!fused) {
    const s = add(x, r);
    return [s, layerNorm(s, normalizedShape, weight, bias, eps)];
  }
  const C = checkLayerNorm(x, normalizedShape, weight, bias);
  const out = fused.addLayerNorm(x, r, C, weight ?? null, bias ?? null, eps);
  const s = record('add', new Tensor(out.sum, x.shape, x.dtype), [x, r], {});
  return [s, recordLayerNorm(s, normalizedShape.length, out, weight, bias, C, eps)];
}

/** C (the normalised elements per row), after checking layerNorm's arguments. */
function checkLayerNorm(
  x: Tensor,
  normalizedShape: readonly number[],
  weight: Tensor | null | undefined,
  bias: Tensor | null | undefined,
): number {
  requireFloat('layerNorm', x);
  const k = normalizedShape.length;
  if (k === 0 || k > x.rank || normalizedShape.some((d, i) => d !== x.shape[x.rank - k + i])) {
    throw new ShapeError(
      `layerNorm: normalizedShape ${formatShape(normalizedShape)} must match the trailing dims of ${formatShape(x.shape)}`,
      { op: 'layerNorm', shapes: [x.shape, normalizedShape] },
    );
  }
  for (const [name, p] of [
    ['weight', weight],
    ['bias', bias],
  ] as const) {
    if (p && (p.rank !== k || p.shape.some((d, i) => d !== normalizedShape[i]))) {
      throw new ShapeError(
        `layerNorm: ${name} has shape ${formatShape(p.shape)}, expected ${formatShape(normalizedShape)}`,
        { op: 'layerNorm', shapes: [x.shape, p.shape], expected: normalizedShape },
      );
    }
  }
  return numel(normalizedShape);
}

/** A fused layer norm's output y of x (k normalised axes), recorded with its per-row statistics. */
function recordLayerNorm(
  x: Tensor,
  k: number,
  r: { y: Storage; mean: Storage; rstd: Storage },
  weight: Tensor | null | undefined,
  bias: Tensor | null | undefined,
  C: number,
  eps: number,
): Tensor {
  const rows = x.shape.slice(0, x.rank - k);
  const ctx = { C, eps, mean: new Tensor(r.mean, rows, x.dtype), rstd: new Tensor(r.rstd, rows, x.dtype) };
  return record('layerNorm', new Tensor(r.y, x.shape, x.dtype), [x, weight ?? null, bias ?? null], ctx);
}

/** RMS norm over the last axis: x / sqrt(mean(x²) + eps) · weight (Llama's RMSNorm). */
export function rmsNorm(x: Tensor, weight?: Tensor | null, eps = 1e-6): Tensor {
  requireFloat('rmsNorm', x);
  if (x.rank === 0) throw new ShapeError('rmsNorm: needs at least one dimension', { op: 'rmsNorm', shapes: [x.shape] });
  const C = x.shape[x.rank - 1]!;
  if (weight && (weight.rank !== 1 || weight.shape[0] !== C)) {
    throw new ShapeError(
      `rmsNorm: weight has shape ${formatShape(weight.shape)}, expected [${C}] for input ${formatShape(x.shape)}`,
      { op: 'rmsNorm', shapes: [x.shape, weight.shape] },
    );
  }
  const fused = fusedFor('rmsNorm', weight ? [x, weight] : [x]);
  if (fused) {
    const r = fused.rmsNorm(x, C, weight ?? null, eps);
    const ctx = { C, rstd: new Tensor(r.rstd, x.shape.slice(0, -1), x.dtype) };
    return record('rmsNorm', new Tensor(r.y, x.shape, x.dtype), [x, weight ?? null], ctx);
  }
  const y = mul(x, rsqrt(add(mean(mul(x, x), -1, true), eps)));
  return weight ? mul(y, weight) : y;
}

/** Rows of `weight` [V, C] picked by integer `ids` of any shape → [...ids.shape, C]. */
export function embedding(ids: Tensor, weight: Tensor): Tensor {
  if (weight.rank !== 2)
    throw new ShapeError(`embedding: weight must be [V, C], got ${formatShape(weight.shape)}`, {
      op: 'embedding',
      shapes: [ids.shape, weight.shape],
    });
  if (ids.dtype !== 'i32' && ids.dtype !== 'i64')
    throw new DTypeError(`embedding: ids must be i32 or i64, got ${ids.dtype}`, {
      op: 'embedding',
      dtypes: [ids.dtype],
    });
  const [V, C] = weight.shape as [number, number];
  const flat = ids.toFlatArray();
  const bad = flat.findIndex((id) => id < 0 || id >= V);
  if (bad >= 0) {
    throw new ArgumentError(
      `embedding: id ${flat[bad]} at position ${bad} is outside the table's ${V} rows; ids must be in [0, ${V})`,
    );
  }
  return reshape(gatherRows(weight, ids), [...ids.shape, C]);
}

export interface DropoutOptions {
  training?: boolean;
  generator?: Generator;
}

/** Zeroes each element with probability p and scales survivors by 1/(1 − p); identity when not training. */
export function dropout(x: Tensor, p: number, opts: DropoutOptions = {}): Tensor {
  if (!(p >= 0 && p <= 1)) throw new ArgumentError(`dropout: p must be in [0, 1], got ${p}`);
  if (opts.training === false || p === 0) return x;
  requireFloat('dropout', x);
  const g = opts.generator ?? getDefaultGenerator();
  const n = numel(x.shape);
  const mask = x.dtype === 'f64' ? new Float64Array(n) : new Float32Array(n);
  const scale = p === 1 ? 0 : 1 / (1 - p);
  for (let i = 0; i < n; i++) mask[i] = g.random() >= p ? scale : 0;
  return mul(x, new Tensor(mask, x.shape, x.dtype));
}

export interface AttentionOptions {
  /** Each query sees only keys at or before its position (top-left aligned, as PyTorch). */
  causal?: boolean;
  /** Multiplies q·kᵀ; default 1/√D. */
  scale?: number;
}

/** softmax(q·kᵀ·scale [+ causal mask]) · v for q [..., Tq, D], k [..., Tk, D], v [..., Tk, Dv]. */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  if (q.rank < 2 || k.rank < 2 || v.rank < 2) {
    throw new ShapeError(
      `scaledDotProductAttention: q, k, v need shape [..., T, D], got ${formatShape(q.shape)}, ${formatShape(k.shape)}, ${formatShape(v.shape)}`,
      { op: 'scaledDotProductAttention', shapes: [q.shape, k.shape, v.shape] },
    );
  }
  const D = q.shape[q.rank - 1]!;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  // Causal self-attention with q, k, v of one shape (and dtype) runs fused: no [T, T] scores in memory.
  const fused =
    opts.causal &&
    q.dtype === k.dtype &&
    q.dtype === v.dtype &&
    shapesEqual(q.shape, k.shape) &&
    shapesEqual(q.shape, v.shape)
      ? fusedFor('causalAttention', [q, k, v])
      : null;
  if (fused) {
    const r = fused.causalAttention(q, k, v, scale);
    const ctx = { scale, lse: new Tensor(r.lse, q.shape.slice(0, -1), q.dtype) };
    return record('causalAttention', new Tensor(r.out, q.shape, q.dtype), [q, k, v], ctx);
  }
  let scores = mul(matmul(q, transpose(k, -2, -1)), scale); // [..., Tq, Tk]
  if (opts.causal) {
    const Tq = q.shape[q.rank - 2]!;
    const Tk = k.shape[k.rank - 2]!;
    scores = where(causalMask(Tq, Tk), scores, -Infinity);
  }
  return matmul(softmax(scores, -1), v);
}

/**
 * Causal self-attention on GPT's fused projection: qkv [B, T, 3C] holds q, k and v side by side
 * (C = heads·D; head h at columns h·D of each); returns [B, T, C] with the heads merged. Defined as
 * splitting the heads out ([B, heads, T, D] each), scaledDotProductAttention(q, k, v, { causal })
 * and merging them back; a backend with the fused kernel reads q, k, v in place and writes the
 * merged result (and, backward, one [B, T, 3C] gradient) with no head copies.
 */
export function causalAttentionQKV(qkv: Tensor, heads: number, opts: { scale?: number } = {}): Tensor {
  if (!Number.isInteger(heads) || heads <= 0)
    throw new ArgumentError(`causalAttentionQKV: heads must be a positive integer, got ${heads}`);
  if (qkv.rank !== 3 || qkv.shape[2]! % (3 * heads) !== 0) {
    throw new ShapeError(
      `causalAttentionQKV: qkv must be [B, T, 3·C] with C a multiple of heads (${heads}), got ${formatShape(qkv.shape)}`,
      { op: 'causalAttentionQKV', shapes: [qkv.shape], heads },
    );
  }
  requireFloat('causalAttentionQKV', qkv);
  const [B, T, C3] = qkv.shape as [number, number, number];
  const C = C3 / 3;
  const scale = opts.scale ?? 1 / Math.sqrt(C / heads);
  const fused = fusedFor('causalAttentionQKV', [qkv]);
  if (fused) {
    const r = fused.causalAttentionQKV(qkv, heads, scale);
    const ctx = { heads, scale, lse: new Tensor(r.lse, [B, heads, T], qkv.dtype) };
    return record('causalAttentionQKV', new Tensor(r.out, [B, T, C], qkv.dtype), [qkv], ctx);
  }
  const [q, k, v] = splitHeads(qkv, heads);
  return mergeHeads(scaledDotProductAttention(q, k, v, { causal: true, scale }));
}

/** qkv [B, T, 3C] → q, k, v as [B, heads, T, D] views. */
export function splitHeads(qkv: Tensor, heads: number): [Tensor, Tensor, Tensor] {
  const [q, k, v] = split(qkv, qkv.shape[2]! / 3, 2) as [Tensor, Tensor, Tensor];
  return [toHeads(q, heads), toHeads(k, heads), toHeads(v, heads)];
}

/** x [B, T, heads·D] → [B, heads, T, D] (a view where x's layout allows). */
export function toHeads(x: Tensor, heads: number): Tensor {
  const [B, T, C] = x.shape as [number, number, number];
  return transpose(reshape(x, [B, T, heads, C / heads]), 1, 2);
}

/** y [B, heads, T, D] → [B, T, heads·D]. */
export function mergeHeads(y: Tensor): Tensor {
  const [B, H, T, D] = y.shape as [number, number, number, number];
  return reshape(transpose(y, 1, 2), [B, T, H * D]);
}

/** The embedding gather as a recorded primitive (used by embedding and crossEntropy). */
export function gatherRows(table: Tensor, ids: Tensor): Tensor {
  const out = new Tensor(
    kernelFor('gatherRows', [table, ids]).gatherRows(table, ids),
    [ids.size, table.shape[1]!],
    table.dtype,
  );
  return record('gatherRows', out, [table], { ids, rows: table.shape[0]! });
}
