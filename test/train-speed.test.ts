/**
 * The training-speed changes, each against its reference: the fused Adam/AdamW kernel (native)
 * against `adamUpdate` (js, the optimizer's reference loop) through the public optimizers; the
 * tiled transposed copy in the native `assign` against the js backend on transposed, batched,
 * sliced and 8-byte views; the matmul gradient that keeps a transposed weight's layout; and the
 * leaf-gradient rule of backward() (a leaf takes a fresh gradient without a copy, never one
 * shared with another leaf or with the caller's seed gradient). Native parts are skipped when the
 * addon is not built, unless KNOBS_REQUIRE_NATIVE=1.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as k from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { assignInto } from '../src/ops/view.js';
import { Adam, AdamW, adamUpdate, clipGradNorm } from '../src/optim/index.js';
import { native, skip } from './harness/native.js';

function values(n: number, seed: number, scale = 1): Float32Array {
  const g = new k.Generator(seed);
  return Float32Array.from({ length: n }, () => g.normal() * scale);
}

function assertClose(a: ArrayLike<number>, e: ArrayLike<number>, what: string, tol = 1e-6): void {
  assert.equal(a.length, e.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i]! - e[i]!) <= tol * (1 + Math.abs(e[i]!)), `${what}[${i}]: ${a[i]} vs ${e[i]}`);
  }
}

describe('fused Adam / AdamW (native) match adamUpdate', { skip }, () => {
  const sizes = [0, 1, 7, 100_003]; // empty, one element, a tail, enough to split across threads
  for (const decoupled of [false, true]) {
    for (const weightDecay of [0, 0.1]) {
      it(`${decoupled ? 'AdamW' : 'Adam'} wd ${weightDecay}: 3 steps, sizes ${sizes.join('/')}`, () => {
        const make = (backend: string) =>
          k.withBackend(backend, () => {
            const params = sizes.map((n, i) => k.fromArray(values(n, i + 1), [n]).requiresGrad_());
            const groups = [{ params, weightDecay }];
            const opts = { lr: 1e-2, betas: [0.9, 0.95] as const, eps: 1e-8 };
            const opt = decoupled ? new AdamW(groups, opts) : new Adam(groups, opts);
            for (let step = 1; step <= 3; step++) {
              params.forEach((p, i) => {
                p.grad = k.fromArray(values(p.size, 100 * step + i, step), [p.size]);
              });
              opt.step();
            }
            return params.map((p) => p.toFlatArray());
          });
        const js = make('js');
        const nat = make('native');
        nat.forEach((a, i) => assertClose(a, js[i]!, `param ${i}`, 2e-6));
      });
    }
  }

  it('the js backend runs adamUpdate itself (no fused kernel)', () => {
    const p = Float32Array.of(1, -2, 3);
    const m = new Float32Array(3),
      v = new Float32Array(3);
    adamUpdate(p, Float32Array.of(0.5, 0.5, -1), m, v, {
      lr: 0.1,
      beta1: 0.9,
      beta2: 0.999,
      eps: 1e-8,
      weightDecay: 0,
      decoupled: true,
      step: 1,
    });
    // first step of Adam moves every weight by lr·sign(g)
    assertClose(p, [0.9, -2.1, 3.1], 'p', 1e-6);
  });

  it('a non-contiguous gradient is made dense before the kernel', () => {
    const run = (backend: string) =>
      k.withBackend(backend, () => {
        const w = k.fromArray(values(12, 5), [3, 4]).requiresGrad_();
        w.grad = k.transpose(k.fromArray(values(12, 6), [4, 3]), 0, 1);
        new AdamW([w], { lr: 0.01 }).step();
        return w.toFlatArray();
      });
    assertClose(run('native'), run('js'), 'w', 2e-6);
  });
});

describe('native assign: tiled transposed copies match js', { skip }, () => {
  const cases: { name: string; make: () => Tensor }[] = [
    { name: '2-D transpose 300×70', make: () => k.transpose(k.fromArray(values(300 * 70, 1), [70, 300]), 0, 1) },
    {
      name: 'batched [3, 40, 33] transposed',
      make: () => k.transpose(k.fromArray(values(3 * 40 * 33, 2), [3, 33, 40]), 1, 2),
    },
    {
      name: 'transposed slice (offset, step 2)',
      make: () => k.transpose(k.slice(k.fromArray(values(2 * 64 * 50, 3), [128, 50]), 0, 1, 128, 2), 0, 1),
    },
    {
      name: 'heads [2, 64, 4, 16] → [2, 4, 64, 16]',
      make: () => k.transpose(k.fromArray(values(2 * 64 * 4 * 16, 4), [2, 64, 4, 16]), 1, 2),
    },
    { name: 'one row / one column', make: () => k.transpose(k.fromArray(values(1 * 2000, 5), [2000, 1]), 0, 1) },
    { name: 'empty', make: () => k.transpose(k.zeros([0, 40]), 0, 1) },
    {
      name: 'f64 stays on js, i32 8-wide',
      make: () =>
        k.transpose(
          k.fromArray(
            Int32Array.from({ length: 64 * 40 }, (_, i) => i),
            [64, 40],
            { dtype: 'i32' },
          ),
          0,
          1,
        ),
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const src = c.make();
      const want = k.withBackend('js', () => k.contiguous(src).toFlatArray());
      const got = k.withBackend('native', () => k.contiguous(src));
      assert.ok(got.isContiguous());
      assert.deepEqual(got.toFlatArray(), want);
    });
  }
  it('assignInto a transposed destination region', () => {
    const run = (backend: string) =>
      k.withBackend(backend, () => {
        const dst = k.zeros([50, 60]);
        assignInto(k.slice(dst, 0, 5, 45), k.transpose(k.fromArray(values(40 * 60, 9), [60, 40]), 0, 1));
        return dst.toFlatArray();
      });
    assert.deepEqual(run('native'), run('js'));
  });
});

describe('matmul gradient of a transposed weight', () => {
  for (const backend of ['js', ...(native ? ['native'] : [])]) {
    it(`${backend}: x·Wᵀ gives W a row-major gradient equal to the reference`, () => {
      k.withBackend(backend, () => {
        const W = k.fromArray(values(5 * 7, 1), [5, 7]).requiresGrad_(); // [out, in]
        const x = k.fromArray(values(3 * 7, 2), [3, 7]).requiresGrad_();
        k.sum(k.mul(k.matmul(x, k.transpose(W, 0, 1)), k.fromArray(values(15, 3), [3, 5]))).backward();
        assert.ok(W.grad!.isContiguous(), 'row-major');
        // reference: dW = gᵀ·x computed directly
        const g = k.fromArray(values(15, 3), [3, 5]);
        const ref = k.matmul(k.transpose(g, 0, 1), x.detach());
        assertClose(W.grad!.toFlatArray(), ref.toFlatArray(), 'dW', 1e-5);
        assertClose(x.grad!.toFlatArray(), k.matmul(g, W.detach()).toFlatArray(), 'dx', 1e-5);
      });
    });
  }
});

describe('backward: leaves own their gradients', () => {
  it('a leaf keeps a fresh gradient without a copy; clipping scales each leaf once', () => {
    const a = k.fromArray([1, 2, 3], [3]).requiresGrad_();
    const b = k.fromArray([4, 5, 6], [3]).requiresGrad_();
    k.sum(k.mul(k.add(a, b), 2)).backward(); // add hands the same gradient to a and b
    assert.notEqual(a.grad!.storage, b.grad!.storage, 'a and b must not share one gradient storage');
    clipGradNorm([a, b], 1);
    const n = Math.hypot(...a.grad!.toFlatArray(), ...b.grad!.toFlatArray());
    assert.ok(Math.abs(n - 1) < 1e-5, `clipped norm ${n}`);
    assert.deepEqual(a.grad!.toFlatArray(), b.grad!.toFlatArray());
  });

  it("the caller's gradient is never taken over by a leaf", () => {
    const x = k.fromArray([1, 2, 3, 4], [4]).requiresGrad_();
    const seed = k.fromArray([1, 1, 1, 1], [4]);
    k.add(x, 1).backward(seed);
    assert.notEqual(x.grad!.storage, seed.storage);
    clipGradNorm([x], 0.5);
    assert.deepEqual(seed.toFlatArray(), [1, 1, 1, 1]);
  });

  it('x + x and accumulation across backward calls', () => {
    const x = k.fromArray([1, 2], [2]).requiresGrad_();
    k.sum(k.add(x, x)).backward();
    assert.deepEqual(x.grad!.toFlatArray(), [2, 2]);
    const first = x.grad!;
    k.sum(k.mul(x, 3)).backward();
    assert.deepEqual(x.grad!.toFlatArray(), [5, 5]);
    assert.deepEqual(first.toFlatArray(), [2, 2], 'accumulation makes a new tensor');
  });

  it('broadcast and transposed gradients are copied into row-major leaves', () => {
    const b = k.fromArray([1, 2, 3], [3]).requiresGrad_();
    const w = k.fromArray(values(6, 4), [3, 2]).requiresGrad_();
    k.sum(k.add(k.transpose(w, 0, 1), b)).backward();
    assert.deepEqual(b.grad!.toFlatArray(), [2, 2, 2]);
    assert.ok(w.grad!.isContiguous() && w.grad!.offset === 0);
    assert.deepEqual(w.grad!.toFlatArray(), [1, 1, 1, 1, 1, 1]);
  });
});

describe('native conv2d / 2×2 max pooling match js', { skip }, () => {
  /** Runs fn on fresh leaves under `backend`, back-propagates a fixed upstream, returns output and grads. */
  const run = (
    backend: string,
    shapes: number[][],
    fn: (...xs: Tensor[]) => Tensor,
    fill?: (i: number, v: Float32Array) => void,
  ) =>
    k.withBackend(backend, () => {
      const leaves = shapes.map((s, i) => {
        const v = values(
          s.reduce((a, b) => a * b, 1),
          10 + i,
        );
        fill?.(i, v);
        return k.fromArray(v, s).requiresGrad_();
      });
      const out = fn(...leaves);
      out.backward(k.fromArray(values(out.size, 77), out.shape));
      return [out.toFlatArray(), ...leaves.map((l) => l.grad!.toFlatArray())];
    });
  const same = (a: number[][], e: number[][], what: string) =>
    a.forEach((x, i) => {
      for (let j = 0; j < x.length; j++) {
        const y = e[i]![j]!;
        assert.ok(
          Object.is(x[j], y) || Math.abs(x[j]! - y) <= 1e-4 * (1 + Math.abs(y)),
          `${what} part ${i} [${j}]: ${x[j]} vs ${y}`,
        );
      }
    });

  for (const [name, opts] of [
    ['same padding', { padding: 1 }],
    ['stride 2, padding 2', { stride: 2, padding: 2 }],
    ['dilation 2', { dilation: 2, padding: 1 }],
    ['stride 3, no padding', { stride: 3 }],
    ['padding wider than the kernel reach', { padding: 3 }],
  ] as const) {
    it(`conv2d 3×3 ${name}`, () => {
      const f = (x: Tensor, w: Tensor, b: Tensor) => k.conv2d(x, w, b, opts);
      const shapes = [[2, 3, 9, 11], [4, 3, 3, 3], [4]];
      same(run('native', shapes, f), run('js', shapes, f), name);
    });
  }

  for (const [H, W] of [
    [28, 28],
    [7, 9],
    [2, 2],
    [3, 2],
  ]) {
    it(`maxPool2d 2×2 stride 2 on ${H}×${W} with ties, -Inf and NaN`, () => {
      const fill = (_: number, v: Float32Array) => {
        for (let i = 0; i < v.length; i += 5) v[i] = v[i + 1] ?? v[i]!; // ties
        for (let i = 3; i < v.length; i += 17) v[i] = -Infinity;
        for (let i = 7; i < v.length; i += 23) v[i] = NaN;
      };
      const f = (x: Tensor) => k.maxPool2d(x, 2);
      const shapes = [[2, 3, H, W]];
      same(run('native', shapes, f, fill), run('js', shapes, f, fill), `${H}×${W}`);
    });
  }
});
