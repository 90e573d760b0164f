/**
 * THE gradient table: for every primitive, how the gradient of the output (g) becomes the
 * gradients of its inputs. `GradContexts` names what each primitive saves; the mapped type of
 * `GRADIENTS` makes the compiler reject a primitive without a rule.
 *
 * Rules run with recording off (backward() wraps them in noGrad) and return one entry per
 * input, null where no gradient flows. Broadcasting is undone by the `expand` rule, so binary
 * rules see operands of the output's shape.
 */
import type { ActivationOp, Conv2dParams, Pool2dParams, QuantizedMatrix } from '../backends/backend.js';
import { fusedFor, kernelFor } from '../backends/dispatch.js';
import { GELU_TANH_COEF, SQRT_2_OVER_PI } from '../backends/js/math.js';
import type { DType } from '../dtype.js';
import type { Tensor } from '../tensor.js';
import { Tensor as TensorClass } from '../tensor.js';
import * as ops from '../ops/index.js';
import { loraLinearGrad } from '../ops/lora-linear.js';
import type { Node } from './tape.js';

type None = Record<string, never>;

export interface GradContexts {
  add: None;
  sub: None;
  mul: None;
  div: None;
  pow: None;
  maximum: None;
  minimum: None;
  neg: None;
  exp: None;
  log: None;
  sqrt: None;
  rsqrt: None;
  abs: None;
  tanh: None;
  sigmoid: None;
  relu: None;
  gelu: None;
  gelu_tanh: None;
  silu: None;
  where: { cond: Tensor };
  sum: { axes: readonly number[] };
  max: { axes: readonly number[] };
  min: { axes: readonly number[] };
  cumsum: { axis: number; reverse: boolean };
  matmul: None;
  reshape: { xShape: readonly number[] };
  permute: { dims: readonly number[] };
  slice: { xShape: readonly number[]; axis: number; start: number; step: number };
  expand: { xShape: readonly number[] };
  contiguous: None;
  cast: { from: DType };
  gatherRows: { ids: Tensor; rows: number };
  concat: { axis: number; sizes: readonly number[] };
  pad: { starts: readonly number[] };
  conv2d: { params: Conv2dParams };
  maxPool2d: { indices: Tensor; xShape: readonly number[] };
  avgPool2d: { xShape: readonly number[]; params: Pool2dParams };
  // Fused composites (recorded only when a backend's fused kernel ran; see src/ops/nn.ts).
  softmax: None;
  logSoftmax: None;
  /** mean and rstd per row: x's shape without the C trailing normalised elements. */
  layerNorm: { C: number; eps: number; mean: Tensor; rstd: Tensor };
  rmsNorm: { C: number; rstd: Tensor };
  /** d loss / d logits, computed with the loss (the loss is a scalar: g only scales it). */
  crossEntropy: { dlogits: Tensor };
  /** lse: log Σ exp(scores) per query row, [..., T]. */
  causalAttention: { scale: number; lse: Tensor };
  /** lse: [B, heads, T]. */
  causalAttentionQKV: { heads: number; scale: number; lse: Tensor };
  /** x · Wᵀ with W in ggml blocks (src/ops/quantized.ts); W is frozen, only x gets a gradient. */
  quantizedMatmul: { w: QuantizedMatrix };
  /** act(x·w + b) (src/ops/linear.ts); h = x·w + b, kept when there is an activation. */
  linear: { act: ActivationOp | null; h: Tensor | null };
  /** The fused LoRA linear (src/ops/lora-linear.ts); t = scaling · h·Aᵀ [M, r]. */
  loraLinear: { scaling: number; quantized: QuantizedMatrix | null; t: Tensor };
  /** relu(maxPool2d(x) + bias) (src/ops/conv.ts); the rule reads the output for ReLU's mask. */
  maxPoolBiasRelu: { indices: Tensor; xShape: readonly number[] };
}

export type PrimitiveName = keyof GradContexts;

type Grads = readonly (Tensor | null)[];
type Rule<K extends PrimitiveName> = (
  g: Tensor,
  inputs: readonly (Tensor | null)[],
  ctx: GradContexts[K],
  out: Tensor,
) => Grads;

/**
 * An activation's rule: the composite `grad(g, x, out)` written from primitives (the spec), or the
 * backend's fused one-pass kernel when it has one for these tensors (test/fused.test.ts holds the
 * two together). MLP blocks spend a training step's elementwise time here, hence the fusion.
 */
