/**
 * Inputs that are not regular files — a FIFO, a socket, a character device, a directory — are
 * refused at once, by the shared opener (src/io/regular-file.ts) and by every CLI path that reads
 * a file: `knobs inspect`, `knobs eval --data`, the recipe and data paths of `knobs train`, a run's
 * config.json and model.safetensors. Each CLI run is killed after 20 s, so a hang fails the test.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { type Server, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { IOError } from '../src/errors.js';
import { checkRegularFile, openRegularFile, readRegularFile } from '../src/io/regular-file.js';
import { parseRecipe } from '../src/train/recipe.js';
import { train } from '../src/train/trainer.js';
import { type CliRun, startCli } from './harness/cli.js';

const TEXT = fileURLToPath(new URL('../../test/fixtures/text/genesis-1-4.txt', import.meta.url));
const RECIPE = {
  name: 'not-regular',
  model: { type: 'gpt', n_positions: 16, n_embd: 16, n_layer: 1, n_head: 2 },
  data: { type: 'text', path: TEXT, validation_fraction: 0.1 },
  optimizer: { type: 'adam', lr: 0.001 },
  batch_size: 2,
  steps: 1,
  eval_batches: 1,
};

let root: string;
let fifo: string;
let socket: string;
let server: Server;
let run: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'knobs-not-regular-'));
  fifo = join(root, 'fifo');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0, 'mkfifo');
  socket = join(root, 'socket');
  server = createServer();
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  run = join(root, 'run');
  await train(parseRecipe(RECIPE), { out: run });
});
after(async () => {
  server.close();
  await rm(root, { recursive: true, force: true });
});

/** Runs the CLI, killing it after 20 s (a hang is a failure, not a stuck suite). */
async function cliWithin(args: string[]): Promise<CliRun> {
  const { child, done } = startCli(args);
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const r = await done;
  clearTimeout(timer);
  assert.notEqual(r.signal, 'SIGKILL', `knobs ${args.join(' ')} hung`);
  return r;
}

function refused(r: CliRun, path: string, kind: RegExp): void {
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^knobs: error \[E_IO\]: /);
  assert.ok(r.stderr.includes(path), r.stderr);
  assert.match(r.stderr, kind);
  assert.match(r.stderr, /not a regular file/);
}

const kinds = (): Array<[string, string, RegExp]> => [
  ['a FIFO', fifo, /FIFO/],
  ['a socket', socket, /socket/],
  ['a character device', '/dev/zero', /character device/],
  ['a directory', root, /directory/],
];

describe('openRegularFile refuses what is not a regular file', () => {
  it('FIFO, socket, device, directory: an IOError naming the path and the kind, at once', async () => {
    for (const [, path, kind] of kinds()) {
      await assert.rejects(
        openRegularFile(path),
        (e: unknown) => e instanceof IOError && e.message.startsWith(path) && kind.test(e.message),
      );
      await assert.rejects(checkRegularFile(path), IOError);
    }
    const fh = await openRegularFile(TEXT);
    await fh.close();
  });

  it('readRegularFile bounds the size before reading', async () => {
    const big = join(root, 'big.json');
    await writeFile(big, 'x'.repeat(100));
    await assert.rejects(
      readRegularFile(big, 99, 'recipe'),
      (e: unknown) => e instanceof IOError && /100 bytes, more than the 99 a recipe may have/.test(e.message),
    );
    assert.equal((await readRegularFile(big, 100)).byteLength, 100);
  });
});

describe('every CLI path that reads a file refuses them', () => {
  for (const [what, , kind] of [
    ['a FIFO', '', /FIFO/],
    ['a socket', '', /socket/],
    ['a character device', '', /character device/],
    ['a directory', '', /directory/],
  ] as const) {
    const pathOf = () => kinds().find((k) => k[0] === what)![1];

    it(`knobs inspect (${what})`, async () => {
      if (what !== 'a directory') return refused(await cliWithin(['inspect', pathOf()]), pathOf(), kind);
      // A directory is a model directory to inspect (docs/inspect.md): this one has no weights.
      const r = await cliWithin(['inspect', pathOf()]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(
        r.stderr,
        /^knobs: error \[E_FORMAT\]: .* has no model\.safetensors and no model\.safetensors\.index\.json/,
      );
    });

    it(`knobs eval --data (${what})`, async () => {
      refused(await cliWithin(['eval', run, '--data', pathOf()]), pathOf(), kind);
    });

    it(`knobs train: the recipe, and --data (${what})`, async () => {
      refused(await cliWithin(['train', pathOf(), '--out', join(root, 'never')]), pathOf(), kind);
      const recipe = join(root, 'recipe.json');
      await writeFile(recipe, JSON.stringify(RECIPE));
      refused(await cliWithin(['train', recipe, '--data', pathOf(), '--out', join(root, 'never')]), pathOf(), kind);
    });
  }

  it('a run directory whose config.json or model.safetensors is a FIFO (knobs eval, knobs generate)', async () => {
    const broken = join(root, 'broken-run');
    await mkdir(broken);
    for (const name of ['config.json', 'recipe.json']) await writeFile(join(broken, name), '{}');
    await rm(join(broken, 'config.json'));
    assert.equal(spawnSync('mkfifo', [join(broken, 'config.json')]).status, 0);
    refused(await cliWithin(['eval', broken]), join(broken, 'config.json'), /FIFO/);

    const weights = join(root, 'fifo-weights');
    await mkdir(weights);
    const { cp } = await import('node:fs/promises');
    for (const name of ['config.json', 'recipe.json']) await cp(join(run, name), join(weights, name));
    assert.equal(spawnSync('mkfifo', [join(weights, 'model.safetensors')]).status, 0);
    refused(await cliWithin(['generate', weights, '--prompt', 'In']), join(weights, 'model.safetensors'), /FIFO/);
  });

  it('a Hugging Face directory whose model.safetensors is a FIFO (knobs eval --data)', async () => {
    const hf = join(root, 'hf-fifo-weights');
    await mkdir(hf);
    const { cp } = await import('node:fs/promises');
    const fixture = fileURLToPath(new URL('../../test/fixtures/hf/gpt2-tiny/', import.meta.url));
    await cp(join(fixture, 'config.json'), join(hf, 'config.json'));
    assert.equal(spawnSync('mkfifo', [join(hf, 'model.safetensors')]).status, 0);
    // The directory loader refuses it (hf_bad_path) before the weights are opened.
    const r = await cliWithin(['eval', hf, '--data', TEXT]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^knobs: error \[E_FORMAT\]: .*hf-fifo-weights\/model\.safetensors is not a regular file/);
  });
});
