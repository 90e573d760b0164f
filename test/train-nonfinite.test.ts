/**
 * Non-finite steps (issue 11, item 6): a step whose gradient has a NaN or Inf is skipped (no
 * update) and logged as `{"step", "skipped": "nonfinite_grad"}`; more than max_nonfinite_steps in
 * a row stops the run with a typed error and keeps its checkpoints. The run is made to diverge for
 * real: SGD with lr 1e30 sends the weights to ±1e30 after one step, so every later loss is NaN.
 */
import assert from 'node:assert/strict';
import { readFile, readdir, rm, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { FormatError } from '../src/errors.js';
import { loadSafetensors } from '../src/formats/safetensors.js';
import type { Tensor } from '../src/tensor.js';
import { parseRecipe } from '../src/train/recipe.js';
import { train } from '../src/train/trainer.js';

const TEXT = fileURLToPath(new URL('../../test/fixtures/text/genesis-1-4.txt', import.meta.url));
const RECIPE = {
  name: 'nonfinite',
  model: { type: 'gpt', n_positions: 16, n_embd: 16, n_layer: 1, n_head: 2 },
  data: { type: 'text', path: TEXT, validation_fraction: 0.1 },
  optimizer: { type: 'sgd', lr: 1e30 },
  batch_size: 2,
  steps: 20,
  log_every: 1,
  eval_every: 100,
  eval_batches: 1,
  checkpoint_every: 1,
  max_nonfinite_steps: 3,
};

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('non-finite gradients', () => {
  it('are skipped and logged; more than max_nonfinite_steps in a row stop the run, keeping its checkpoints', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'knobs-nonfinite-'));
    dirs.push(dir);
    const out = join(dir, 'run');
    await assert.rejects(
      train(parseRecipe(RECIPE), { out }),
      (e: unknown) =>
        e instanceof FormatError &&
        e.rule === 'nonfinite_grad' &&
        e.details.consecutive === 4 &&
        e.details.step === 5 &&
        /max_nonfinite_steps = 3/.test(e.message),
    );
    const rows = (await readFile(join(out, 'metrics.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const skipped = rows.filter((r) => r.skipped === 'nonfinite_grad').map((r) => r.step);
    assert.deepEqual(skipped, [2, 3, 4, 5]);
    assert.ok(
      rows.some((r) => r.step === 1 && typeof r.loss === 'number' && Number.isFinite(r.grad_norm)),
      'step 1 was a normal step',
    );
    const checkpoints = (await readdir(join(out, 'checkpoints'))).filter((n) => !n.startsWith('.'));
    assert.ok(
      checkpoints.includes('step-4'),
      `the checkpoints written before the stop are kept: ${checkpoints.join(', ')}`,
    );
    // Skipped updates leave the weights as step 1 made them: huge but finite, never NaN.
    const { tensors } = await loadSafetensors(join(out, 'checkpoints', 'step-4', 'model.safetensors'));
    for (const [name, t] of tensors) {
      const values = (t as Tensor).to('f32').contiguousStorage() as Float32Array;
      assert.ok(
        values.every((v) => Number.isFinite(v)),
        name,
      );
    }
  });

  it('max_nonfinite_steps defaults to 10', () => {
    const { max_nonfinite_steps: _, ...rest } = RECIPE;
    assert.equal(parseRecipe(rest).max_nonfinite_steps, 10);
  });
});
