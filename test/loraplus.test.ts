/**
 * LoRA+ (optim/loraplus.ts): PEFT's parameter groups, lora_B stepping at lr·ratio against a hand
 * AdamW (f64 arithmetic) under a warm-up + cosine schedule, and Optimizer.setLr keeping each
 * group's ratio to the default lr.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ArgumentError } from '../src/errors.js';
import { fromArray } from '../src/ops/creation.js';
import { AdamW, SGD, cosineSchedule } from '../src/optim/index.js';
import { loraPlusGroups } from '../src/optim/loraplus.js';
import { Generator } from '../src/random.js';
import type { Tensor } from '../src/tensor.js';

function param(shape: number[], gen: Generator): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const values = Array.from({ length: n }, () => gen.normal());
  return fromArray(values, shape, { requiresGrad: true });
}

/** torch.optim.AdamW's update for one tensor, in f64 (the reference the f32 optimizer must follow). */
class HandAdamW {
  m: number[];
  v: number[];
  constructor(
    public p: number[],
    readonly beta1: number,
    readonly beta2: number,
    readonly eps: number,
    readonly wd: number,
  ) {
    this.m = p.map(() => 0);
    this.v = p.map(() => 0);
  }
  step(grad: number[], lr: number, t: number): void {
    for (let i = 0; i < this.p.length; i++) {
      this.p[i]! *= 1 - lr * this.wd;
      this.m[i] = this.beta1 * this.m[i]! + (1 - this.beta1) * grad[i]!;
      this.v[i] = this.beta2 * this.v[i]! + (1 - this.beta2) * grad[i]! ** 2;
      const mHat = this.m[i]! / (1 - this.beta1 ** t);
      const vHat = this.v[i]! / (1 - this.beta2 ** t);
      this.p[i]! -= (lr * mHat) / (Math.sqrt(vHat) + this.eps);
    }
  }
}

