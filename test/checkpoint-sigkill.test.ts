/**
 * kill -9 at random moments. A child process resumes from the newest verified checkpoint and
 * saves checkpoints in a loop (with pruning); the test kills it with SIGKILL after a random delay,
 * 20 times, often in the middle of writing a file, renaming, or pruning. After every kill:
 *   - findLatestVerified returns a checkpoint (once any was committed),
 *   - its step is at least the last step the child reported committed (a commit is never lost),
 *   - its files hold exactly the bytes the child wrote for that step (not just a matching manifest),
 *   - the next child's cleanStaging removes the dead child's leftovers.
 * Delays come from a seeded generator, so a failure can be replayed by its iteration number.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, before, it } from 'node:test';
import { Generator } from '../src/random.js';
import {
  cleanStaging,
  findLatestVerified,
  readCheckpointFile,
  readCheckpointJson,
  saveCheckpoint,
} from '../src/train/checkpoint.js';

const ITERATIONS = 20;
/** The whole test stays well under 20 s on two busy cores. */
const BUDGET_MS = 18_000;

/** The bytes of step s's big file: 200–800 KiB, so writes take long enough to be interrupted. */
function payload(step: number): Uint8Array {
  const n = 200 * 1024 + ((step * 7919) % (600 * 1024));
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + step * 7) & 0xff;
  return out;
}

const CHILD = (checkpointUrl: string) => `
import { saveCheckpoint, findLatestVerified, cleanStaging } from ${JSON.stringify(checkpointUrl)};
import { Tensor } from ${JSON.stringify(checkpointUrl.replace(/train\/checkpoint\.js$/, 'tensor.js'))};
${payload.toString()}
const runDir = process.argv[2];
await cleanStaging(runDir);
const { checkpoint } = await findLatestVerified(runDir);
let step = checkpoint ? checkpoint.step + 1 : 1;
process.stdout.write('ready ' + step + '\\n');
for (;;) {
  const w = new Float32Array(4096).fill(step);
  await saveCheckpoint(runDir, step, {
    'model.safetensors': { w: Tensor.fromStorage(w, [64, 64], 'f32') },
    'optimizer.bin': payload(step),
    'trainer.json': JSON.stringify({ step }),
  }, { keep: 2 });
  process.stdout.write('committed ' + step + '\\n');
  step++;
}
`;

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-sigkill-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

it(
  'survives SIGKILL at random moments: the newest verified checkpoint is always complete and never behind a reported commit',
  { timeout: 60_000 },
  async (t) => {
    const script = join(dir, 'child.mjs');
    await writeFile(
      script,
      CHILD(pathToFileURL(fileURLToPath(new URL('../src/train/checkpoint.js', import.meta.url))).href),
    );
    const run = join(dir, 'run');
    const gen = new Generator(20240611);
    const started = Date.now();
    let lastCommitted = 0;
    let leftoversSeen = 0;
    let iterations = 0;

    for (let i = 0; i < ITERATIONS && Date.now() - started < BUDGET_MS; i++) {
      iterations++;
      const child = spawn(process.execPath, [script, run], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        child.on('exit', (code, signal) => resolve({ code, signal })),
      );
      // Wait until the child is saving (module loading takes a while), then a random 0–250 ms more.
      await new Promise<void>((resolve) => {
        const check = (): void => {
          if (out.includes('ready') || child.exitCode !== null) resolve();
          else setTimeout(check, 5);
        };
        check();
      });
      await new Promise((r) => setTimeout(r, gen.integer(250)));
      child.kill('SIGKILL');
      const { signal } = await exited;
      assert.equal(signal, 'SIGKILL', `iteration ${i}: the child died on its own: ${err}`);

      for (const m of out.matchAll(/committed (\d+)/g)) lastCommitted = Math.max(lastCommitted, Number(m[1]));
      const names = await readdir(join(run, 'checkpoints')).catch(() => [] as string[]);
      if (names.some((n) => n.startsWith('.'))) leftoversSeen++;

      const { checkpoint, warnings } = await findLatestVerified(run);
      if (lastCommitted === 0 && !checkpoint) continue;
      assert.ok(
        checkpoint,
        `iteration ${i}: nothing verifies after a commit of step ${lastCommitted}: ${warnings.join('; ')}`,
      );
      assert.ok(
        checkpoint.step >= lastCommitted,
        `iteration ${i}: resumed at step ${checkpoint.step}, behind reported commit ${lastCommitted}`,
      );
      assert.deepEqual(await readCheckpointJson(checkpoint, 'trainer.json'), { step: checkpoint.step });
      assert.deepEqual(
        await readCheckpointFile(checkpoint, 'optimizer.bin'),
        payload(checkpoint.step),
        `iteration ${i}: step ${checkpoint.step} bytes`,
      );
      // Committed directories are never damaged by a kill: every step-N verifies.
      assert.deepEqual(
        warnings.filter((w) => w.startsWith('skipping')),
        [],
        `iteration ${i}`,
      );
    }
    const names = await readdir(join(run, 'checkpoints'));
    t.diagnostic(
      `${iterations} kills in ${Date.now() - started} ms; last committed step ${lastCommitted}; leftovers after ${leftoversSeen} kills; final: ${names.join(' ')}`,
    );
    assert.ok(lastCommitted >= 1, 'the children committed checkpoints between kills');
    // Each kill between a commit and its prune leaves one extra checkpoint (several in a row on a
    // busy machine), so the bound holds after the next save that runs to the end: it prunes them all.
    const { checkpoint } = await findLatestVerified(run);
    await cleanStaging(run);
    const next = checkpoint!.step + 1;
    await saveCheckpoint(run, next, { 'trainer.json': JSON.stringify({ step: next }) }, { keep: 2 });
    const pruned = (await readdir(join(run, 'checkpoints'))).filter((n) => n.startsWith('step-'));
    assert.deepEqual(
      pruned.sort(),
      [`step-${checkpoint!.step}`, `step-${next}`].sort(),
      'one full save pruned to keep 2',
    );
  },
);
