/**
 * `knobs verify` end to end, GB/s, from a warm page cache: the CLI in a child process (start node,
 * check the signature and the listing, hash every byte) against coreutils' `sha256sum` over the
 * same files, which only hashes. Two bundles of 1 GiB of pseudo-random bytes: one file, and four
 * 256 MiB shards. On one core both are pinned to CPU 0 (`taskset`; knobs with --threads 1); on all
 * cores knobs hashes shards on its worker lanes and the peer runs one `sha256sum` per CPU over its
 * share of the files (as `xargs -P`). Interleaved rounds, medians. The target is 1 GB/s (issue 14).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPrivateKey, writeSigningKey } from '../src/release/keys.js';
import { signManifest } from '../src/release/signature.js';
import { haveTaskset } from './peer.js';
import { type BenchOptions, type BenchRow, makeRow, median } from './row.js';

const ROUNDS = 3;
const BUNDLE_BYTES = 1 << 30;
const BLOCK_BYTES = 64 << 20;
const CLI = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));

/** Runs the commands at once and returns the seconds until the last one exits. */
async function seconds(commands: readonly (readonly string[])[]): Promise<number> {
  const t0 = performance.now();
  await Promise.all(
    commands.map(
      ([cmd, ...args]) =>
        new Promise<void>((resolve, reject) => {
          const child = spawn(cmd!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
          let stderr = '';
          child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
          child.on('error', reject);
          child.on('close', (code) =>
            code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} failed: ${stderr}`)),
          );
        }),
    ),
  );
  return (performance.now() - t0) / 1000;
}

function sha256sumVersion(): string {
  const r = spawnSync('sha256sum', ['--version'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error('the verify bench needs coreutils sha256sum on PATH (apt-get install coreutils)');
  return `sha256sum ${/(\d+\.\d+)/.exec(r.stdout)?.[1] ?? '?'} (coreutils)`;
}

/** A signed bundle of `files` files filling BUNDLE_BYTES; returns the files' paths. */
async function makeBundle(bundle: string, files: number, key: string): Promise<string[]> {
  await mkdir(bundle);
  const names = Array.from({ length: files }, (_, i) => `part-${i}.bin`);
  const block = randomBytes(BLOCK_BYTES);
  let blockNo = 0;
  for (const name of names) {
    const fh = await open(join(bundle, name), 'w');
    for (let done = 0; done < BUNDLE_BYTES / files; done += BLOCK_BYTES) {
      block.writeUInt32LE(blockNo++, 0); // no two blocks alike
      await fh.write(block);
    }
    await fh.close();
  }
  const sums = execFileSync('sha256sum', names, { cwd: bundle, encoding: 'utf8' });
  const digests = sums
    .trim()
    .split('\n')
    .map((l) => l.split(' ')[0]!);
  const manifest = {
    modelName: 'bench',
    resources: names.map((name, i) => ({ name, algorithm: 'sha256' as const, digest: digests[i]! })),
    serialization: {
      method: 'files' as const,
      hash_type: 'sha256' as const,
      allow_symlinks: false as const,
      ignore_paths: ['model.sig'],
    },
  };
  await writeFile(join(bundle, 'model.sig'), signManifest(manifest, await loadPrivateKey(key)));
  return names.map((n) => join(bundle, n));
}

export async function run(opts: BenchOptions): Promise<BenchRow[]> {
  const peer = sha256sumVersion();
  const pin = opts.cores === 1 ? (haveTaskset() ? ['taskset', '-c', '0'] : null) : [];
  if (pin === null) throw new Error('the one-core verify row needs taskset (util-linux) to pin both sides');
  const cpus = opts.cores === 1 ? 1 : availableParallelism();
  const dir = await mkdtemp(join(tmpdir(), 'knobs-bench-verify-'));
  try {
    const key = join(dir, 'key.pem');
    await writeSigningKey(key, 'p256');
    const rows: BenchRow[] = [];
    for (const files of [1, 4]) {
      const bundle = join(dir, `bundle-${files}`);
      const paths = await makeBundle(bundle, files, key);
      const knobs = [
        ...pin,
        process.execPath,
        ...process.execArgv,
        CLI,
        'verify',
        bundle,
        '--public-key',
        `${key}.pub`,
      ];
      if (opts.cores === 1) knobs.push('--threads', '1');
      // The peer: one sha256sum per CPU, each over every cpus-th file.
      const shares = Array.from({ length: Math.min(cpus, files) }, (_, c) => paths.filter((_, i) => i % cpus === c));
      const theirsCmd = shares.map((share) => [...pin, 'sha256sum', ...share]);
      await seconds([knobs]); // warm the page cache and node's compile cache
      const ours: number[] = [];
      const theirs: number[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        ours.push(BUNDLE_BYTES / 1e9 / (await seconds([knobs])));
        theirs.push(BUNDLE_BYTES / 1e9 / (await seconds(theirsCmd)));
      }
      const name = files === 1 ? 'verify_1GiB_1file_warm' : `verify_1GiB_${files}shards_warm`;
      rows.push(makeRow(name, opts.cores, 'GB/s', median(ours), peer, median(theirs), true, null));
      await rm(bundle, { recursive: true, force: true });
    }
    return rows;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
