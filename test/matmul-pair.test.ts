/**
 * matmulPair (native/kernels/matmul.cpp): a linear layer's two backward GEMMs in one call, each on
 * its own share of the pool. At one thread it must give exactly what two matmul calls give; at two
 * threads exactly what the one-thread matmuls give (each product runs whole on one thread); at three
 * and four threads (three and two blocks per product) the same bits call after call and the js
 * backend's values. Products of kjv-gpt's size are not paired: they equal two matmul calls. The linear layer's backward, which uses it, is checked against the js backend.
 * Also matmulAccumulate's bias (the LoRA layer's bias and low-rank product in one pass).
 * Skipped when the addon is not built, unless KNOBS_REQUIRE_NATIVE=1.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { KernelView } from '../src/backends/backend.js';
import { traceKernels, withBackend } from '../src/backends/dispatch.js';
import { jsBackend } from '../src/backends/js/index.js';
import { loadNativeAddon, loadNativeBackend, nativeLoadError } from '../src/backends/native/index.js';
import { linear } from '../src/ops/index.js';
import { Tensor } from '../src/tensor.js';

const native = loadNativeBackend();
const addon = native ? loadNativeAddon() : null;
const skip = native ? false : `native backend not built: ${nativeLoadError()}`;
if (!native && process.env.KNOBS_REQUIRE_NATIVE === '1')
  throw new Error(`KNOBS_REQUIRE_NATIVE=1 but ${nativeLoadError()}`);

function wave(n: number, s: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(i * s + 0.3));
}

/** [R, C] over fresh storage, row-major or (transposed) column-major. */
function view(R: number, C: number, s: number, transposed = false): KernelView {
  return { dtype: 'f32', storage: wave(R * C, s), shape: [R, C], strides: transposed ? [1, R] : [C, 1], offset: 0 };
}

/** A linear layer's backward operands for x [M, K] · w [K, N]: [g, wᵀ] and [xᵀ, g], or [gᵀ, x] for a transposed w. */
function backwardOperands(M: number, K: number, N: number, wTransposed: boolean): KernelView[] {
  const x = view(M, K, 0.37);
  const w = view(K, N, 0.11, wTransposed);
  const g = view(M, N, 0.23);
  const wT: KernelView = { ...w, shape: [N, K], strides: [w.strides[1]!, w.strides[0]!] };
  const t = (v: KernelView): KernelView => ({
    ...v,
    shape: [v.shape[1]!, v.shape[0]!],
    strides: [v.strides[1]!, v.strides[0]!],
  });
  return wTransposed ? [g, wT, t(g), x] : [g, wT, t(x), g];
}

// kjv-gpt's shapes (2048 tokens) are too slow for a unit test; these keep their aspect: wide, square, and a
// tall Aᵀ·B (M ≥ 2N, M ≥ 1024: the product computed as its transpose).
const SHAPES = [
  [384, 64, 192, false],
  [256, 128, 128, true],
  [320, 1024, 96, false],
  [200, 48, 40, false], // too small to share: the two products run one after the other
] as const;

function bitsEqual(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, what);
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) assert.fail(`${what}: [${i}] ${a[i]} vs ${b[i]}`);
}

