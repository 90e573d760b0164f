/**
 * The native backend against the js reference, kernel by kernel, on contiguous, transposed,
 * sliced (offset + step) and broadcast (stride-0) views, including empty and one-element dims;
 * the fused kernels (not in the Backend interface yet) against naive loops written here.
 * Skipped when the addon is not built, unless KNOBS_REQUIRE_NATIVE=1.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DType, Storage } from '../src/dtype.js';
import { ACTIVATION_OPS, UNARY_OPS, type BinaryOp, type KernelView } from '../src/backends/backend.js';
import { jsBackend } from '../src/backends/js/index.js';
import { loadNativeAddon, loadNativeBackend, nativeLoadError } from '../src/backends/native/index.js';

const native = loadNativeBackend();
const addon = native ? loadNativeAddon() : null;
const skip = native ? false : `native backend not built: ${nativeLoadError()}`;
if (!native && process.env.KNOBS_REQUIRE_NATIVE === '1')
  throw new Error(`KNOBS_REQUIRE_NATIVE=1 but ${nativeLoadError()}`);

let seed = 12345;
function rand(): number {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return seed / 2 ** 32;
}
function randn(): number {
  return (rand() + rand() + rand() - 1.5) * 2;
}

type Layout = 'contiguous' | 'transposed' | 'sliced' | 'broadcast';
const LAYOUTS: Layout[] = ['contiguous', 'transposed', 'sliced', 'broadcast'];

/** A view of `shape` in the given layout over fresh random storage (padded so offsets matter). */
function makeView(shape: number[], layout: Layout, dtype: DType = 'f32', fill: () => number = randn): KernelView {
  const r = shape.length;
  const strides = new Array<number>(r).fill(0);
  let offset = 0;
  let size = 1;
  if (layout === 'transposed') {
    // column-major: the first axis varies fastest
    for (let i = 0; i < r; i++) {
      strides[i] = size;
      size *= shape[i]!;
    }
  } else {
    const step = layout === 'sliced' ? 2 : 1;
    for (let i = r - 1; i >= 0; i--) {
      const zero = layout === 'broadcast' && i % 2 === 0 && r > 1;
      strides[i] = zero ? 0 : size * step;
      if (!zero) size *= shape[i]! * step;
    }
    if (layout === 'sliced') offset = 3;
  }
  const n = size + offset + 2;
  const storage = dtype === 'f32' ? new Float32Array(n) : dtype === 'i32' ? new Int32Array(n) : new Uint8Array(n);
  for (let i = 0; i < n; i++) storage[i] = dtype === 'bool' ? (rand() < 0.5 ? 1 : 0) : fill();
  return { dtype, storage, shape, strides, offset };
}

function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  for (let i = shape.length - 1, s = 1; i >= 0; s *= shape[i]!, i--) strides[i] = s;
  return strides;
}

function close(actual: Storage, expected: Storage, tol = 1e-5, what = ''): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const a = Number(actual[i]);
    const e = Number(expected[i]);
    if (Number.isNaN(e)) {
      assert.ok(Number.isNaN(a), `${what}[${i}]: expected NaN, got ${a}`);
      continue;
    }
    if (a === e) continue;
    assert.ok(Math.abs(a - e) <= tol * (1 + Math.abs(e)), `${what}[${i}]: ${a} vs ${e}`);
  }
}

const SHAPES: number[][] = [[], [1], [0], [7], [3, 5], [2, 0, 3], [1, 1, 1], [2, 3, 4], [4, 1, 6], [33, 17]];

