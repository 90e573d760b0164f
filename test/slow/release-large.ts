/**
 * Slow: a bundle with a 2 GiB file (sparse, with a few real bytes at its end) verifies in bounded
 * memory — `knobs verify` in a child process, whose peak resident set (VmHWM) must stay under
 * 256 MiB — and the same bundle with one byte changed in the middle is refused. The file's digest
 * in the signature comes from coreutils' sha256sum, not from knobs. Run with `npm run test:slow`.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadPrivateKey, writeSigningKey } from '../../src/release/keys.js';
import { signManifest } from '../../src/release/signature.js';

const skip = process.env['KNOBS_SLOW_TESTS'] === '1' ? false : 'slow: run with npm run test:slow';
const SIZE = 2 * 1024 ** 3;
const RSS_LIMIT = 256 * 1024 ** 2;
const VERIFY = fileURLToPath(new URL('../../src/release/verify.js', import.meta.url));

let dir: string | undefined;
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** `verifyModel` in a fresh node process: its result (or error rule) and its peak RSS. */
function verifyInChild(bundle: string, key: string): { ok: boolean; rule?: string; peak: number } {
  const script = `
    import { readFileSync } from 'node:fs';
    const { verifyModel } = await import(${JSON.stringify(VERIFY)});
    let out;
    try { await verifyModel(${JSON.stringify(bundle)}, ${JSON.stringify(key)}); out = { ok: true }; }
    catch (e) { out = { ok: false, rule: e.details?.rule ?? String(e) }; }
    const hwm = /^VmHWM:\\s+(\\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    console.log(JSON.stringify({ ...out, peak: Number(hwm[1]) * 1024 }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

it('a 2 GiB bundle verifies in under 256 MiB of memory; one changed byte is refused', { skip }, async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-release-large-'));
  const bundle = join(dir, 'bundle');
  await mkdir(bundle);
  const big = join(bundle, 'big.bin');
  const fh = await open(big, 'w');
  await fh.truncate(SIZE);
  await fh.write(Buffer.from('the end of a large model file\n'), 0, undefined, SIZE - 30);
  await fh.close();
  await writeFile(join(bundle, 'config.json'), '{"model_type": "large"}\n');
  const sums = execFileSync('sha256sum', ['big.bin', 'config.json'], { cwd: bundle, encoding: 'utf8' });
  const digest = new Map(
    sums
      .trim()
      .split('\n')
      .map((l) => [l.split(/\s+\*?/)[1]!, l.split(' ')[0]!]),
  );
  const key = join(dir, 'key.pem');
  await writeSigningKey(key, 'p256');
  const manifest = {
    modelName: 'large',
    resources: ['big.bin', 'config.json'].map((name) => ({
      name,
      algorithm: 'sha256' as const,
      digest: digest.get(name)!,
    })),
    serialization: {
      method: 'files' as const,
      hash_type: 'sha256' as const,
      allow_symlinks: false as const,
      ignore_paths: ['model.sig'],
    },
  };
  await writeFile(join(bundle, 'model.sig'), signManifest(manifest, await loadPrivateKey(key)));

  const good = verifyInChild(bundle, `${key}.pub`);
  assert.deepEqual({ ...good, peak: undefined }, { ok: true, peak: undefined });
  assert.ok(good.peak < RSS_LIMIT, `peak RSS ${good.peak} bytes`);
  process.stderr.write(`verify of a 2 GiB bundle: peak RSS ${(good.peak / 2 ** 20).toFixed(0)} MiB\n`);

  const change = await open(big, 'r+');
  await change.write(Buffer.from([1]), 0, 1, SIZE / 2);
  await change.close();
  const bad = verifyInChild(bundle, `${key}.pub`);
  assert.deepEqual({ ok: bad.ok, rule: bad.rule }, { ok: false, rule: 'bundle_changed' });
});
