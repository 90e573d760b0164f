/**
 * `knobs train / eval` on classifiers with real Fashion-MNIST images: a small IDX subset (the
 * first 512 train and 256 test images of Debian's dataset-fashion-mnist), written by the test.
 * MLP (flat) and CNN (image layout), epochs and gradient accumulation, and bad IDX files.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadFashionMnist } from '../src/data/images.js';
import { cli } from './harness/cli.js';

const TRAIN = 512;
const TEST = 256;

/** An IDX file of u8: magic 00 00 08 rank, big-endian dims, the bytes. */
function idx(dims: number[], data: Uint8Array): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header.writeUInt32BE(0x00000800 | dims.length, 0);
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, data]);
}

let dir: string;
let data: string;
const files = {
  train_images: 'train-images-idx3-ubyte',
  train_labels: 'train-labels-idx1-ubyte',
  test_images: 't10k-images-idx3-ubyte',
  test_labels: 't10k-labels-idx1-ubyte',
};

function recipe(model: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: 'e2e-fashion',
    model,
    data: {
      type: 'idx',
      ...Object.fromEntries(Object.entries(files).map(([k, f]) => [k, join(data, f)])),
      layout: model.type === 'cnn' ? 'image' : 'flat',
    },
    optimizer: { type: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true },
    schedule: { type: 'constant', warmup_steps: 2 },
    batch_size: 32,
    epochs: 2,
    grad_accum_steps: 2,
    log_every: 4,
    checkpoint_every: 4,
    ...extra,
  };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-train-fashion-'));
  data = join(dir, 'fashion');
  await mkdir(data);
  const [train, test] = await Promise.all([loadFashionMnist('train'), loadFashionMnist('test')]);
  const px = 28 * 28;
  await writeFile(join(data, files.train_images), idx([TRAIN, 28, 28], train.pixels.subarray(0, TRAIN * px)));
  await writeFile(join(data, files.train_labels), idx([TRAIN], train.labels.subarray(0, TRAIN)));
  await writeFile(join(data, files.test_images), idx([TEST, 28, 28], test.pixels.subarray(0, TEST * px)));
  await writeFile(join(data, files.test_labels), idx([TEST], test.labels.subarray(0, TEST)));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function writeRecipe(name: string, r: Record<string, unknown>): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, JSON.stringify(r));
  return path;
}

describe('knobs train (classifiers)', { concurrency: false }, () => {
  it('MLP: epochs with gradient accumulation, eval --json agrees with the run', async () => {
    const path = await writeRecipe('mlp.json', recipe({ type: 'mlp', hidden: [64], dropout: 0.1 }));
    const out = join(dir, 'mlp');
    const r = await cli(['train', path, '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    // 2 epochs × 16 batches of 32, 2 batches per step.
    assert.equal(result.totalSteps, 16);
    assert.ok(result.lastEval.accuracy > 0.5, `accuracy ${result.lastEval.accuracy}`);
    const rows = (await readFile(join(out, 'metrics.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.ok(rows.filter((row) => 'loss' in row).every((row) => row.samples_per_s > 0));

    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    assert.deepEqual(config, {
      model_type: 'knobs-mlp',
      architectures: ['MLPClassifier'],
      input: 784,
      hidden: [64],
      classes: 10,
      dropout: 0.1,
    });

    const e = await cli(['eval', out, '--json']);
    assert.equal(e.code, 0, e.stderr);
    const ev = JSON.parse(e.stdout);
    assert.equal(ev.examples, TEST);
    assert.equal(ev.accuracy, result.lastEval.accuracy);
    assert.ok(Math.abs(ev.loss - result.lastEval.eval_loss) < 1e-6);
  });

  it('CNN on [B, 1, 28, 28] images', async () => {
    const path = await writeRecipe(
      'cnn.json',
      recipe(
        { type: 'cnn', channels: [4], hidden: 16 },
        { epochs: undefined, steps: 6, grad_accum_steps: 1, optimizer: { type: 'adam', lr: 0.003 } },
      ),
    );
    const out = join(dir, 'cnn');
    const r = await cli(['train', path, '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(await readFile(join(out, 'config.json'), 'utf8')).model_type, 'knobs-cnn');
    const e = await cli(['eval', out, '--json']);
    assert.equal(e.code, 0, e.stderr);
    assert.equal(JSON.parse(e.stdout).examples, TEST);
  });

  describe('bad IDX files fail before the run directory exists', () => {
    async function failsWith(name: string, bytes: Buffer, rule: string): Promise<void> {
      const bad = join(dir, `bad-${name}`);
      await mkdir(bad);
      for (const f of Object.values(files)) await writeFile(join(bad, f), await readFile(join(data, f)));
      await writeFile(join(bad, files.train_images), bytes);
      const path = await writeRecipe(`${name}.json`, recipe({ type: 'mlp', hidden: [8] }));
      const out = join(dir, `never-${name}`);
      const r = await cli(['train', path, '--out', out, '--data', bad]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /^knobs: error \[E_FORMAT\]: /);
      assert.ok(r.stderr.includes(`${join(bad, files.train_images)}: invalid IDX file (${rule})`), r.stderr);
      assert.equal(existsSync(out), false);
    }

    it('bad magic', async () => {
      const good = await readFile(join(data, files.train_images));
      const bytes = Buffer.from(good);
      bytes[0] = 0x42;
      await failsWith('magic', bytes, 'bad_magic');
    });

    it('truncated', async () => {
      const good = await readFile(join(data, files.train_images));
      await failsWith('truncated', good.subarray(0, good.length - 100), 'truncated');
    });

    it('an MLP whose input does not match the images names model.input', async () => {
      const path = await writeRecipe('wrong-input.json', recipe({ type: 'mlp', input: 100, hidden: [8] }));
      const out = join(dir, 'never-input');
      const r = await cli(['train', path, '--out', out]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /\[E_FORMAT\]: model\.input: 100, but .* holds 28×28 = 784-pixel images/);
      assert.equal(existsSync(out), false);
    });
  });
});
