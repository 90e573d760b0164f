/**
 * Paths that reached `knobs: internal error` (a stack trace) now end in typed errors, and numeric
 * flags have upper bounds: `--out` (or a run directory, or a file) under a regular file
 * (ENOTDIR), Tensor.toArray()/toString() of a valid rank-5,000 tensor (was a stack overflow),
 * `--threads` above the CPUs available (warned and capped), `--max-tokens` beyond its bound, and
 * recipe or config.json sizes no machine can hold (batch_size 1e9 aborted V8 itself).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { UsageError } from '../src/errors.js';
import { MAX_GENERATE_TOKENS } from '../src/cli/flags.js';
import { chooseThreads } from '../src/cli/threads.js';
import { MAX_JSON_DEPTH, jsonDepth } from '../src/io/json.js';
import { Tensor } from '../src/tensor.js';
import { FormatError } from '../src/errors.js';
import { checkRecipeFits } from '../src/train/limits.js';
import { parseRecipe } from '../src/train/recipe.js';
import { train } from '../src/train/trainer.js';
import { type CliRun, cli } from './harness/cli.js';

const TEXT = fileURLToPath(new URL('../../test/fixtures/text/genesis-1-4.txt', import.meta.url));
const RECIPE = {
  name: 'cli-hardening',
  model: { type: 'gpt', n_positions: 16, n_embd: 16, n_layer: 1, n_head: 2 },
  data: { type: 'text', path: TEXT, validation_fraction: 0.1 },
  optimizer: { type: 'adam', lr: 0.001 },
  batch_size: 2,
  steps: 1,
  eval_batches: 1,
};

let root: string;
let file: string;
let recipe: string;
let run: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'knobs-cli-hardening-'));
  file = join(root, 'a-file');
  await writeFile(file, 'not a directory');
  recipe = join(root, 'recipe.json');
  await writeFile(recipe, JSON.stringify(RECIPE));
  run = join(root, 'run');
  await train(parseRecipe(RECIPE), { out: run });
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

function typed(r: CliRun, code: string, exit: number, mention: RegExp): void {
  assert.doesNotMatch(r.stderr, /internal error/);
  assert.equal(r.code, exit, r.stderr);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, new RegExp(`^knobs: error \\[${code}\\]: `));
  assert.match(r.stderr, mention);
}

describe('no internal errors: a path through a regular file (ENOTDIR)', () => {
  it('knobs train --out FILE/run, with and without --resume', async () => {
    for (const extra of [[], ['--resume']]) {
      const r = await cli(['train', recipe, '--out', join(file, 'run'), ...extra]);
      typed(r, 'E_IO', 1, /a-file\/run: ENOTDIR.*a part of the path is a file, not a directory/);
    }
  });

  it('knobs eval / generate / inspect under a regular file', async () => {
    typed(await cli(['eval', join(file, 'run')]), 'E_IO', 1, /ENOTDIR/);
    typed(await cli(['generate', join(file, 'run'), '--prompt', 'x']), 'E_IO', 1, /ENOTDIR/);
    typed(await cli(['inspect', join(file, 'model.safetensors')]), 'E_IO', 1, /ENOTDIR/);
    typed(await cli(['eval', run, '--data', join(file, 'text.txt')]), 'E_IO', 1, /ENOTDIR/);
  });
});

describe('no internal errors: tensors of high rank', () => {
  it('toArray and toString of a valid rank-5,000 tensor', () => {
    const t = Tensor.fromStorage(new Float32Array([7]), Array<number>(5000).fill(1), 'f32');
    let a: unknown = t.toArray();
    let depth = 0;
    while (Array.isArray(a)) {
      assert.equal(a.length, 1);
      a = a[0];
      depth++;
    }
    assert.equal(depth, 5000);
    assert.equal(a, 7);
    assert.ok(t.toString().endsWith(`${'['.repeat(5000)}7.0000${']'.repeat(5000)}`));
  });

  it('toArray and toString keep their layout (rank 0, empty dimensions, rank 3)', () => {
    assert.equal(Tensor.fromStorage(new Float32Array([2]), [], 'f32').toArray(), 2);
    assert.deepEqual(Tensor.fromStorage(new Float32Array(0), [2, 0, 3], 'f32').toArray(), [[], []]);
    assert.deepEqual(Tensor.fromStorage(new Float32Array(0), [0, 3], 'f32').toArray(), []);
    const t = Tensor.fromStorage(
      new Int32Array(8).map((_, i) => i),
      [2, 2, 2],
      'i32',
    );
    assert.deepEqual(t.toArray(), [
      [
        [0, 1],
        [2, 3],
      ],
      [
        [4, 5],
        [6, 7],
      ],
    ]);
    assert.equal(t.toString(), 'tensor(shape=[2, 2, 2], dtype=i32)\n[[[0, 1],\n  [2, 3]],\n [[4, 5],\n  [6, 7]]]');
  });
});

describe('--threads: checked, and capped at the CPUs available', () => {
  const cpus = availableParallelism();

  it('chooseThreads', () => {
    assert.deepEqual(chooseThreads(['info', '--threads', '1'], {}, 4), { argv: ['info'], threads: 1, warnings: [] });
    assert.deepEqual(chooseThreads(['--threads=3', 'info'], {}, 4), { argv: ['info'], threads: 3, warnings: [] });
    const capped = chooseThreads(['info', '--threads', '999'], {}, 4);
    assert.equal(capped.threads, 4);
    assert.match(capped.warnings[0]!, /--threads 999 is more than the 4 CPUs available to this process; using 4/);
    assert.equal(chooseThreads(['info'], { KNOBS_THREADS: '99999999999999999999' }, 2).threads, 2);
    assert.equal(chooseThreads(['info'], { KNOBS_THREADS: '2' }, 8).threads, 2);
    assert.equal(chooseThreads(['info', '--threads', '2'], { KNOBS_THREADS: '5' }, 8).threads, 2, 'the flag wins');
    assert.equal(chooseThreads(['info'], {}, 8).threads, undefined);
    assert.deepEqual(chooseThreads(['x', '--', '--threads', '2'], {}, 8).argv, ['x', '--', '--threads', '2']);
    for (const bad of ['0', '-1', 'abc', '1.5', '']) {
      assert.throws(() => chooseThreads(['--threads', bad], {}, 4), UsageError);
    }
    assert.throws(() => chooseThreads(['--threads'], {}, 4), UsageError);
    assert.throws(
      () => chooseThreads([], { KNOBS_THREADS: 'many' }, 4),
      (e: unknown) => e instanceof UsageError && /KNOBS_THREADS/.test(e.message),
    );
  });

  it('knobs --threads 999 info: a warning, and the backend uses the available CPUs', async () => {
    const r = await cli(['--threads', '999', 'info', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `^knobs: warning: --threads 999 is more than the ${cpus} CPUs available to this process; using ${cpus}\\n$`,
      ),
    );
    const native = JSON.parse(r.stdout).backends.find((b: { name: string }) => b.name === 'native');
    if (native) assert.equal(native.threads, cpus);
    typed(await cli(['--threads', 'lots', 'info']), 'E_USAGE', 2, /--threads needs a positive integer/);
  });
});

describe('--max-tokens is bounded', () => {
  it(`more than ${MAX_GENERATE_TOKENS} is a usage error, before the model is loaded`, async () => {
    const r = await cli(['generate', run, '--prompt', 'In', '--max-tokens', '1000000000000']);
    typed(r, 'E_USAGE', 2, new RegExp(`--max-tokens is at most ${MAX_GENERATE_TOKENS} .*generate again`));
    typed(
      await cli(['generate', join(root, 'no-run'), '--prompt', 'In', '--max-tokens', String(MAX_GENERATE_TOKENS + 1)]),
      'E_USAGE',
      2,
      /--max-tokens/,
    );
    const ok = await cli(['generate', run, '--prompt', 'In', '--max-tokens', '3', '--temperature', '0', '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout).ids.length, 3);
  });
});

describe('sizes no machine can hold are refused before allocating', () => {
  const cases: Array<[string, (r: Record<string, any>) => void, RegExp]> = [
    [
      'batch_size 1e9 (aborted V8)',
      (r) => void (r.batch_size = 1e9),
      /tensor of .* elements \(batch_size × context × model\.vocab_size\)/,
    ],
    ['vocab_size 1e10', (r) => void (r.model.vocab_size = 1e10), /more than the 4294967295 a tensor can hold/],
    [
      'n_layer 1e9 (1e6 allocated until killed)',
      (r) => void (r.model.n_layer = 1e9),
      /needs at least .* GiB of memory, more than the .* GiB this machine has; reduce model\.n_embd, model\.n_layer/,
    ],
    ['n_embd 2^20', (r) => void ((r.model.n_embd = 2 ** 20), (r.model.n_head = 1)), /GiB of memory/],
    ['grad_accum_steps 1e12', (r) => void (r.grad_accum_steps = 1e12), /GiB of memory/],
  ];
  for (const [what, change, mention] of cases) {
    it(`knobs train: ${what}`, async () => {
      const r = structuredClone(RECIPE) as Record<string, any>;
      change(r);
      const path = join(root, `big-${Math.random().toString(36).slice(2)}.json`);
      await writeFile(path, JSON.stringify(r));
      const out = join(root, 'never-big');
      typed(await cli(['train', path, '--out', out]), 'E_FORMAT', 1, mention);
      assert.equal(existsSync(out), false);
    });
  }

  it('checkRecipeFits is a lower bound: the real recipes fit in 256 MiB, and the budget is what is compared', () => {
    const r = parseRecipe(RECIPE);
    checkRecipeFits(r, 'r.json', 2 ** 28);
    assert.throws(
      () => checkRecipeFits(r, 'r.json', 1000),
      (e: unknown) => e instanceof FormatError && e.rule === 'too_large' && e.details.limit === 1000,
    );
  });

  it("a run's config.json asking for a huge model: eval and generate refuse it", async () => {
    const forged = join(root, 'forged-run');
    await mkdir(forged);
    for (const name of ['recipe.json', 'model.safetensors']) await cp(join(run, name), join(forged, name));
    const config = JSON.parse(await readFile(join(run, 'config.json'), 'utf8'));
    await writeFile(join(forged, 'config.json'), JSON.stringify({ ...config, n_layer: 1e9 }));
    typed(await cli(['eval', forged]), 'E_FORMAT', 1, /config\.json: this model needs at least .* GiB/);
    typed(await cli(['generate', forged, '--prompt', 'x']), 'E_FORMAT', 1, /config\.json: this model needs at least/);
  });
});

describe('JSON nested deeper than anything knobs reads is refused (was a stack overflow)', () => {
  it('jsonDepth counts brackets outside strings only', () => {
    assert.equal(jsonDepth('{"a":[1,{"b":[]}]}'), 4);
    assert.equal(jsonDepth('"[[[[" '), 0);
    assert.equal(jsonDepth('{"a\\"[[[":"\\\\"}'), 1);
    assert.equal(jsonDepth('3'), 0);
  });

  it('--resume with a config.json nested 200,000 deep, and such a recipe', async () => {
    const deep = join(root, 'deep-run');
    await cp(run, deep, { recursive: true });
    const config = (await readFile(join(deep, 'config.json'), 'utf8')).replace(
      '"n_embd": 16',
      `"n_embd": ${'['.repeat(200_000)}${']'.repeat(200_000)}`,
    );
    await writeFile(join(deep, 'config.json'), config);
    typed(
      await cli(['train', '--resume', '--out', deep]),
      'E_FORMAT',
      1,
      new RegExp(`config\\.json: JSON nested 200001 levels deep, more than the ${MAX_JSON_DEPTH}`),
    );
    const recipePath = join(root, 'deep-recipe.json');
    await writeFile(
      recipePath,
      JSON.stringify({ ...RECIPE, description: 'x' }).replace('"x"', `${'['.repeat(200_000)}${']'.repeat(200_000)}`),
    );
    typed(
      await cli(['train', recipePath, '--out', join(root, 'never-deep')]),
      'E_FORMAT',
      1,
      /JSON nested 200001 levels deep/,
    );
  });
});
