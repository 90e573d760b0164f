/**
 * The package's entry points (package.json `exports`), resolved by name as a user's import would
 * (Node resolves a package's own name from inside it): the curated root keeps training internals
 * out, and the subpaths reach them.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

const load = (spec: string): Promise<Record<string, unknown>> => import(spec) as Promise<Record<string, unknown>>;

describe('package exports', () => {
  it('the root is the curated API: no training internals', async () => {
    const root = await load('knobs');
    for (const name of ['tensor', 'matmul', 'GPT', 'train', 'loadRecipe', 'evaluateRun', 'ShapeError'])
      assert.equal(typeof root[name], 'function', name);
    for (const name of [
      'cleanStaging',
      'buildModel',
      'modelLoss',
      'applyOverrides',
      'MetricsLog',
      'defaultRunDir',
      'main',
    ]) {
      assert.equal(root[name], undefined, `${name} must not be exported from 'knobs'`);
    }
  });

  it('knobs/checkpoint, knobs/cli and knobs/internal/* reach the rest', async () => {
    const checkpoint = await load('knobs/checkpoint');
    for (const name of ['saveCheckpoint', 'cleanStaging', 'findLatestVerified', 'loadCheckpointTensors'])
      assert.equal(typeof checkpoint[name], 'function', name);
    assert.equal(typeof (await load('knobs/cli')).main, 'function');
    assert.equal(typeof (await load('knobs/internal/train/build')).buildModel, 'function');
    assert.equal(typeof (await load('knobs/internal/backends/native/index')).loadNativeBackend, 'function');
  });

  it('importing knobs/cli runs nothing', async () => {
    const before = process.exitCode;
    await load('knobs/cli');
    await new Promise((resolve) => setTimeout(resolve, 20)); // an auto-run would have finished by now
    assert.equal(process.exitCode, before);
  });
});
