/**
 * The conformance suite: every op, forward and gradient, on every backend, against PyTorch
 * goldens (test/fixtures/goldens, made by scripts/gen_goldens.py; see docs/testing.md).
 *
 *   npx tsc -p tsconfig.json && node --test dist/test/conformance.test.js
 *
 * Each case runs in f32 (against torch float32) and in f64 (against torch float64) on each
 * backend in k.backends(). A backend that lacks a kernel falls back to js inside knobs, so every
 * case is traced: it fails unless the backend under test ran all its kernels or each fallback is
 * allowed, with a reason, in test/harness/coverage.ts. The last test of each backend prints its
 * coverage. KNOBS_CONFORMANCE_FILTER=substring runs only matching case ids.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as k from '../src/index.js';
import { traceKernels } from '../src/backends/dispatch.js';
import { coverageOf, CoverageReport } from './harness/coverage.js';
import { assertClose, isClose, rms } from './harness/compare.js';
import { type Encoded, type GoldenCase, loadCases, loadGoldenFiles } from './harness/fixtures.js';
import { isOpName, NON_DIFFERENTIABLE, OP_NAMES } from './harness/ops.js';
import { LARGE_CASES, type LargeCase } from './harness/large.js';
import { checkCase, stridedCopy } from './harness/run.js';
import { type RunDType, toleranceFor } from './harness/tolerance.js';

const filter = process.env.KNOBS_CONFORMANCE_FILTER;
const allCases = loadCases();
const cases = filter ? allCases.filter((c) => c.id.includes(filter)) : allCases;
const availableBackends = k.backends();
const DTYPES: readonly RunDType[] = ['f32', 'f64'];

describe('golden fixtures', () => {
  it('record their provenance', () => {
    for (const f of loadGoldenFiles()) {
      assert.match(f.torch_version, /^\d+\.\d+/);
      assert.equal(f.generator, 'scripts/gen_goldens.py');
      assert.equal(typeof f.seed, 'number');
      assert.ok(f.command.includes('gen_goldens.py'));
    }
  });

  it('have unique ids and a harness mapping for every op', () => {
    const ids = new Set<string>();
    for (const c of allCases) {
      assert.ok(!ids.has(c.id), `duplicate case id ${c.id}`);
      ids.add(c.id);
      assert.ok(
        isOpName(c.op),
        `${c.id}: no harness mapping for op ${c.op} (add it to OP_NAMES and OPS in test/harness/ops.ts)`,
      );
    }
  });

  it('cover every op of the harness, with gradients where the op has them', () => {
    for (const op of OP_NAMES) {
      const mine = allCases.filter((c) => c.op === op);
      assert.ok(mine.length > 0, `no golden case for ${op}`);
      if (!NON_DIFFERENTIABLE.has(op)) {
        assert.ok(
          mine.some((c) => c.inputs.some((i) => i.requires_grad)),
          `no gradient golden for ${op}`,
        );
      }
    }
  });

  it('cover the edge cases: broadcasting, empty dims, views, large values, non-finite values, ties', () => {
    for (const tag of [
      'broadcast',
      'scalar',
      'rank_mismatch',
      'empty',
      'view',
      'large',
      'nonfinite',
      'ties',
      'aliasing',
    ]) {
      assert.ok(
        allCases.some((c) => c.tags.includes(tag)),
        `no case tagged ${tag}`,
      );
    }
    for (const kind of ['transpose', 'permute', 'slice', 'expand']) {
      assert.ok(
        allCases.some((c) => c.inputs.some((i) => i.view?.kind === kind)),
        `no input with a ${kind} view`,
      );
    }
    assert.ok(
      allCases.some((c) => c.inputs.some((i) => i.view?.kind === 'slice' && (i.view.step ?? 1) > 1)),
      'no strided slice view',
    );
  });
});

describe('harness self-check (a wrong answer must fail)', () => {
  const pick = (id: string): GoldenCase => structuredClone(allCases.find((c) => c.id === id)!) as GoldenCase;
  const bump = (v: Encoded, by: number): Encoded => (typeof v === 'number' ? v + by : v);

  it('passes an unmodified case', () => {
    for (const dtype of DTYPES) checkCase(pick('matmul/transposed_operands'), dtype);
  });
  // Moving torch's f32 and f64 answers together is the same as knobs being off by that much.
  it('catches a wrong output value, gradient, shape and dtype', () => {
    const out = pick('matmul/transposed_operands');
    out.outputs[0]!.data[3] = bump(out.outputs[0]!.data[3]!, 1e-3);
    out.outputs[0]!.data64![3] = bump(out.outputs[0]!.data64![3]!, 1e-3);
    assert.throws(() => checkCase(out, 'f32'), /output 0: 1\/\d+ values out of tolerance/);
    const out64 = pick('exp/basic');
    out64.outputs[0]!.data64![0] = bump(out64.outputs[0]!.data64![0]!, 1e-8);
    assert.throws(() => checkCase(out64, 'f64'), /out of tolerance/);
    const grad = pick('softmax/transposed');
    grad.grads[0]![0] = bump(grad.grads[0]![0]!, 1e-3);
    grad.grads64[0]![0] = bump(grad.grads64[0]![0]!, 1e-3);
    assert.throws(() => checkCase(grad, 'f32'), /grad of input 0/);
    const shape = pick('sum/axis1');
    shape.outputs[0]!.shape = [3, 2];
    assert.throws(() => checkCase(shape, 'f32'), /shape \[2, 4\], expected \[3, 2\]/);
    const dt = pick('argmax/axis0');
    dt.outputs[0]!.dtype = 'bool';
    assert.throws(() => checkCase(dt, 'f32'), /dtype i32, expected bool/);
  });
  it('treats NaN and infinities exactly', () => {
    const tol = { rtol: 1e-5, atol: 1e-6 };
    assert.ok(isClose(NaN, NaN, tol));
    assert.ok(!isClose(0, NaN, tol));
    assert.ok(!isClose(NaN, 0, tol));
    assert.ok(isClose(Infinity, Infinity, tol));
    assert.ok(!isClose(-Infinity, Infinity, tol));
    assert.ok(!isClose(3e38, Infinity, tol));
    assert.ok(!isClose(Infinity, 3e38, tol));
  });
});

describe('coverage check (a silent fallback must fail)', () => {
  // A backend that is native in all but unary kernels, which it quietly leaves to js.
  const native = availableBackends.includes('native') ? k.getBackend('native') : null;
  it(
    'fails a case whose kernels fell back to js without an allowed reason',
    { skip: native ? false : 'no native backend' },
    () => {
      k.registerBackend({
        ...native!,
        name: 'native-without-unary',
        supports: (kernel, inputs, outDtype) => kernel !== 'unary' && native!.supports(kernel, inputs, outDtype),
      });
      const c = allCases.find((x) => x.id === 'exp/basic')!;
      const { runs } = traceKernels(() => k.withBackend('native-without-unary', () => checkCase(c, 'f32')));
      assert.throws(
        () => coverageOf(c.id, 'native-without-unary', 'f32', runs),
        /did not run it: unary\(f32\) ran on js/,
      );
      const { runs: onNative } = traceKernels(() => k.withBackend('native', () => checkCase(c, 'f32')));
      assert.deepEqual(coverageOf(c.id, 'native', 'f32', onNative).kind, 'ran');
    },
  );
});

for (const backend of availableBackends) {
  describe(`conformance on ${backend}`, () => {
    const report = new CoverageReport();
    const checkTraced = (id: string, dtype: RunDType, fn: () => void): void => {
      const { runs } = traceKernels(() => k.withBackend(backend, fn));
      report.add(coverageOf(id, backend, dtype, runs));
    };
    for (const dtype of DTYPES) {
      describe(dtype, () => {
        for (const c of cases) {
          it(c.id, () => checkTraced(c.id, dtype, () => checkCase(c, dtype)));
        }
      });
    }

    if (backend !== 'js') {
      describe(`large tensors (past the threading grain): ${backend} agrees with js`, () => {
        for (const lc of LARGE_CASES) it(lc.id, () => checkAgainstJs(lc, backend, report));
      });
    }

    it(`reports its coverage, and every allowed fallback is still needed`, (t) => {
      for (const line of report.lines(backend)) t.diagnostic(line);
      if (filter) return; // a filtered run need not meet every fallback
      assert.deepEqual(
        report.unused(backend).map((f) => f.name),
        [],
        `allowed fallbacks on ${backend} that no case needed: remove them`,
      );
    });

    describe('dropout (statistical; torch RNG is not reproducible)', () => {
      const on = <T>(fn: () => T): T => k.withBackend(backend, fn);

      for (const dtype of DTYPES) {
        it(`zeroes about p of the elements and scales survivors by 1/(1-p) [${dtype}]`, () =>
          on(() => {
            const n = 200_000;
            for (const p of [0.1, 0.5, 0.9]) {
              const x = k.ones([n], { dtype });
              const y = k.dropout(x, p, { generator: new k.Generator(42) }).toFlatArray();
              const zeros = y.filter((v) => v === 0).length;
              const sigma = Math.sqrt((p * (1 - p)) / n);
              assert.ok(Math.abs(zeros / n - p) < 6 * sigma, `p=${p}: zeroed fraction ${zeros / n}`);
              const scale = dtype === 'f32' ? Math.fround(1 / (1 - p)) : 1 / (1 - p);
              for (const v of y)
                if (v !== 0) assert.ok(Math.abs(v - scale) <= 1e-6 * scale, `p=${p}: survivor ${v}, expected ${scale}`);
            }
          }));
      }

      it('is reproducible with the same seed and differs across seeds', () =>
        on(() => {
          const x = k.randn([64, 33], { generator: new k.Generator(7) });
          const a = k.dropout(x, 0.3, { generator: new k.Generator(123) }).toFlatArray();
          const b = k.dropout(x, 0.3, { generator: new k.Generator(123) }).toFlatArray();
          const c = k.dropout(x, 0.3, { generator: new k.Generator(124) }).toFlatArray();
          assert.deepEqual(a, b);
          assert.notDeepEqual(a, c);
        }));

      it('is the identity in eval mode and for p = 0; p = 1 zeroes everything', () =>
        on(() => {
          const x = k.randn([5, 6], { generator: new k.Generator(1) });
          assert.deepEqual(k.dropout(x, 0.5, { training: false }).toFlatArray(), x.toFlatArray());
          assert.deepEqual(k.dropout(x, 0, { generator: new k.Generator(2) }).toFlatArray(), x.toFlatArray());
          assert.ok(
            k
              .dropout(x, 1, { generator: new k.Generator(3) })
              .toFlatArray()
              .every((v) => v === 0),
          );
        }));

      it('works on non-contiguous input', () =>
        on(() => {
          const base = k.randn([8, 6], { generator: new k.Generator(5) });
          const xt = base.transpose(0, 1);
          const y = k.dropout(xt, 0.5, { generator: new k.Generator(9) });
          assert.deepEqual(y.shape, [6, 8]);
          const xs = xt.toFlatArray();
          y.toFlatArray().forEach((v, i) =>
            assert.ok(v === 0 || Math.abs(v - 2 * xs[i]!) <= 1e-6 * Math.abs(xs[i]!) + 1e-7),
          );
        }));

      for (const dtype of DTYPES) {
        it(`backpropagates through the same mask [${dtype}]`, () =>
          on(() => {
            const x = k.randn([10, 12], { generator: new k.Generator(11), dtype, requiresGrad: true });
            const y = k.dropout(x, 0.4, { generator: new k.Generator(12) });
            const g = k.randn([10, 12], { generator: new k.Generator(13), dtype });
            y.backward(g);
            const xs = x.toFlatArray();
            const ys = y.toFlatArray();
            const gs = g.toFlatArray();
            const grad = x.grad!.toFlatArray();
            const scale = 1 / 0.6;
            const tol = dtype === 'f32' ? 1e-6 : 1e-14;
            ys.forEach((v, i) => {
              const kept = v !== 0;
              const want = kept ? gs[i]! * scale : 0;
              assert.ok(
                Math.abs(grad[i]! - want) <= tol * (1 + Math.abs(want)),
                `element ${i}: grad ${grad[i]}, expected ${want}`,
              );
              if (kept) assert.ok(Math.abs(v - xs[i]! * scale) <= tol * (1 + Math.abs(v)));
            });
          }));
      }
    });
  });
}

/** Forward value and leaf gradients of a large case on one backend (upstream g from a fixed seed). */
function runLarge(lc: LargeCase, backend: string): { out: k.Tensor; grads: (number[] | null)[] } {
  return k.withBackend(backend, () => {
    const xs = lc.inputs();
    const out = lc.fn(xs);
    if (xs.some((x) => x.requiresGrad) && (out.dtype === 'f32' || out.dtype === 'f64')) {
      const g = k.randn([...out.shape], { generator: new k.Generator(777), dtype: out.dtype });
      // A strided upstream gradient (same values), so backward kernels meet non-contiguous input too.
      out.backward(stridedCopy(g));
    }
    return { out, grads: xs.map((x) => (x.requiresGrad ? (x.grad ? x.grad.toFlatArray() : null) : null)) };
  });
}

