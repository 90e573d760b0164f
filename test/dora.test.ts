/**
 * DoRA (finetune/dora.ts) against plain torch applying PEFT's rules in float64
 * (test/fixtures/dora/layers.json from scripts/gen_dora_fixtures.py): the weight norm, the output
 * and every gradient (x, lora_A, lora_B, the magnitude; none through the detached norm) on a Linear
 * and on a GPT-2 Conv1D with a bias, the merged weight and the unmerge back to the base; on a
 * q8_0 layer DoRA computes what it computes on that layer's decoded f32 weights.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { noGrad } from '../src/autograd/tape.js';
import { dequantizedLayer } from '../src/finetune/quantized-base.js';
import { LoraLayer } from '../src/finetune/lora.js';
import { Conv1D, Linear } from '../src/nn/linear.js';
import { QuantizedLinear } from '../src/nn/quantized-linear.js';
import { fromArray } from '../src/ops/creation.js';
import { mul } from '../src/ops/elementwise.js';
import { sum } from '../src/ops/reduce.js';
import { Generator } from '../src/random.js';
import type { Tensor } from '../src/tensor.js';
import { repoRoot } from './harness/fixtures.js';
import type { LayerCase } from './harness/layer-case.js';

interface Case extends LayerCase {
  bias: number[] | null;
  lora_A: number[];
  lora_B: number[];
  magnitude: number[];
  initial_norm: number[];
  x_shape: number[];
  x: number[];
  grad_output: number[];
  y: number[];
  grad_x: number[];
  grad_lora_A: number[];
  grad_lora_B: number[];
  grad_magnitude: number[];
  merged_weight: number[];
}
const FIXTURE = JSON.parse(readFileSync(join(repoRoot(), 'test', 'fixtures', 'dora', 'layers.json'), 'utf8')) as {
  torch: string;
  cases: Case[];
};

const set = (t: Tensor, values: ArrayLike<number>): void => (t.storage as Float32Array).set(values);
const values = (t: Tensor): Float32Array => t.contiguousStorage() as Float32Array;

/** |got − want| ≤ atol + rtol·|want| everywhere (f32 against torch's float64). */
function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, atol = 1e-5, rtol = 1e-4): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++)
    assert.ok(
      Math.abs(got[i]! - want[i]!) <= atol + rtol * Math.abs(want[i]!),
      `${what}[${i}]: ${got[i]} vs ${want[i]}`,
    );
}

/** The case's base layer with its DoRA adapter, its tensors set to the fixture's. */
function build(c: Case): { layer: Linear; lora: LoraLayer } {
  const layer = c.conv1d
    ? new Conv1D(c.in, c.out, { bias: c.bias !== null })
    : new Linear(c.in, c.out, { bias: false });
  set(layer.weight, c.weight);
  if (c.bias) set(layer.bias!, c.bias);
  layer.requiresGrad_(false);
  const lora = new LoraLayer(layer, c.name, {
    r: c.r,
    alpha: c.lora_alpha,
    rslora: false,
    dropout: 0,
    init: true,
    dora: true,
  });
  set(lora.lora_A.weight, c.lora_A);
  set(lora.lora_B.weight, c.lora_B);
  set(lora.magnitude!.weight, c.magnitude);
  return { layer, lora };
}

