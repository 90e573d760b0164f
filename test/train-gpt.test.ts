/**
 * `knobs train / eval / generate` end to end on a byte-level GPT and real text (Genesis 1–4 of
 * the KJV, made with `bible 'Gen1:1-Gen4:26'`): the run directory, resume after SIGKILL at random
 * moments and after SIGINT (bitwise-identical final weights), fallback past a damaged checkpoint,
 * and bad input that must fail before anything is written.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { loadSafetensors } from '../src/formats/safetensors.js';
import { GPT, gptConfigFromHF } from '../src/models/gpt.js';
import { Generator } from '../src/random.js';
import { loadTokenizerDir } from '../src/tokenizer/config.js';
import { cli, startCli, untimedGeneration } from './harness/cli.js';

const TEXT = fileURLToPath(new URL('../../test/fixtures/text/genesis-1-4.txt', import.meta.url));
const STEPS = 30;

const RECIPE = {
  name: 'e2e-gpt',
  model: { type: 'gpt', n_positions: 32, n_embd: 32, n_layer: 1, n_head: 2, dropout: 0.1 },
  data: { type: 'text', path: TEXT, validation_fraction: 0.1 },
  optimizer: { type: 'adamw', lr: 0.003, betas: [0.9, 0.95], weight_decay: 0.1 },
  schedule: { type: 'cosine', warmup_steps: 5, min_lr: 0.0001 },
  batch_size: 8,
  steps: STEPS,
  grad_accum_steps: 2,
  clip_grad_norm: 1.0,
  log_every: 5,
  eval_every: 10,
  eval_batches: 2,
  checkpoint_every: 5,
};

let dir: string;
let recipePath: string;
let reference: string; // the uninterrupted run
let referenceWeights: Buffer;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-train-gpt-'));
  recipePath = join(dir, 'recipe.json');
  await writeFile(recipePath, JSON.stringify(RECIPE));
  reference = join(dir, 'reference');
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function writeRecipe(name: string, change: (r: Record<string, any>) => void): Promise<string> {
  const r = structuredClone(RECIPE) as Record<string, any>;
  change(r);
  const path = join(dir, name);
  await writeFile(path, JSON.stringify(r));
  return path;
}

describe('knobs train (gpt)', { concurrency: false }, () => {
  it('trains into a Hugging Face style run directory', async () => {
    const r = await cli(['train', recipePath, '--out', reference, '--json', '--keep-checkpoints', '3']);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.step, STEPS);
    assert.equal(result.interrupted, false);
    assert.match(r.stderr, /step 5 loss/); // plain progress lines when stderr is not a terminal

    assert.deepEqual((await readdir(reference)).sort(), [
      'checkpoints',
      'config.json',
      'generation_config.json',
      'metrics.jsonl',
      'model.safetensors',
      'recipe.json',
      'tokenizer.json',
      'tokenizer_config.json',
      'training-data.json',
    ]);
    const { tokenizer } = await loadTokenizerDir(reference);
    assert.deepEqual(tokenizer.encode('Gé 1').ids, [...Buffer.from('Gé 1')], 'the byte-level tokenizer: id = byte');
    const config = JSON.parse(await readFile(join(reference, 'config.json'), 'utf8'));
    assert.equal(config.model_type, 'gpt2');
    assert.deepEqual(config.architectures, ['GPT2LMHeadModel']);
    const model = new GPT(gptConfigFromHF(config));
    const { tensors, metadata } = await loadSafetensors(join(reference, 'model.safetensors'));
    assert.equal(metadata?.get('format'), 'pt');
    assert.deepEqual([...tensors.keys()].sort(), [...model.stateDict().keys()].sort());
    model.loadStateDict(tensors as never);

    const saved = JSON.parse(await readFile(join(reference, 'recipe.json'), 'utf8'));
    assert.equal(saved.data.path, TEXT);
    assert.equal(saved.steps, STEPS);

    const rows = (await readFile(join(reference, 'metrics.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const trainRows = rows.filter((row) => 'loss' in row);
    const evalRows = rows.filter((row) => 'eval_loss' in row);
    assert.deepEqual(
      trainRows.map((row) => row.step),
      [5, 10, 15, 20, 25, 30],
    );
    assert.deepEqual(
      evalRows.map((row) => row.step),
      [10, 20, 30],
    );
    for (const row of trainRows) {
      assert.deepEqual(Object.keys(row).sort(), ['elapsed_s', 'grad_norm', 'loss', 'lr', 'step', 'tokens_per_s']);
      assert.ok(row.tokens_per_s > 0 && row.grad_norm > 0);
    }
    assert.ok(trainRows.at(-1).loss < trainRows[0].loss, 'the loss goes down');
    assert.ok(Math.abs(evalRows.at(-1).bits_per_byte - evalRows.at(-1).eval_loss / Math.LN2) < 1e-9);

    assert.deepEqual((await readdir(join(reference, 'checkpoints'))).sort(), [
      'LATEST',
      'step-20',
      'step-25',
      'step-30',
    ]);
    assert.equal(await readFile(join(reference, 'checkpoints', 'LATEST'), 'utf8'), 'step-30\n');
    referenceWeights = await readFile(join(reference, 'model.safetensors'));
  });

  it('eval --json: loss and bits per byte on the validation split', async () => {
    const r = await cli(['eval', reference, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.ok(out.loss > 0 && out.loss < 6);
    assert.ok(Math.abs(out.bits_per_byte - out.loss / Math.LN2) < 1e-9);
    assert.ok(out.tokens > 1000);
  });

  it('generate: greedy is deterministic, stops at --max-tokens or a stop string, streams to stdout', async () => {
    const args = [
      'generate',
      reference,
      '--prompt',
      'And God said',
      '--temperature',
      '0',
      '--max-tokens',
      '40',
      '--json',
    ];
    const [a, b] = await Promise.all([cli(args), cli(args)]);
    assert.equal(a.code, 0, a.stderr);
    const ga = JSON.parse(a.stdout);
    // Everything but the timings is deterministic.
    assert.deepEqual(untimedGeneration(a.stdout), untimedGeneration(b.stdout));
    assert.deepEqual(ga.prompt_ids, [...Buffer.from('And God said')]);
    assert.equal(ga.ids.length, 40);
    assert.equal(ga.finish_reason, 'length');
    assert.equal(ga.text, Buffer.from(ga.ids).toString('utf8'));
    assert.equal(a.stderr, `And God said${ga.text}\n`); // --json streams to stderr

    const stop = ga.text.slice(5, 7);
    const s = await cli([
      'generate',
      reference,
      '--prompt',
      'And God said',
      '--temperature',
      '0',
      '--max-tokens',
      '40',
      '--stop',
      stop,
    ]);
    assert.equal(s.code, 0, s.stderr);
    const cut = ga.text.indexOf(stop);
    assert.equal(s.stdout, `And God said${ga.text.slice(0, cut)}\n`);
    const sj = JSON.parse((await cli([...args, '--stop', stop])).stdout);
    assert.equal(sj.finish_reason, 'stop');
    assert.equal(sj.text, ga.text.slice(0, cut));

    const model = new GPT(gptConfigFromHF(JSON.parse(await readFile(join(reference, 'config.json'), 'utf8'))));
    assert.equal(model.config.eos_token_id, null, 'byte-level runs have no eos token');
  });

  it(
    'SIGKILL at random moments (also mid-checkpoint), then --resume: final weights bitwise identical',
    { timeout: 120_000 },
    async () => {
      const run = join(dir, 'killed');
      const gen = new Generator(7);
      let kills = 0;
      for (let attempt = 0; attempt < 8; attempt++) {
        // Kill once training has started, after a random 0–800 ms more (checkpoints come every 5 steps).
        let timer: NodeJS.Timeout | undefined;
        const delay = Math.floor(gen.random() * 800);
        const { done } = startCli(['train', recipePath, '--out', run, '--resume'], (text, child) => {
          if (timer === undefined && /training \d+ steps/.test(text))
            timer = setTimeout(() => child.kill('SIGKILL'), delay);
        });
        const r = await done;
        clearTimeout(timer);
        if (r.signal !== 'SIGKILL') {
          assert.equal(r.code, 0, r.stderr);
          break;
        }
        kills++;
      }
      const last = await cli(['train', recipePath, '--out', run, '--resume', '--json']);
      assert.equal(last.code, 0, last.stderr);
      assert.ok(kills >= 1, 'at least one run was killed');
      assert.ok(
        (await readFile(join(run, 'model.safetensors'))).equals(referenceWeights),
        'resumed weights equal the uninterrupted run',
      );
      // metrics.jsonl holds each step once: rows after a lost stretch were cut back at resume.
      const steps = (await readFile(join(run, 'metrics.jsonl'), 'utf8'))
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l))
        .filter((row) => 'loss' in row)
        .map((row) => row.step);
      assert.deepEqual(steps, [5, 10, 15, 20, 25, 30]);
    },
  );

  it('SIGINT finishes the step, writes a checkpoint and exits 130; --resume completes it identically', async () => {
    const run = join(dir, 'interrupted');
    let sent = false;
    const { done } = startCli(['train', recipePath, '--out', run], (text, child) => {
      if (!sent && /step 5 loss/.test(text)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    const r = await done;
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /stopping after this step/);
    assert.match(r.stdout, /continue with: knobs train --resume --out/);
    const latest = (await readFile(join(run, 'checkpoints', 'LATEST'), 'utf8')).trim();
    const step = Number(latest.slice('step-'.length));
    assert.ok(step >= 5 && step < STEPS, `stopped early with a checkpoint, got ${latest}`);
    const resumed = await cli(['train', '--out', run, '--resume', '--json']); // the recipe comes from the run
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.equal(JSON.parse(resumed.stdout).resumedFrom, step);
    assert.ok((await readFile(join(run, 'model.safetensors'))).equals(referenceWeights));
  });

  it('resume skips a bit-flipped or truncated newest checkpoint and falls back to the previous one', async () => {
    const run = join(dir, 'killed');
    const flip = join(run, 'checkpoints', 'step-30', 'model.safetensors');
    const bytes = await readFile(flip);
    bytes[bytes.length - 3] ^= 0x10;
    await writeFile(flip, bytes);
    const r = await cli(['train', recipePath, '--out', run, '--resume', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /skipping step-30/);
    assert.equal(JSON.parse(r.stdout).resumedFrom, 25);
    assert.ok((await readFile(join(run, 'model.safetensors'))).equals(referenceWeights));

    await truncate(join(run, 'checkpoints', 'step-30', 'optimizer.safetensors'), 100);
    const t = await cli(['train', recipePath, '--out', run, '--resume', '--json']);
    assert.equal(t.code, 0, t.stderr);
    assert.equal(JSON.parse(t.stdout).resumedFrom, 25);
    assert.ok((await readFile(join(run, 'model.safetensors'))).equals(referenceWeights));
  });
});

describe('knobs train (gpt): bad input fails clearly and leaves no run directory', { concurrency: false }, () => {
  async function fails(
    recipe: string,
    expect: { code: number; error: string; mentions: (string | RegExp)[] },
    extra: string[] = [],
  ): Promise<void> {
    const out = join(dir, `never-${Math.random().toString(36).slice(2)}`);
    const r = await cli(['train', recipe, '--out', out, ...extra]);
    assert.equal(r.code, expect.code, r.stderr);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, new RegExp(`^knobs: error \\[${expect.error}\\]: `));
    for (const m of expect.mentions)
      assert.match(r.stderr, typeof m === 'string' ? new RegExp(m.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : m);
    assert.equal(existsSync(out), false, 'no run directory was created');
  }

  it('an unknown recipe field', async () => {
    const p = await writeRecipe('unknown.json', (r) => (r.optimizer.momentun = 0.9));
    await fails(p, { code: 1, error: 'E_FORMAT', mentions: [p, 'optimizer', 'momentun'] });
  });

  it('a field of the wrong type', async () => {
    const p = await writeRecipe('type.json', (r) => (r.model.n_embd = '32'));
    await fails(p, { code: 1, error: 'E_FORMAT', mentions: [p, 'model.n_embd'] });
  });

  it('a missing text file names the file and the recipe field', async () => {
    const p = await writeRecipe('missing.json', (r) => (r.data.path = join(dir, 'nope.txt')));
    await fails(p, { code: 1, error: 'E_IO', mentions: [join(dir, 'nope.txt'), 'data.path'] });
  });

  it('an empty text file', async () => {
    const empty = join(dir, 'empty.txt');
    await writeFile(empty, '');
    await fails(recipePath, { code: 1, error: 'E_FORMAT', mentions: [empty, 'empty'] }, ['--data', empty]);
  });

  it('--resume into a run of another architecture names the config field', async () => {
    const p = await writeRecipe('wider.json', (r) => (r.model.n_embd = 64));
    const before = await readFile(join(reference, 'metrics.jsonl'));
    const r = await cli(['train', p, '--out', reference, '--resume']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      /^knobs: error \[E_FORMAT\]: cannot resume .*config\.json has n_embd 32 but .*wider\.json gives 64/,
    );
    assert.ok((await readFile(join(reference, 'metrics.jsonl'))).equals(before), 'the run was not touched');
  });

  it('a used --out without --resume is a usage error', async () => {
    const r = await cli(['train', recipePath, '--out', reference]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^knobs: error \[E_USAGE\]: .*already holds files; pass --resume/);
  });
});
