/**
 * `--resume` never silently starts over and never trusts checkpoint metadata: a run with weights
 * but no checkpoint is refused (nothing overwritten); a trainer.json that fails validation (wrong
 * generator size, a step that is not the checkpoint's, negative metricsBytes, …) or tensors that
 * do not fit make that checkpoint skipped like a corrupt one, and the resumed run still ends
 * bitwise identical to an uninterrupted one. Trains a tiny GPT on Genesis through the library.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { FormatError } from '../src/errors.js';
import { loadSafetensors, saveSafetensors } from '../src/formats/safetensors.js';
import { Generator } from '../src/random.js';
import { parseRecipe } from '../src/train/recipe.js';
import { type TrainEvent, train } from '../src/train/trainer.js';
import { cli } from './harness/cli.js';

const TEXT = fileURLToPath(new URL('../../test/fixtures/text/genesis-1-4.txt', import.meta.url));
const recipe = parseRecipe({
  name: 'resume-guard',
  model: { type: 'gpt', n_positions: 16, n_embd: 16, n_layer: 1, n_head: 2, dropout: 0.1 },
  data: { type: 'text', path: TEXT, validation_fraction: 0.1 },
  optimizer: { type: 'adamw', lr: 0.003 },
  batch_size: 4,
  steps: 6,
  log_every: 2,
  eval_batches: 1,
  checkpoint_every: 2,
});

let root: string;
let reference: string;
let referenceWeights: Buffer;
let counter = 0;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'knobs-resume-guard-'));
  reference = join(root, 'reference');
  await train(recipe, { out: reference });
  referenceWeights = await readFile(join(reference, 'model.safetensors'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A copy of the finished reference run to damage. */
async function copyOfReference(): Promise<string> {
  const dir = join(root, `copy-${counter++}`);
  await cp(reference, dir, { recursive: true });
  return dir;
}

/** Resumes `out`; returns the result and the warnings. */
async function resume(out: string): Promise<{ resumedFrom: number | null; warnings: string[] }> {
  const warnings: string[] = [];
  const r = await train(recipe, {
    out,
    resume: true,
    onLog: (e: TrainEvent) => e.type === 'warning' && warnings.push(e.message),
  });
  return { resumedFrom: r.resumedFrom, warnings };
}

/** Rewrites a checkpoint file and its manifest entry, so the checkpoint still verifies. */
async function forge(run: string, step: number, file: string, bytes: Uint8Array): Promise<void> {
  const dir = join(run, 'checkpoints', `step-${step}`);
  await writeFile(join(dir, file), bytes);
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  manifest.files[file] = { size: bytes.byteLength, sha256: createHash('sha256').update(bytes).digest('hex') };
  await writeFile(join(dir, 'manifest.json'), JSON.stringify(manifest));
}

async function snapshot(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const name of await readdir(dir, { recursive: true })) {
    const bytes = await readFile(join(dir, name)).catch(() => null);
    if (bytes) out.set(name, createHash('sha256').update(bytes).digest('hex'));
  }
  return out;
}

describe('--resume with nothing to resume from', () => {
  for (const damage of ['checkpoints/ deleted', 'checkpoints/ empty', 'only leftovers in checkpoints/']) {
    it(`refuses (${damage}) and overwrites nothing`, async () => {
      const run = await copyOfReference();
      await rm(join(run, 'checkpoints'), { recursive: true });
      if (damage !== 'checkpoints/ deleted') await mkdir(join(run, 'checkpoints'));
      if (damage === 'only leftovers in checkpoints/')
        await mkdir(join(run, 'checkpoints', '.staging-step-2-999999999'));
      const before = await snapshot(run);
      await assert.rejects(
        resume(run),
        (e: unknown) =>
          e instanceof FormatError &&
          e.rule === 'nothing_to_resume' &&
          /model\.safetensors/.test(e.message) &&
          /to start over, move .* away/.test(e.message),
      );
      assert.deepEqual(await snapshot(run), before);
    });
  }

  it('a run killed before its first checkpoint (no weights yet) starts again from step 0', async () => {
    const run = join(root, `early-${counter++}`);
    await mkdir(run);
    await cp(join(reference, 'config.json'), join(run, 'config.json'));
    await writeFile(join(run, 'metrics.jsonl'), '{"step":2,"loss":5}\n');
    const r = await resume(run);
    assert.equal(r.resumedFrom, null);
    assert.ok((await readFile(join(run, 'model.safetensors'))).equals(referenceWeights));
  });

  it('every checkpoint invalid: refuses, naming each, and overwrites nothing', async () => {
    const run = await copyOfReference();
    for (const step of [2, 4, 6]) await forge(run, step, 'trainer.json', new TextEncoder().encode('{"step":"x"}'));
    const before = await snapshot(run);
    await assert.rejects(
      resume(run),
      (e: unknown) =>
        e instanceof FormatError &&
        e.rule === 'nothing_to_resume' &&
        /skipping step-6/.test(e.message) &&
        /skipping step-2/.test(e.message),
    );
    assert.deepEqual(await snapshot(run), before);
  });
});