function activationRule(op: ActivationOp): Rule<ActivationOp> {
  return (g, [x]) => {
    const fused = fusedFor('activationBackward', [x!, g]);
    return [
      fused ? new TensorClass(fused.activationBackward(op, x!, g), x!.shape, x!.dtype) : ACTIVATION_GRADS[op](g, x!),
    ];
  };
}

const INV_SQRT_2PI = 0.3989422804014327;

/**
 * gelu'(x) = Φ(x) + x·φ(x). Φ(x) = gelu(x)/x (gelu(0)/0 → Φ(0) = ½), which spares erf a primitive
 * of its own. gelu(x) is recomputed rather than kept from the forward (the tape holds only x).
 */
function geluGrad(g: Tensor, x: Tensor): Tensor {
  const cdf = ops.where(ops.eq(x, 0), 0.5, ops.div(ops.gelu(x), x));
  const pdf = ops.mul(ops.exp(ops.mul(ops.mul(x, x), -0.5)), INV_SQRT_2PI);
  return ops.mul(g, ops.add(cdf, ops.mul(x, pdf)));
}

/** gelu_tanh(x) = ½x(1 + t), t = tanh(√(2/π)(x + κx³)): ½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3κx²) (PyTorch's form). */
function geluTanhGrad(g: Tensor, x: Tensor): Tensor {
  const x2 = ops.mul(x, x);
  const t = ops.tanh(ops.mul(ops.add(x, ops.mul(ops.mul(x2, x), GELU_TANH_COEF)), SQRT_2_OVER_PI));
  const innerGrad = ops.mul(ops.add(ops.mul(x2, 3 * GELU_TANH_COEF), 1), SQRT_2_OVER_PI);
  const right = ops.mul(ops.mul(ops.mul(x, 0.5), ops.sub(1, ops.mul(t, t))), innerGrad);
  return ops.mul(g, ops.add(ops.mul(ops.add(t, 1), 0.5), right));
}

/** silu'(x) = σ(x)·(1 + x·(1 − σ(x))). */
function siluGrad(g: Tensor, x: Tensor): Tensor {
  const s = ops.sigmoid(x);
  return ops.mul(g, ops.mul(s, ops.add(ops.mul(x, ops.sub(1, s)), 1)));
}

/** g · f'(x) from primitives, for out = f(x): the spec of every fused activation backward. */
const ACTIVATION_GRADS: Readonly<Record<ActivationOp, (g: Tensor, x: Tensor) => Tensor>> = {
  // relu'(0) = 0; where, not g·mask, so an infinite g does not become NaN where the mask is 0.
  relu: (g, x) => ops.where(ops.le(x, 0), 0, g),
  gelu: geluGrad,
  gelu_tanh: geluTanhGrad,
  silu: siluGrad,
};

/** The gradient share of `mine` in an elementwise max/min: 1 where it won, ½ on ties (PyTorch). */
function extremumShare(mine: Tensor, other: Tensor, wins: (a: Tensor, b: Tensor) => Tensor): Tensor {
  const won = ops.cast(wins(mine, other), mine.dtype);
  const tied = ops.cast(ops.eq(mine, other), mine.dtype);
  return ops.add(won, ops.mul(tied, 0.5));
}

/** A zero tensor of `shape` with `g` written into the region a view (shape, strides, offset) selects. */
function scatterIntoZeros(g: Tensor, shape: readonly number[], region: (z: Tensor) => Tensor): Tensor {
  const z = ops.zeros(shape, { dtype: g.dtype });
  if (g.size > 0) ops.assignInto(region(z), g);
  return z;
}

/** For reductions: broadcast a keepdim-shaped tensor back to the input's shape. */
const back = (t: Tensor, x: Tensor): Tensor => ops.expand(t, x.shape);

