/**
 * Fused kernels against their composites (docs/design.md, decision 3): each op runs once on the js
 * backend (no fused kernels: the composite of primitives) and once on the native backend (the
 * fused kernel, recorded as one primitive), on the same f32 inputs; outputs and every input
 * gradient must agree. Cases cover non-contiguous inputs, large magnitudes, ignore_index, the
 * 'sum' reduction, empty row sets and the fallback rules (a tape recorded on native, differentiated
 * on js). Skipped when the addon is not built, unless KNOBS_REQUIRE_NATIVE=1.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as k from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { ACTIVATION_OPS, type ActivationOp } from '../src/backends/backend.js';
import { traceKernels } from '../src/backends/dispatch.js';
import { maxPool2dBiasRelu } from '../src/ops/conv.js';
import { addon, skip } from './harness/native.js';

/** Deterministic values: n normal-ish numbers times `scale` plus `shift`. */
function values(n: number, seed: number, scale = 1, shift = 0): Float32Array {
  const g = new k.Generator(seed);
  return Float32Array.from({ length: n }, () => g.normal() * scale + shift);
}

interface Input {
  data: Float32Array;
  shape: number[];
  grad?: boolean;
  /** Build the op's operand as a transposed (non-contiguous) view of a [.., b, a] tensor. */
  transposed?: boolean;
}

function build(inp: Input): { leaf: Tensor; used: Tensor } {
  const s = inp.shape;
  if (!inp.transposed) {
    const leaf = k.fromArray(inp.data, s, { requiresGrad: inp.grad ?? true });
    return { leaf, used: leaf };
  }
  const r = s.length;
  const swapped = [...s.slice(0, r - 2), s[r - 1]!, s[r - 2]!];
  const leaf = k.fromArray(inp.data, swapped, { requiresGrad: inp.grad ?? true });
  return { leaf, used: k.transpose(leaf, -2, -1) };
}

interface Run {
  out: Tensor;
  grads: (Tensor | null)[];
  op: string | undefined;
}

/** Runs fn on fresh leaves under `backend`, backpropagates `upstream` (or the scalar) and collects. */
function runOn(
  backend: string,
  inputs: Input[],
  fn: (...xs: Tensor[]) => Tensor,
  upstream?: Float32Array,
  backwardOn = backend,
): Run {
  return k.withBackend(backend, () => {
    const built = inputs.map(build);
    const out = fn(...built.map((b) => b.used));
    const op = out.gradFn?.op;
    if (out.requiresGrad && (upstream || out.size === 1)) {
      const g = upstream ? k.fromArray(upstream, out.shape) : undefined;
      k.withBackend(backwardOn, () => out.backward(g));
    }
    return { out, grads: built.map((b) => b.leaf.grad), op };
  });
}

