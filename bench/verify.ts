/**
 * `knobs verify` hashing speed, GB/s, from a warm page cache: a signed bundle of 512 MiB
 * (four 128 MiB files of pseudo-random bytes) verified by the CLI in a child process, against
 * coreutils' `sha256sum` over the same files — the peer does only the hashing, knobs also starts
 * node, checks the signature and the listing. Both hash on one thread; interleaved, medians.
 * The target is 1 GB/s (issue 14).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPrivateKey, writeSigningKey } from '../src/release/keys.js';
import { signManifest } from '../src/release/signature.js';
import { type BenchOptions, type BenchRow, makeRow, median } from './row.js';

const ROUNDS = 5;
const FILES = 4;
const FILE_BYTES = 128 << 20;
const CLI = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));

function seconds(cmd: string, args: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr?.toString() ?? r.error?.message}`);
  return (performance.now() - t0) / 1000;
}

function sha256sumVersion(): string {
  const r = spawnSync('sha256sum', ['--version'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error('the verify bench needs coreutils sha256sum on PATH (apt-get install coreutils)');
  return `sha256sum ${/(\d+\.\d+)/.exec(r.stdout)?.[1] ?? '?'} (coreutils)`;
}

export async function run(opts: BenchOptions): Promise<BenchRow[]> {
  if (opts.cores !== 'all') return [];
  const peer = sha256sumVersion();
  const dir = await mkdtemp(join(tmpdir(), 'knobs-bench-verify-'));
  try {
    const bundle = join(dir, 'bundle');
    await mkdir(bundle);
    const names = Array.from({ length: FILES }, (_, i) => `part-${i}.bin`);
    const chunk = randomBytes(FILE_BYTES);
    for (const [i, name] of names.entries()) {
      chunk[0] = i; // different files
      await writeFile(join(bundle, name), chunk);
    }
    const sums = execFileSync('sha256sum', names, { cwd: bundle, encoding: 'utf8' });
    const digests = sums
      .trim()
      .split('\n')
      .map((l) => l.split(' ')[0]!);
    const key = join(dir, 'key.pem');
    await writeSigningKey(key, 'p256');
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
    const gigabytes = (FILES * FILE_BYTES) / 1e9;
    const ours: number[] = [];
    const theirs: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      ours.push(gigabytes / seconds(process.execPath, [CLI, 'verify', bundle, '--public-key', `${key}.pub`]));
      theirs.push(
        gigabytes /
          seconds(
            'sha256sum',
            names.map((n) => join(bundle, n)),
          ),
      );
    }
    return [makeRow('verify_512MiB_warm', 'all', 'GB/s', median(ours), peer, median(theirs), true, 1)];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
