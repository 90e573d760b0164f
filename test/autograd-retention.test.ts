/**
 * The tape keeps only what backward needs (src/autograd/retention.ts): an input whose values no
 * gradient that will be computed reads is held as a shape-only alias (empty storage), and backward
 * treats an alias and its original as one tensor. Gradients are checked against hand-derived values.
 *
 *   npx tsc -p tsconfig.json && node --test dist/test/autograd-retention.test.js
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as k from '../src/index.js';
import type { Tensor } from '../src/index.js';

const leaf = (data: number[][]): Tensor => k.tensor(data, { requiresGrad: true });
const keptValues = (t: Tensor | null | undefined): boolean => !!t && t.storage.length > 0;

describe('tape retention', () => {
  it('add keeps no input values; exp keeps its output, not its input', () => {
    const x = leaf([[1, 2]]);
    const h = k.mul(x, 3); // a computed tensor: its values could be freed
    const y = k.add(h, 1);
    assert.equal(keptValues(y.gradFn!.inputs[0]), false);
    assert.equal(y.gradFn!.inputs[0]!.gradFn, h.gradFn);
    const e = k.exp(h);
    assert.equal(keptValues(e.gradFn!.inputs[0]), false);
    assert.equal(e.gradFn!.out, e);
    assert.equal(y.gradFn!.out, undefined);
  });

  it('a product with a frozen weight drops x, a trained one keeps it', () => {
    const x = leaf([[1, 2]]);
    const h = k.mul(x, 2);
    const frozen = k.tensor([[1], [1]]);
    const trained = leaf([[1], [1]]);
    assert.equal(keptValues(k.matmul(h, frozen).gradFn!.inputs[0]), false);
    const withTrained = k.matmul(h, trained).gradFn!;
    assert.equal(keptValues(withTrained.inputs[0]), true);
    assert.equal(keptValues(withTrained.inputs[1]), true);
  });

  it('a parameter is never aliased (its gradient accumulates into that very tensor)', () => {
    const w = leaf([[1, 2]]);
    const y = k.add(w, 1);
    assert.equal(y.gradFn!.inputs[0], w);
  });

  it('an alias and its original count as one tensor in backward', () => {
    // h = 3x is read by mul (values kept) and by add (alias): d/dx Σ(h·h + h) = (2h + 1)·3.
    const x = leaf([[1, -2, 0.5]]);
    const h = k.mul(x, 3);
    k.sum(k.add(k.mul(h, h), h)).backward();
    assert.deepEqual(
      x.grad!.toFlatArray(),
      [1, -2, 0.5].map((v) => (2 * 3 * v + 1) * 3),
    );
  });

  it('the gradient through a frozen product and gelu (which keeps x only) matches the formula', () => {
    const x = leaf([[0.5, -1]]);
    const w = k.tensor([
      [2, 0],
      [1, 3],
    ]); // frozen
    k.sum(k.mul(k.gelu(k.matmul(x, w)), 2)).backward();
    // d/dx Σ 2·gelu(x·W) = 2·gelu'(x·W)·Wᵀ; x·W = [0, −3]
    const gelu1 = (v: number): number => {
      const cdf = 0.5 * (1 + erf(v / Math.SQRT2));
      return cdf + (v * Math.exp(-0.5 * v * v)) / Math.sqrt(2 * Math.PI);
    };
    const d = [gelu1(0), gelu1(-3)];
    const want = [2 * (d[0]! * 2 + d[1]! * 0), 2 * (d[0]! * 1 + d[1]! * 3)];
    x.grad!.toFlatArray().forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 1e-5, `${v} vs ${want[i]}`));
  });
});

function erf(z: number): number {
  // Simpson's rule on 2/√π ∫₀^z e^(−t²) dt, 2000 intervals: error ≪ 1e-9 for |z| ≤ 5.
  const n = 2000;
  const h = z / n;
  let s = 1 + Math.exp(-z * z);
  for (let i = 1; i < n; i++) s += (i % 2 ? 4 : 2) * Math.exp(-(i * h) * (i * h));
  return ((s * h) / 3) * (2 / Math.sqrt(Math.PI));
}