describe('native backend vs js reference', { skip }, () => {
  // The values of the fused activation gradients are checked against their composite rules in
  // test/fused.test.ts; here, that every layout gives what the dense copy of the same view gives.
  it('activationBackward, every op and layout', () => {
    for (const op of ACTIVATION_OPS) {
      for (const shape of SHAPES) {
        for (const layout of LAYOUTS) {
          const x = makeView(shape, layout);
          const g = makeView(shape, layout === 'broadcast' ? 'contiguous' : layout);
          const dense = (v: KernelView): KernelView => ({
            ...v,
            storage: jsBackend.cast(v, 'f32'),
            strides: contiguousStrides(shape),
            offset: 0,
          });
          close(
            native!.fused!.activationBackward(op, x, g),
            native!.fused!.activationBackward(op, dense(x), dense(g)),
            0,
            `${op}' ${layout} [${shape}]`,
          );
        }
      }
    }
  });

  it('unary, every op and layout', () => {
    for (const op of UNARY_OPS) {
      for (const shape of SHAPES) {
        for (const layout of LAYOUTS) {
          const positive = op === 'log' || op === 'sqrt' || op === 'rsqrt';
          const x = makeView(shape, layout, 'f32', positive ? () => 0.1 + rand() * 3 : () => randn() * 3);
          close(native!.unary(op, x), jsBackend.unary(op, x), 2e-6, `${op} ${layout} [${shape}]`);
        }
      }
    }
  });

  it('unary edge values: NaN, ±Inf, ±0, large', () => {
    const vals = Float32Array.of(
      NaN,
      Infinity,
      -Infinity,
      0,
      -0,
      1e30,
      -1e30,
      88.5,
      -88.5,
      88.72,
      -87.5,
      -95,
      100,
      -100,
      -104,
      1e-30,
    );
    const x: KernelView = { dtype: 'f32', storage: vals, shape: [vals.length], strides: [1], offset: 0 };
    for (const op of UNARY_OPS) {
      close(native!.unary(op, x), jsBackend.unary(op, x), 2e-6, op);
    }
  });

  it('binary arithmetic and compare, strided and broadcast', () => {
    const ops: BinaryOp[] = [
      'add',
      'sub',
      'mul',
      'div',
      'pow',
      'maximum',
      'minimum',
      'eq',
      'ne',
      'lt',
      'le',
      'gt',
      'ge',
    ];
    for (const op of ops) {
      for (const shape of SHAPES) {
        for (const la of LAYOUTS) {
          for (const lb of LAYOUTS) {
            const a = makeView(shape, la, 'f32', () => (op === 'pow' ? rand() * 2 : Math.round(randn() * 2)));
            const b = makeView(shape, lb, 'f32', () => Math.round(randn() * 2));
            close(native!.binary(op, a, b), jsBackend.binary(op, a, b), 1e-6, `${op} ${la}/${lb} [${shape}]`);
          }
        }
      }
    }
    // row and scalar broadcast fast paths
    const a = makeView([64, 300], 'contiguous');
    const row: KernelView = { ...makeView([300], 'contiguous'), shape: [64, 300], strides: [0, 1] };
    const scalar: KernelView = {
      dtype: 'f32',
      storage: Float32Array.of(NaN, 2.5),
      shape: [64, 300],
      strides: [0, 0],
      offset: 1,
    };
    close(native!.binary('add', a, row), jsBackend.binary('add', a, row), 1e-6, 'row broadcast');
    close(native!.binary('mul', scalar, a), jsBackend.binary('mul', scalar, a), 1e-6, 'scalar broadcast');
    const nan = makeView([5], 'contiguous', 'f32', () => NaN);
    const five = { ...a, shape: [5], strides: [1] };
    close(native!.binary('maximum', nan, five), jsBackend.binary('maximum', nan, five), 0, 'NaN max');
  });

  it('where, assign, cast', () => {
    for (const shape of SHAPES) {
      for (const layout of LAYOUTS) {
        const c = makeView(shape, layout, 'bool');
        const a = makeView(shape, 'sliced');
        const b = makeView(shape, layout);
        close(native!.where(c, a, b), jsBackend.where(c, a, b), 0, `where ${layout}`);
        const dst1 = makeView(shape, 'sliced');
        const dst2: KernelView = { ...dst1, storage: dst1.storage.slice() };
        native!.assign(dst1, b);
        jsBackend.assign(dst2, b);
        close(dst1.storage, dst2.storage, 0, `assign ${layout}`);
        for (const to of ['f64', 'i32', 'u8', 'i8', 'bool', 'f32'] as DType[]) {
          const x = makeView(shape, layout, 'f32', () => randn() * 300);
          close(native!.cast(x, to), jsBackend.cast(x, to), 0, `cast f32→${to} ${layout}`);
        }
      }
    }
    const odd: KernelView = {
      dtype: 'f32',
      storage: Float32Array.of(NaN, Infinity, -Infinity, 3e9, -2.7, 255.9, -129),
      shape: [7],
      strides: [1],
      offset: 0,
    };
    for (const to of ['i32', 'u8', 'i8', 'bool'] as DType[])
      close(native!.cast(odd, to), jsBackend.cast(odd, to), 0, `cast odd→${to}`);
  });

  it('reduce over every axis subset; argReduce along each axis', () => {
    for (const shape of [[], [5], [0, 3], [3, 0], [2, 3, 4], [1, 7, 1], [6, 5, 4, 3], [300, 257]]) {
      for (const layout of LAYOUTS) {
        const x = makeView(shape, layout);
        const r = shape.length;
        for (let mask = 0; mask < 1 << r; mask++) {
          const axes = [...Array(r).keys()].filter((i) => (mask >> i) & 1);
          for (const op of ['sum', 'max', 'min'] as const) {
            if (op !== 'sum' && axes.some((a) => shape[a] === 0)) continue;
            close(
              native!.reduce(op, x, axes),
              jsBackend.reduce(op, x, axes),
              1e-5,
              `${op} [${shape}] axes ${axes} ${layout}`,
            );
          }
        }
        for (let axis = 0; axis < r; axis++) {
          if (shape[axis] === 0) continue;
          for (const op of ['argmax', 'argmin'] as const) {
            close(native!.argReduce(op, x, axis), jsBackend.argReduce(op, x, axis), 0, `${op} axis ${axis} ${layout}`);
          }
        }
      }
    }
    const withNaN: KernelView = {
      dtype: 'f32',
      storage: Float32Array.of(1, NaN, 5, 2, 7, NaN),
      shape: [2, 3],
      strides: [3, 1],
      offset: 0,
    };
    close(native!.reduce('max', withNaN, [1]), jsBackend.reduce('max', withNaN, [1]), 0, 'max NaN');
    close(native!.argReduce('argmax', withNaN, 1), jsBackend.argReduce('argmax', withNaN, 1), 0, 'argmax NaN');
  });

  it('matmul: batched, transposed, sliced, broadcast batch, empty', () => {
    const cases: [number[], number, number, number][] = [
      [[], 3, 4, 5],
      [[2], 1, 7, 1],
      [[3, 2], 5, 6, 4],
      [[], 0, 3, 2],
      [[2], 3, 0, 4],
      [[], 130, 70, 90],
      [[4], 33, 65, 17],
    ];
    for (const [batch, M, K, N] of cases) {
      for (const la of LAYOUTS) {
        for (const lb of LAYOUTS) {
          const a = makeView([...batch, M, K], la);
          const b = makeView([...batch, K, N], lb);
          close(native!.matmul(a, b), jsBackend.matmul(a, b), 1e-4, `matmul [${batch}] ${M}x${K}x${N} ${la}/${lb}`);
        }
      }
    }
    // batch broadcast: one b for every batch entry
    const a = makeView([5, 8, 9], 'contiguous');
    const b0 = makeView([9, 3], 'contiguous');
    const b: KernelView = { ...b0, shape: [5, 9, 3], strides: [0, 3, 1] };
    close(native!.matmul(a, b), jsBackend.matmul(a, b), 1e-4, 'batch broadcast');
  });

  it('gatherRows / scatterAddRows with i32 and i64 ids, duplicates, strided tables', () => {
    for (const layout of ['contiguous', 'transposed', 'sliced'] as Layout[]) {
      const table = makeView([10, 6], layout);
      const ids32: KernelView = {
        dtype: 'i32',
        storage: Int32Array.of(3, 0, 9, 3, 3),
        shape: [5],
        strides: [1],
        offset: 0,
      };
      const ids64: KernelView = { ...ids32, dtype: 'i64', storage: BigInt64Array.of(3n, 0n, 9n, 3n, 3n) };
      close(native!.gatherRows(table, ids32), jsBackend.gatherRows(table, ids32), 0, `gather ${layout}`);
      close(native!.gatherRows(table, ids64), jsBackend.gatherRows(table, ids64), 0, `gather64 ${layout}`);
      const src = makeView([5, 6], layout);
      close(
        native!.scatterAddRows(src, ids32, 10),
        jsBackend.scatterAddRows(src, ids32, 10),
        1e-6,
        `scatter ${layout}`,
      );
      close(
        native!.scatterAddRows(src, ids64, 10),
        jsBackend.scatterAddRows(src, ids64, 10),
        1e-6,
        `scatter64 ${layout}`,
      );
    }
    const empty: KernelView = { dtype: 'i32', storage: new Int32Array(0), shape: [0], strides: [1], offset: 0 };
    close(native!.gatherRows(makeView([4, 3], 'contiguous'), empty), new Float32Array(0), 0, 'empty gather');
  });

  it('conv2d and both backwards (stride, padding, dilation, groups); pools', () => {
    const cases = [
      { x: [2, 3, 7, 6], w: [4, 3, 3, 3], p: { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 } },
      { x: [1, 4, 9, 8], w: [6, 2, 3, 2], p: { stride: [2, 1], padding: [0, 2], dilation: [2, 1], groups: 2 } },
      { x: [3, 1, 5, 5], w: [2, 1, 1, 1], p: { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 } },
      { x: [0, 2, 4, 4], w: [2, 2, 3, 3], p: { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 } },
      { x: [2, 2, 2, 2], w: [2, 2, 3, 3], p: { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 } },
    ] as const;
    for (const c of cases) {
      const x = makeView([...c.x], 'contiguous');
      const w = makeView([...c.w], 'transposed');
      const out = jsBackend.conv2d(x, w, c.p);
      close(native!.conv2d(x, w, c.p), out, 1e-4, `conv2d ${JSON.stringify(c)}`);
      const Ho = out.length / (c.x[0] * c.w[0] || 1);
      const gShape = [c.x[0], c.w[0], ...(Ho > 0 && c.x[0] > 0 ? inferHW(c.x, c.w, c.p) : [0, 0])];
      const g = makeView(gShape, 'contiguous');
      close(
        native!.conv2dBackwardInput(g, w, [...c.x], c.p),
        jsBackend.conv2dBackwardInput(g, w, [...c.x], c.p),
        1e-4,
        'conv dx',
      );
      close(
        native!.conv2dBackwardWeight(g, x, [...c.w], c.p),
        jsBackend.conv2dBackwardWeight(g, x, [...c.w], c.p),
        1e-4,
        'conv dw',
      );
    }
    const pools = [
      { kernel: [2, 2], stride: [2, 2], padding: [0, 0] },
      { kernel: [3, 2], stride: [1, 2], padding: [1, 1] },
      { kernel: [1, 1], stride: [1, 1], padding: [0, 0] },
    ] as const;
    for (const p of pools) {
      for (const shape of [
        [2, 3, 6, 5],
        [1, 1, 1, 1],
        [0, 2, 4, 4],
      ]) {
        const x = makeView(shape, 'sliced');
        const js = jsBackend.maxPool2d(x, p);
        const nv = native!.maxPool2d(x, p);
        close(nv.out, js.out, 0, 'maxpool');
        close(nv.indices, js.indices, 0, 'maxpool indices');
        const gShape = [shape[0]!, shape[1]!, ...poolHW(shape, p)];
        const g = makeView(gShape, 'contiguous');
        const idx: KernelView = {
          dtype: 'i32',
          storage: js.indices,
          shape: gShape,
          strides: strides(gShape),
          offset: 0,
        };
        close(
          native!.maxPool2dBackward(g, idx, shape),
          jsBackend.maxPool2dBackward(g, idx, shape),
          1e-6,
          'maxpool back',
        );
        close(native!.avgPool2d(x, p), jsBackend.avgPool2d(x, p), 1e-6, 'avgpool');
        close(native!.avgPool2dBackward(g, shape, p), jsBackend.avgPool2dBackward(g, shape, p), 1e-6, 'avgpool back');
      }
    }
  });

  it('matmul Aᵀ·B with C much taller than wide (computed as its transpose) at 1 and 2 threads', () => {
    const threads = addon!.info().threads;
    try {
      for (const t of [1, 2]) {
        addon!.setThreads(t);
        for (const [M, K, N] of [
          [1030, 40, 300],
          [1024, 33, 512],
        ] as const) {
          const a = makeView([M, K], 'transposed'); // a weight gradient's Xᵀ: unit row stride
          const b = makeView([K, N], 'contiguous');
          close(native!.matmul(a, b), jsBackend.matmul(a, b), 1e-4, `tall Aᵀ·B ${M}x${K}x${N}, ${t} threads`);
        }
      }
    } finally {
      addon!.setThreads(threads);
    }
  });

  it('large inputs split across the pool give the same answers', () => {
    for (const layout of LAYOUTS) {
      const x = makeView([301, 257], layout);
      const y = makeView([301, 257], layout === 'broadcast' ? 'sliced' : 'broadcast');
      close(native!.unary('gelu', x), jsBackend.unary('gelu', x), 2e-6, `big gelu ${layout}`);
      close(native!.binary('div', x, y), jsBackend.binary('div', x, y), 1e-6, `big div ${layout}`);
      close(native!.reduce('sum', x, [0]), jsBackend.reduce('sum', x, [0]), 1e-5, `big sum0 ${layout}`);
      close(native!.reduce('max', x, [1]), jsBackend.reduce('max', x, [1]), 0, `big max1 ${layout}`);
      const a = makeView([2, 150, 170], layout);
      const b = makeView([2, 170, 190], layout);
      close(native!.matmul(a, b), jsBackend.matmul(a, b), 1e-4, `big matmul ${layout}`);
    }
    const p = { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 } as const;
    for (const N of [1, 5]) {
      const x = makeView([N, 8, 20, 20], 'contiguous');
      const w = makeView([16, 8, 3, 3], 'contiguous');
      const g = makeView([N, 16, 20, 20], 'contiguous');
      close(native!.conv2d(x, w, p), jsBackend.conv2d(x, w, p), 1e-4, 'big conv');
      close(
        native!.conv2dBackwardInput(g, w, x.shape, p),
        jsBackend.conv2dBackwardInput(g, w, x.shape, p),
        1e-4,
        'big conv dx',
      );
      close(
        native!.conv2dBackwardWeight(g, x, w.shape, p),
        jsBackend.conv2dBackwardWeight(g, x, w.shape, p),
        1e-4,
        'big conv dw',
      );
    }
  });

  it('conv2d through oneDNN (≥ 16 channels per group): forward and both backwards, 1 and 2 threads', () => {
    // Shapes that take conv_dnnl.cpp's path (the cases above have fewer channels and run im2col):
    // odd batches (uneven slices across 2 threads), stride + dilation + groups, a stride that
    // drops the last rows (right padding below the left), a 1×1 kernel.
    const cases = [
      { x: [5, 16, 9, 8], w: [16, 16, 3, 3], p: { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 } },
      { x: [3, 32, 11, 10], w: [32, 16, 3, 2], p: { stride: [2, 1], padding: [1, 0], dilation: [2, 1], groups: 2 } },
      { x: [2, 16, 8, 8], w: [24, 16, 3, 3], p: { stride: [2, 2], padding: [0, 1], dilation: [1, 1], groups: 1 } },
      { x: [1, 20, 5, 7], w: [16, 20, 1, 1], p: { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 } },
    ] as const;
    const threadsBefore = addon!.info().threads;
    try {
      for (const threads of [1, 2]) {
        addon!.setThreads(threads);
        for (const c of cases) {
          const what = `${JSON.stringify(c)} threads=${threads}`;
          const x = makeView([...c.x], 'contiguous');
          const w = makeView([...c.w], 'contiguous');
          const g = makeView([c.x[0], c.w[0], ...inferHW(c.x, c.w, c.p)], 'contiguous');
          const out = native!.conv2d(x, w, c.p);
          close(out, jsBackend.conv2d(x, w, c.p), 1e-4, `conv2d ${what}`);
          const dx = native!.conv2dBackwardInput(g, w, [...c.x], c.p);
          close(dx, jsBackend.conv2dBackwardInput(g, w, [...c.x], c.p), 1e-4, `conv dx ${what}`);
          const dw = native!.conv2dBackwardWeight(g, x, [...c.w], c.p);
          close(dw, jsBackend.conv2dBackwardWeight(g, x, [...c.w], c.p), 1e-4, `conv dw ${what}`);
          // the same thread count gives the same bits
          assert.deepEqual(native!.conv2dBackwardWeight(g, x, [...c.w], c.p), dw, `dw repeat ${what}`);
          assert.deepEqual(native!.conv2d(x, w, c.p), out, `conv2d repeat ${what}`);
        }
      }
    } finally {
      addon!.setThreads(threadsBefore);
    }
  });

  it('rejects layouts that reach past the storage, with file:line', () => {
    const x: KernelView = { dtype: 'f32', storage: new Float32Array(4), shape: [2, 3], strides: [3, 1], offset: 0 };
    assert.throws(
      () => native!.unary('exp', x),
      (e: unknown) => (e as { code?: string }).code === 'E_BACKEND' && /binding\.cpp:\d+/.test((e as Error).message),
    );
    const ids: KernelView = { dtype: 'i32', storage: Int32Array.of(4), shape: [1], strides: [1], offset: 0 };
    assert.throws(() => native!.gatherRows(makeView([4, 2], 'contiguous'), ids), /outside \[0, 4\)/);
  });
});