describe(`DoRA against torch ${FIXTURE.torch} applying PEFT's rules`, () => {
  for (const c of FIXTURE.cases) {
    it(`${c.name}: weight norm, output and gradients`, () => {
      const { layer, lora } = build(c);
      assertClose(values(lora.weightNorm()), c.initial_norm, 'norm');
      const x = fromArray(c.x, c.x_shape, { requiresGrad: true });
      const y = layer.forward(x);
      assertClose(values(y), c.y, 'y');
      sum(mul(y, fromArray(c.grad_output, y.shape as number[]))).backward();
      assertClose(values(x.grad!), c.grad_x, 'grad x');
      assertClose(values(lora.lora_A.weight.grad!), c.grad_lora_A, 'grad lora_A');
      assertClose(values(lora.lora_B.weight.grad!), c.grad_lora_B, 'grad lora_B');
      assertClose(values(lora.magnitude!.weight.grad!), c.grad_magnitude, 'grad magnitude');
      assert.equal(layer.weight.grad, null, 'the base gets no gradient');
    });

    it(`${c.name}: merge writes (m / n)·(W + s·B·A); unmerge restores the base`, () => {
      const { layer, lora } = build(c);
      const x = fromArray(c.x, c.x_shape);
      const before = values(noGrad(() => layer.forward(x))).slice();
      lora.merge();
      assertClose(values(layer.weight), c.merged_weight, 'merged weight');
      assertClose(values(noGrad(() => layer.forward(x))), before, 'merged forward', 1e-5, 1e-5);
      lora.unmerge();
      const maxW = Math.max(...c.weight.map(Math.abs));
      const w = values(layer.weight);
      assert.ok(
        c.weight.every((v, i) => Math.abs(w[i]! - v) <= 1e-6 * maxW),
        'max|W′ − W| ≤ 1e-6·max|W|',
      );
      assertClose(values(noGrad(() => layer.forward(x))), before, 'forward after unmerge', 1e-6, 1e-6);
    });
  }

  it('a new DoRA adapter changes nothing: the magnitude starts at the norm of W', () => {
    const c = FIXTURE.cases[0]!;
    const layer = new Linear(c.in, c.out, { bias: false });
    set(layer.weight, c.weight);
    const x = fromArray(c.x, c.x_shape);
    const base = values(noGrad(() => layer.forward(x))).slice();
    const lora = new LoraLayer(layer, 'l', { r: 4, alpha: 8, rslora: false, dropout: 0, init: true, dora: true });
    assertClose(values(lora.magnitude!.weight), values(lora.weightNorm()), 'magnitude', 0, 0);
    assertClose(values(noGrad(() => layer.forward(x))), base, 'output', 0, 0);
  });

  it('on a q8_0 layer DoRA computes what it computes on the decoded f32 layer', () => {
    const gen = new Generator(1);
    const float = new Linear(64, 16, { bias: true, generator: gen });
    const q = QuantizedLinear.fromLinear(float, 'q8_0');
    const decoded = dequantizedLayer(q, false);
    const opts = { r: 4, alpha: 16, rslora: false, dropout: 0, init: false, dora: true } as const;
    const onQ = new LoraLayer(q, 'l', { ...opts, generator: new Generator(2) });
    const onF = new LoraLayer(decoded, 'l', { ...opts, generator: new Generator(2) });
    // init false: lora_B random too (the same draws on both), so W + s·B·A differs from W
    assertClose(values(onQ.lora_B.weight), values(onF.lora_B.weight), 'same B', 0, 0);
    assertClose(values(onQ.weightNorm()), values(onF.weightNorm()), 'norm', 1e-3, 1e-3);
    const x = fromArray(
      Array.from({ length: 3 * 64 }, () => gen.normal()),
      [3, 64],
    );
    // The q8_0 kernel quantizes its input too, so its base output is q's own, not the decoded layer's:
    // the expected DoRA output is bias + (m / n)·(q's x·Wᵀ + s·B·A·x), with n from the decoded weights.
    const n = values(onF.weightNorm());
    const m = values(onQ.magnitude!.weight);
    const bias = values(q.bias!);
    const xw = values(noGrad(() => q.base(x)));
    const plainDelta = values(
      // s·B·A·x
      noGrad(() => mul(onF.lora_B.forward(onF.lora_A.forward(x)), onF.scaling)),
    );
    const want = xw.map((v, i) => {
      const o = i % 16;
      return bias[o]! + (m[o]! / n[o]!) * (v - bias[o]! + plainDelta[i]!);
    });
    assertClose(values(noGrad(() => q.forward(x))), want, 'output', 1e-4, 1e-3);
  });
});
