/**
 * Run directories record the SHA-256 and size of every data file they trained on
 * (RUN/training-data.json), hashed by streaming; a resumed run whose data changed warns and records
 * both versions. Hashes are checked against node:crypto over the whole file read at once.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { hashRegularFile } from '../src/io/regular-file.js';
import { parseRecipe } from '../src/train/recipe.js';
import { TRAINING_DATA_NAME } from '../src/train/training-data.js';
import { type TrainEvent, train } from '../src/train/trainer.js';

const TEXT = fileURLToPath(new URL('../../test/fixtures/text/genesis-1-4.txt', import.meta.url));

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'knobs-training-data-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function expected(path: string, field: string): Promise<Record<string, unknown>> {
  const bytes = await readFile(path);
  return { field, path, size: bytes.byteLength, sha256: createHash('sha256').update(bytes).digest('hex') };
}

const record = async (run: string) => JSON.parse(await readFile(join(run, TRAINING_DATA_NAME), 'utf8'));

/** An IDX file of u8: magic 00 00 08 rank, big-endian dims, the bytes. */
function idx(dims: number[], fill: (i: number) => number): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header.writeUInt32BE(0x00000800 | dims.length, 0);
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([
    header,
    Buffer.from(Array.from({ length: dims.reduce((a, b) => a * b, 1) }, (_, i) => fill(i) & 0xff)),
  ]);
}

describe('training-data.json', () => {
  it('hashRegularFile streams: equal to hashing the whole file, across chunk boundaries', async () => {
    const path = join(root, 'big.bin');
    const bytes = Buffer.alloc(9 * 1024 * 1024 + 7);
    for (let i = 0; i < bytes.length; i += 4093) bytes[i] = i & 0xff;
    await writeFile(path, bytes);
    assert.deepEqual(await hashRegularFile(path), {
      size: bytes.length,
      sha256: createHash('sha256').update(bytes).digest('hex'),
    });
  });

  it('a text run records its file; resuming on other bytes warns and records both', async () => {
    const recipe = parseRecipe({
      name: 'data-record',
      model: { type: 'gpt', n_positions: 16, n_embd: 16, n_layer: 1, n_head: 2 },
      data: { type: 'text', path: TEXT, validation_fraction: 0.1 },
      optimizer: { type: 'adam', lr: 0.001 },
      batch_size: 2,
      steps: 2,
      eval_batches: 1,
      checkpoint_every: 1,
    });
    const run = join(root, 'text-run');
    await train(recipe, { out: run });
    const first = await expected(TEXT, 'data.path');
    assert.deepEqual(await record(run), { format: 'knobs-training-data', version: 1, files: [first] });

    // Same data again: nothing new, no warning.
    const quiet: string[] = [];
    await train(recipe, {
      out: run,
      resume: true,
      steps: 3,
      onLog: (e: TrainEvent) => e.type === 'warning' && quiet.push(e.message),
    });
    assert.deepEqual(quiet, []);
    assert.deepEqual((await record(run)).files, [first]);

    const edited = join(root, 'genesis-edited.txt');
    await writeFile(edited, `${await readFile(TEXT, 'utf8')}\nAmen.\n`);
    const warnings: string[] = [];
    await train(recipe, {
      out: run,
      resume: true,
      steps: 4,
      dataPath: edited,
      onLog: (e: TrainEvent) => e.type === 'warning' && warnings.push(e.message),
    });
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /data\.path .*genesis-edited\.txt .* is not the data this run trained on so far/);
    assert.deepEqual((await record(run)).files, [first, await expected(edited, 'data.path')]);
  });

  it('an IDX run records all four files', async () => {
    const data = join(root, 'idx');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(data);
    const names = {
      train_images: 'train-images',
      train_labels: 'train-labels',
      test_images: 'test-images',
      test_labels: 'test-labels',
    };
    await writeFile(
      join(data, names.train_images),
      idx([32, 4, 4], (i) => i * 7),
    );
    await writeFile(
      join(data, names.train_labels),
      idx([32], (i) => i % 3),
    );
    await writeFile(
      join(data, names.test_images),
      idx([8, 4, 4], (i) => i * 5),
    );
    await writeFile(
      join(data, names.test_labels),
      idx([8], (i) => i % 3),
    );
    const recipe = parseRecipe({
      name: 'idx-record',
      model: { type: 'mlp', input: 16, hidden: [4], classes: 3 },
      data: { type: 'idx', ...Object.fromEntries(Object.entries(names).map(([k, f]) => [k, join(data, f)])) },
      optimizer: { type: 'sgd', lr: 0.1 },
      batch_size: 8,
      steps: 1,
    });
    const run = join(root, 'idx-run');
    await train(recipe, { out: run });
    const files = await Promise.all(Object.entries(names).map(([k, f]) => expected(join(data, f), `data.${k}`)));
    assert.deepEqual((await record(run)).files, files);
  });
});
