/**
 * Crash-safe checkpoints: save → verify → resume, detection of truncated and bit-flipped files and
 * damaged manifests with fallback to the previous checkpoint, prune semantics, cleaning of our own
 * leftovers only, failed saves (disk full, failed rename, short writes) through an injected file
 * system, and atomic writes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ArgumentError, IOError } from '../src/errors.js';
import { loadSafetensors } from '../src/formats/safetensors.js';
import { Tensor } from '../src/tensor.js';
import { Generator } from '../src/random.js';
import { type ImageDataset, ImageLoader, type ImageLoaderState } from '../src/data/images.js';
import { ByteTextCorpus, TextBatcher, type TextBatcherState } from '../src/data/text.js';
import { type WritableFile, type WriteFs, nodeWriteFs, writeFileAtomic } from '../src/io/atomic.js';
import {
  LATEST_NAME,
  cleanStaging,
  findLatestVerified,
  listCheckpoints,
  loadCheckpointTensors,
  pruneCheckpoints,
  readCheckpointFile,
  readCheckpointJson,
  saveCheckpoint,
  verifyCheckpoint,
} from '../src/train/checkpoint.js';

let root: string;
let counter = 0;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'knobs-ckpt-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function freshRun(): Promise<string> {
  const dir = join(root, `run-${counter++}`);
  await mkdir(dir);
  return dir;
}

function files(step: number): Record<string, Uint8Array | string | Record<string, Tensor>> {
  const w = new Float32Array(12).map((_, i) => step + i / 8);
  return {
    'model.safetensors': {
      'layer.weight': Tensor.fromStorage(w, [3, 4], 'f32'),
      'layer.bias': Tensor.fromStorage(new Int32Array([step, -step]), [2], 'i32'),
    },
    'optimizer.bin': Uint8Array.from({ length: 3000 + step }, (_, i) => (i * 7 + step) & 0xff),
    'trainer.json': JSON.stringify({ step, loader: { epoch: 1, index: 64 } }),
  };
}

async function saveSteps(run: string, steps: number[]): Promise<void> {
  for (const s of steps) await saveCheckpoint(run, s, files(s));
}

const ckpt = (run: string, step: number, name = '') => join(run, 'checkpoints', `step-${step}`, name);
const deadPid = (): number => spawnSync(process.execPath, ['-e', '']).pid!;

async function flipBit(path: string, byte: number, bit = 0): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const b = new Uint8Array(1);
    await fh.read(b, 0, 1, byte);
    b[0]! ^= 1 << bit;
    await fh.write(b, 0, 1, byte);
  } finally {
    await fh.close();
  }
}

describe('saveCheckpoint and findLatestVerified', () => {
  it('saves, verifies and resumes: tensors, bytes and JSON come back exactly', async () => {
    const run = await freshRun();
    const saved = await saveCheckpoint(run, 100, files(100));
    assert.equal(saved.name, 'step-100');
    assert.deepEqual((await readdir(join(run, 'checkpoints'))).sort(), [LATEST_NAME, 'step-100']);
    assert.equal(await readFile(join(run, 'checkpoints', LATEST_NAME), 'utf8'), 'step-100\n');

    const manifest = JSON.parse(await readFile(ckpt(run, 100, 'manifest.json'), 'utf8'));
    assert.equal(manifest.format, 'knobs-checkpoint');
    assert.equal(manifest.step, 100);
    for (const name of ['model.safetensors', 'optimizer.bin', 'trainer.json']) {
      const bytes = await readFile(ckpt(run, 100, name));
      assert.equal(manifest.files[name].size, bytes.length);
      assert.equal(manifest.files[name].sha256, createHash('sha256').update(bytes).digest('hex'));
    }

    const { checkpoint, warnings } = await findLatestVerified(run);
    assert.deepEqual(warnings, []);
    assert.ok(checkpoint);
    assert.equal(checkpoint.step, 100);
    assert.deepEqual(await readCheckpointJson(checkpoint, 'trainer.json'), {
      step: 100,
      loader: { epoch: 1, index: 64 },
    });
    assert.deepEqual(await readCheckpointFile(checkpoint, 'optimizer.bin'), files(100)['optimizer.bin']);
    const { tensors } = await loadCheckpointTensors(checkpoint, 'model.safetensors');
    const w = tensors.get('layer.weight') as Tensor;
    assert.deepEqual(w.shape, [3, 4]);
    assert.deepEqual([...(w.storage as Float32Array)], [...new Float32Array(12).map((_, i) => 100 + i / 8)]);
    assert.deepEqual([...((tensors.get('layer.bias') as Tensor).storage as Int32Array)], [100, -100]);
    // The tensors file is an ordinary safetensors file.
    assert.equal((await loadSafetensors(ckpt(run, 100, 'model.safetensors'))).tensors.size, 2);
    await assert.rejects(readCheckpointFile(checkpoint, 'nope.bin'), ArgumentError);
  });

  it('picks the highest step that verifies, not the one written last or named by LATEST', async () => {
    const run = await freshRun();
    await saveSteps(run, [1, 2, 3]);
    assert.equal((await findLatestVerified(run)).checkpoint?.step, 3);
    // A crash after the commit but before LATEST moved: LATEST is one behind.
    await writeFile(join(run, 'checkpoints', LATEST_NAME), 'step-2\n');
    const r = await findLatestVerified(run);
    assert.equal(r.checkpoint?.step, 3);
    assert.match(r.warnings.join('\n'), /LATEST names "step-2" but the newest checkpoint that verifies is step-3/);
  });

  it('detects a truncated file and falls back to the previous checkpoint, saying which and why', async () => {
    const run = await freshRun();
    await saveSteps(run, [1, 2]);
    await truncate(ckpt(run, 2, 'optimizer.bin'), 1000);
    const { checkpoint, warnings } = await findLatestVerified(run);
    assert.equal(checkpoint?.step, 1);
    assert.match(
      warnings[0]!,
      /skipping step-2 .*optimizer\.bin is 1000 bytes but the manifest says 3002 \(truncated\)/,
    );
    assert.equal((await verifyCheckpoint(ckpt(run, 2))).ok, false);
    assert.equal((await verifyCheckpoint(ckpt(run, 1))).ok, true);
  });

  it('detects a single flipped bit (the size is right, the SHA-256 is not)', async () => {
    const run = await freshRun();
    await saveSteps(run, [1, 2]);
    await flipBit(ckpt(run, 2, 'model.safetensors'), 100, 3);
    const { checkpoint, warnings } = await findLatestVerified(run);
    assert.equal(checkpoint?.step, 1);
    assert.match(warnings[0]!, /model\.safetensors has SHA-256 .* but the manifest says .*corruption/);
    // The cheap size-only mode cannot see a flipped bit; the default can.
    assert.equal((await verifyCheckpoint(ckpt(run, 2), { mode: 'size' })).ok, true);
  });

  it('falls back past a missing, truncated or lying manifest and a missing file', async () => {
    const run = await freshRun();
    await saveSteps(run, [1, 2, 3, 4, 5]);
    await rm(ckpt(run, 5, 'manifest.json'));
    const m4 = await readFile(ckpt(run, 4, 'manifest.json'), 'utf8');
    await writeFile(ckpt(run, 4, 'manifest.json'), m4.slice(0, m4.length >> 1));
    await writeFile(ckpt(run, 3, 'manifest.json'), m4); // says step 4
    await rm(ckpt(run, 2, 'trainer.json'));
    const { checkpoint, warnings } = await findLatestVerified(run);
    assert.equal(checkpoint?.step, 1);
    assert.equal(warnings.length, 5); // four skipped + LATEST disagrees
    assert.match(warnings[0]!, /step-5.*manifest\.json is missing/);
    assert.match(warnings[1]!, /step-4.*not valid JSON/);
    assert.match(warnings[2]!, /step-3.*says step 4 but the directory is step-3/);
    assert.match(warnings[3]!, /step-2.*trainer\.json is missing/);
  });

  it('returns null (with a warning) when nothing verifies, and null silently for a fresh run', async () => {
    const run = await freshRun();
    assert.deepEqual(await findLatestVerified(run), { checkpoint: null, warnings: [] });
    await saveSteps(run, [1]);
    await flipBit(ckpt(run, 1, 'trainer.json'), 0);
    const r = await findLatestVerified(run);
    assert.equal(r.checkpoint, null);
    assert.match(r.warnings.at(-1)!, /no checkpoint .* verifies/);
  });

  it('re-saving a step replaces a damaged checkpoint of that step', async () => {
    const run = await freshRun();
    await saveSteps(run, [1, 2]);
    await truncate(ckpt(run, 2, 'optimizer.bin'), 10);
    assert.equal((await findLatestVerified(run)).checkpoint?.step, 1);
    await saveCheckpoint(run, 2, files(2));
    assert.equal((await findLatestVerified(run)).checkpoint?.step, 2);
    assert.deepEqual((await readdir(join(run, 'checkpoints'))).sort(), [LATEST_NAME, 'step-1', 'step-2']);
  });

  it('rejects bad steps and file names before touching the disk', async () => {
    const run = await freshRun();
    for (const bad of ['../x', 'a/b', '.hidden', 'manifest.json', '', 'a'.repeat(201), 'x..y']) {
      await assert.rejects(saveCheckpoint(run, 1, { [bad]: 'x' }), ArgumentError, bad);
    }
    await assert.rejects(saveCheckpoint(run, -1, {}), ArgumentError);
    await assert.rejects(saveCheckpoint(run, 1.5, {}), ArgumentError);
    await assert.rejects(saveCheckpoint(run, 1, { 'a.bin': 42 as unknown as string }), ArgumentError);
    await assert.rejects(
      saveCheckpoint(run, 1, { 'm.safetensors': { w: [1, 2] as unknown as Tensor } }),
      ArgumentError,
    );
    assert.deepEqual(await readdir(run), []);
  });

  it('a file named __proto__ is an ordinary file', async () => {
    const run = await freshRun();
    const saved = await saveCheckpoint(run, 1, { __proto__x: 'a', ['__proto__']: 'b' } as Record<string, string>);
    assert.deepEqual(Object.keys(saved.manifest.files).sort(), ['__proto__', '__proto__x']);
    const found = (await findLatestVerified(run)).checkpoint!;
    assert.equal(new TextDecoder().decode(await readCheckpointFile(found, '__proto__')), 'b');
  });
});

/** A WriteFs that fails on demand, or writes at most `maxChunk` bytes per call. */
function faultyFs(opts: {
  failAfterBytes?: number;
  failRename?: (from: string, to: string) => boolean;
  failCreate?: (path: string) => boolean;
  maxChunk?: number;
}): WriteFs & { written: number } {
  const fs = {
    written: 0,
    async create(path: string): Promise<WritableFile> {
      if (opts.failCreate?.(path))
        throw Object.assign(new Error(`ENOSPC: no space left on device, open '${path}'`), { code: 'ENOSPC' });
      const real = await nodeWriteFs.create(path);
      return {
        write: async (buffer, offset, length, position) => {
          const n = Math.min(length, opts.maxChunk ?? length);
          if (opts.failAfterBytes !== undefined && fs.written + n > opts.failAfterBytes) {
            throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
          }
          const r = await real.write(buffer, offset, n, position);
          fs.written += r.bytesWritten;
          return r;
        },
        sync: () => real.sync(),
        close: () => real.close(),
      };
    },
    async rename(from: string, to: string) {
      if (opts.failRename?.(from, to))
        throw Object.assign(new Error(`EIO: i/o error, rename '${from}'`), { code: 'EIO' });
      return nodeWriteFs.rename(from, to);
    },
    mkdir: nodeWriteFs.mkdir,
    remove: nodeWriteFs.remove,
    syncDir: nodeWriteFs.syncDir,
  };
  return fs;
}