describe('matmulPair', { skip }, () => {
  const fused = native?.fused;

  function separate(ops: KernelView[]): Float32Array[] {
    return [native!.matmul(ops[0]!, ops[1]!) as Float32Array, native!.matmul(ops[2]!, ops[3]!) as Float32Array];
  }
  function paired(ops: KernelView[]): Float32Array[] {
    return fused!.matmulPair(ops[0]!, ops[1]!, ops[2]!, ops[3]!) as Float32Array[];
  }
  function atThreads<T>(t: number, fn: () => T): T {
    const before = addon!.info().threads;
    addon!.setThreads(t);
    try {
      return fn();
    } finally {
      addon!.setThreads(before);
    }
  }

  it('equals two matmul calls bit for bit at one thread, and the one-thread matmuls at two threads', () => {
    for (const [M, K, N, wt] of SHAPES) {
      const ops = backwardOperands(M, K, N, wt);
      const one = atThreads(1, () => separate(ops));
      const onePair = atThreads(1, () => paired(ops));
      const twoPair = atThreads(2, () => paired(ops));
      for (const i of [0, 1]) {
        bitsEqual(onePair[i]!, one[i]!, `${M}x${K}x${N} product ${i + 1}, one thread`);
        bitsEqual(twoPair[i]!, one[i]!, `${M}x${K}x${N} product ${i + 1}, two threads vs one`);
      }
    }
  });

  it('splits products of ≥ 2·512·512·256 FLOPs across the pool: two matmul calls at every thread count', () => {
    // 2·1024·256·512 FLOPs each, the size class of kjv-gpt's products (PAIR_MAX_FLOPS in matmul.cpp)
    const ops = backwardOperands(1024, 256, 512, false);
    const want = [jsBackend.matmul(ops[0]!, ops[1]!), jsBackend.matmul(ops[2]!, ops[3]!)];
    for (const threads of [1, 2, 3]) {
      const [got, two] = atThreads(threads, () => [paired(ops), separate(ops)]);
      for (const i of [0, 1]) {
        bitsEqual(got![i]!, two![i]!, `product ${i + 1}, ${threads} thread(s)`);
        for (let j = 0; j < want[i]!.length; j += 97) {
          const e = want[i]![j] as number;
          assert.ok(Math.abs(got![i]![j]! - e) <= 1e-4 * (1 + Math.abs(e)), `product ${i + 1} [${j}]`);
        }
      }
    }
  });

  for (const threads of [3, 4])
    it(`gives the js values and the same bits call after call at ${threads} threads`, () => {
      for (const [M, K, N, wt] of SHAPES) {
        const ops = backwardOperands(M, K, N, wt);
        const [a, b] = atThreads(threads, () => [paired(ops), paired(ops)]);
        const want = [jsBackend.matmul(ops[0]!, ops[1]!), jsBackend.matmul(ops[2]!, ops[3]!)];
        for (const i of [0, 1]) {
          bitsEqual(a![i]!, b![i]!, `${M}x${K}x${N} product ${i + 1}, repeated`);
          for (let j = 0; j < want[i]!.length; j++) {
            const e = want[i]![j] as number;
            assert.ok(Math.abs(a![i]![j]! - e) <= 1e-4 * (1 + Math.abs(e)), `${M}x${K}x${N} product ${i + 1} [${j}]`);
          }
        }
      }
    });

  it("gives a linear layer's dX, dW and db as the js backend does, a transposed weight's dW in its layout", () => {
    const M = 300;
    const K = 96;
    const N = 160;
    const run = (backend: string) =>
      withBackend(backend, () => {
        const x = new Tensor(wave(M * K, 0.37), [M, K], 'f32').requiresGrad_();
        const wRows = new Tensor(wave(N * K, 0.11), [N, K], 'f32').requiresGrad_(); // an [out, in] weight
        const b = new Tensor(wave(N, 0.7), [N], 'f32').requiresGrad_();
        const y = linear(x, wRows.transpose(0, 1), b, 'gelu_tanh');
        y.mul(new Tensor(wave(M * N, 0.05), [M, N], 'f32'))
          .sum()
          .backward();
        return [x.grad!, wRows.grad!, b.grad!];
      });
    const { result: got, runs } = traceKernels(() => atThreads(2, () => run('native')));
    const want = run('js');
    assert.deepEqual(
      runs.filter((r) => r.kernel === 'matmulPair').map((r) => r.ran),
      ['native'],
      'the backward took dX and dW from one matmulPair call',
    );
    assert.ok(got[1]!.isContiguous(), "the weight's gradient is row-major, as its weight");
    got.forEach((t, i) => {
      const a = t.toFlatArray();
      const e = want[i]!.toFlatArray();
      for (let j = 0; j < e.length; j++)
        assert.ok(Math.abs(a[j]! - e[j]!) <= 1e-4 * (1 + Math.abs(e[j]!)), `grad ${i} [${j}]`);
    });
  });
});

describe('matmulAccumulate with a bias', { skip }, () => {
  it('adds (c + bias) + alpha·a·b for a LoRA-rank inner size (one pass) and a longer one (the GEMM)', () => {
    const M = 70;
    const N = 300;
    for (const K of [8, 48]) {
      for (const withBias of [true, false]) {
        const a = view(M, K, 0.37);
        const b = view(K, N, 0.11, true); // Bᵀ of a [N, K] matrix, as the LoRA layer passes it
        const bias = view(1, N, 0.7);
        const biasView: KernelView = { ...bias, shape: [N], strides: [1] };
        const c = wave(M * N, 0.05);
        const want = jsBackend.matmul(a, b) as Float32Array;
        const got = Float32Array.from(c);
        native!.fused!.matmulAccumulate(a, b, got, 0.5, withBias ? biasView : null);
        for (let i = 0; i < M; i++)
          for (let j = 0; j < N; j++) {
            const e = c[i * N + j]! + (withBias ? (bias.storage[j] as number) : 0) + 0.5 * want[i * N + j]!;
            const d = Math.abs(got[i * N + j]! - e);
            assert.ok(d <= 1e-5 * (1 + Math.abs(e)), `K ${K} bias ${withBias} [${i}, ${j}]: ${got[i * N + j]} vs ${e}`);
          }
      }
    }
  });
});
