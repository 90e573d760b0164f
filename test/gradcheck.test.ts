/**
 * Finite-difference gradient checks in f64 on the js backend, for every differentiable op.
 *
 * The inputs come from the golden fixtures (every case with a gradient, unless the case says
 * gradcheck: false — ties, clamp bounds, non-finite or huge values), so each op is checked on the
 * same shapes, broadcasts and views as its PyTorch goldens: the leaves are the contiguous base
 * tensors, the views are applied inside the checked function, and the scalar checked is the
 * golden loss Σ out · g. Central differences with eps 1e-6 (k.gradcheck), rtol 1e-5, atol 1e-7.
 *
 *   npx tsc -p tsconfig.json && node --test dist/test/gradcheck.test.js
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as k from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { type GoldenCase, decodeF32, loadCases } from './harness/fixtures.js';
import { NON_DIFFERENTIABLE, OP_NAMES } from './harness/ops.js';
import { applyView, buildInputs, callOp, weightedLoss } from './harness/run.js';

const GRADCHECK = { eps: 1e-6, rtol: 1e-5, atol: 1e-7 };

const all = loadCases();
const differentiable = all.filter((c) => c.inputs.some((i) => i.requires_grad));
const checked = differentiable.filter((c) => c.gradcheck !== false);
const skipped = differentiable.filter((c) => c.gradcheck === false);

/** The golden loss of a case as a function of its float leaves (f64, contiguous). */
function lossOf(c: GoldenCase): { fn: (...leaves: Tensor[]) => Tensor; leaves: Tensor[] } {
  const { leaves } = buildInputs(c, 'f64');
  const upstream = c.upstream.map((u) => (u ? decodeF32(u) : null));
  // Own float leaves only; an input with same_as reuses that leaf (whatever gradcheck passes in).
  const floatIdx = c.inputs
    .map((inp, i) => (inp.dtype === 'float' && inp.same_as === undefined ? i : -1))
    .filter((i) => i >= 0);
  const fn = (...floats: Tensor[]): Tensor => {
    const current = [...leaves];
    floatIdx.forEach((i, j) => (current[i] = floats[j]!));
    c.inputs.forEach((inp, i) => {
      if (inp.same_as !== undefined) current[i] = current[inp.same_as]!;
    });
    const args = current.map((t, i) => applyView(t, c.inputs[i]!.view));
    const loss = weightedLoss(callOp(c, args), upstream, 'f64');
    if (!loss) throw new Error(`${c.id}: no float output to differentiate`);
    return loss;
  };
  return { fn, leaves: floatIdx.map((i) => leaves[i]!) };
}

describe('gradcheck (f64, js backend, central differences)', () => {
  it('covers every differentiable op', () => {
    for (const op of OP_NAMES) {
      if (NON_DIFFERENTIABLE.has(op)) continue;
      assert.ok(
        checked.some((c) => c.op === op),
        `no finite-difference check for ${op}`,
      );
    }
  });

  for (const c of checked) {
    it(c.id, () =>
      k.withBackend('js', () => {
        const { fn, leaves } = lossOf(c);
        const r = k.gradcheck(fn, leaves, GRADCHECK);
        if (!r.ok) {
          const w = r.worst!;
          assert.fail(
            `${c.id}: input ${w.input} element ${w.element}: autograd ${w.analytic}, finite differences ${w.numeric} (|error| ${w.error.toExponential(3)})`,
          );
        }
      }),
    );
  }

  for (const c of skipped) {
    it(c.id, { skip: `not finite-differenced: ${c.gradcheck_why}` }, () => {});
  }

  it('fails a function whose gradient is wrong (self-check)', () =>
    k.withBackend('js', () => {
      const x = k.randn([3], { dtype: 'f64', generator: new k.Generator(1), requiresGrad: true });
      // x · stopgrad(x): autograd sees d/dx = x, the true derivative is 2x.
      const r = k.gradcheck((t: Tensor) => k.sum(k.mul(t, t.detach())), [x], GRADCHECK);
      assert.equal(r.ok, false);
    }));

  it('dropout (a fixed mask from a fresh seeded generator each call)', () =>
    k.withBackend('js', () => {
      const x = k.randn([4, 5], { dtype: 'f64', generator: new k.Generator(3), requiresGrad: true });
      const g = k.randn([4, 5], { dtype: 'f64', generator: new k.Generator(4) });
      const fn = (t: Tensor): Tensor => k.sum(k.mul(k.dropout(t, 0.3, { generator: new k.Generator(99) }), g));
      const r = k.gradcheck(fn, [x], GRADCHECK);
      assert.ok(r.ok, JSON.stringify(r.worst));
    }));

  it('composites chained (attention block: layerNorm → matmul → causal attention → gelu → crossEntropy)', () =>
    k.withBackend('js', () => {
      const gen = new k.Generator(21);
      const opts = { dtype: 'f64' as const, generator: gen, requiresGrad: true };
      const x = k.randn([2, 3, 4], opts);
      const w = k.randn([4, 4], opts);
      const head = k.randn([4, 5], opts);
      const targets = k.fromArray([0, 4, 2, 1, 3, 0], [6], { dtype: 'i32' });
      const fn = (xx: Tensor, ww: Tensor, hh: Tensor): Tensor => {
        const h = k.matmul(k.layerNorm(xx, [4]), ww);
        const a = k.scaledDotProductAttention(h, h, h, { causal: true });
        const logits = k.matmul(k.gelu(k.add(a, xx)), hh).reshape([6, 5]);
        return k.crossEntropy(logits, targets, { labelSmoothing: 0.1 });
      };
      const r = k.gradcheck(fn, [x, w, head], GRADCHECK);
      assert.ok(r.ok, JSON.stringify(r.worst));
    }));
});