describe('failed saves', () => {
  it('a full disk mid-write leaves the previous checkpoint intact and says so', async () => {
    const run = await freshRun();
    await saveSteps(run, [1]);
    for (const failAfterBytes of [0, 500, 3500]) {
      const err = await saveCheckpoint(run, 2, files(2), { fs: faultyFs({ failAfterBytes }) }).then(
        () => null,
        (e: unknown) => e,
      );
      assert.ok(err instanceof IOError, String(err));
      assert.match(
        err.message,
        /saving checkpoint step-2 .* failed, nothing was committed and the previous checkpoints are intact \(newest: step-1\)/,
      );
      assert.match(err.message, /disk is full/);
      assert.equal(err.details.errno, 'ENOSPC');
      assert.equal(err.details.previous, 'step-1');
      assert.deepEqual((await readdir(join(run, 'checkpoints'))).sort(), [LATEST_NAME, 'step-1'], 'staging removed');
      assert.equal(await readFile(join(run, 'checkpoints', LATEST_NAME), 'utf8'), 'step-1\n');
      assert.equal((await findLatestVerified(run)).checkpoint?.step, 1);
    }
  });

  it('a failed commit rename, and a failure on the very first save, leave nothing behind', async () => {
    const run = await freshRun();
    await saveSteps(run, [1]);
    await assert.rejects(
      saveCheckpoint(run, 2, files(2), { fs: faultyFs({ failRename: () => true }) }),
      /nothing was committed .* \(newest: step-1\)/,
    );
    assert.deepEqual((await readdir(join(run, 'checkpoints'))).sort(), [LATEST_NAME, 'step-1']);
    // Replacing an existing step: step-1 is moved aside, the commit rename fails, step-1 is put back.
    const stale = await readFile(ckpt(run, 1, 'manifest.json'), 'utf8');
    await assert.rejects(
      saveCheckpoint(run, 1, files(1), { fs: faultyFs({ failRename: (from) => from.includes('.staging-') }) }),
      IOError,
    );
    assert.deepEqual((await readdir(join(run, 'checkpoints'))).sort(), [LATEST_NAME, 'step-1']);
    assert.equal(await readFile(ckpt(run, 1, 'manifest.json'), 'utf8'), stale);
    assert.equal((await findLatestVerified(run)).checkpoint?.step, 1);

    const empty = await freshRun();
    await assert.rejects(
      saveCheckpoint(empty, 1, files(1), { fs: faultyFs({ failAfterBytes: 10 }) }),
      /there is no previous checkpoint/,
    );
    assert.deepEqual(await readdir(join(empty, 'checkpoints')), []);
  });

  it('a failed LATEST update says the checkpoint itself was committed', async () => {
    const run = await freshRun();
    const err = await saveCheckpoint(run, 1, files(1), {
      fs: faultyFs({ failCreate: (p) => p.includes('.LATEST.') }),
    }).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(err instanceof IOError);
    assert.equal(err.details.committed, true);
    assert.match(err.message, /step-1 .* was committed and verifies, but updating LATEST failed/);
    assert.equal((await findLatestVerified(run)).checkpoint?.step, 1);
  });

  it('short writes are looped until every byte is written', async () => {
    const run = await freshRun();
    const fs = faultyFs({ maxChunk: 97 });
    await saveCheckpoint(run, 1, files(1), { fs });
    const { checkpoint } = await findLatestVerified(run);
    assert.equal(checkpoint?.step, 1);
    assert.deepEqual(await readCheckpointFile(checkpoint!, 'optimizer.bin'), files(1)['optimizer.bin']);
    assert.ok(fs.written > 3000);
  });
});