const GRADIENTS: { readonly [K in PrimitiveName]: Rule<K> } = {
  add: (g) => [g, g],
  sub: (g) => [g, ops.neg(g)],
  // An input that needs no gradient (a frozen weight, a constant) gets none computed: null.
  mul: (g, [a, b]) => [a!.requiresGrad ? ops.mul(g, b!) : null, b!.requiresGrad ? ops.mul(g, a!) : null],
  div: (g, [a, b]) => [
    a!.requiresGrad ? ops.div(g, b!) : null,
    b!.requiresGrad ? ops.neg(ops.div(ops.mul(g, a!), ops.mul(b!, b!))) : null,
  ],
  pow: (g, [a, b], _ctx, out) => {
    // d/da a^b = b·a^(b−1), taken as 0 where b = 0 (PyTorch masks it so 0^0 does not give NaN).
    const da = ops.where(ops.eq(b!, 0), 0, ops.mul(b!, ops.pow(a!, ops.sub(b!, 1))));
    // d/db a^b = a^b·ln a, taken as 0 where a = 0 and b ≥ 0.
    const db = b!.requiresGrad
      ? ops.where(ops.logicalAnd(ops.eq(a!, 0), ops.ge(b!, 0)), 0, ops.mul(out, ops.log(a!)))
      : null;
    return [ops.mul(g, da), db && ops.mul(g, db)];
  },
  maximum: (g, [a, b]) => [ops.mul(g, extremumShare(a!, b!, ops.gt)), ops.mul(g, extremumShare(b!, a!, ops.gt))],
  minimum: (g, [a, b]) => [ops.mul(g, extremumShare(a!, b!, ops.lt)), ops.mul(g, extremumShare(b!, a!, ops.lt))],
  neg: (g) => [ops.neg(g)],
  exp: (g, _i, _c, out) => [ops.mul(g, out)],
  // The unary rules follow PyTorch's derivatives.yaml, from the output where it has the answer.
  log: (g, [x]) => [ops.div(g, x!)],
  sqrt: (g, _i, _c, out) => [ops.div(g, ops.mul(out, 2))],
  rsqrt: (g, _i, _c, out) => [ops.mul(ops.mul(g, -0.5), ops.mul(out, ops.mul(out, out)))],
  abs: (g, [x]) => [ops.mul(g, ops.sign(x!))],
  tanh: (g, _i, _c, out) => [ops.mul(g, ops.sub(1, ops.mul(out, out)))],
  sigmoid: (g, _i, _c, out) => [ops.mul(g, ops.mul(ops.sub(1, out), out))],
  relu: activationRule('relu'),
  gelu: activationRule('gelu'),
  gelu_tanh: activationRule('gelu_tanh'),
  silu: activationRule('silu'),
  where: (g, _i, { cond }) => [ops.where(cond, g, 0), ops.where(cond, 0, g)],
  sum: (g, [x]) => [back(g, x!)],
  max: (g, [x], { axes }, out) => extremumReduceGrad(g, x!, out, axes),
  min: (g, [x], { axes }, out) => extremumReduceGrad(g, x!, out, axes),
  // Each x feeds every output at or after it (before it, reversed): the running sum the other way.
  cumsum: (g, _i, { axis, reverse }) => [ops.cumsum(g, axis, { reverse: !reverse })],
  matmul: (g, [a, b]) => [
    a!.requiresGrad ? ops.batchedMatmul(g, ops.transpose(b!, -2, -1)) : null,
    b!.requiresGrad ? ops.matmulGradB(a!, b!, g) : null,
  ],
  reshape: (g, _i, { xShape }) => [ops.reshape(g, xShape)],
  permute: (g, _i, { dims }) => {
    const inverse = new Array<number>(dims.length);
    dims.forEach((d, i) => (inverse[d] = i));
    return [ops.permute(g, inverse)];
  },
  slice: (g, _i, { xShape, axis, start, step }) => [
    scatterIntoZeros(g, xShape, (z) => ops.slice(z, axis, start, start + (g.shape[axis]! - 1) * step + 1, step)),
  ],
  expand: (g, _i, { xShape }) => [ops.sumToShape(g, xShape)],
  contiguous: (g) => [g],
  cast: (g, _i, { from }) => [ops.cast(g, from)],
  gatherRows: (g, [table], { ids, rows }) => [
    new TensorClass(
      kernelFor('scatterAddRows', [g, ids]).scatterAddRows(g, ids, rows),
      [rows, table!.shape[1]!],
      g.dtype,
    ),
  ],
  concat: (g, _i, { axis, sizes }) => ops.split(g, sizes, axis),
  pad: (g, [x], { starts }) => [starts.reduce((t, s, axis) => ops.slice(t, axis, s, s + x!.shape[axis]!), g)],
  conv2d: (g, [x, w], { params }) => [
    x!.requiresGrad
      ? new TensorClass(
          kernelFor('conv2dBackwardInput', [g, w!]).conv2dBackwardInput(g, w!, x!.shape, params),
          x!.shape,
          x!.dtype,
        )
      : null,
    w!.requiresGrad
      ? new TensorClass(
          kernelFor('conv2dBackwardWeight', [g, x!]).conv2dBackwardWeight(g, x!, w!.shape, params),
          w!.shape,
          w!.dtype,
        )
      : null,
  ],
  maxPool2d: (g, _i, { indices, xShape }) => [
    new TensorClass(
      kernelFor('maxPool2dBackward', [g, indices]).maxPool2dBackward(g, indices, xShape),
      xShape,
      g.dtype,
    ),
  ],
  avgPool2d: (g, _i, { xShape, params }) => [
    new TensorClass(kernelFor('avgPool2dBackward', [g]).avgPool2dBackward(g, xShape, params), xShape, g.dtype),
  ],
  softmax: softmaxRule(false),
  logSoftmax: softmaxRule(true),
  layerNorm: (g, inputs, ctx) => layerNormGrad(g, inputs, ctx),
  rmsNorm: rmsNormGrad,
  crossEntropy: (g, _i, { dlogits }) => [ops.mul(dlogits, g)],
  causalAttention: causalAttentionGrad,
  causalAttentionQKV: causalAttentionQKVGrad,
  quantizedMatmul: (g, _i, { w }) => [ops.quantizedMatmulInputGrad(g, w)],
  linear: linearGrad,
  loraLinear: loraLinearGrad,
  maxPoolBiasRelu: maxPoolBiasReluGrad,
};

