/** nn: Module registration, state dicts, freezing, layers, initialisers, and the classifier models. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as k from '../src/index.js';
import './harness/native.js'; // registers the native backend when built (the CNN order test runs on both)
import {
  AvgPool2d,
  CausalSelfAttention,
  Conv1D,
  Conv2d,
  Dropout,
  Embedding,
  Flatten,
  GELU,
  LayerNorm,
  Linear,
  MaxPool2d,
  Module,
  ModuleList,
  ReLU,
  RMSNorm,
  Sequential,
  init,
  nameMatcher,
} from '../src/nn/index.js';
import { CNNClassifier, MLPClassifier, cnnConfig } from '../src/models/index.js';
import { SGD } from '../src/optim/index.js';

const flat = (t: k.Tensor): number[] => t.toFlatArray();

function assertClose(a: readonly number[], b: readonly number[], atol: number, what: string): void {
  assert.equal(a.length, b.length, `${what}: lengths`);
  a.forEach((v, i) => assert.ok(Math.abs(v - b[i]!) <= atol, `${what}[${i}]: ${v} vs ${b[i]}`));
}

class Block extends Module {
  readonly fc: Linear;
  readonly norm: LayerNorm;
  constructor(seed: number) {
    super();
    const generator = new k.Generator(seed);
    this.fc = this.registerModule('fc', new Linear(4, 3, { generator }));
    this.norm = this.registerModule('norm', new LayerNorm(3));
    this.registerBuffer('scale', k.full([1], 2));
    this.registerBuffer('scratch', k.zeros([2]), false);
  }
  forward(x: k.Tensor): k.Tensor {
    return k.mul(this.norm.forward(this.fc.forward(x)), this.buffer('scale'));
  }
}

class Net extends Module {
  readonly blocks: ModuleList<Block>;
  readonly head: Linear;
  constructor(seed = 0) {
    super();
    this.blocks = this.registerModule('blocks', new ModuleList([new Block(seed), new Block(seed + 1)]));
    this.head = this.registerModule('head', new Linear(3, 2, { bias: false, generator: new k.Generator(seed + 2) }));
  }
  forward(x: k.Tensor): k.Tensor {
    const h = this.blocks.at(0).forward(x);
    return this.head.forward(k.add(h, this.blocks.at(1).forward(x)));
  }
}

describe('Module', () => {
  it('names parameters by dotted path in registration order; stateDict adds persistent buffers (PyTorch order)', () => {
    const net = new Net();
    assert.deepEqual(
      net.namedParameters().map(([n]) => n),
      [
        'blocks.0.fc.weight',
        'blocks.0.fc.bias',
        'blocks.0.norm.weight',
        'blocks.0.norm.bias',
        'blocks.1.fc.weight',
        'blocks.1.fc.bias',
        'blocks.1.norm.weight',
        'blocks.1.norm.bias',
        'head.weight',
      ],
    );
    assert.deepEqual(
      [...net.stateDict().keys()],
      [
        'blocks.0.scale',
        'blocks.0.fc.weight',
        'blocks.0.fc.bias',
        'blocks.0.norm.weight',
        'blocks.0.norm.bias',
        'blocks.1.scale',
        'blocks.1.fc.weight',
        'blocks.1.fc.bias',
        'blocks.1.norm.weight',
        'blocks.1.norm.bias',
        'head.weight',
      ],
    );
    assert.deepEqual(
      net.namedBuffers().map(([n]) => n),
      ['blocks.0.scale', 'blocks.0.scratch', 'blocks.1.scale', 'blocks.1.scratch'],
    );
    assert.equal(net.numParameters(), 2 * (12 + 3 + 3 + 3) + 6);
    assert.ok(net.parameters().every((p) => p.requiresGrad));
    assert.equal(net.getModule('blocks.1.fc'), net.blocks.at(1).fc);
    assert.deepEqual(
      net.namedModules().map(([n]) => n),
      ['', 'blocks', 'blocks.0', 'blocks.0.fc', 'blocks.0.norm', 'blocks.1', 'blocks.1.fc', 'blocks.1.norm', 'head'],
    );
    assert.throws(() => net.registerParameter('a.b', k.zeros([1])), /contain no '\.'/);
    assert.throws(() => net.registerParameter('head', k.zeros([1])), /already a child module/);
  });

  it('lists tied parameters once and counts them once', () => {
    const m = new Sequential(new Embedding(5, 3), new Linear(3, 5, { bias: false }));
    const emb = m.layers[0] as Embedding;
    (m.layers[1] as Linear).registerParameter('weight', emb.weight);
    assert.deepEqual(
      m.namedParameters().map(([n]) => n),
      ['0.weight'],
    );
    assert.equal(m.numParameters(), 15);
    assert.deepEqual([...m.stateDict().keys()], ['0.weight', '1.weight']);
  });

  it('stateDict → loadStateDict round trip reproduces outputs and keeps parameter identity', () => {
    const a = new Net(1);
    const b = new Net(7);
    const x = k.randn([5, 4], { generator: new k.Generator(3) });
    assert.notDeepEqual(flat(a.forward(x)), flat(b.forward(x)));
    const before = b.parameters();
    const snapshot = new Map([...a.stateDict()].map(([n, t]) => [n, k.clone(t)]));
    const result = b.loadStateDict(snapshot);
    assert.deepEqual(result, { missing: [], unexpected: [] });
    assert.deepEqual(flat(b.forward(x)), flat(a.forward(x)));
    b.parameters().forEach((p, i) => assert.equal(p, before[i], 'same tensor objects'));
    // plain objects work too, and f16 values convert into f32 parameters
    const halfs = Object.fromEntries([...a.stateDict()].map(([n, t]) => [n, t.to('f16')]));
    b.loadStateDict(halfs);
    assertClose(flat(b.forward(x)), flat(a.forward(x)), 5e-3, 'f16 load');
  });

  it('loadStateDict lists missing, unexpected and mis-shaped keys, and changes nothing on failure', () => {
    const net = new Net(1);
    const good = new Map([...new Net(2).stateDict()].map(([n, t]) => [n, k.clone(t)]));
    const before = flat(net.head.weight);
    const bad = new Map(good);
    bad.delete('blocks.0.fc.bias');
    bad.delete('head.weight');
    bad.set('blocks.0.extra', k.zeros([1]));
    bad.set('blocks.1.fc.weight', k.zeros([4, 3]));
    try {
      net.loadStateDict(bad);
      assert.fail('should throw');
    } catch (e) {
      assert.ok(e instanceof k.ArgumentError);
      assert.equal(e.code, 'E_ARGUMENT');
      const msg = (e as Error).message;
      assert.match(msg, /does not fit Net/);
      assert.match(msg, /missing keys \(2\): blocks\.0\.fc\.bias, head\.weight/);
      assert.match(msg, /unexpected keys \(1\): blocks\.0\.extra/);
      assert.match(msg, /mis-shaped keys \(1\): blocks\.1\.fc\.weight: checkpoint \[4, 3\], model \[3, 4\]/);
      assert.match(msg, /strict: false/);
      assert.deepEqual((e as k.ArgumentError).details.missing, ['blocks.0.fc.bias', 'head.weight']);
    }
    assert.deepEqual(flat(net.head.weight), before, 'nothing written');
    // non-strict: missing/unexpected are reported, shapes still must match
    assert.throws(
      () => net.loadStateDict(bad, { strict: false }),
      (e: unknown) => e instanceof k.ShapeError && /mis-shaped/.test((e as Error).message),
    );
    bad.set('blocks.1.fc.weight', good.get('blocks.1.fc.weight')!);
    const r = net.loadStateDict(bad, { strict: false });
    assert.deepEqual(r, { missing: ['blocks.0.fc.bias', 'head.weight'], unexpected: ['blocks.0.extra'] });
    assert.deepEqual(flat(net.head.weight), before, 'missing key left alone');
    assert.deepEqual(flat(net.blocks.at(1).fc.weight), flat(good.get('blocks.1.fc.weight')!));
    // integer values cannot load into float parameters
    const ints = new Map(good);
    ints.set('head.weight', k.zeros([2, 3], { dtype: 'i32' }));
    assert.throws(() => net.loadStateDict(ints), /non-floating values/);
  });

  it('train()/eval() reach every module; zeroGrad clears gradients', () => {
    const net = new Net();
    net.eval();
    assert.ok(net.namedModules().every(([, m]) => !m.training));
    net.train();
    assert.ok(net.namedModules().every(([, m]) => m.training));
    net
      .forward(k.ones([1, 4]))
      .sum()
      .backward();
    assert.ok(net.parameters().every((p) => p.grad !== null));
    net.zeroGrad();
    assert.ok(net.parameters().every((p) => p.grad === null));
  });

  it('freezes and unfreezes by name pattern (glob, RegExp, predicate)', () => {
    const net = new Net();
    assert.deepEqual(net.freeze('blocks.*.fc.*'), [
      'blocks.0.fc.weight',
      'blocks.0.fc.bias',
      'blocks.1.fc.weight',
      'blocks.1.fc.bias',
    ]);
    assert.equal(net.numParameters({ trainableOnly: true }), net.numParameters() - 30);
    net
      .forward(k.ones([1, 4]))
      .sum()
      .backward();
    assert.equal(net.blocks.at(0).fc.weight.grad, null);
    assert.notEqual(net.head.weight.grad, null);
    assert.deepEqual(net.unfreeze(/^blocks\.1\./), [
      'blocks.1.fc.weight',
      'blocks.1.fc.bias',
      'blocks.1.norm.weight',
      'blocks.1.norm.bias',
    ]);
    assert.deepEqual(net.setRequiresGrad((n) => n.endsWith('.bias'), false).length, 4);
    assert.deepEqual(net.freeze('**').length, 9);
    assert.throws(
      () => net.freeze('block.*'),
      (e: unknown) => e instanceof k.ArgumentError && /no parameter matches block\.\*/.test((e as Error).message),
    );
    assert.ok(nameMatcher('h.*.attn.**')('h.11.attn.c_attn.weight'));
    assert.ok(!nameMatcher('h.*.attn.*')('h.11.attn.c_attn.weight'));
  });
});

