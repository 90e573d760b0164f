/**
 * Errors as data: every ShapeError carries `details.op` and `details.shapes`, every DTypeError
 * `details.op` and `details.dtypes` (the types require them; these tests check the values for a
 * sample of ops, so a server or a program can act on the fields instead of the message).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as k from '../src/index.js';

function shapeError(fn: () => unknown, op: string, shapes: number[][], more: Record<string, unknown> = {}): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof k.ShapeError, `expected a ShapeError, got ${String(e)}`);
    assert.equal(e.code, 'E_SHAPE');
    assert.deepEqual({ op: e.details.op, shapes: e.details.shapes.map((s) => [...s]) }, { op, shapes });
    for (const [key, value] of Object.entries(more)) assert.deepEqual(e.details[key], value, `details.${key}`);
    return true;
  });
}

function dtypeError(fn: () => unknown, op: string, dtypes: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof k.DTypeError, `expected a DTypeError, got ${String(e)}`);
    assert.equal(e.code, 'E_DTYPE');
    assert.deepEqual({ op: e.details.op, dtypes: [...e.details.dtypes] }, { op, dtypes });
    return true;
  });
}

describe('ShapeError details: {op, shapes}', () => {
  it('broadcasting', () => shapeError(() => k.add(k.zeros([2, 3]), k.zeros([4])), 'add', [[2, 3], [4]]));
  it('matmul', () =>
    shapeError(() => k.matmul(k.zeros([2, 3]), k.zeros([4, 5])), 'matmul', [
      [2, 3],
      [4, 5],
    ]));
  it('reshape', () => shapeError(() => k.reshape(k.zeros([2, 3]), [4]), 'reshape', [[2, 3], [4]]));
  it('expand', () =>
    shapeError(
      () => k.expand(k.zeros([2, 3]), [2, 4]),
      'expand',
      [
        [2, 3],
        [2, 4],
      ],
      { axis: 1 },
    ));
  it('concat', () =>
    shapeError(
      () => k.concat([k.zeros([2, 3]), k.zeros([2, 4])], 0),
      'concat',
      [
        [2, 3],
        [2, 4],
      ],
      { axis: 0 },
    ));
  it('conv2d', () =>
    shapeError(() => k.conv2d(k.zeros([1, 3, 4]), k.zeros([2, 3, 1, 1])), 'conv2d', [
      [1, 3, 4],
      [2, 3, 1, 1],
    ]));
  it('layerNorm', () => shapeError(() => k.layerNorm(k.zeros([2, 3]), [4]), 'layerNorm', [[2, 3], [4]]));
  it('crossEntropy', () =>
    shapeError(() => k.crossEntropy(k.zeros([3, 5]), k.zeros([2], { dtype: 'i32' })), 'crossEntropy', [[3, 5], [2]]));
  it('item()', () => shapeError(() => k.zeros([2]).item(), 'item', [[2]]));
  it('a module: Linear', () =>
    shapeError(() => new k.Linear(4, 2).forward(k.zeros([3, 5])), 'Linear', [[3, 5]], { inFeatures: 4 }));
  it('backward() with a gradient of another shape', () => {
    const x = k.ones([2, 2], { requiresGrad: true });
    shapeError(() => k.mul(x, 2).backward(k.ones([4])), 'backward', [[4], [2, 2]]);
  });
});

describe('DTypeError details: {op, dtypes}', () => {
  it('a float-only op on integers', () => dtypeError(() => k.exp(k.zeros([2], { dtype: 'i32' })), 'exp', ['i32']));
  it('where with a non-bool condition', () => dtypeError(() => k.where(k.zeros([2]), 1, 0), 'where', ['f32']));
  it('concat of mixed dtypes', () =>
    dtypeError(() => k.concat([k.zeros([2]), k.zeros([2], { dtype: 'f64' })], 0), 'concat', ['f32', 'f64']));
  it('conv2d of mixed dtypes', () =>
    dtypeError(() => k.conv2d(k.zeros([1, 1, 2, 2]), k.zeros([1, 1, 1, 1], { dtype: 'f64' })), 'conv2d', [
      'f32',
      'f64',
    ]));
  it('crossEntropy with float targets', () =>
    dtypeError(() => k.crossEntropy(k.zeros([2, 3]), k.zeros([2])), 'crossEntropy', ['f32', 'f32']));
  it('embedding with float ids', () =>
    dtypeError(() => k.embedding(k.zeros([2]), k.zeros([4, 3])), 'embedding', ['f32']));
  it('an unknown dtype', () => dtypeError(() => k.zeros([2]).to('f8' as k.DType), 'cast', ['f32', 'f8']));
});