/*
 * Rules of the fused composites. Each calls the backend's fused backward when the current backend
 * has it for these tensors; otherwise (the backend changed since the forward) it computes the same
 * gradient from primitives, by the formula the composite's own tape would give.
 */

function softmaxRule(log: boolean): Rule<'softmax' | 'logSoftmax'> {
  return (g, [x], _ctx, y) => {
    const fused = fusedFor('softmax', [y, g]);
    if (fused) return [new TensorClass(fused.softmaxBackward(y, g, log), x!.shape, x!.dtype)];
    // softmax: y ⊙ (g − Σ g⊙y); log-softmax: g − softmax ⊙ Σ g (along the last axis).
    return log
      ? [ops.sub(g, ops.mul(ops.exp(y), ops.sum(g, -1, true)))]
      : [ops.mul(y, ops.sub(g, ops.sum(ops.mul(g, y), -1, true)))];
  };
}

/** x, g as [rows, C] and a per-row statistic as [rows, 1], for the fallback formulas. */
function asRows(t: Tensor, C: number): Tensor {
  return ops.reshape(t, [C === 0 ? 0 : t.size / C, C]);
}

/** `collected`, when given, is added into dx (see layerNormGradientInto). */
function layerNormGrad(
  g: Tensor,
  [x, w, b]: readonly (Tensor | null)[],
  { C, mean, rstd }: GradContexts['layerNorm'],
  collected?: Tensor,
): Grads {
  const wanted = { x: x!.requiresGrad, weight: !!w?.requiresGrad, bias: !!b?.requiresGrad };
  const fused = fusedFor('layerNorm', [x!, g, mean, rstd, ...(w ? [w] : []), ...(collected ? [collected] : [])]);
  if (fused) {
    const r = fused.layerNormBackward(x!, C, w, mean, rstd, g, wanted, collected);
    return [
      r.dx && new TensorClass(r.dx, x!.shape, x!.dtype),
      r.dweight && new TensorClass(r.dweight, w!.shape, w!.dtype),
      r.dbias && new TensorClass(r.dbias, b!.shape, b!.dtype),
    ];
  }
  // x̂ = (x − μ)·r; dx = r·(dx̂ − mean(dx̂) − x̂·mean(dx̂ ⊙ x̂)) with dx̂ = g ⊙ w; dw = Σrows g ⊙ x̂; db = Σrows g.
  const g2 = asRows(g, C);
  const rs = ops.reshape(rstd, [rstd.size, 1]);
  const xhat = ops.mul(ops.sub(asRows(x!, C), ops.reshape(mean, [mean.size, 1])), rs);
  const dxhat = w ? ops.mul(g2, ops.reshape(w, [C])) : g2;
  const own = wanted.x
    ? ops.reshape(
        ops.mul(
          rs,
          ops.sub(ops.sub(dxhat, ops.mean(dxhat, -1, true)), ops.mul(xhat, ops.mean(ops.mul(dxhat, xhat), -1, true))),
        ),
        x!.shape,
      )
    : null;
  const dx = own && collected ? ops.add(collected, own) : own;
  return [
    dx,
    wanted.weight ? ops.reshape(ops.sum(ops.mul(g2, xhat), 0), w!.shape) : null,
    wanted.bias ? ops.reshape(ops.sum(g2, 0), b!.shape) : null,
  ];
}