describe('layers', () => {
  it('Linear is x·Wᵀ + b with W [out, in]; Conv1D stores [in, out]; the adapter hook adds a delta', () => {
    const lin = new Linear(3, 2, { generator: new k.Generator(1) });
    assert.deepEqual(lin.weight.shape, [2, 3]);
    const x = k.tensor([
      [1, 2, 3],
      [-1, 0, 0.5],
    ]);
    const w = lin.weight.toArray() as number[][];
    const b = flat(lin.bias!);
    const expected = [
      [1, 2, 3],
      [-1, 0, 0.5],
    ].flatMap((row) => [0, 1].map((o) => row.reduce((s, v, i) => s + v * w[o]![i]!, b[o]!)));
    assertClose(flat(lin.forward(x)), expected, 1e-6, 'linear');
    const conv1d = new Conv1D(3, 2);
    assert.deepEqual(conv1d.weight.shape, [3, 2]);
    assert.ok(conv1d.fanInFanOut && !lin.fanInFanOut);
    conv1d.loadStateDict({ weight: lin.weight.transpose(0, 1).contiguous(), bias: lin.bias! });
    assertClose(flat(conv1d.forward(x)), expected, 1e-6, 'conv1d');
    lin.adapter = (input) => k.mul(k.sum(input, -1, true), 10);
    assertClose(
      flat(lin.forward(x)),
      expected.map((v, i) => v + 10 * [6, 6, -0.5, -0.5][i]!),
      1e-5,
      'adapter',
    );
    assert.throws(() => lin.forward(k.ones([2, 4])), /must end in 3 features/);
  });

  it("PyTorch's default init bounds: Linear and Conv2d weights and biases within ±1/√fanIn", () => {
    const lin = new Linear(50, 40, { generator: new k.Generator(2) });
    const bound = 1 / Math.sqrt(50);
    assert.ok(
      flat(lin.weight).every((v) => Math.abs(v) <= bound) && flat(lin.bias!).every((v) => Math.abs(v) <= bound),
    );
    assert.ok(Math.max(...flat(lin.weight).map(Math.abs)) > 0.95 * bound, 'fills the range');
    const conv = new Conv2d(3, 8, 3, { generator: new k.Generator(3) });
    const cb = 1 / Math.sqrt(27);
    assert.ok(flat(conv.weight).every((v) => Math.abs(v) <= cb) && flat(conv.bias!).every((v) => Math.abs(v) <= cb));
    assert.deepEqual(
      flat(new Linear(4, 4, { generator: new k.Generator(9) }).weight),
      flat(new Linear(4, 4, { generator: new k.Generator(9) }).weight),
    );
  });

  it('initialisers: kaiming/xavier statistics and fans', () => {
    const g = new k.Generator(4);
    const std = (t: k.Tensor): number => Math.sqrt(flat(t).reduce((s, v) => s + v * v, 0) / t.size);
    assert.deepEqual(init.computeFans([64, 32, 3, 3]), { fanIn: 288, fanOut: 576 });
    const t = k.zeros([200, 100]);
    init.kaimingNormal_(t, { nonlinearity: 'relu', generator: g });
    assert.ok(Math.abs(std(t) / Math.sqrt(2 / 100) - 1) < 0.03);
    init.kaimingUniform_(t, { nonlinearity: 'relu', mode: 'fanOut', generator: g });
    assert.ok(Math.max(...flat(t).map(Math.abs)) <= Math.sqrt(6 / 200));
    init.xavierUniform_(t, { generator: g });
    assert.ok(Math.max(...flat(t).map(Math.abs)) <= Math.sqrt(6 / 300));
    init.xavierNormal_(t, { gain: 2, generator: g });
    assert.ok(Math.abs(std(t) / (2 * Math.sqrt(2 / 300)) - 1) < 0.03);
    init.normal_(t, 1, 0.5, { generator: g });
    assert.ok(Math.abs(flat(t).reduce((s, v) => s + v, 0) / t.size - 1) < 0.01);
    assert.equal(init.calculateGain('leaky_relu', Math.sqrt(5)), Math.sqrt(1 / 3));
    assert.throws(() => init.kaimingUniform_(k.zeros([3])), /at least 2 dimensions/);
    assert.throws(() => init.normal_(k.zeros([2, 2]).transpose(0, 1)), /contiguous/);
  });

  it('Embedding, LayerNorm, RMSNorm, activations, Flatten, pools and Sequential', () => {
    const emb = new Embedding(10, 4, { generator: new k.Generator(1) });
    const ids = k.tensor(
      [
        [1, 2],
        [3, 1],
      ],
      { dtype: 'i32' },
    );
    const e = emb.forward(ids);
    assert.deepEqual(e.shape, [2, 2, 4]);
    assert.deepEqual(flat(e.slice(1, 1, 2).slice(0, 1, 2)), flat(emb.weight.slice(0, 1, 2)));
    const ln = new LayerNorm(4);
    const y = flat(ln.forward(k.tensor([[1, 2, 3, 4]])));
    assertClose([y.reduce((a, b) => a + b, 0)], [0], 1e-5, 'ln mean');
    const rms = new RMSNorm(4, { eps: 0 });
    assertClose(flat(rms.forward(k.tensor([[3, 4, 0, 0]]))), [1.2, 1.6, 0, 0], 1e-6, 'rms');
    const img = k.arange(32, undefined, 1, { dtype: 'f32' }).reshape([1, 2, 4, 4]);
    assert.deepEqual(new MaxPool2d(2).forward(img).shape, [1, 2, 2, 2]);
    assert.deepEqual(flat(new AvgPool2d(2).forward(img)).slice(0, 2), [2.5, 4.5]);
    const net = new Sequential(
      new Conv2d(2, 3, 3, { padding: 1, generator: new k.Generator(1) }),
      new ReLU(),
      new MaxPool2d(2),
      new Flatten(),
      new Linear(12, 5),
      new GELU('tanh'),
    );
    assert.deepEqual(net.forward(img).shape, [1, 5]);
    assert.deepEqual(
      net.namedParameters().map(([n]) => n),
      ['0.weight', '0.bias', '4.weight', '4.bias'],
    );
  });

  it('Dropout: seeded masks in training mode, identity in eval mode', () => {
    const x = k.ones([1000]);
    const d1 = new Dropout(0.25, { generator: new k.Generator(5) });
    const d2 = new Dropout(0.25, { generator: new k.Generator(5) });
    const a = flat(d1.forward(x));
    assert.deepEqual(a, flat(d2.forward(x)));
    const zeros = a.filter((v) => v === 0).length;
    assert.ok(zeros > 200 && zeros < 300, `${zeros} zeros`);
    assert.ok(a.every((v) => v === 0 || Math.abs(v - 4 / 3) < 1e-6));
    d1.eval();
    assert.equal(d1.forward(x), x);
  });

  it('CausalSelfAttention: position t depends only on positions ≤ t', () => {
    const attn = new CausalSelfAttention(8, 2, { generator: new k.Generator(1) });
    assert.deepEqual(
      attn.namedParameters().map(([n, p]) => `${n}${JSON.stringify(p.shape)}`),
      ['c_attn.weight[24,8]', 'c_attn.bias[24]', 'c_proj.weight[8,8]', 'c_proj.bias[8]'],
    );
    const x = k.randn([1, 5, 8], { generator: new k.Generator(2) });
    const y = flat(attn.forward(x));
    const x2 = k.concat([x.slice(1, 0, 3), k.randn([1, 2, 8], { generator: new k.Generator(3) })], 1);
    const y2 = flat(attn.forward(x2));
    assertClose(y2.slice(0, 24), y.slice(0, 24), 1e-6, 'first three positions unchanged');
    assert.notDeepEqual(y2.slice(24), y.slice(24));
  });

  it("CausalSelfAttention: the explicit path (attention dropout) has the fused path's values and gradients", () => {
    const x = k.randn([2, 4, 8], { generator: new k.Generator(2), dtype: 'f64' });
    const run = (attnDropout: number): number[][] => {
      const attn = new CausalSelfAttention(8, 2, { generator: new k.Generator(1), attnDropout, dtype: 'f64' });
      const xs = k.clone(x).requiresGrad_();
      const y = attn.forward(xs);
      k.sum(k.mul(y, y)).backward();
      return [flat(y), flat(xs.grad!), flat(attn.c_attn.weight.grad!)];
    };
    const fused = run(0);
    const explicit = run(1e-12); // training mode, dropout that (almost surely) keeps everything
    fused.forEach((a, i) => assertClose(explicit[i]!, a, 1e-9, ['y', 'dx', 'dW'][i]!));
  });
});

