/**
 * How a golden case's `op` + `attrs` become a knobs call. One entry per op named in the
 * fixtures; attribute names follow the knobs API. `scalar`/`scalar_pos` insert a JS number
 * among the tensor arguments (see scripts/gen_goldens.py).
 */
import * as k from '../../src/index.js';
import type { Tensor } from '../../src/index.js';

/**
 * Every op the golden fixtures name (`op` of a case). The table below must map each one (the
 * compiler checks), and the suite checks each has golden cases, with gradients where it has them.
 */
export const OP_NAMES = [
  'add',
  'sub',
  'mul',
  'div',
  'neg',
  'pow',
  'exp',
  'log',
  'sqrt',
  'rsqrt',
  'abs',
  'tanh',
  'sigmoid',
  'relu',
  'gelu',
  'silu',
  'maximum',
  'minimum',
  'clamp',
  'where',
  'eq',
  'ne',
  'lt',
  'le',
  'gt',
  'ge',
  'sum',
  'mean',
  'max',
  'min',
  'argmax',
  'var',
  'cumsum',
  'matmul',
  'softmax',
  'logSoftmax',
  'crossEntropy',
  'layerNorm',
  'rmsNorm',
  'embedding',
  'concat',
  'stack',
  'split',
  'pad',
  'triu',
  'tril',
  'scaledDotProductAttention',
  'conv2d',
  'maxPool2d',
  'avgPool2d',
] as const;
export type OpName = (typeof OP_NAMES)[number];

export function isOpName(op: string): op is OpName {
  return (OP_NAMES as readonly string[]).includes(op);
}

export type Attrs = Record<string, unknown>;
export type OpFn = (inputs: Tensor[], attrs: Attrs) => Tensor | Tensor[];

type Arg = Tensor | number;

/** Tensor inputs with the attrs' scalar (if any) spliced in at its position. */
function args(inputs: Tensor[], attrs: Attrs): Arg[] {
  if (attrs.scalar === undefined) return inputs;
  const out: Arg[] = [...inputs];
  out.splice(attrs.scalar_pos as number, 0, attrs.scalar as number);
  return out;
}

const axisOf = (attrs: Attrs): number | number[] | undefined =>
  attrs.axis === null || attrs.axis === undefined ? undefined : (attrs.axis as number | number[]);
const pairOf = (v: unknown): number | [number, number] | undefined =>
  v === undefined ? undefined : (v as number | [number, number]);

function binary(fn: (a: Arg, b: Arg) => Tensor): OpFn {
  return (inputs, attrs) => {
    const [a, b] = args(inputs, attrs);
    return fn(a!, b!);
  };
}

function unary(fn: (x: Tensor) => Tensor): OpFn {
  return ([x]) => fn(x!);
}

function reduction(fn: (x: Tensor, axis: number | number[] | undefined, keepdim: boolean) => Tensor): OpFn {
  return ([x], attrs) => fn(x!, axisOf(attrs), Boolean(attrs.keepdim));
}

/** Takes optional tensor inputs named by boolean attrs, in order. */
function optional(rest: Tensor[], attrs: Attrs, names: string[]): (Tensor | undefined)[] {
  let i = 0;
  return names.map((n) => (attrs[n] ? rest[i++] : undefined));
}

