/**
 * Optimizers against torch.optim (test/fixtures/train/optim.json, scripts/gen_train_fixtures.py),
 * state export/import, parameter groups, clipping, accumulation and schedules.
 * Trajectories match within |Δ| ≤ 1e-6 + 1e-5·|torch| (f32 rounding of the updates).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as k from '../src/index.js';
import { Linear, Sequential, LayerNorm } from '../src/nn/index.js';
import {
  Adam,
  AdamW,
  SGD,
  accumulateGradients,
  clipGradNorm,
  constantSchedule,
  cosineSchedule,
  type Optimizer,
  type BaseOptions,
} from '../src/optim/index.js';

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return dir;
}

interface OptimFixture {
  torch_version: string;
  problem: { W: number[]; b: number[]; X: number[]; Y: number[] };
  runs: {
    name: string;
    optimizer: 'sgd' | 'adam' | 'adamw';
    options: Record<string, unknown>;
    params_after: [number[], number[]][];
    losses: number[];
  }[];
  cosine: { lr: number; eta_min: number; t_max: number; lrs: number[] };
}

const fixture = JSON.parse(readFileSync(join(repoRoot(), 'test/fixtures/train/optim.json'), 'utf8')) as OptimFixture;

function problem(): { W: k.Tensor; b: k.Tensor; loss: () => k.Tensor } {
  const p = fixture.problem;
  const W = k.fromArray(p.W, [4, 3], { requiresGrad: true });
  const b = k.fromArray(p.b, [3], { requiresGrad: true });
  const X = k.fromArray(p.X, [5, 4]);
  const Y = k.fromArray(p.Y, [5, 3]);
  return { W, b, loss: () => k.mean(k.pow(k.sub(k.add(k.matmul(X, W), b), Y), 2)) };
}

function makeOptimizer(kind: string, params: [string, k.Tensor][], o: Record<string, unknown>): Optimizer<BaseOptions> {
  const common = { lr: o.lr as number, weightDecay: (o.weight_decay as number | undefined) ?? 0 };
  if (kind === 'sgd')
    return new SGD(params, {
      ...common,
      momentum: (o.momentum as number) ?? 0,
      dampening: (o.dampening as number) ?? 0,
      nesterov: (o.nesterov as boolean) ?? false,
    });
  const adam = { ...common, betas: o.betas as [number, number], eps: o.eps as number };
  // torch's fixture passes one group, so every parameter decays: say so explicitly
  return kind === 'adam' ? new Adam(params, adam) : new AdamW(params, { ...adam, decay: () => true });
}

const within = (a: number, e: number): boolean => Math.abs(a - e) <= 1e-6 + 1e-5 * Math.abs(e);

describe(`optimizers vs torch.optim (torch ${fixture.torch_version})`, () => {
  for (const run of fixture.runs) {
    it(`${run.name} ${JSON.stringify(run.options)}: 5 steps`, () => {
      const { W, b, loss } = problem();
      const opt = makeOptimizer(
        run.optimizer,
        [
          ['W', W],
          ['b', b],
        ],
        run.options,
      );
      const storage = W.storage;
      for (let s = 0; s < 5; s++) {
        opt.zeroGrad();
        const l = loss();
        assert.ok(within(l.item(), run.losses[s]!), `${run.name} loss ${s}: ${l.item()} vs ${run.losses[s]}`);
        l.backward();
        opt.step();
        const [eW, eb] = run.params_after[s]!;
        W.toFlatArray().forEach((v, i) =>
          assert.ok(within(v, Math.fround(eW[i]!)), `${run.name} step ${s} W[${i}]: ${v} vs ${eW[i]}`),
        );
        b.toFlatArray().forEach((v, i) =>
          assert.ok(within(v, Math.fround(eb[i]!)), `${run.name} step ${s} b[${i}]: ${v} vs ${eb[i]}`),
        );
      }
      assert.equal(W.storage, storage, 'updated in place');
      assert.equal(opt.stepCount, 5);
    });
  }
});

describe('optimizer state and groups', () => {
  function model(seed: number): Sequential {
    return new Sequential(
      new Linear(4, 8, { generator: new k.Generator(seed) }),
      new LayerNorm(8),
      new Linear(8, 2, { generator: new k.Generator(seed + 1) }),
    );
  }
  const x = k.randn([6, 4], { generator: new k.Generator(11) });
  const lossOf = (m: Sequential): k.Tensor => k.mean(k.pow(m.forward(x), 2));
  const train = (m: Sequential, opt: Optimizer<BaseOptions>, steps: number): void => {
    for (let s = 0; s < steps; s++) {
      opt.zeroGrad();
      lossOf(m).backward();
      opt.step();
    }
  };

  it('AdamW decays only rank ≥ 2 tensors by default; explicit groups are kept as given', () => {
    const m = model(1);
    const opt = new AdamW(m, { lr: 1e-2, weightDecay: 0.1 });
    assert.deepEqual(
      opt.groups.map((g) => [g.names, g.options.weightDecay]),
      [
        [['0.weight', '2.weight'], 0.1],
        [['0.bias', '1.weight', '1.bias', '2.bias'], 0],
      ],
    );
    const groups = new AdamW(
      [
        { params: [['0.weight', m.layers[0]!.parameters()[0]!]] as [string, k.Tensor][], lr: 0.5 },
        { params: [['2.bias', m.parameters()[5]!]] as [string, k.Tensor][] },
      ],
      { lr: 1e-3 },
    );
    assert.deepEqual(
      groups.groups.map((g) => [g.options.lr, g.options.weightDecay]),
      [
        [0.5, 0.01],
        [1e-3, 0.01],
      ],
    );
    assert.equal(new AdamW(m, { lr: 1, weightDecay: 0 }).groups.length, 1);
    assert.throws(() => new AdamW([m.parameters()[0]!, m.parameters()[0]!], { lr: 1 }), /appears twice/);
    m.freeze('**');
    assert.throws(() => new AdamW(m, { lr: 1 }), /no parameters to optimize/);
  });

  it('frozen parameters and parameters without gradients are not updated', () => {
    const m = model(1);
    const opt = new SGD(m, { lr: 0.1 });
    m.freeze('0.*');
    const before = m.parameters()[0]!.toFlatArray();
    train(m, opt, 2);
    assert.deepEqual(m.parameters()[0]!.toFlatArray(), before);
  });

  for (const [name, make] of [
    ['AdamW', (m: Sequential) => new AdamW(m, { lr: 1e-2, betas: [0.9, 0.95], weightDecay: 0.1 })],
    ['Adam', (m: Sequential) => new Adam(m, { lr: 1e-2, weightDecay: 0.01 })],
    ['SGD', (m: Sequential) => new SGD(m, { lr: 0.05, momentum: 0.9, nesterov: true })],
  ] as const) {
    it(`${name}: stateDict → loadStateDict resumes exactly (3 + 2 steps = 5 steps)`, () => {
      const straight = model(3);
      const o1 = make(straight);
      train(straight, o1, 5);

      const first = model(3);
      const o2 = make(first);
      train(first, o2, 3);
      const saved = o2.stateDict();
      const weights = new Map([...first.stateDict()].map(([n, t]) => [n, k.clone(t)]));
      const copy = {
        type: saved.type,
        step: saved.step,
        tensors: new Map([...saved.tensors].map(([n, t]) => [n, k.clone(t)])),
      };
      if (name !== 'SGD') assert.ok(copy.tensors.has('0.weight.exp_avg') && copy.tensors.has('0.weight.exp_avg_sq'));
      else assert.ok(copy.tensors.has('0.weight.momentum_buffer'));
      assert.equal(copy.tensors.get('0.weight.step')!.item(), 3);
      assert.equal(copy.step, 3);

      const resumed = model(99);
      resumed.loadStateDict(weights);
      const o3 = make(resumed);
      o3.loadStateDict(copy);
      assert.equal(o3.stepCount, 3);
      train(resumed, o3, 2);
      assert.deepEqual(
        resumed.parameters().map((p) => p.toFlatArray()),
        straight.parameters().map((p) => p.toFlatArray()),
      );
    });
  }

  it('loadStateDict rejects state from another optimizer, unknown names and wrong shapes', () => {
    const m = model(1);
    const opt = new AdamW(m, { lr: 1e-2 });
    train(m, opt, 1);
    const state = opt.stateDict();
    assert.throws(() => new SGD(m, { lr: 1 }).loadStateDict(state), /'adamw' optimizer, not 'sgd'/);
    const extra = { ...state, tensors: new Map([...state.tensors, ['9.weight.exp_avg', k.zeros([1])]]) };
    assert.throws(() => new AdamW(m, { lr: 1e-2 }).loadStateDict(extra), /unexpected entries: 9\.weight\.exp_avg/);
    const bad = { ...state, tensors: new Map(state.tensors) };
    bad.tensors.set('0.weight.exp_avg', k.zeros([4, 8]));
    bad.tensors.delete('2.bias.exp_avg_sq');
    try {
      new AdamW(m, { lr: 1e-2 }).loadStateDict(bad);
      assert.fail('should throw');
    } catch (e) {
      assert.ok(e instanceof k.ArgumentError);
      assert.match((e as Error).message, /'0\.weight\.exp_avg' has shape \[4, 8\], parameter \[8, 4\]/);
      assert.match((e as Error).message, /'2\.bias' has slots \[exp_avg\] of \[exp_avg, exp_avg_sq\]/);
    }
  });
});

describe('gradient utilities', () => {
  it('clipGradNorm returns the global norm and scales gradients to maxNorm', () => {
    const a = k.tensor([3, 0], { requiresGrad: true });
    const b = k.tensor([[0, 4]], { requiresGrad: true });
    a.grad = k.tensor([3, 0]);
    b.grad = k.tensor([[0, 4]]);
    assert.equal(clipGradNorm([a, b], 10), 5);
    assert.deepEqual(a.grad.toFlatArray(), [3, 0], 'below maxNorm: unchanged');
    assert.equal(clipGradNorm([a, b], 1), 5);
    const scale = 1 / (5 + 1e-6);
    assert.deepEqual(a.grad.toFlatArray(), [Math.fround(3 * scale), 0]);
    assert.deepEqual(b.grad!.toFlatArray(), [0, Math.fround(4 * scale)]);
    assert.ok(Math.abs(clipGradNorm([a, b], 1, { normType: Infinity }) - 0.8) < 1e-6);
    a.grad = k.tensor([NaN, 1]);
    assert.ok(Number.isNaN(clipGradNorm([a, b], 1)));
  });

  it('accumulateGradients over micro-batches equals the full-batch gradient', () => {
    const W = k.randn([4, 2], { generator: new k.Generator(1), requiresGrad: true });
    const X = k.randn([8, 4], { generator: new k.Generator(2) });
    const lossOn = (x: k.Tensor): k.Tensor => k.mean(k.pow(k.matmul(x, W), 2));
    lossOn(X).backward();
    const full = W.grad!.toFlatArray();
    W.grad = null;
    const mean = accumulateGradients(4, (i) => lossOn(X.slice(0, 2 * i, 2 * i + 2)));
    W.grad!.toFlatArray().forEach((v, i) => assert.ok(Math.abs(v - full[i]!) < 1e-6));
    assert.ok(Math.abs(mean - k.noGrad(() => lossOn(X)).item()) < 1e-6);
  });
});

describe('learning-rate schedules', () => {
  it('cosine without warm-up equals torch CosineAnnealingLR', () => {
    const c = fixture.cosine;
    const lr = cosineSchedule({ maxLr: c.lr, minLr: c.eta_min, totalSteps: c.t_max });
    c.lrs.forEach((v, s) => assert.ok(Math.abs(lr(s) - v) < 1e-12, `step ${s}: ${lr(s)} vs ${v}`));
  });

  it('linear warm-up, cosine to minLr, then flat', () => {
    const lr = cosineSchedule({ maxLr: 1, minLr: 0.1, warmupSteps: 4, totalSteps: 14 });
    assert.deepEqual([0, 1, 2, 3].map(lr), [0.25, 0.5, 0.75, 1]);
    assert.equal(lr(4), 1);
    assert.ok(Math.abs(lr(9) - 0.55) < 1e-12, 'halfway: (max + min) / 2');
    assert.equal(lr(14), 0.1);
    assert.equal(lr(1000), 0.1);
    const constant = constantSchedule({ lr: 3e-4, warmupSteps: 2 });
    assert.deepEqual([0, 1, 2, 50].map(constant), [1.5e-4, 3e-4, 3e-4, 3e-4]);
    assert.throws(() => cosineSchedule({ maxLr: 1, warmupSteps: 5, totalSteps: 3 }), /totalSteps/);
    const opt = new SGD([k.zeros([1], { requiresGrad: true })], { lr: 1 });
    opt.setLr(lr(9));
    assert.equal(opt.lr, lr(9));
  });
});
