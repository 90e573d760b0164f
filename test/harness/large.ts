/**
 * Large-tensor cases for backends other than js: sizes past the native kernels' threading grain
 * (32768 elements) and vector widths, with odd extents so every vector tail runs. Too big for
 * golden files, so the reference is the js backend (the spec, itself checked against PyTorch on
 * the goldens): the same seeded inputs run on js and on the backend under test, forward and
 * backward, and are compared with the tolerance table.
 */
import * as k from '../../src/index.js';
import type { Tensor } from '../../src/index.js';
import type { ToleranceFamily } from './tolerance.js';

export interface LargeCase {
  id: string;
  tol: Exclude<ToleranceFamily, 'gradient'>;
  /** Fresh inputs from a seeded generator (same values every call). */
  inputs: () => Tensor[];
  fn: (xs: Tensor[]) => Tensor;
}

const R = 257; // rows
const C = 259; // columns: R·C = 66563 > 2 · 32768

function gen(seed: number) {
  const g = new k.Generator(seed);
  return {
    randn: (shape: number[], grad = true, scale = 1): Tensor => {
      const t = k.randn(shape, { generator: g });
      return scale === 1 ? t.requiresGrad_(grad) : k.mul(t, scale).detach().requiresGrad_(grad);
    },
    positive: (shape: number[]): Tensor =>
      k
        .add(k.rand(shape, { generator: g }), 0.25)
        .detach()
        .requiresGrad_(true),
    ints: (shape: number[], n: number): Tensor => k.randint(0, n, shape, { generator: g }),
    mask: (shape: number[]): Tensor => k.lt(k.rand(shape, { generator: g }), 0.5),
  };
}

function unary(id: string, fn: (x: Tensor) => Tensor, positive = false): LargeCase {
  return {
    id,
    tol: 'elementwise',
    inputs: () => {
      const g = gen(id.length);
      return [positive ? g.positive([R, C]) : g.randn([R, C], true, 2)];
    },
    fn: ([x]) => fn(x!),
  };
}