describe('classifier models', () => {
  it('MLP classifier: names, shapes, flattening, and a few SGD steps lower the loss', () => {
    const m = new MLPClassifier({ input: 12, hidden: [16, 8], classes: 3, dropout: 0.1 }, { seed: 1 });
    assert.deepEqual(
      m.namedParameters().map(([n, p]) => `${n}${JSON.stringify(p.shape)}`),
      [
        'layers.0.weight[16,12]',
        'layers.0.bias[16]',
        'layers.1.weight[8,16]',
        'layers.1.bias[8]',
        'head.weight[3,8]',
        'head.bias[3]',
      ],
    );
    const x = k.randn([6, 1, 3, 4], { generator: new k.Generator(2) });
    const y = k.tensor([0, 1, 2, 0, 1, 2], { dtype: 'i32' });
    assert.deepEqual(m.forward(x).shape, [6, 3]);
    const opt = new SGD(m, { lr: 0.2, momentum: 0.9 });
    m.eval();
    const first = k.crossEntropy(m.forward(x), y).item();
    m.train();
    for (let s = 0; s < 20; s++) {
      opt.zeroGrad();
      k.crossEntropy(m.forward(x), y).backward();
      opt.step();
    }
    m.eval();
    assert.ok(k.crossEntropy(m.forward(x), y).item() < first * 0.5);
    assert.throws(() => new MLPClassifier({ hidden: [0] }), /hidden\[0\] must be a positive integer/);
  });

  it('CNN classifier: names, shapes, flat input, config validation', () => {
    const m = new CNNClassifier(
      { in_channels: 1, image_size: 8, channels: [4, 6], kernel_size: 3, hidden: 10, classes: 3 },
      { seed: 1 },
    );
    assert.deepEqual(
      m.namedParameters().map(([n, p]) => `${n}${JSON.stringify(p.shape)}`),
      [
        'convs.0.weight[4,1,3,3]',
        'convs.0.bias[4]',
        'convs.1.weight[6,4,3,3]',
        'convs.1.bias[6]',
        'fc.weight[10,24]',
        'fc.bias[10]',
        'head.weight[3,10]',
        'head.bias[3]',
      ],
    );
    const x = k.randn([2, 1, 8, 8], { generator: new k.Generator(2) });
    const out = m.forward(x);
    assert.deepEqual(out.shape, [2, 3]);
    assertClose(flat(m.forward(x.reshape([2, 64]))), flat(out), 0, 'flat input');
    k.crossEntropy(out, k.tensor([0, 2], { dtype: 'i32' })).backward();
    assert.ok(m.parameters().every((p) => p.grad !== null));
    assert.equal(cnnConfig({}).channels.length, 2);
    assert.throws(() => new CNNClassifier({ image_size: 2, channels: [4, 4, 4] }), /shrink/);
    assert.throws(() => m.forward(k.ones([2, 3, 8, 8])), /must be \[B, 1, 8, 8\]/);
  });

  it('CNN classifier: pooling before bias + ReLU gives relu(conv + b) → pool, values and gradients', () => {
    // The model pools the raw convolution and adds the bias and ReLU after (a quarter of the work);
    // the textbook order below must give the same logits, loss and gradients, on every backend.
    for (const backend of k.backends()) {
      k.withBackend(backend, () => {
        const m = new CNNClassifier(
          { in_channels: 2, image_size: 12, channels: [4, 16], kernel_size: 3, hidden: 10, classes: 3 },
          { seed: 3 },
        );
        const x = k.randn([3, 2, 12, 12], { generator: new k.Generator(4) });
        const y = k.tensor([0, 2, 1], { dtype: 'i32' });
        const loss = k.crossEntropy(m.forward(x), y);
        loss.backward();
        const grads = m.parameters().map((p) => flat(p.grad!));
        m.zeroGrad();
        let h = x;
        for (const conv of m.convs) h = k.maxPool2d(k.relu(conv.forward(h)), 2);
        const logits = m.head.forward(k.relu(m.fc.forward(k.flatten(h, 1))));
        const reference = k.crossEntropy(logits, y);
        reference.backward();
        assert.equal(loss.item(), reference.item(), `${backend}: loss`);
        m.parameters().forEach((p, i) => assertClose(grads[i]!, flat(p.grad!), 1e-6, `${backend}: grad ${i}`));
      });
    }
  });
});