function assertClose(actual: Tensor | null, expected: Tensor | null, what: string, rtol: number, atol: number): void {
  assert.equal(actual === null, expected === null, `${what}: one side has no value`);
  if (!actual || !expected) return;
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape`);
  const a = actual.toFlatArray();
  const e = expected.toFlatArray();
  let scale = 0;
  for (const v of e) if (Number.isFinite(v)) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!,
      y = e[i]!;
    if (Number.isNaN(y) || !Number.isFinite(y)) {
      assert.ok(Object.is(x, y), `${what}[${i}]: fused ${x}, composite ${y}`);
      continue;
    }
    assert.ok(
      Math.abs(x - y) <= atol * Math.max(1, scale) + rtol * Math.abs(y),
      `${what}[${i}]: fused ${x}, composite ${y} (scale ${scale})`,
    );
  }
}

interface Case {
  name: string;
  inputs: Input[];
  fn: (...xs: Tensor[]) => Tensor;
  /** The primitive the fused path records. */
  fusedOp?: string;
  /** The op must not take the fused path: both backends record the composite's last op. */
  composite?: boolean;
  rtol?: number;
  atol?: number;
}

function check(c: Case): void {
  const out0 = runOn('js', c.inputs, c.fn);
  const up = out0.out.size === 1 ? undefined : values(out0.out.size, 99);
  const composite = up ? runOn('js', c.inputs, c.fn, up) : out0;
  const fused = runOn('native', c.inputs, c.fn, up);
  if (c.composite) {
    assert.equal(fused.op, composite.op, `${c.name}: the native run must be the composite`);
  } else {
    assert.equal(fused.op, c.fusedOp, `${c.name}: the native run records ${fused.op}, expected ${c.fusedOp}`);
    assert.notEqual(composite.op, c.fusedOp, `${c.name}: the js run must be the composite`);
  }
  const rtol = c.rtol ?? 2e-5,
    atol = c.atol ?? 2e-6;
  assertClose(fused.out, composite.out, `${c.name} output`, rtol, atol);
  fused.grads.forEach((g, i) => assertClose(g, composite.grads[i]!, `${c.name} grad ${i}`, rtol, atol * 5));
  // The rules' own fallback (tape from native, backward on js) must give the same gradients.
  const fallback = runOn('native', c.inputs, c.fn, up, 'js');
  fallback.grads.forEach((g, i) => assertClose(g, composite.grads[i]!, `${c.name} fallback grad ${i}`, rtol, atol * 5));
}

describe('fused kernels match their composites', { skip }, () => {
  describe('activation gradients (fused backward only; the forward is one kernel either way)', () => {
    const forward: Readonly<Record<ActivationOp, (x: Tensor) => Tensor>> = {
      relu: k.relu,
      gelu: (x) => k.gelu(x),
      gelu_tanh: (x) => k.gelu(x, 'tanh'),
      silu: k.silu,
    };
    const edges = Float32Array.of(0, -0, 1e-30, -1e-30, 0.5, -0.5, 3, -3, 9, -9, 20, -20, 88, -88, 1e4, -1e4);
    for (const op of ACTIVATION_OPS) {
      const cases: [string, Input][] = [
        ['normal', { data: values(7 * 33, 30), shape: [7, 33] }],
        ['wide, non-contiguous', { data: values(5 * 9, 31, 6), shape: [9, 5], transposed: true }],
        ['edge values', { data: edges, shape: [edges.length] }],
      ];
      for (const [what, input] of cases) {
        it(`${op}: ${what}`, () => {
          const up = values(input.data.length, 32);
          const composite = runOn('js', [input], forward[op], up);
          const { result: fused, runs } = traceKernels(() => runOn('native', [input], forward[op], up));
          assert.ok(
            runs.some((r) => r.kernel === 'activationBackward' && r.ran === 'native'),
            `${op}: the native backward did not use the fused kernel`,
          );
          assertClose(fused.grads[0]!, composite.grads[0]!, `${op} ${what} grad`, 2e-5, 2e-6);
          const fallback = runOn('native', [input], forward[op], up, 'js');
          assertClose(fallback.grads[0]!, composite.grads[0]!, `${op} ${what} fallback grad`, 2e-5, 2e-6);
        });
      }
    }
  });

  describe('softmax / logSoftmax', () => {
    const shapes = [
      [4, 7],
      [3, 5, 33],
      [2, 300],
      [0, 5],
      [1, 1],
    ];
    for (const shape of shapes) {
      const n = shape.reduce((a, b) => a * b, 1);
      for (const [scale, shift] of [
        [1, 0],
        [1e4, 0],
        [3, 1e4],
      ] as const) {
        it(`softmax ${JSON.stringify(shape)} scale ${scale} shift ${shift}`, () => {
          check({
            name: 'softmax',
            inputs: [{ data: values(n, 1, scale, shift), shape }],
            fn: (x) => k.softmax(x),
            fusedOp: 'softmax',
          });
        });
        it(`logSoftmax ${JSON.stringify(shape)} scale ${scale} shift ${shift}`, () => {
          check({
            name: 'logSoftmax',
            inputs: [{ data: values(n, 2, scale, shift), shape }],
            fn: (x) => k.logSoftmax(x),
            fusedOp: 'logSoftmax',
            atol: 1e-6 * Math.max(1, scale / 1e3),
          });
        });
      }
    }
    it('non-contiguous input, -Inf entries', () => {
      const data = values(6 * 9, 3);
      data[4] = -Infinity;
      data[20] = -Infinity;
      check({
        name: 'softmax T',
        inputs: [{ data, shape: [9, 6], transposed: true }],
        fn: (x) => k.softmax(x),
        fusedOp: 'softmax',
      });
      check({
        name: 'logSoftmax T',
        inputs: [{ data: values(54, 4), shape: [9, 6], transposed: true }],
        fn: (x) => k.logSoftmax(x),
        fusedOp: 'logSoftmax',
      });
    });
    it('a non-last axis stays the composite', () => {
      check({
        name: 'softmax axis 0',
        inputs: [{ data: values(12, 5), shape: [3, 4] }],
        fn: (x) => k.softmax(x, 0),
        composite: true,
      });
    });
  });

  describe('crossEntropy', () => {
    const targetsOf = (ids: number[]) => k.fromArray(ids, [ids.length], { dtype: 'i32' });
    const ids = [3, 0, 9, -100, 5, 5, 1, -100, 7, 2, 8, 4];
    for (const scale of [1, 1e3]) {
      for (const reduction of ['mean', 'sum'] as const) {
        it(`logits ×${scale}, ignore_index, reduction ${reduction}`, () => {
          check({
            name: `crossEntropy ${reduction}`,
            inputs: [{ data: values(12 * 10, 6, scale), shape: [12, 10] }],
            fn: (x) => k.crossEntropy(x, targetsOf(ids), { reduction }),
            fusedOp: 'crossEntropy',
            rtol: 1e-5,
            atol: 1e-6,
          });
        });
      }
    }
    it('i64 targets, a custom ignoreIndex, non-contiguous logits', () => {
      const t = k.fromArray([1, 4, 4, 0, 2, 3].map(BigInt), [6], { dtype: 'i64' });
      check({
        name: 'crossEntropy i64',
        inputs: [{ data: values(30, 7), shape: [6, 5], transposed: true }],
        fn: (x) => k.crossEntropy(x, t, { ignoreIndex: 4 }),
        fusedOp: 'crossEntropy',
      });
    });
    it('no rows: NaN mean, as the composite', () => {
      check({
        name: 'crossEntropy empty',
        inputs: [{ data: new Float32Array(0), shape: [0, 4] }],
        fn: (x) => k.crossEntropy(x, targetsOf([])),
        fusedOp: 'crossEntropy',
      });
    });
    it('label smoothing and reduction none stay the composite', () => {
      const t = targetsOf([1, 2, 0]);
      check({
        name: 'ls',
        inputs: [{ data: values(12, 8), shape: [3, 4] }],
        fn: (x) => k.crossEntropy(x, t, { labelSmoothing: 0.1 }),
        composite: true,
      });
      check({
        name: 'none',
        inputs: [{ data: values(12, 8), shape: [3, 4] }],
        fn: (x) => k.crossEntropy(x, t, { reduction: 'none' }),
        composite: true,
      });
    });
  });

  describe('layerNorm / rmsNorm', () => {
    const C = 32;
    for (const [scale, shift] of [
      [1, 0],
      [1e3, 0],
      [1, 1e3],
    ] as const) {
      it(`layerNorm with weight and bias, scale ${scale} shift ${shift}`, () => {
        check({
          name: 'layerNorm',
          fusedOp: 'layerNorm',
          rtol: 1e-4,
          atol: 1e-5,
          inputs: [
            { data: values(4 * 6 * C, 10, scale, shift), shape: [4, 6, C] },
            { data: values(C, 11, 0.5, 1), shape: [C] },
            { data: values(C, 12), shape: [C] },
          ],
          fn: (x, w, b) => k.layerNorm(x, [C], w, b),
        });
      });
      it(`rmsNorm with weight, scale ${scale} shift ${shift}`, () => {
        check({
          name: 'rmsNorm',
          fusedOp: 'rmsNorm',
          rtol: 1e-4,
          atol: 1e-5,
          inputs: [
            { data: values(5 * C, 13, scale, shift), shape: [5, C] },
            { data: values(C, 14, 0.5, 1), shape: [C] },
          ],
          fn: (x, w) => k.rmsNorm(x, w),
        });
      });
    }
    it('layerNorm without affine, over two trailing axes, non-contiguous', () => {
      check({
        name: 'layerNorm plain',
        fusedOp: 'layerNorm',
        inputs: [{ data: values(3 * 8 * 5, 15), shape: [3, 8, 5], transposed: true }],
        fn: (x) => k.layerNorm(x, [8, 5]),
        rtol: 1e-4,
        atol: 1e-5,
      });
      check({
        name: 'layerNorm 2-D affine',
        fusedOp: 'layerNorm',
        rtol: 1e-4,
        atol: 1e-5,
        inputs: [
          { data: values(2 * 4 * 6, 16), shape: [2, 4, 6] },
          { data: values(24, 17), shape: [4, 6] },
          { data: values(24, 18), shape: [4, 6], grad: false },
        ],
        fn: (x, w, b) => k.layerNorm(x, [4, 6], w, b),
      });
    });
    it('rmsNorm without weight; frozen input', () => {
      check({
        name: 'rmsNorm plain',
        fusedOp: 'rmsNorm',
        inputs: [{ data: values(7 * 9, 19), shape: [7, 9] }],
        fn: (x) => k.rmsNorm(x),
        rtol: 1e-4,
        atol: 1e-5,
      });
      check({
        name: 'rmsNorm frozen x',
        fusedOp: 'rmsNorm',
        rtol: 1e-4,
        atol: 1e-5,
        inputs: [
          { data: values(4 * 6, 20), shape: [4, 6], grad: false },
          { data: values(6, 21), shape: [6] },
        ],
        fn: (x, w) => k.rmsNorm(x, w),
      });
    });
    it('empty rows', () => {
      check({
        name: 'layerNorm empty',
        fusedOp: 'layerNorm',
        inputs: [
          { data: new Float32Array(0), shape: [0, 3, C] },
          { data: values(C, 22), shape: [C] },
          { data: values(C, 23), shape: [C] },
        ],
        fn: (x, w, b) => k.layerNorm(x, [C], w, b),
      });
      check({
        name: 'rmsNorm empty',
        fusedOp: 'rmsNorm',
        inputs: [
          { data: new Float32Array(0), shape: [0, C] },
          { data: values(C, 24), shape: [C] },
        ],
        fn: (x, w) => k.rmsNorm(x, w),
      });
    });
  });

  describe('scaledDotProductAttention causal', () => {
    const heads = (t: Tensor, B: number, T: number, H: number, D: number) =>
      k.transpose(k.reshape(t, [B, T, H, D]), 1, 2);
    for (const [T, D, scale] of [
      [17, 8, 1],
      [1, 4, 1],
      [40, 16, 1],
      [24, 8, 30],
      [130, 8, 1],
    ] as const) {
      it(`[2, 3, ${T}, ${D}] ×${scale}`, () => {
        const n = 2 * 3 * T * D;
        check({
          name: `attention T=${T}`,
          fusedOp: 'causalAttention',
          rtol: 1e-4,
          atol: 1e-5,
          inputs: [
            { data: values(n, 30, scale), shape: [2, T, 3 * D] },
            { data: values(n, 31, scale), shape: [2, T, 3 * D] },
            { data: values(n, 32), shape: [2, T, 3 * D] },
          ],
          fn: (q, kk, v) =>
            k.scaledDotProductAttention(heads(q, 2, T, 3, D), heads(kk, 2, T, 3, D), heads(v, 2, T, 3, D), {
              causal: true,
            }),
        });
      });
    }
    it('custom scale, rank 3, frozen v', () => {
      check({
        name: 'attention rank 3',
        fusedOp: 'causalAttention',
        rtol: 1e-4,
        atol: 1e-5,
        inputs: [
          { data: values(60, 33), shape: [2, 6, 5] },
          { data: values(60, 34), shape: [2, 6, 5] },
          { data: values(60, 35), shape: [2, 6, 5], grad: false },
        ],
        fn: (q, kk, v) => k.scaledDotProductAttention(q, kk, v, { causal: true, scale: 0.7 }),
      });
    });
    // GPT's fused projection: heads read in place from qkv [B, T, 3C], merged result [B, T, C].
    for (const [T, H, D, scale] of [
      [17, 3, 8, 1],
      [1, 1, 4, 1],
      [130, 2, 20, 1],
      [128, 2, 64, 1],
      [70, 2, 16, 4],
    ] as const) {
      it(`causalAttentionQKV [2, ${T}, 3·${H}·${D}] ×${scale}`, () => {
        check({
          name: `attention qkv T=${T} D=${D}`,
          fusedOp: 'causalAttentionQKV',
          // 1e-5 relative; larger scores (×16 here) lose digits in f32 either way (as the per-head cases above)
          rtol: scale > 1 ? 1e-4 : 1e-5,
          atol: 1e-5,
          inputs: [{ data: values(2 * T * 3 * H * D, 42, scale), shape: [2, T, 3 * H * D] }],
          fn: (qkv) => k.causalAttentionQKV(qkv, H),
        });
      });
    }
    it('causalAttentionQKV on a non-contiguous qkv, custom scale', () => {
      check({
        name: 'attention qkv transposed',
        fusedOp: 'causalAttentionQKV',
        rtol: 1e-5,
        atol: 1e-5,
        inputs: [{ data: values(2 * 9 * 24, 43), shape: [2, 9, 24], transposed: true }],
        fn: (qkv) => k.causalAttentionQKV(qkv, 2, { scale: 0.3 }),
      });
    });
    it('different key length or non-causal stays the composite', () => {
      check({
        name: 'cross',
        composite: true,
        inputs: [
          { data: values(12, 36), shape: [3, 4] },
          { data: values(20, 37), shape: [5, 4] },
          { data: values(20, 38), shape: [5, 4] },
        ],
        fn: (q, kk, v) => k.scaledDotProductAttention(q, kk, v, { causal: true }),
      });
      check({
        name: 'non-causal',
        composite: true,
        inputs: [
          { data: values(12, 39), shape: [3, 4] },
          { data: values(12, 40), shape: [3, 4] },
          { data: values(12, 41), shape: [3, 4] },
        ],
        fn: (q, kk, v) => k.scaledDotProductAttention(q, kk, v),
      });
    });
  });
});

describe('linear: bias and activation fused into the GEMM output pass', { skip }, () => {
  // x [.., K] · w [K, N] + b, then the activation; w transposed = an [N, K] nn.Linear weight.
  const acts: (k.LinearActivation | null)[] = [null, ...ACTIVATION_OPS];
  for (const act of acts) {
    for (const [what, xShape, N, transposed, bias] of [
      ['2-D, Conv1D layout', [9, 7], 5, false, true],
      ['3-D, nn.Linear layout', [2, 70, 6], 33, true, true],
      ['no bias', [12, 8], 12, false, false],
    ] as const) {
      it(`${act ?? 'no activation'}: ${what}`, () => {
        const K = xShape[xShape.length - 1]!;
        const M = xShape.reduce((a, b) => a * b, 1) / K;
        check({
          name: `linear ${act} ${what}`,
          inputs: [
            { data: values(M * K, 50, 2), shape: [...xShape] },
            { data: values(K * N, 51, 0.5), shape: [K, N], transposed },
            ...(bias ? [{ data: values(N, 52), shape: [N] }] : []),
          ],
          fn: (x, w, b) => k.linear(x, w, b ?? null, act),
          fusedOp: xShape.length === 2 ? 'linear' : 'reshape',
          rtol: 1e-5,
          atol: 1e-6,
        });
      });
    }
  }
  it('frozen weight and bias: only x gets a gradient', () => {
    check({
      name: 'linear frozen',
      inputs: [
        { data: values(6 * 4, 53), shape: [6, 4] },
        { data: values(4 * 3, 54), shape: [4, 3], grad: false },
        { data: values(3, 55), shape: [3], grad: false },
      ],
      fn: (x, w, b) => k.linear(x, w, b!, 'gelu_tanh'),
      fusedOp: 'linear',
    });
  });
  it('the fused forward equals the composite on the same backend bit for bit, and the bias gradient to 1e-5', () => {
    const x = k.fromArray(values(130 * 16, 56), [130, 16], { requiresGrad: true });
    const w = k.fromArray(values(16 * 24, 57, 0.3), [16, 24], { requiresGrad: true });
    const b = k.fromArray(values(24, 58), [24], { requiresGrad: true });
    const up = k.fromArray(values(130 * 24, 59), [130, 24]);
    k.withBackend('native', () => {
      const fused = k.linear(x, w, b, 'gelu_tanh');
      const composite = k.gelu(k.add(k.matmul(x, w), b), 'tanh');
      assert.deepEqual(fused.toFlatArray(), composite.toFlatArray());
      fused.backward(up);
      const db = b.grad!.toFlatArray();
      b.grad = null;
      composite.backward(up);
      assertClose(k.fromArray(db, [24]), b.grad, 'bias grad', 1e-5, 0);
    });
  });
  it('a Linear with an adapter or an overridden forward applies the activation after it', () => {
    const layer = new k.Linear(4, 3, { generator: new k.Generator(1) });
    const x = k.fromArray(values(8, 60), [2, 4]);
    const plain = k.withBackend('native', () => layer.forwardActivated(x, 'relu'));
    layer.adapter = (t) => k.mul(k.sum(t, -1, true), 0); // adds zero, but must run before relu
    const adapted = k.withBackend('native', () => layer.forwardActivated(x, 'relu'));
    assert.deepEqual(adapted.toFlatArray(), plain.toFlatArray());
    assert.equal(adapted.gradFn?.op, 'relu');
  });
});

describe('native output allocation', { skip }, () => {
  it('small outputs stay intact when the 64 KiB slab they come from rolls over', () => {
    // Regression: a view was once placed at offset 0 of the full slab, over live tensors.
    k.withBackend('native', () => {
      const kept: { t: Tensor; v: number }[] = [];
      for (let i = 0; i < 200; i++) {
        const n = 1 + ((i * 37) % 1000); // 4 B … 4 KiB: every size the slab serves
        kept.push({ t: k.add(k.zeros([n]), i), v: i });
      }
      for (const { t, v } of kept)
        assert.ok(
          t.toFlatArray().every((x) => x === v),
          `tensor filled with ${v} was overwritten`,
        );
    });
  });
});

describe('optimizer step in one native call', { skip }, () => {
  /** A small model's parameters with gradients, as fresh f32 leaves (the same values on each call). */
  function params(): k.Tensor[] {
    return [[300, 7], [7], [33], [5, 5, 3]].map((shape, i) => {
      const n = shape.reduce((a, b) => a * b, 1);
      const p = k.fromArray(values(n, 70 + i), shape, { requiresGrad: true });
      p.grad = k.fromArray(values(n, 80 + i, 3), shape);
      return p;
    });
  }

  it('AdamW over all parameters at once equals the per-parameter updates bit for bit', () => {
    const opts = { lr: 1e-2, betas: [0.9, 0.95] as [number, number] };
    const decay = (i: number) => (i < 2 ? 0.1 : 0);
    // one optimizer over two groups (one many-tensor call per step) …
    const many = k.withBackend('native', () => {
      const ps = params();
      const opt = new k.AdamW(
        [
          { params: ps.slice(0, 2), weightDecay: decay(0) },
          { params: ps.slice(2), weightDecay: decay(2) },
        ],
        opts,
      );
      const { runs } = traceKernels(() => {
        for (let s = 0; s < 3; s++) opt.step();
      });
      assert.ok(runs.some((r) => r.kernel === 'adam' && r.ran === 'native'));
      return ps.map((p) => [...p.toFlatArray()]);
    });
    // … against one optimizer per parameter (the per-tensor kernel)
    const single = k.withBackend('native', () => {
      const ps = params();
      const opt = ps.map((p, i) => new k.AdamW([{ params: [p], weightDecay: decay(i) }], opts));
      for (let s = 0; s < 3; s++) for (const o of opt) o.step();
      return ps.map((p) => [...p.toFlatArray()]);
    });
    assert.deepEqual(many, single);
    assert.notDeepEqual(
      many,
      params().map((p) => [...p.toFlatArray()]),
    );
  });

  it('clipGradNorm: the native norm and scaling match the js ones', () => {
    const clip = (backend: string) =>
      k.withBackend(backend, () => {
        const ps = params();
        const norm = k.clipGradNorm(ps, 1.0);
        return { norm, grads: ps.map((p) => [...p.grad!.toFlatArray()]) };
      });
    const js = clip('js');
    const nat = clip('native');
    assert.ok(Math.abs(nat.norm - js.norm) <= 1e-12 * js.norm, `norm ${nat.norm} vs ${js.norm}`);
    nat.grads.forEach((g, i) =>
      g.forEach((v, j) => assert.ok(Math.abs(v - js.grads[i]![j]!) <= 1e-6 * Math.abs(js.grads[i]![j]!) + 1e-12)),
    );
  });
});

describe('maxPool2dBiasRelu: pool, per-channel bias and ReLU in one pass', { skip }, () => {
  // Few distinct values (and a NaN) make ties and NaN windows common.
  const coarse = (n: number): Float32Array =>
    Float32Array.from({ length: n }, (_, i) => [0, 1, -1, 2, -2, 1, NaN, 0.5][((i * 7 + 3) % 11) % 8]!);
  for (const [what, xShape, kernel, opts, data] of [
    ['2×2, vectorised chunk and tail', [3, 5, 8, 36], 2, {}, null],
    ['2×2, odd sizes', [2, 3, 7, 9], 2, {}, null],
    [
      '3×2 windows, stride and padding (the scatter path)',
      [2, 4, 6, 7],
      [3, 2],
      { stride: [1, 2], padding: [1, 1] },
      null,
    ],
    ['2×2, ties and NaN', [2, 3, 6, 34], 2, {}, coarse],
  ] as const) {
    it(what, () => {
      const n = xShape.reduce((a, b) => a * b, 1);
      check({
        name: `maxPool2dBiasRelu ${what}`,
        inputs: [
          { data: data ? data(n) : values(n, 60), shape: [...xShape] },
          { data: values(xShape[1], 61, 0.5), shape: [xShape[1]] },
        ],
        fn: (x, b) => maxPool2dBiasRelu(x, b!, kernel, opts),
        fusedOp: 'maxPoolBiasRelu',
      });
    });
  }
  it('frozen bias: only x gets a gradient', () => {
    check({
      name: 'maxPool2dBiasRelu frozen bias',
      inputs: [
        { data: values(2 * 3 * 4 * 4, 62), shape: [2, 3, 4, 4] },
        { data: values(3, 63), shape: [3], grad: false },
      ],
      fn: (x, b) => maxPool2dBiasRelu(x, b!, 2),
      fusedOp: 'maxPoolBiasRelu',
    });
  });
  it('the bias gradient has the same bits at 1 and 2 threads', () => {
    const before = addon!.info().threads;
    const grads = [1, 2].map((threads) => {
      addon!.setThreads(threads);
      try {
        return runOn(
          'native',
          [
            { data: values(64 * 16 * 14 * 14, 64), shape: [64, 16, 14, 14] },
            { data: values(16, 65), shape: [16] },
          ],
          (x, b) => maxPool2dBiasRelu(x, b!, 2),
          values(64 * 16 * 7 * 7, 66),
        ).grads.map((g) => g!.toFlatArray());
      } finally {
        addon!.setThreads(before);
      }
    });
    assert.deepEqual(grads[1], grads[0]);
  });
});