export const LARGE_CASES: readonly LargeCase[] = [
  ...(['neg', 'exp', 'tanh', 'sigmoid', 'relu', 'silu', 'abs'] as const).map((op) =>
    unary(`${op}/large`, (x) => k[op](x)),
  ),
  ...(['log', 'sqrt', 'rsqrt'] as const).map((op) => unary(`${op}/large`, (x) => k[op](x), true)),
  unary('gelu/none/large', (x) => k.gelu(x)),
  unary('gelu/tanh/large', (x) => k.gelu(x, 'tanh')),
  unary('clamp/large', (x) => k.clamp(x, -0.5, 0.75)),
  unary('exp/large_transposed', (x) => k.exp(x.transpose(0, 1))),
  unary('tanh/large_sliced', (x) => k.tanh(x.slice(1, 1, C, 2))),
  ...(['add', 'sub', 'mul', 'maximum', 'minimum'] as const).map((op): LargeCase => ({
    id: `${op}/large_broadcast`,
    tol: 'elementwise',
    inputs: () => {
      const g = gen(3);
      return [g.randn([R, C]), g.randn([C])];
    },
    fn: ([a, b]) => k[op](a!, b!),
  })),
  {
    id: 'div/large_transposed',
    tol: 'elementwise',
    inputs: () => {
      const g = gen(4);
      return [g.randn([R, C]), g.positive([C, R])];
    },
    fn: ([a, b]) => k.div(a!, b!.transpose(0, 1)),
  },
  {
    id: 'pow/large',
    tol: 'elementwise',
    inputs: () => {
      const g = gen(5);
      return [g.positive([R, C]), g.randn([R, C])];
    },
    fn: ([a, b]) => k.pow(a!, b!),
  },
  {
    id: 'where/large',
    tol: 'elementwise',
    inputs: () => {
      const g = gen(6);
      return [g.mask([R, C]), g.randn([R, C]), g.randn([1, C])];
    },
    fn: ([c, a, b]) => k.where(c!, a!, b!),
  },
  {
    id: 'compare/large',
    tol: 'exact',
    inputs: () => {
      const g = gen(7);
      return [g.randn([R, C], false), g.randn([C], false)];
    },
    fn: ([a, b]) => k.concat([k.lt(a!, b!), k.ge(a!, b!), k.eq(a!, a!)], 0).to('f32'),
  },
  ...(
    [
      ['sum', undefined],
      ['sum', 0],
      ['sum', 1],
      ['mean', 1],
      ['max', 0],
      ['max', 1],
      ['min', undefined],
      ['max', undefined],
    ] as const
  ).map(([op, axis]): LargeCase => ({
    id: `${op}/large_axis_${axis ?? 'all'}`,
    tol: 'reduction',
    inputs: () => [gen(8).randn([R, C])],
    fn: ([x]) => k[op](x!, axis),
  })),
  ...(
    [
      [0, false],
      [1, false],
      [1, true],
    ] as const
  ).map(([axis, reverse]): LargeCase => ({
    id: `cumsum/large_axis_${axis}${reverse ? '_reverse' : ''}`,
    tol: 'reduction',
    inputs: () => [gen(10).randn([R, C])],
    fn: ([x]) => k.cumsum(x!, axis, { reverse }),
  })),
  {
    id: 'sum/large_transposed',
    tol: 'reduction',
    inputs: () => [gen(9).randn([R, C])],
    fn: ([x]) => k.sum(x!.transpose(0, 1), 1),
  },
  {
    id: 'var/large',
    tol: 'reduction',
    inputs: () => [gen(10).randn([R, C])],
    fn: ([x]) => k.var(x!, 1),
  },
  {
    id: 'argmax/large',
    tol: 'exact',
    inputs: () => [gen(11).randn([R, C], false)],
    fn: ([x]) => k.concat([k.argmax(x!, 0), k.argmax(x!, 1), k.argmax(x!).reshape([1])], 0).to('f32'),
  },
  {
    id: 'matmul/large',
    tol: 'reduction',
    inputs: () => {
      const g = gen(12);
      return [g.randn([131, 257]), g.randn([257, 67])];
    },
    fn: ([a, b]) => k.matmul(a!, b!),
  },
  {
    id: 'matmul/large_batched_transposed',
    tol: 'reduction',
    inputs: () => {
      const g = gen(13);
      return [g.randn([4, 65, 129]), g.randn([4, 33, 129])];
    },
    fn: ([a, b]) => k.matmul(a!, b!.transpose(1, 2)),
  },
  {
    id: 'softmax/large',
    tol: 'reduction',
    inputs: () => [gen(14).randn([R, C], true, 3)],
    fn: ([x]) => k.softmax(x!, -1),
  },
  {
    id: 'logSoftmax/large_axis0',
    tol: 'reduction',
    inputs: () => [gen(15).randn([R, C], true, 3)],
    fn: ([x]) => k.logSoftmax(x!, 0),
  },
  {
    id: 'crossEntropy/large',
    tol: 'reduction',
    inputs: () => {
      const g = gen(16);
      return [g.randn([1031, 97], true, 2), g.ints([1031], 97)];
    },
    fn: ([x, t]) => k.crossEntropy(x!, t!, { labelSmoothing: 0.1 }),
  },
  {
    id: 'layerNorm/large',
    tol: 'reduction',
    inputs: () => {
      const g = gen(17);
      return [g.randn([R, C]), g.randn([C]), g.randn([C])];
    },
    fn: ([x, w, b]) => k.layerNorm(x!, [C], w, b),
  },
  {
    id: 'rmsNorm/large',
    tol: 'reduction',
    inputs: () => {
      const g = gen(18);
      return [g.randn([R, C]), g.randn([C])];
    },
    fn: ([x, w]) => k.rmsNorm(x!, w),
  },
  {
    id: 'embedding/large',
    tol: 'exact',
    inputs: () => {
      const g = gen(19);
      return [g.ints([4099], 1000), g.randn([1000, 67])];
    },
    fn: ([ids, w]) => k.embedding(ids!, w!),
  },
  {
    id: 'scaledDotProductAttention/large_causal',
    tol: 'reduction',
    inputs: () => {
      const g = gen(20);
      return [g.randn([2, 4, 67, 32]), g.randn([2, 4, 67, 32]), g.randn([2, 4, 67, 32])];
    },
    fn: ([q, kk, v]) => k.scaledDotProductAttention(q!, kk!, v!, { causal: true }),
  },
  {
    id: 'conv2d/large',
    tol: 'reduction',
    inputs: () => {
      const g = gen(21);
      return [g.randn([2, 8, 41, 43]), g.randn([16, 4, 3, 3], true, 0.3), g.randn([16])];
    },
    fn: ([x, w, b]) => k.conv2d(x!, w!, b, { stride: [1, 2], padding: 1, groups: 2 }),
  },
  {
    id: 'maxPool2d/large',
    tol: 'elementwise',
    inputs: () => [gen(22).randn([2, 8, 65, 63])],
    fn: ([x]) => k.maxPool2d(x!, 3, { stride: 2, padding: 1 }),
  },
  {
    id: 'avgPool2d/large',
    tol: 'reduction',
    inputs: () => [gen(23).randn([2, 8, 65, 63])],
    fn: ([x]) => k.avgPool2d(x!, 3, { stride: 2, padding: 1 }),
  },
  {
    id: 'concat_pad/large',
    tol: 'exact',
    inputs: () => {
      const g = gen(24);
      return [g.randn([R, C]), g.randn([C, 3])];
    },
    fn: ([a, b]) => k.pad(k.concat([a!, b!.transpose(0, 1)], 0), [1, 2, 3, 0], -1),
  },
  {
    id: 'triu/large',
    tol: 'exact',
    inputs: () => [gen(25).randn([R, C])],
    fn: ([x]) => k.triu(x!, 3),
  },
];