describe('LoRA+ parameter groups (PEFT create_loraplus_optimizer)', () => {
  const gen = new Generator(3);
  const named: [string, Tensor][] = [
    ['layers.0.q_proj.lora_A.weight', param([2, 5], gen)],
    ['layers.0.q_proj.lora_B.weight', param([4, 2], gen)],
    ['layers.0.q_proj.lora_magnitude_vector.weight', param([4], gen)],
    ['layers.0.q_proj.lora_A.bias', param([2], gen)],
  ];

  it('A at lr; lora_B and 1-d parameters (DoRA magnitudes) at lr·ratio with weight decay; biases without', () => {
    const groups = loraPlusGroups(named, { lr: 1e-3, ratio: 16, weightDecay: 0.1 });
    const summary = groups.map((g) => ({
      names: (g.params as [string, Tensor][]).map(([n]) => n),
      lr: g.lr,
      weightDecay: g.weightDecay,
    }));
    assert.deepEqual(summary, [
      { names: ['layers.0.q_proj.lora_A.weight'], lr: 1e-3, weightDecay: 0.1 },
      {
        names: ['layers.0.q_proj.lora_B.weight', 'layers.0.q_proj.lora_magnitude_vector.weight'],
        lr: 16e-3,
        weightDecay: 0.1,
      },
      { names: ['layers.0.q_proj.lora_A.bias'], lr: 16e-3, weightDecay: 0 },
    ]);
  });

  it('a layer norm trained whole (modules_to_save) is never decayed; a copied weight matrix trains at lr', () => {
    const withCopies: [string, Tensor][] = [
      ...named,
      ['model.norm.weight', param([4], gen)],
      ['model.embed_tokens.weight', param([6, 4], gen)],
    ];
    const groups = loraPlusGroups(withCopies, {
      lr: 1e-3,
      ratio: 16,
      weightDecay: 0.1,
      noDecay: new Set(['model.norm.weight']),
    });
    const names = groups.map((g) => (g.params as [string, Tensor][]).map(([n]) => n));
    assert.deepEqual(names[0], ['layers.0.q_proj.lora_A.weight', 'model.embed_tokens.weight']);
    assert.deepEqual(names[2], ['layers.0.q_proj.lora_A.bias', 'model.norm.weight']);
    assert.equal(groups[2]!.weightDecay, 0);
  });

  it('a ratio ≤ 0 or not finite is refused', () => {
    for (const ratio of [0, -2, Number.NaN, Number.POSITIVE_INFINITY])
      assert.throws(() => loraPlusGroups(named, { lr: 1e-3, ratio, weightDecay: 0 }), ArgumentError);
  });

  it('AdamW over the groups steps lora_B at lr·ratio through a schedule, as a hand AdamW does', () => {
    const fresh = new Generator(7);
    const a = param([3, 6], fresh);
    const b = param([5, 3], fresh);
    const ratio = 8;
    const maxLr = 2e-3;
    const [beta1, beta2, eps, wd] = [0.9, 0.95, 1e-8, 0.05];
    const opt = new AdamW(
      loraPlusGroups(
        [
          ['m.lora_A.weight', a],
          ['m.lora_B.weight', b],
        ],
        { lr: maxLr, ratio, weightDecay: wd },
      ),
      { lr: maxLr, betas: [beta1, beta2], eps, weightDecay: wd },
    );
    const handA = new HandAdamW([...(a.contiguousStorage() as Float32Array)], beta1, beta2, eps, wd);
    const handB = new HandAdamW([...(b.contiguousStorage() as Float32Array)], beta1, beta2, eps, wd);
    const plainB = new HandAdamW([...(b.contiguousStorage() as Float32Array)], beta1, beta2, eps, wd);
    const schedule = cosineSchedule({ maxLr, minLr: maxLr / 10, warmupSteps: 2, totalSteps: 6 });
    const grads = new Generator(11);
    for (let step = 0; step < 6; step++) {
      const ga = Array.from({ length: a.size }, () => grads.normal());
      const gb = Array.from({ length: b.size }, () => grads.normal());
      a.grad = fromArray(ga, a.shape);
      b.grad = fromArray(gb, b.shape);
      opt.setLr(schedule(step));
      assert.equal(opt.groups[1]!.options.lr, schedule(step) * ratio, `step ${step}: B's lr`);
      opt.step();
      handA.step(ga, schedule(step), step + 1);
      handB.step(gb, schedule(step) * ratio, step + 1);
      plainB.step(gb, schedule(step), step + 1);
    }
    for (const [got, want, what] of [
      [a, handA.p, 'lora_A'],
      [b, handB.p, 'lora_B'],
    ] as const) {
      const g = got.contiguousStorage() as Float32Array;
      for (let i = 0; i < want.length; i++)
        assert.ok(
          Math.abs(g[i]! - want[i]!) <= 1e-6 + 1e-5 * Math.abs(want[i]!),
          `${what}[${i}]: ${g[i]} vs ${want[i]}`,
        );
    }
    // Plain AdamW (ratio 1) leaves B far from where LoRA+ took it: the ratio is what moved it.
    const bNow = b.contiguousStorage() as Float32Array;
    assert.ok(Math.max(...plainB.p.map((x, i) => Math.abs(x - bNow[i]!))) > 1e-2);
  });

  it('setLr scales explicit groups by their lr at construction (torch schedulers scale initial_lr)', () => {
    const gen2 = new Generator(5);
    const opt = new SGD(
      [
        { params: [param([2], gen2)], lr: 0.1 },
        { params: [param([2], gen2)], lr: 0.4 },
        { params: [param([2], gen2)] },
      ],
      { lr: 0.2 },
    );
    opt.setLr(0.05);
    assert.deepEqual(
      opt.groups.map((g) => g.options.lr),
      [0.025, 0.1, 0.05],
    );
    assert.equal(opt.lr, 0.025);
  });
});