function rmsNormGrad(g: Tensor, [x, w]: readonly (Tensor | null)[], { C, rstd }: GradContexts['rmsNorm']): Grads {
  const wanted = { x: x!.requiresGrad, weight: !!w?.requiresGrad, bias: false };
  const fused = fusedFor('rmsNorm', [x!, g, rstd, ...(w ? [w] : [])]);
  if (fused) {
    const r = fused.rmsNormBackward(x!, C, w, rstd, g, wanted);
    return [
      r.dx && new TensorClass(r.dx, x!.shape, x!.dtype),
      r.dweight && new TensorClass(r.dweight, w!.shape, w!.dtype),
    ];
  }
  // x̂ = x·r; dx = r·(dx̂ − x̂·mean(dx̂ ⊙ x̂)) with dx̂ = g ⊙ w; dw = Σrows g ⊙ x̂.
  const g2 = asRows(g, C);
  const xhat = ops.mul(asRows(x!, C), ops.reshape(rstd, [rstd.size, 1]));
  const dxhat = w ? ops.mul(g2, w) : g2;
  const rs = ops.reshape(rstd, [rstd.size, 1]);
  return [
    wanted.x
      ? ops.reshape(ops.mul(rs, ops.sub(dxhat, ops.mul(xhat, ops.mean(ops.mul(dxhat, xhat), -1, true)))), x!.shape)
      : null,
    wanted.weight ? ops.sum(ops.mul(g2, xhat), 0) : null,
  ];
}

function causalAttentionGrad(
  g: Tensor,
  [q, k, v]: readonly (Tensor | null)[],
  { scale, lse }: GradContexts['causalAttention'],
  out: Tensor,
): Grads {
  const fused = fusedFor('causalAttention', [q!, k!, v!, out, lse, g]);
  if (fused) {
    const r = fused.causalAttentionBackward(q!, k!, v!, out, lse, g, scale);
    return [
      new TensorClass(r.dq, q!.shape, q!.dtype),
      new TensorClass(r.dk, k!.shape, k!.dtype),
      new TensorClass(r.dv, v!.shape, v!.dtype),
    ];
  }
  // P = softmax(q·kᵀ·scale, masked causally); dv = Pᵀ·g; dS = P ⊙ (g·vᵀ − Σ g ⊙ out) · scale; dq = dS·k;
  // dk = dSᵀ·q. (P is recomputed from the scores, not from lse, so it is the composite's P exactly.)
  const T = q!.shape[q!.rank - 2]!;
  const scores = ops.mul(ops.matmul(q!, ops.transpose(k!, -2, -1)), scale);
  const p = ops.softmax(ops.where(ops.causalMask(T, T), scores, -Infinity), -1);
  const dv = ops.matmul(ops.transpose(p, -2, -1), g);
  const rowDot = ops.sum(ops.mul(g, out), -1, true);
  const ds = ops.mul(ops.mul(p, ops.sub(ops.matmul(g, ops.transpose(v!, -2, -1)), rowDot)), scale);
  return [ops.matmul(ds, k!), ops.matmul(ops.transpose(ds, -2, -1), q!), dv];
}

