/**
 * Leftovers that cannot be removed, and failed LATEST updates, in the checkpoint protocol.
 * Failures are injected through the WriteFs seam (so the tests mean the same as root, which
 * ignores permission bits); test/resume-guard.test.ts repeats the stuck-leftover case end to end
 * with a real immutable file (chattr +i) or, as a non-root user, a read-only directory.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { IOError } from '../src/errors.js';
import { type WriteFs, asIOError, nodeWriteFs, writeFileAtomic } from '../src/io/atomic.js';
import { LATEST_NAME, cleanStaging, findLatestVerified, saveCheckpoint } from '../src/train/checkpoint.js';

let root: string;
let counter = 0;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'knobs-leftovers-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function freshRun(): Promise<string> {
  const dir = join(root, `run-${counter++}`);
  await mkdir(dir);
  return dir;
}

const files = (step: number) => ({
  'trainer.json': JSON.stringify({ step }),
  'weights.bin': new Uint8Array(100).fill(step),
});

function errno(code: string, syscall: string, path: string): Error {
  return Object.assign(new Error(`${code}: ${syscall} failed, ${syscall} '${path}'`), { code });
}

/** node:fs, except that removing (when it exists) or renaming a path `stuck` matches fails as a permission problem would. */
function stuckFs(stuck: (path: string) => boolean, opts: { failRenameTo?: (to: string) => boolean } = {}): WriteFs {
  return {
    ...nodeWriteFs,
    async remove(path) {
      if (stuck(path) && existsSync(path)) throw errno('EACCES', 'rmdir', path);
      return nodeWriteFs.remove(path);
    },
    async rename(from, to) {
      if (stuck(from) || opts.failRenameTo?.(to)) throw errno('EACCES', 'rename', from);
      return nodeWriteFs.rename(from, to);
    },
  };
}

const ckDir = (run: string) => join(run, 'checkpoints');