export const OPS: { readonly [Op in OpName]: OpFn } = {
  add: binary((a, b) => k.add(a, b)),
  sub: binary((a, b) => k.sub(a, b)),
  mul: binary((a, b) => k.mul(a, b)),
  div: binary((a, b) => k.div(a, b)),
  pow: binary((a, b) => k.pow(a, b)),
  maximum: binary((a, b) => k.maximum(a, b)),
  minimum: binary((a, b) => k.minimum(a, b)),
  eq: binary((a, b) => k.eq(a, b)),
  ne: binary((a, b) => k.ne(a, b)),
  lt: binary((a, b) => k.lt(a, b)),
  le: binary((a, b) => k.le(a, b)),
  gt: binary((a, b) => k.gt(a, b)),
  ge: binary((a, b) => k.ge(a, b)),
  neg: unary(k.neg),
  exp: unary(k.exp),
  log: unary(k.log),
  sqrt: unary(k.sqrt),
  rsqrt: unary(k.rsqrt),
  abs: unary(k.abs),
  tanh: unary(k.tanh),
  sigmoid: unary(k.sigmoid),
  relu: unary(k.relu),
  silu: unary(k.silu),
  gelu: ([x], attrs) => k.gelu(x!, attrs.approximate as 'none' | 'tanh'),
  clamp: ([x], attrs) => k.clamp(x!, attrs.min as number | undefined, attrs.max as number | undefined),
  where: (inputs, attrs) => {
    const [c, a, b] = args(inputs, attrs);
    return k.where(c as Tensor, a!, b!);
  },
  sum: reduction((x, axis, keepdim) => k.sum(x, axis, keepdim)),
  mean: reduction((x, axis, keepdim) => k.mean(x, axis, keepdim)),
  max: reduction((x, axis, keepdim) => k.max(x, axis, keepdim)),
  min: reduction((x, axis, keepdim) => k.min(x, axis, keepdim)),
  argmax: ([x], attrs) => k.argmax(x!, axisOf(attrs) as number | undefined, Boolean(attrs.keepdim)),
  var: ([x], attrs) =>
    k.var(x!, axisOf(attrs), { correction: attrs.correction as number, keepdim: Boolean(attrs.keepdim) }),
  cumsum: ([x], attrs) => k.cumsum(x!, attrs.axis as number, { reverse: Boolean(attrs.reverse) }),
  matmul: ([a, b]) => k.matmul(a!, b!),
  softmax: ([x], attrs) => k.softmax(x!, attrs.axis as number),
  logSoftmax: ([x], attrs) => k.logSoftmax(x!, attrs.axis as number),
  crossEntropy: ([logits, targets], attrs) =>
    k.crossEntropy(logits!, targets!, {
      ignoreIndex: attrs.ignoreIndex as number,
      labelSmoothing: attrs.labelSmoothing as number,
      reduction: attrs.reduction as 'mean' | 'sum' | 'none',
    }),
  layerNorm: ([x, ...rest], attrs) => {
    const [w, b] = optional(rest, attrs, ['weight', 'bias']);
    return k.layerNorm(x!, attrs.normalizedShape as number[], w, b, attrs.eps as number);
  },
  rmsNorm: ([x, ...rest], attrs) => {
    const [w] = optional(rest, attrs, ['weight']);
    return k.rmsNorm(x!, w, attrs.eps as number);
  },
  embedding: ([ids, w]) => k.embedding(ids!, w!),
  scaledDotProductAttention: ([q, kk, v], attrs) => {
    const opts: { causal: boolean; scale?: number } = { causal: Boolean(attrs.causal) };
    if (attrs.scale !== undefined) opts.scale = attrs.scale as number;
    return k.scaledDotProductAttention(q!, kk!, v!, opts);
  },
  concat: (inputs, attrs) => k.concat(inputs, attrs.axis as number),
  stack: (inputs, attrs) => k.stack(inputs, attrs.axis as number),
  split: ([x], attrs) => k.split(x!, attrs.sizes as number | number[], attrs.axis as number),
  pad: ([x], attrs) => k.pad(x!, attrs.pads as number[], attrs.value as number),
  triu: ([x], attrs) => k.triu(x!, attrs.diagonal as number),
  tril: ([x], attrs) => k.tril(x!, attrs.diagonal as number),
  conv2d: ([x, w, ...rest], attrs) => {
    const [bias] = optional(rest, attrs, ['bias']);
    const opts: k.Conv2dOptions = {};
    if (attrs.stride !== undefined) opts.stride = pairOf(attrs.stride)!;
    if (attrs.padding !== undefined) opts.padding = pairOf(attrs.padding)!;
    if (attrs.dilation !== undefined) opts.dilation = pairOf(attrs.dilation)!;
    if (attrs.groups !== undefined) opts.groups = attrs.groups as number;
    return k.conv2d(x!, w!, bias, opts);
  },
  maxPool2d: ([x], attrs) => k.maxPool2d(x!, pairOf(attrs.kernelSize)!, poolOpts(attrs)),
  avgPool2d: ([x], attrs) => k.avgPool2d(x!, pairOf(attrs.kernelSize)!, poolOpts(attrs)),
};

function poolOpts(attrs: Attrs): k.Pool2dOptions {
  const opts: k.Pool2dOptions = {};
  if (attrs.stride !== undefined) opts.stride = pairOf(attrs.stride)!;
  if (attrs.padding !== undefined) opts.padding = pairOf(attrs.padding)!;
  return opts;
}

/** Ops with no gradient (integer/bool results). Every other required op must have gradient goldens. */
export const NON_DIFFERENTIABLE: ReadonlySet<OpName> = new Set<OpName>(['eq', 'ne', 'lt', 'le', 'gt', 'ge', 'argmax']);