describe('pruneCheckpoints', () => {
  it('keeps the newest `keep` verified checkpoints and deletes older ones', async () => {
    const run = await freshRun();
    await saveSteps(run, [1, 2, 3, 4, 5]);
    const r = await pruneCheckpoints(run, 2);
    assert.deepEqual([...r.deleted].sort(), ['step-1', 'step-2', 'step-3']);
    assert.deepEqual(
      (await listCheckpoints(run)).map((c) => c.step),
      [4, 5],
    );
    assert.deepEqual((await readdir(join(run, 'checkpoints'))).sort(), [LATEST_NAME, 'step-4', 'step-5']);
  });

  it('counts only verified checkpoints, never deletes the last verified one, and leaves newer damaged ones', async () => {
    const run = await freshRun();
    await saveSteps(run, [1, 2, 3, 4, 5]);
    await truncate(ckpt(run, 5, 'optimizer.bin'), 0);
    await flipBit(ckpt(run, 3, 'optimizer.bin'), 7);
    const r = await pruneCheckpoints(run, 2);
    // Verified: 4, 2 → keep them; delete 1; 3 (damaged, between) and 5 (damaged, newest) stay.
    assert.deepEqual(r.deleted, ['step-1']);
    assert.equal(r.warnings.length, 2);
    assert.deepEqual(
      (await listCheckpoints(run)).map((c) => c.step),
      [2, 3, 4, 5],
    );

    // Only one verified checkpoint and keep = 2: nothing is deleted.
    const lone = await freshRun();
    await saveSteps(lone, [1, 2]);
    await truncate(ckpt(lone, 2, 'trainer.json'), 1);
    assert.deepEqual((await pruneCheckpoints(lone, 2)).deleted, []);
    // keep = 1 keeps step-1 (the last verified) even though step-2 is newer.
    assert.deepEqual((await pruneCheckpoints(lone, 1)).deleted, []);
    assert.equal((await findLatestVerified(lone)).checkpoint?.step, 1);
    await assert.rejects(pruneCheckpoints(lone, 0), ArgumentError);
  });

  it('saveCheckpoint({keep}) prunes only after the new checkpoint is committed; LATEST target is never deleted', async () => {
    const run = await freshRun();
    for (let s = 1; s <= 4; s++) await saveCheckpoint(run, s, files(s), { keep: 2 });
    assert.deepEqual(
      (await listCheckpoints(run)).map((c) => c.step),
      [3, 4],
    );
    // A failed save with keep does not prune anything.
    await assert.rejects(saveCheckpoint(run, 5, files(5), { keep: 1, fs: faultyFs({ failAfterBytes: 100 }) }), IOError);
    assert.deepEqual(
      (await listCheckpoints(run)).map((c) => c.step),
      [3, 4],
    );
    await writeFile(join(run, 'checkpoints', LATEST_NAME), 'step-3\n');
    const r = await pruneCheckpoints(run, 1);
    assert.deepEqual(r.deleted, []);
    assert.match(r.warnings.join(), /LATEST names it/);
  });
});

