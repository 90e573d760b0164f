/**
 * Hashing a bundle's files on several CPUs (src/release/hash-lanes.ts): worker lanes give the same
 * digests as one thread, in the files' order; a changed file among several is named, a read error
 * is a typed IOError naming the file, and `knobs verify` of a bundle of large (sparse) shards runs
 * on several lanes with every tampering still refused.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, open, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FormatError, IOError } from '../src/errors.js';
import { openBundleFile } from '../src/release/files.js';
import { BYTES_PER_WORKER, type HashJob, hashFiles, laneCount } from '../src/release/hash-lanes.js';
import { loadPrivateKey, writeSigningKey } from '../src/release/keys.js';
import { signManifest } from '../src/release/signature.js';
import { verifyModel } from '../src/release/verify.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-hash-lanes-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

function job(
  path: string,
  check = (d: { sha256: string; size: number }) => d,
): HashJob<{ sha256: string; size: number }> {
  return { path, open: () => openBundleFile(path, path), check };
}

describe('hash lanes', () => {
  it('uses one lane per large file, at most the threads given, and one for small bundles', () => {
    const big = BYTES_PER_WORKER;
    assert.equal(laneCount([big, big, big, big], 2), 2);
    assert.equal(laneCount([big, big, big, big], 8), 4);
    assert.equal(laneCount([4 * big], 8), 1); // one file: SHA-256 is sequential
    assert.equal(laneCount([big, 100, 200], 8), 1);
    assert.equal(laneCount([1000, 2000], 8), 1);
    assert.equal(laneCount([], 8), 1);
  });

  it('three lanes hash seven files as one thread does, results in the files order', async () => {
    const contents = Array.from({ length: 7 }, (_, i) => new Uint8Array(100_000 * (i + 1)).fill(i + 1));
    const paths = contents.map((_, i) => join(dir, `f${i}`));
    await Promise.all(paths.map((p, i) => writeFile(p, contents[i]!)));
    const one = await hashFiles(
      paths.map((p) => job(p)),
      1,
    );
    const three = await hashFiles(
      paths.map((p) => job(p)),
      3,
    );
    const expected = contents.map((c) => ({ sha256: sha256(c), size: c.byteLength }));
    assert.deepEqual(one, expected);
    assert.deepEqual(three, expected);
  });

  it('the first failing check is thrown, after every lane has closed its file', async () => {
    const paths = Array.from({ length: 5 }, (_, i) => join(dir, `g${i}`));
    await Promise.all(paths.map((p, i) => writeFile(p, `file ${i}`)));
    const refused = new Error('refused g3');
    const jobs = paths.map((p, i) =>
      job(p, (d) => {
        if (i === 3) throw refused;
        return d;
      }),
    );
    await assert.rejects(hashFiles(jobs, 3), (e) => e === refused);
  });

  it('a read error in a worker comes back as an IOError naming the file', async () => {
    const path = join(dir, 'a-directory');
    const jobs = [job(join(dir, 'g0')), { ...job(path), open: () => open(dir, 'r') }];
    await assert.rejects(
      hashFiles(jobs, 2),
      (e: unknown) => e instanceof IOError && e.message.includes(path) && /EISDIR/.test(e.message),
    );
  });
});

describe('knobs verify on several lanes', () => {
  it('verifies sparse shards of 64 MiB on three lanes and names a changed one', async () => {
    const bundle = join(dir, 'bundle');
    await rm(bundle, { recursive: true, force: true });
    await mkdir(bundle);
    const names = ['a.bin', 'b.bin', 'c.bin'];
    const digests: string[] = [];
    for (const [i, name] of names.entries()) {
      await writeFile(join(bundle, name), new Uint8Array([i]));
      await truncate(join(bundle, name), BYTES_PER_WORKER); // sparse: zeros the kernel makes up
      const bytes = new Uint8Array(BYTES_PER_WORKER);
      bytes[0] = i;
      digests.push(sha256(bytes));
    }
    const key = join(dir, 'key.pem');
    await writeSigningKey(key, 'p256');
    const manifest = {
      modelName: 'shards',
      resources: names.map((name, i) => ({ name, algorithm: 'sha256' as const, digest: digests[i]! })),
      serialization: {
        method: 'files' as const,
        hash_type: 'sha256' as const,
        allow_symlinks: false as const,
        ignore_paths: ['model.sig'],
      },
    };
    await writeFile(join(bundle, 'model.sig'), signManifest(manifest, await loadPrivateKey(key)));
    const r = await verifyModel(bundle, `${key}.pub`, { threads: 3 });
    assert.deepEqual(
      r.files.map((f) => f.name),
      names,
    );
    assert.equal(r.bytes, 3 * BYTES_PER_WORKER);
    const fh = await open(join(bundle, 'b.bin'), 'r+');
    await fh.write(new Uint8Array([7]), 0, 1, BYTES_PER_WORKER - 1);
    await fh.close();
    await assert.rejects(
      verifyModel(bundle, `${key}.pub`, { threads: 3 }),
      (e: unknown) => e instanceof FormatError && e.rule === 'bundle_changed' && e.message.includes('b.bin'),
    );
  });
});