describe('a leftover that cannot be removed never blocks resuming', () => {
  it('replacing a step whose old copy cannot be removed commits, updates LATEST, and warns with the path', async () => {
    const run = await freshRun();
    await saveCheckpoint(run, 1, files(1));
    const warnings: string[] = [];
    const saved = await saveCheckpoint(run, 1, files(1), {
      fs: stuckFs((p) => p.includes('.replaced-')),
      onWarning: (m) => warnings.push(m),
    });
    assert.equal(saved.step, 1);
    assert.equal(warnings.length, 1);
    assert.match(
      warnings[0]!,
      new RegExp(`\\.replaced-step-1-${process.pid} could not be removed .*EACCES.*remove it by hand`),
    );
    assert.equal(await readFile(join(ckDir(run), LATEST_NAME), 'utf8'), 'step-1\n');

    // The next start cannot remove it either: a warning naming it, and the checkpoint still resumes.
    const cleaned = await cleanStaging(run, { fs: stuckFs((p) => p.includes('.replaced-')) });
    assert.deepEqual(cleaned.removed, []);
    assert.equal(cleaned.warnings.length, 1);
    assert.match(cleaned.warnings[0]!, /cannot clean up .*\.replaced-step-1-\d+ \(EACCES.*Resuming goes on without it/);
    assert.equal((await findLatestVerified(run)).checkpoint?.step, 1);
    // Once the problem is fixed, it goes.
    assert.equal((await cleanStaging(run)).removed.length, 1);
  });

  it('stuck staging and deleting leftovers are warnings; a stuck .replaced whose step is missing says it may be the only copy', async () => {
    const run = await freshRun();
    await saveCheckpoint(run, 2, files(2));
    for (const name of ['.staging-step-3-999999999', '.deleting-step-1-999999999', '.replaced-step-5-999999999'])
      await mkdir(join(ckDir(run), name));
    const cleaned = await cleanStaging(run, { fs: stuckFs((p) => /\.(staging|deleting|replaced)-/.test(p)) });
    assert.equal(cleaned.warnings.length, 3);
    assert.match(cleaned.warnings.join('\n'), /\.replaced-step-5-999999999 .*holds the only copy of step-5/);
    assert.match(cleaned.warnings.join('\n'), /\.staging-step-3-999999999 .*rm -rf/);
    assert.equal((await findLatestVerified(run)).checkpoint?.step, 2);
  });
});

describe('a failed LATEST update leaves no leftover', () => {
  it('rename of the new LATEST fails: committed, typed error, no temp file and no moved-aside copy', async () => {
    const run = await freshRun();
    await saveCheckpoint(run, 1, files(1));
    for (const step of [2, 1]) {
      // a new step, and a replacement (which moves the old copy aside first)
      const err = await saveCheckpoint(run, step, files(step), {
        fs: stuckFs(() => false, { failRenameTo: (to) => to.endsWith(LATEST_NAME) }),
      }).then(
        () => null,
        (e: unknown) => e,
      );
      assert.ok(err instanceof IOError, String(err));
      assert.equal(err.details.committed, true);
      assert.match(err.message, /was committed and verifies, but updating LATEST failed/);
      assert.deepEqual((await readdir(ckDir(run))).sort(), [LATEST_NAME, 'step-1', 'step-2']);
    }
    assert.equal((await findLatestVerified(run)).checkpoint?.step, 2);
  });

  it('when the temporary file cannot be removed either, the error names it and says to remove it', async () => {
    const run = await freshRun();
    const target = join(run, 'LATEST');
    const fs = stuckFs((p) => p.endsWith('.tmp'), { failRenameTo: (to) => to === target });
    const err = await writeFileAtomic(target, 'step-1\n', { fs }).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(err instanceof IOError);
    assert.match(
      err.message,
      /temporary file .*\.LATEST\.\d+\.[0-9a-f]{12}\.tmp could not be removed either .*remove it by hand/,
    );
    assert.match(String(err.details.leftover), /\.tmp$/);
    // cleanStaging removes such temp files of dead processes on the next start (see checkpoint.test.ts).
  });
});

describe('file-system errors are typed and say what to do', () => {
  it('asIOError names the path, the action and a remedy for common errnos', () => {
    const cases: Array<[string, RegExp]> = [
      ['EACCES', /permission denied; check the owner and mode/],
      ['EPERM', /not permitted; check the permissions and attributes/],
      ['ENOTDIR', /a part of the path is a file, not a directory/],
      ['EROFS', /read-only/],
      ['ENOSPC', /disk is full/],
    ];
    for (const [code, hint] of cases) {
      const e = asIOError(errno(code, 'open', '/x/y'), '/x/y', 'open');
      assert.ok(e instanceof IOError);
      assert.equal(e.details.errno, code);
      assert.match(e.message, /^cannot open \/x\/y: /);
      assert.match(e.message, hint);
    }
  });

  it('a save that cannot create its staging directory names it, the errno and what to do', async () => {
    const run = await freshRun();
    const fs: WriteFs = {
      ...nodeWriteFs,
      mkdir: async (path) => {
        throw Object.assign(errno('EACCES', 'mkdir', path), { path, syscall: 'mkdir' });
      },
    };
    const err = await saveCheckpoint(run, 1, files(1), { fs }).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(err instanceof IOError);
    assert.equal(err.details.errno, 'EACCES');
    assert.match(
      err.message,
      /nothing was committed .*: cannot mkdir \S*\.staging-step-1-\d+: .*check the owner and mode/,
    );
  });

  it('a run directory under a regular file: saveCheckpoint fails with a typed error', async () => {
    const run = await freshRun();
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(run, 'file'), '');
    await assert.rejects(
      saveCheckpoint(join(run, 'file', 'run'), 1, files(1)),
      (e: unknown) => e instanceof IOError && e.details.errno === 'ENOTDIR' && /not a directory/.test(e.message),
    );
  });
});
