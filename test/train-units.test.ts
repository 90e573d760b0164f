/** The small pieces of training in process: run names, overrides, the metrics log, stop strings. */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FormatError } from '../src/errors.js';
import { generateText } from '../src/models/generate-text.js';
import { GPT } from '../src/models/gpt.js';
import { MetricsLog } from '../src/train/metrics.js';
import { parseRecipe } from '../src/train/recipe.js';
import { checkSameArchitecture, defaultRunDir } from '../src/train/run-dir.js';
import { applyOverrides } from '../src/train/trainer.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-train-units-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const idxRecipe = parseRecipe({
  name: 'u',
  model: { type: 'mlp', hidden: [4] },
  data: {
    type: 'idx',
    train_images: 'd/train-images.gz',
    train_labels: 'd/train-labels.gz',
    test_images: 'd/t10k-images.gz',
    test_labels: 'd/t10k-labels.gz',
  },
  optimizer: { type: 'sgd', lr: 0.1 },
  batch_size: 2,
  epochs: 1,
});

describe('run directory and overrides', () => {
  it('names the default run directory after the recipe and the UTC time', () => {
    assert.equal(defaultRunDir('tiny', new Date('2025-01-02T03:04:05.678Z')), join('runs', 'tiny-20250102T030405Z'));
  });

  it('--data replaces the directory of IDX files, keeps their names, and paths become absolute', () => {
    const r = applyOverrides(idxRecipe, { dataPath: '/data/fashion', steps: 5 });
    assert.ok(r.data.type === 'idx');
    assert.equal(r.data.train_images, '/data/fashion/train-images.gz');
    assert.equal(r.data.test_labels, '/data/fashion/t10k-labels.gz');
    assert.equal(r.steps, 5);
    assert.equal(r.epochs, undefined, '--steps replaces the recipe epochs');
    const plain = applyOverrides(idxRecipe, {});
    assert.ok(plain.data.type === 'idx' && plain.data.train_images === resolve('d/train-images.gz'));
  });

  it('an override that breaks the recipe names the field', () => {
    assert.throws(
      () => applyOverrides(idxRecipe, { steps: 0, source: 'r.json' }),
      (e: unknown) => e instanceof FormatError && e.rule === 'invalid_recipe' && /r\.json.*steps/.test(e.message),
    );
  });

  it('resume compares every config field and names the first that differs', () => {
    checkSameArchitecture('run', { a: 1, b: [2] }, { a: 1, b: [2] }, 'r.json');
    assert.throws(
      () => checkSameArchitecture('run', { a: 1, b: [2] }, { a: 1, b: [3] }, 'r.json'),
      (e: unknown) => e instanceof FormatError && e.rule === 'resume_mismatch' && e.details.field === 'b',
    );
    assert.throws(
      () => checkSameArchitecture('run', { a: 1 }, { a: 1, c: 0 }, 'r.json'),
      /has c \(absent\) but r\.json gives 0/,
    );
  });
});

describe('MetricsLog', () => {
  it('appends rows and cuts the file back to a checkpoint length on reopen', async () => {
    const path = join(dir, 'metrics.jsonl');
    const log = await MetricsLog.open(path, 0);
    await log.append({ step: 1, loss: 2, lr: 0.1, grad_norm: 1, samples_per_s: 10, elapsed_s: 0.1 });
    const kept = log.bytes;
    await log.append({ step: 2, eval_loss: 1.5, accuracy: 0.5, elapsed_s: 0.2 });
    await log.close();
    const again = await MetricsLog.open(path, kept);
    assert.equal(again.bytes, kept);
    await again.close();
    assert.deepEqual(
      (await readFile(path, 'utf8'))
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).step),
      [1],
    );
  });
});

describe('generateText', () => {
  const model = new GPT(
    { vocab_size: 256, n_positions: 16, n_embd: 16, n_layer: 1, n_head: 2, dropout: 0 },
    { seed: 3 },
  );

  it('streams exactly the returned text, and a stop string ends it wherever the tokens split it', () => {
    const free = generateText(model, 'ab', { maxTokens: 24, temperature: 0 });
    assert.equal(free.finishReason, 'length');
    assert.equal(free.ids.length, 24);
    const stop = free.text.slice(3, 6);
    let streamed = '';
    const stopped = generateText(model, 'ab', {
      maxTokens: 24,
      temperature: 0,
      stop: ['zzzz-never', stop],
      onText: (t) => (streamed += t),
    });
    assert.equal(stopped.finishReason, 'stop');
    assert.equal(stopped.text, free.text.slice(0, free.text.indexOf(stop)));
    assert.equal(streamed, stopped.text, 'no part of the stop string was streamed');
    assert.deepEqual(stopped.ids, free.ids.slice(0, stopped.ids.length));
  });

  it('refuses a model that is not byte-level', () => {
    const big = new GPT({ vocab_size: 300, n_positions: 8, n_embd: 8, n_layer: 1, n_head: 1 });
    assert.throws(() => generateText(big, 'x'), /vocab_size 256/);
  });
});