/** The per-head rule on head views of qkv, g and out; dq, dk, dv side by side as qkv. */
function causalAttentionQKVGrad(
  g: Tensor,
  [qkv]: readonly (Tensor | null)[],
  { heads, scale, lse }: GradContexts['causalAttentionQKV'],
  out: Tensor,
): Grads {
  const fused = fusedFor('causalAttentionQKV', [qkv!, out, lse, g]);
  if (fused) {
    const dqkv = fused.causalAttentionQKVBackward(qkv!, out, lse, g, heads, scale);
    return [new TensorClass(dqkv, qkv!.shape, qkv!.dtype)];
  }
  const grads = causalAttentionGrad(
    ops.toHeads(g, heads),
    ops.splitHeads(qkv!, heads),
    { scale, lse },
    ops.toHeads(out, heads),
  );
  return [
    ops.concat(
      grads.map((d) => ops.mergeHeads(d!)),
      2,
    ),
  ];
}

/**
 * act(x·w + b) for x [M, K], w [K, N]: dh = g ⊙ act'(h) and db = Σrows dh in one pass when the
 * backend has it (else from primitives, as the composite's tape would), then dx = dh·wᵀ and
 * dw = xᵀ·dh as matmul's rule computes them.
 */
function linearGrad(g: Tensor, [x, w, b]: readonly (Tensor | null)[], { act, h }: GradContexts['linear']): Grads {
  const wantBias = !!b?.requiresGrad;
  let dh = g;
  let db: Tensor | null = null;
  const fused = act || wantBias ? fusedFor('biasActivation', [g, ...(h ? [h] : [])]) : null;
  if (fused) {
    const r = fused.biasActivationBackward(g, h, act, wantBias);
    if (r.dh) dh = new TensorClass(r.dh, g.shape, g.dtype);
    if (r.db) db = new TensorClass(r.db, b!.shape, b!.dtype);
  } else {
    if (act) dh = ACTIVATION_GRADS[act](g, h!);
    if (wantBias) db = ops.sum(dh, 0);
  }
  if (x!.requiresGrad && w!.requiresGrad) return [...ops.matmulInputAndWeightGrads(x!, w!, dh), db];
  return [
    x!.requiresGrad ? ops.batchedMatmul(dh, ops.transpose(w!, -2, -1)) : null,
    w!.requiresGrad ? ops.matmulGradB(x!, w!, dh) : null,
    db,
  ];
}

/* ReLU's mask from the output (out > 0 exactly where the pre-activation is, NaN passing as in
   relu's rule), then the pool's backward and the bias's sum; the composite when the backend now
   current has no fused kernel. */
function maxPoolBiasReluGrad(
  g: Tensor,
  [, b]: readonly (Tensor | null)[],
  { indices, xShape }: GradContexts['maxPoolBiasRelu'],
  out: Tensor,
): Grads {
  const wantBias = !!b?.requiresGrad;
  const fused = fusedFor('maxPoolBiasRelu', [g, out]);
  if (fused) {
    const r = fused.maxPoolBiasReluBackward(g, out, indices, xShape, wantBias);
    return [new TensorClass(r.dx, xShape, g.dtype), r.db ? new TensorClass(r.db, b!.shape, b!.dtype) : null];
  }
  const masked = ACTIVATION_GRADS.relu(g, out);
  const dx = kernelFor('maxPool2dBackward', [masked, indices]).maxPool2dBackward(masked, indices, xShape);
  return [new TensorClass(dx, xShape, g.dtype), wantBias ? ops.sum(masked, [0, 2, 3]) : null];
}

/** amax/amin gradient: g flows to the elements equal to the result, split evenly among ties. */
function extremumReduceGrad(g: Tensor, x: Tensor, out: Tensor, axes: readonly number[]): Grads {
  const hits = ops.cast(ops.eq(x, back(out, x)), x.dtype);
  const count = ops.sum(hits, axes, true);
  return [ops.mul(back(ops.div(g, count), x), hits)];
}

/** The input gradients of one node; `node.out` is there for the rules that read the output (./retention.ts). */
export function gradientOf(node: Node, g: Tensor): Grads {
  const rule = GRADIENTS[node.op] as Rule<PrimitiveName>;
  return rule(g, node.inputs, node.ctx as never, node.out!);
}

/**
 * A layer norm's input gradients with `collected` (the gradient its input x already has, e.g. the
 * residual stream's) added into dx: one pass with the fused backward instead of the norm's
 * backward and then an add; the same values as `collected + dx`.
 */
export function layerNormGradientInto(node: Node & { op: 'layerNorm' }, g: Tensor, collected: Tensor): Grads {
  return layerNormGrad(g, node.inputs, node.ctx, collected);
}
