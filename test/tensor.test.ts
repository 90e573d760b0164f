import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as k from '../src/index.js';

describe('tensor basics', () => {
  it('creates from nested arrays and reads back', () => {
    const t = k.tensor([
      [1, 2, 3],
      [4, 5, 6],
    ]);
    assert.deepEqual(t.shape, [2, 3]);
    assert.equal(t.dtype, 'f32');
    assert.deepEqual(t.toArray(), [
      [1, 2, 3],
      [4, 5, 6],
    ]);
    assert.equal(k.tensor(7).item(), 7);
  });

  it('rejects ragged arrays and bad shapes with typed errors', () => {
    assert.throws(
      () => k.tensor([[1, 2], [3]]),
      (e: unknown) => e instanceof k.ShapeError && e.code === 'E_SHAPE',
    );
    assert.throws(() => k.fromArray([1, 2, 3], [2, 2]), /do not fill shape \[2, 2\]/);
    assert.throws(() => k.zeros([2, -1]), k.ShapeError);
  });

  it('views share storage; contiguous copies', () => {
    const t = k.arange(6, undefined, 1, { dtype: 'f32' }).reshape([2, 3]);
    const tt = t.transpose(0, 1);
    assert.equal(tt.storage, t.storage);
    assert.equal(tt.isContiguous(), false);
    assert.deepEqual(tt.toArray(), [
      [0, 3],
      [1, 4],
      [2, 5],
    ]);
    const c = tt.contiguous();
    assert.notEqual(c.storage, t.storage);
    assert.deepEqual(c.toFlatArray(), [0, 3, 1, 4, 2, 5]);
    const s = t.slice(1, 0, 3, 2);
    assert.deepEqual(s.toArray(), [
      [0, 2],
      [3, 5],
    ]);
    const e = k.tensor([1, 2]).reshape([2, 1]).expand([2, 3]);
    assert.deepEqual(e.strides, [1, 0]);
    assert.deepEqual(e.toArray(), [
      [1, 1, 1],
      [2, 2, 2],
    ]);
  });

  it('converts between every storage dtype', () => {
    const x = k.tensor([1.5, -2.25, 65504, 0.1]);
    assert.deepEqual(x.to('f16').to('f32').toFlatArray(), [1.5, -2.25, 65504, 0.0999755859375]);
    assert.deepEqual(x.to('bf16').to('f32').toFlatArray(), [1.5, -2.25, 65536, 0.10009765625]);
    assert.deepEqual(x.to('i32').toFlatArray(), [1, -2, 65504, 0]);
    assert.deepEqual(x.to('i64').toFlatArray(), [1, -2, 65504, 0]);
    assert.deepEqual(k.tensor([0, 2, -1]).to('bool').toFlatArray(), [0, 1, 1]);
    assert.deepEqual(k.tensor([300, -1]).to('u8').toFlatArray(), [44, 255]);
  });

  it('rejects arithmetic on storage dtypes with a fix', () => {
    assert.throws(() => k.add(k.tensor([1]).to('f16'), 1), /convert it first with x.to\('f32'\)/);
  });

  it('seeded random streams repeat', () => {
    const a = k.randn([5], { generator: new k.Generator(42) }).toFlatArray();
    const b = k.randn([5], { generator: new k.Generator(42) }).toFlatArray();
    const c = k.randn([5], { generator: new k.Generator(43) }).toFlatArray();
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
    const u = k.rand([10000], { generator: new k.Generator(1) });
    const m = k.mean(u).item();
    assert.ok(Math.abs(m - 0.5) < 0.02, `mean ${m}`);
  });

  it('prints readably', () => {
    const s = k
      .tensor([
        [1, 2],
        [3, 4],
      ])
      .toString();
    assert.match(s, /shape=\[2, 2\], dtype=f32/);
    assert.match(s, /\[\[1\.0000, 2\.0000\],\n \[3\.0000, 4\.0000\]\]/);
  });

  it('reports shape mismatches naming the op and both shapes', () => {
    assert.throws(() => k.add(k.zeros([2, 3]), k.zeros([4])), /add: shapes \[2, 3\] and \[4\] do not broadcast/);
    assert.throws(
      () => k.matmul(k.zeros([2, 3]), k.zeros([2, 3])),
      /matmul: inner dimensions differ: \[2, 3\] · \[2, 3\].*transpose/,
    );
  });
});

describe('autograd', () => {
  it('accumulates gradients across backward calls', () => {
    const x = k.tensor([1, 2, 3], { requiresGrad: true });
    k.mul(x, x).sum().backward();
    k.mul(x, x).sum().backward();
    assert.deepEqual(x.grad!.toFlatArray(), [4, 8, 12]);
  });

  it('reduces gradients of broadcast inputs to the input shape', () => {
    const a = k.ones([2, 3], { requiresGrad: true });
    const b = k.ones([3], { requiresGrad: true });
    k.add(a, b).sum().backward();
    assert.deepEqual(b.grad!.toFlatArray(), [2, 2, 2]);
    assert.deepEqual(a.grad!.shape, [2, 3]);
  });

  it('needs a gradient for a non-scalar, and a tensor that requires grad', () => {
    const x = k.ones([2], { requiresGrad: true });
    assert.throws(
      () => k.mul(x, 2).backward(),
      (e: unknown) => e instanceof k.AutogradError && /not a scalar/.test(e.message),
    );
    assert.throws(() => k.ones([1]).backward(), /does not require grad/);
    const y = k.mul(x, 3);
    y.backward(k.tensor([1, 2]));
    assert.deepEqual(x.grad!.toFlatArray(), [3, 6]);
  });

  it('noGrad and detach stop recording', () => {
    const x = k.ones([2], { requiresGrad: true });
    const y = k.noGrad(() => k.mul(x, 2));
    assert.equal(y.requiresGrad, false);
    assert.equal(x.detach().requiresGrad, false);
  });

  it('handles a deep chain without overflowing the stack', () => {
    const x = k.tensor([1], { requiresGrad: true });
    let y = x;
    for (let i = 0; i < 20000; i++) y = k.add(y, 0);
    y.sum().backward();
    assert.deepEqual(x.grad!.toFlatArray(), [1]);
  });

  it('propagates NaN and Inf without throwing', () => {
    const x = k.tensor([NaN, Infinity, -Infinity, 0], { requiresGrad: true });
    const y = k.exp(x).sum();
    y.backward();
    assert.ok(Number.isNaN(y.item()));
    assert.ok(Number.isNaN(x.grad!.toFlatArray()[0]!));
  });
});