describe('cleanStaging', () => {
  it('removes only our own leftovers, of dead processes or this one; restores an interrupted replacement', async () => {
    const run = await freshRun();
    await saveSteps(run, [1, 2]);
    const dir = join(run, 'checkpoints');
    const dead = deadPid();
    const leftovers = [`.staging-step-3-${process.pid}`, `.staging-step-3-${dead}`, `.deleting-step-0-${dead}`];
    for (const d of leftovers) {
      await mkdir(join(dir, d));
      await writeFile(join(dir, d, 'optimizer.bin'), 'partial');
    }
    await writeFile(join(dir, `.LATEST.${dead}.0123456789ab.tmp`), 'step-');
    // A crash between moving step-7 aside and renaming its replacement in.
    await saveCheckpoint(run, 7, files(7));
    const { rename } = await import('node:fs/promises');
    await rename(join(dir, 'step-7'), join(dir, `.replaced-step-7-${dead}`));
    // Not ours, or not dead: left alone.
    const foreign = ['.staging-step-3-1', '.staging-notes', 'notes.txt', 'step-x', '.staging-step-3-abc'];
    await mkdir(join(dir, '.staging-step-3-1')); // pid 1 is alive
    await writeFile(join(dir, '.staging-notes'), '');
    await writeFile(join(dir, 'notes.txt'), '');
    await mkdir(join(dir, 'step-x'));
    await mkdir(join(dir, '.staging-step-3-abc'));

    const r = await cleanStaging(run);
    assert.deepEqual([...r.removed].sort(), [...leftovers, `.LATEST.${dead}.0123456789ab.tmp`].sort());
    assert.deepEqual(r.restored, [`.replaced-step-7-${dead}`]);
    assert.deepEqual(r.skipped, ['.staging-step-3-1']);
    assert.deepEqual((await readdir(dir)).sort(), [...foreign, LATEST_NAME, 'step-1', 'step-2', 'step-7'].sort());
    assert.equal((await findLatestVerified(run)).checkpoint?.step, 7);
    assert.deepEqual(await cleanStaging(await freshRun()), { removed: [], restored: [], skipped: [], warnings: [] });
  });
});