function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let k = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = k;
    k *= shape[i]!;
  }
  return s;
}
function inferHW(
  x: readonly number[],
  w: readonly number[],
  p: { stride: readonly number[]; padding: readonly number[]; dilation: readonly number[] },
): number[] {
  return [0, 1].map(
    (i) => Math.floor((x[2 + i]! + 2 * p.padding[i]! - p.dilation[i]! * (w[2 + i]! - 1) - 1) / p.stride[i]!) + 1,
  );
}
function poolHW(
  x: readonly number[],
  p: { kernel: readonly number[]; stride: readonly number[]; padding: readonly number[] },
): number[] {
  return [0, 1].map((i) => Math.floor((x[2 + i]! + 2 * p.padding[i]! - p.kernel[i]!) / p.stride[i]!) + 1);
}

describe('native fused kernels vs naive loops', { skip }, () => {
  const rows = 7;
  const C = 13;
  const x = Float32Array.from({ length: rows * C }, () => randn() * 4);
  const g = Float32Array.from({ length: rows * C }, () => randn());

  function naiveSoftmax(row: Float32Array): number[] {
    const m = Math.max(...row);
    const e = [...row].map((v) => Math.exp(v - m));
    const s = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / s);
  }

  it('softmax / logSoftmax and their backwards', () => {
    const y = new Float32Array(rows * C);
    const ly = new Float32Array(rows * C);
    addon!.softmax(x, rows, C, y);
    addon!.logSoftmax(x, rows, C, ly);
    const dy = new Float32Array(rows * C);
    const dly = new Float32Array(rows * C);
    addon!.softmaxBackward(y, g, rows, C, dy);
    addon!.logSoftmaxBackward(ly, g, rows, C, dly);
    for (let r = 0; r < rows; r++) {
      const p = naiveSoftmax(x.subarray(r * C, (r + 1) * C));
      const gr = [...g.subarray(r * C, (r + 1) * C)];
      const dot = p.reduce((s, v, j) => s + v * gr[j]!, 0);
      const sumg = gr.reduce((a, b) => a + b, 0);
      for (let j = 0; j < C; j++) {
        assert.ok(Math.abs(y[r * C + j]! - p[j]!) < 1e-6);
        assert.ok(Math.abs(ly[r * C + j]! - Math.log(p[j]!)) < 1e-5);
        assert.ok(Math.abs(dy[r * C + j]! - p[j]! * (gr[j]! - dot)) < 1e-5);
        assert.ok(Math.abs(dly[r * C + j]! - (gr[j]! - p[j]! * sumg)) < 1e-5);
      }
    }
    const inf = Float32Array.of(-Infinity, -Infinity, 0, NaN);
    const o = new Float32Array(4);
    addon!.softmax(inf, 2, 2, o);
    assert.deepEqual([...o.subarray(0, 2)].map(Number.isNaN), [true, true]);
    assert.deepEqual([...o.subarray(2)].map(Number.isNaN), [true, true]);
  });

  it('layerNorm / rmsNorm forward and backward', () => {
    const w = Float32Array.from({ length: C }, () => randn());
    const b = Float32Array.from({ length: C }, () => randn());
    const y = new Float32Array(rows * C);
    const mean = new Float32Array(rows);
    const rstd = new Float32Array(rows);
    addon!.layerNorm(x, w, b, rows, C, 1e-5, y, mean, rstd);
    const dx = new Float32Array(rows * C);
    const dw = new Float32Array(C);
    const db = new Float32Array(C);
    addon!.layerNormBackward(x, w, mean, rstd, g, rows, C, dx, dw, db);
    const edw = new Array<number>(C).fill(0);
    const edb = new Array<number>(C).fill(0);
    for (let r = 0; r < rows; r++) {
      const xr = [...x.subarray(r * C, (r + 1) * C)];
      const mu = xr.reduce((a, v) => a + v, 0) / C;
      const rs = 1 / Math.sqrt(xr.reduce((a, v) => a + (v - mu) ** 2, 0) / C + 1e-5);
      const xh = xr.map((v) => (v - mu) * rs);
      const dh = xh.map((_, j) => g[r * C + j]! * w[j]!);
      const m1 = dh.reduce((a, v) => a + v, 0) / C;
      const m2 = dh.reduce((a, v, j) => a + v * xh[j]!, 0) / C;
      for (let j = 0; j < C; j++) {
        assert.ok(Math.abs(y[r * C + j]! - (xh[j]! * w[j]! + b[j]!)) < 1e-5, 'ln y');
        assert.ok(Math.abs(dx[r * C + j]! - rs * (dh[j]! - m1 - xh[j]! * m2)) < 1e-4, 'ln dx');
        edw[j] += g[r * C + j]! * xh[j]!;
        edb[j] += g[r * C + j]!;
      }
    }
    close(dw, Float32Array.from(edw), 1e-5, 'ln dw');
    close(db, Float32Array.from(edb), 1e-5, 'ln db');

    const ry = new Float32Array(rows * C);
    const rr = new Float32Array(rows);
    addon!.rmsNorm(x, w, rows, C, 1e-6, ry, rr);
    const rdx = new Float32Array(rows * C);
    const rdw = new Float32Array(C);
    addon!.rmsNormBackward(x, w, rr, g, rows, C, rdx, rdw);
    const erdw = new Array<number>(C).fill(0);
    for (let r = 0; r < rows; r++) {
      const xr = [...x.subarray(r * C, (r + 1) * C)];
      const rs = 1 / Math.sqrt(xr.reduce((a, v) => a + v * v, 0) / C + 1e-6);
      const xh = xr.map((v) => v * rs);
      const m2 = xh.reduce((a, v, j) => a + g[r * C + j]! * w[j]! * v, 0) / C;
      for (let j = 0; j < C; j++) {
        assert.ok(Math.abs(ry[r * C + j]! - xh[j]! * w[j]!) < 1e-5, 'rms y');
        assert.ok(Math.abs(rdx[r * C + j]! - rs * (g[r * C + j]! * w[j]! - xh[j]! * m2)) < 1e-4, 'rms dx');
        erdw[j] += g[r * C + j]! * xh[j]!;
      }
    }
    close(rdw, Float32Array.from(erdw), 1e-5, 'rms dw');
  });

  it('crossEntropy with ignore_index, and its gradient', () => {
    const t = Int32Array.from({ length: rows }, (_, i) => (i === 2 ? -100 : i % C));
    const d = new Float32Array(rows * C);
    const loss = addon!.crossEntropy(x, t, rows, C, -100, d);
    let sum = 0;
    for (let r = 0; r < rows; r++) {
      if (t[r] === -100) continue;
      const p = naiveSoftmax(x.subarray(r * C, (r + 1) * C));
      sum -= Math.log(p[t[r]!]!);
      for (let j = 0; j < C; j++)
        assert.ok(Math.abs(d[r * C + j]! - (p[j]! - (j === t[r] ? 1 : 0)) / (rows - 1)) < 1e-6);
    }
    assert.ok(Math.abs(loss - sum / (rows - 1)) < 1e-5);
    assert.ok([...d.subarray(2 * C, 3 * C)].every((v) => v === 0));
    assert.throws(
      () =>
        addon!.crossEntropy(
          x,
          Int32Array.from({ length: rows }, () => C),
          rows,
          C,
          -100,
          null,
        ),
      /outside/,
    );
  });

  it('adamw matches the PyTorch update rule', () => {
    const n = 5;
    const p = Float32Array.of(1, -2, 0.5, 3, 0);
    const gr = Float32Array.of(0.1, -0.3, 0, 2, -1);
    const m = new Float32Array(n);
    const v = new Float32Array(n);
    const [lr, b1, b2, eps, wd] = [1e-2, 0.9, 0.999, 1e-8, 0.1];
    const ep = [...p];
    const em = new Array<number>(n).fill(0);
    const ev = new Array<number>(n).fill(0);
    for (let step = 1; step <= 3; step++) {
      addon!.adamw(p, gr, m, v, lr, b1, b2, eps, wd, step);
      for (let i = 0; i < n; i++) {
        ep[i]! *= 1 - lr * wd;
        em[i] = b1 * em[i]! + (1 - b1) * gr[i]!;
        ev[i] = b2 * ev[i]! + (1 - b2) * gr[i]! ** 2;
        const denom = Math.sqrt(ev[i]!) / Math.sqrt(1 - b2 ** step) + eps;
        ep[i]! -= (lr / (1 - b1 ** step)) * (em[i]! / denom);
      }
    }
    close(p, Float32Array.from(ep), 1e-5, 'adamw');
  });

  it('causal attention forward and backward', () => {
    const [BH, T, D] = [3, 5, 4];
    const n = BH * T * D;
    const mk = () => Float32Array.from({ length: n }, () => randn());
    const q = mk();
    const k = mk();
    const v = mk();
    const go = mk();
    const scale = 1 / Math.sqrt(D);
    const out = new Float32Array(n);
    const lse = new Float32Array(BH * T);
    addon!.causalAttention(q, k, v, BH, T, D, scale, out, lse);
    const dq = new Float32Array(n);
    const dk = new Float32Array(n);
    const dv = new Float32Array(n);
    addon!.causalAttentionBackward(q, k, v, out, lse, go, BH, T, D, scale, dq, dk, dv);
    // naive: P = softmax(mask(QKᵀ·scale)), O = PV, and the textbook gradients
    const eq = new Float64Array(n);
    const ek = new Float64Array(n);
    const ev = new Float64Array(n);
    for (let h = 0; h < BH; h++) {
      const at = (a: Float32Array, i: number, d: number) => a[(h * T + i) * D + d]!;
      for (let i = 0; i < T; i++) {
        const s = Array.from(
          { length: i + 1 },
          (_, j) => scale * Array.from({ length: D }, (_, d) => at(q, i, d) * at(k, j, d)).reduce((a, b) => a + b, 0),
        );
        const m = Math.max(...s);
        const e = s.map((x) => Math.exp(x - m));
        const z = e.reduce((a, b) => a + b, 0);
        const P = e.map((x) => x / z);
        for (let d = 0; d < D; d++) {
          const o = P.reduce((a, p, j) => a + p * at(v, j, d), 0);
          assert.ok(Math.abs(out[(h * T + i) * D + d]! - o) < 1e-5, 'attn out');
        }
        const dP = P.map((_, j) =>
          Array.from({ length: D }, (_, d) => at(go, i, d) * at(v, j, d)).reduce((a, b) => a + b, 0),
        );
        const Di = P.reduce((a, p, j) => a + p * dP[j]!, 0);
        P.forEach((p, j) => {
          const ds = p * (dP[j]! - Di) * scale;
          for (let d = 0; d < D; d++) {
            ev[(h * T + j) * D + d] += p * at(go, i, d);
            eq[(h * T + i) * D + d] += ds * at(k, j, d);
            ek[(h * T + j) * D + d] += ds * at(q, i, d);
          }
        });
      }
    }
    close(dq, Float32Array.from(eq), 1e-4, 'dq');
    close(dk, Float32Array.from(ek), 1e-4, 'dk');
    close(dv, Float32Array.from(ev), 1e-4, 'dv');
  });

  it('causal attention on the packed qkv layout equals the dense one bitwise, at any thread count', () => {
    // B 2, T 70 (two query tiles, a partial one), H 3, D 20 (a partial AVX-512 vector)
    const [B, T, H, D] = [2, 70, 3, 20];
    const C = H * D;
    const qkv = Float32Array.from({ length: B * T * 3 * C }, () => randn());
    const g = Float32Array.from({ length: B * T * C }, () => randn());
    // dense [B·H, T, D] copies of q, k, v (part 0, 1, 2 of qkv) and of g
    const heads = (src: Float32Array, width: number, part: number) => {
      const d = new Float32Array(B * H * T * D);
      for (let b = 0; b < B; b++)
        for (let h = 0; h < H; h++)
          for (let t = 0; t < T; t++)
            for (let i = 0; i < D; i++)
              d[((b * H + h) * T + t) * D + i] = src[(b * T + t) * width + part * C + h * D + i]!;
      return d;
    };
    const n = B * H * T * D;
    const scale = 0.3;
    const dense = { out: new Float32Array(n), lse: new Float32Array(B * H * T), dq: new Float32Array(n) };
    const dk = new Float32Array(n);
    const dv = new Float32Array(n);
    const [q, k, v, gh] = [heads(qkv, 3 * C, 0), heads(qkv, 3 * C, 1), heads(qkv, 3 * C, 2), heads(g, C, 0)];
    addon!.causalAttention(q, k, v, B * H, T, D, scale, dense.out, dense.lse);
    addon!.causalAttentionBackward(q, k, v, dense.out, dense.lse, gh, B * H, T, D, scale, dense.dq, dk, dv);
    const before = addon!.info().threads;
    try {
      for (const threads of [1, 2, 3]) {
        addon!.setThreads(threads);
        const out = new Float32Array(B * T * C);
        const lse = new Float32Array(B * H * T);
        const dqkv = new Float32Array(B * T * 3 * C).fill(NaN); // every element must be written
        addon!.causalAttentionQKV(qkv, B, T, H, D, scale, out, lse);
        addon!.causalAttentionQKVBackward(qkv, out, lse, g, B, T, H, D, scale, dqkv);
        assert.deepEqual(heads(out, C, 0), dense.out, `out, ${threads} threads`);
        assert.deepEqual(lse, dense.lse, `lse, ${threads} threads`);
        assert.deepEqual(heads(dqkv, 3 * C, 0), dense.dq, `dq, ${threads} threads`);
        assert.deepEqual(heads(dqkv, 3 * C, 1), dk, `dk, ${threads} threads`);
        assert.deepEqual(heads(dqkv, 3 * C, 2), dv, `dv, ${threads} threads`);
      }
    } finally {
      addon!.setThreads(before);
    }
  });
});