describe('checkpoint metadata is validated; an invalid checkpoint is skipped like a corrupt one', () => {
  const state = async (run: string): Promise<Record<string, any>> =>
    JSON.parse(await readFile(join(run, 'checkpoints', 'step-6', 'trainer.json'), 'utf8'));
  const cases: Array<[string, (s: Record<string, any>) => void, RegExp]> = [
    ['a generator state of the wrong size', (s) => void s.generator.words.push(1), /generator\.words/],
    ['an all-zero generator state', (s) => void (s.generator.words = [0, 0, 0, 0]), /generator\.words/],
    ['a data generator with a string spare', (s) => void (s.data.generator.spareNormal = 'x'), /data/],
    ['step "x"', (s) => void (s.step = 'x'), /step/],
    ['step 1e9', (s) => void (s.step = 1e9), /step: 1000000000, but the checkpoint is step 6/],
    ['a fractional step', (s) => void (s.step = 5.5), /step/],
    ['negative metricsBytes', (s) => void (s.metricsBytes = -1), /metricsBytes/],
    ['an optimizer step that is not the step', (s) => void (s.optimizer.step = 3), /optimizer\.step/],
    ['another optimizer type', (s) => void (s.optimizer.type = 'sgd'), /optimizer\.type/],
    ['an unknown field', (s) => void (s.extra = 1), /extra|unrecognized/i],
    ['not an object', () => undefined, /trainer state/],
  ];
  for (const [what, mutate, mention] of cases) {
    it(what, async () => {
      const run = await copyOfReference();
      const s = await state(run);
      mutate(s);
      const json = what === 'not an object' ? 'null' : JSON.stringify(s);
      await forge(run, 6, 'trainer.json', new TextEncoder().encode(json));
      const r = await resume(run);
      assert.equal(r.resumedFrom, 4);
      const warning = r.warnings.find((w) => w.startsWith('skipping step-6'));
      assert.ok(warning && /invalid trainer state/.test(warning) && mention.test(warning), r.warnings.join('\n'));
      assert.ok(
        (await readFile(join(run, 'model.safetensors'))).equals(referenceWeights),
        'same weights as the uninterrupted run',
      );
      const rows = (await readFile(join(run, 'metrics.jsonl'), 'utf8'))
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      assert.deepEqual(
        rows.filter((row) => 'loss' in row).map((row) => row.step),
        [2, 4, 6],
        'metrics.jsonl cut back to step 4, then continued',
      );
    });
  }

  it('optimizer tensors that do not fit the model: skipped, and the parts are rebuilt', async () => {
    const run = await copyOfReference();
    const path = join(run, 'checkpoints', 'step-6', 'optimizer.safetensors');
    const { tensors } = await loadSafetensors(path);
    tensors.delete([...tensors.keys()].at(-1)!);
    const forged = join(root, `forged-${counter++}.safetensors`);
    await saveSafetensors(forged, tensors);
    await forge(run, 6, 'optimizer.safetensors', await readFile(forged));
    const r = await resume(run);
    assert.equal(r.resumedFrom, 4);
    assert.match(r.warnings.join('\n'), /skipping step-6 .*loadStateDict/s);
    assert.ok((await readFile(join(run, 'model.safetensors'))).equals(referenceWeights));
  });
});

/**
 * Makes `dir` impossible to empty for this process: a read-only directory for a normal user; as
 * root (CI), which ignores permission bits, an immutable file inside it (chattr +i; ext4, xfs,
 * btrfs). Returns the undo, or null where neither works (e.g. tmpfs as root).
 */
async function makeUnremovable(dir: string): Promise<(() => Promise<void>) | null> {
  if (process.getuid?.() !== 0) {
    await chmod(dir, 0o500);
    return () => chmod(dir, 0o700);
  }
  const file = join(dir, 'stuck');
  await writeFile(file, 'x');
  if (spawnSync('chattr', ['+i', file]).status !== 0) return null;
  return async () => void spawnSync('chattr', ['-i', file]);
}

describe('a real leftover that cannot be removed does not block --resume', () => {
  it('knobs train --resume warns, naming it, and resumes from the newest checkpoint', async (t) => {
    const run = await copyOfReference();
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    const stuck = join(run, 'checkpoints', `.replaced-step-4-${dead}`);
    await mkdir(stuck);
    await writeFile(join(stuck, 'weights'), 'x');
    const undo = await makeUnremovable(stuck);
    if (!undo) return t.skip('neither a read-only directory (non-root) nor chattr +i (root) is available here');
    try {
      const r = await cli(['train', '--resume', '--out', run, '--steps', '8', '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stderr, /internal error/);
      assert.match(
        r.stderr,
        new RegExp(`knobs: warning: cannot clean up \\S*\\.replaced-step-4-${dead} \\(E[A-Z]+: .*rm -rf`),
      );
      assert.equal(JSON.parse(r.stdout).resumedFrom, 6);
    } finally {
      await undo();
    }
  });
});

describe('Generator.setState validates what it restores', () => {
  it('rejects wrong sizes and values with a typed error, changing nothing', () => {
    const g = new Generator(3);
    const before = g.getState();
    for (const bad of [
      { words: [1, 2, 3], spareNormal: null },
      { words: [1, 2, 3, 2 ** 32], spareNormal: null },
      { words: [0, 0, 0, 0], spareNormal: null },
      { words: [1, 2, 3, 4], spareNormal: Number.NaN },
      null,
    ]) {
      assert.throws(
        () => g.setState(bad as never),
        (e: unknown) => e instanceof Error && (e as { code?: string }).code === 'E_ARGUMENT',
      );
    }
    assert.deepEqual(g.getState(), before);
  });
});