describe('resuming training data through a checkpoint', () => {
  it('loader position, text generator state and an RNG restore to the same next batches', async () => {
    const run = await freshRun();
    const images: ImageDataset = {
      count: 50,
      height: 2,
      width: 2,
      numClasses: 10,
      pixels: Uint8Array.from({ length: 200 }, (_, i) => i & 0xff),
      labels: Uint8Array.from({ length: 50 }, (_, i) => i % 10),
    };
    const corpus = ByteTextCorpus.fromBytes('In the beginning God created the heaven and the earth. '.repeat(20));
    const loader = new ImageLoader(images, { batchSize: 8, seed: 5 });
    const text = new TextBatcher(corpus, { batchSize: 4, blockSize: 16, seed: 5 });
    const rng = new Generator(99);
    for (let i = 0; i < 9; i++) {
      loader.next();
      await text.next();
      rng.normal(); // odd count: a spare normal is cached, and must be restored too
    }
    await saveCheckpoint(run, 9, {
      'trainer.json': JSON.stringify({ loader: loader.getState(), text: text.getState(), rng: rng.getState() }),
    });
    const expected = { images: [...loader.next().indices], text: [...(await text.next()).offsets], rng: rng.normal() };

    const { checkpoint } = await findLatestVerified(run);
    const state = (await readCheckpointJson(checkpoint!, 'trainer.json')) as {
      loader: ImageLoaderState;
      text: TextBatcherState;
      rng: { words: number[]; spareNormal: number | null };
    };
    const loader2 = new ImageLoader(images, { batchSize: 8, seed: 5 });
    loader2.setState(state.loader);
    const text2 = new TextBatcher(corpus, { batchSize: 4, blockSize: 16, seed: 5 });
    text2.setState(state.text);
    const rng2 = new Generator(0);
    rng2.setState(state.rng);
    assert.deepEqual(
      { images: [...loader2.next().indices], text: [...(await text2.next()).offsets], rng: rng2.normal() },
      expected,
    );
  });
});

describe('writeFileAtomic', () => {
  it('replaces a file whole, and on failure leaves the old file and no temp file', async () => {
    const run = await freshRun();
    const path = join(run, 'config.json');
    await writeFileAtomic(path, '{"a":1}');
    await writeFileAtomic(path, [new TextEncoder().encode('{"a":'), new TextEncoder().encode('2}')]);
    assert.equal(await readFile(path, 'utf8'), '{"a":2}');
    await assert.rejects(
      writeFileAtomic(path, 'x'.repeat(1000), { fs: faultyFs({ failAfterBytes: 10 }) }),
      (e: unknown) => e instanceof IOError && /disk is full/.test(e.message),
    );
    assert.equal(await readFile(path, 'utf8'), '{"a":2}');
    assert.deepEqual(await readdir(run), ['config.json']);
    await writeFileAtomic(path, 'y'.repeat(1000), { fs: faultyFs({ maxChunk: 3 }) });
    assert.equal(await readFile(path, 'utf8'), 'y'.repeat(1000));
  });
});