/**
 * Elementwise results are compared element by element; accumulations (reduction family and all
 * gradients) normwise, relative to max(|e|, rms of the tensor): their rounding error scales with
 * the size of the summed terms, not with a result that happens to cancel to near zero.
 */
function checkAgainstJs(lc: LargeCase, backend: string, report: CoverageReport): void {
  const ref = runLarge(lc, 'js');
  const { result: got, runs } = traceKernels(() => runLarge(lc, backend));
  report.add(coverageOf(lc.id, backend, 'f32', runs));
  assert.equal(got.out.dtype, ref.out.dtype, `${lc.id}: dtype`);
  const refOut = ref.out.toFlatArray();
  const floor = lc.tol === 'reduction' ? rms(refOut) : 0;
  assertClose(
    `${lc.id} on ${backend} vs js: output`,
    got.out.toFlatArray(),
    got.out.shape,
    refOut,
    ref.out.shape,
    toleranceFor('f32', lc.tol),
    { floor },
  );
  ref.grads.forEach((g, i) => {
    const mine = got.grads[i];
    if (g === null) return assert.equal(mine, null, `${lc.id}: input ${i} gradient presence`);
    assert.ok(mine, `${lc.id}: input ${i} got no gradient on ${backend}`);
    assertClose(
      `${lc.id} on ${backend} vs js: grad of input ${i}`,
      mine,
      [mine.length],
      g,
      [g.length],
      toleranceFor('f32', 'gradient'),
      { floor: rms(g) },
    );
  });
}
