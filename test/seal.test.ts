/**
 * Sealed models (docs/sealing.md): a Hugging Face directory and a knobs run directory sealed with
 * `knobs seal` generate the same tokens as the plain directories; a missing or wrong key, and every
 * kind of tampering (a flipped bit, truncation, reordered chunks, a chunk from another file, an
 * edited manifest, a missing blob) are typed errors naming the file; rewrapping moves the model to
 * a new key and the old one stops opening it; and after sealing and generating, neither the
 * plaintext weights nor the key are anywhere in the temporary directory.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { cp, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { KeyError } from '../src/errors.js';
import { MANIFEST_NAME, blobName } from '../src/seal/format.js';
import { MASTER_KEY_ENV, readMasterKey } from '../src/seal/keys.js';
import { openSealed, sealedFiles } from '../src/seal/open.js';
import { sealModel } from '../src/seal/seal.js';
import { parseRecipe } from '../src/train/recipe.js';
import { train } from '../src/train/trainer.js';
import { CHARS, tokenizerJson } from './harness/char-tokenizer.js';
import { cliInProcess, untimedGeneration } from './harness/cli.js';
import { repoRoot } from './harness/fixtures.js';

const FIXTURE = join(repoRoot(), 'test', 'fixtures', 'hf', 'llama-gqa-bf16-llama3');
const TEXT = join(repoRoot(), 'test', 'fixtures', 'text', 'genesis-1-4.txt');
const CHUNK = 1024;

let started: number;
let root: string;
let hf: string;
let run: string;
let key1: string;
let key2: string;
let sealedHf: string;
let sealedRun: string;

interface Generated {
  prompt_ids: number[];
  ids: number[];
  text: string;
}

async function knobs(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return cliInProcess(args);
}

async function generate(dir: string, extra: readonly string[] = []): Promise<Generated> {
  const r = await knobs(['generate', dir, '--prompt', 'In the', '--max-tokens', '12', '--json', ...extra]);
  assert.equal(r.code, 0, r.stderr);
  return untimedGeneration(r.stdout) as unknown as Generated;
}

/** The sealed file's entry of `name` in the manifest of `dir`. */
async function entry(dir: string, name: string): Promise<{ id: number; size: number }> {
  const manifest = JSON.parse(await readFile(join(dir, MANIFEST_NAME), 'utf8')) as {
    files: { id: number; name: string; size: number }[];
  };
  return manifest.files.find((f) => f.name === name)!;
}

before(async () => {
  started = Date.now();
  root = await mkdtemp(join(tmpdir(), 'knobs-seal-'));
  hf = join(root, 'hf');
  await cp(FIXTURE, hf, { recursive: true });
  await writeFile(join(hf, 'tokenizer.json'), JSON.stringify(tokenizerJson(CHARS)));
  // A random seed gives this run weights no other test or process has: the leak search below
  // finds them only if this test leaked them.
  run = join(root, 'run');
  await train(
    parseRecipe({
      name: 'seal',
      seed: randomInt(1, 2 ** 31),
      model: { type: 'gpt', n_positions: 16, n_embd: 16, n_layer: 1, n_head: 2 },
      data: { type: 'text', path: TEXT, validation_fraction: 0.1 },
      optimizer: { type: 'adam', lr: 0.001 },
      batch_size: 2,
      steps: 1,
      eval_batches: 1,
    }),
    { out: run },
  );
  key1 = join(root, 'one.key');
  key2 = join(root, 'two.key');
  for (const k of [key1, key2]) assert.equal((await knobs(['seal', '--gen-key', '--out', k])).code, 0);
  sealedHf = join(root, 'sealed-hf');
  sealedRun = join(root, 'sealed-run');
  for (const [from, to] of [
    [hf, sealedHf],
    [run, sealedRun],
  ] as const) {
    const r = await knobs([
      'seal',
      from,
      '--out',
      to,
      '--master-key-file',
      key1,
      '--chunk-size',
      String(CHUNK),
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
  }
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('knobs seal: round trips', () => {
  it('a Hugging Face directory: every file sealed, the same tokens as the plain directory', async () => {
    const names = (await readdir(sealedHf)).sort();
    assert.deepEqual(names, ['0.sealed', '1.sealed', '2.sealed', '3.sealed', '4.sealed', MANIFEST_NAME]);
    const plain = await generate(hf);
    assert.ok(plain.ids.length > 0);
    assert.deepEqual(await generate(sealedHf, ['--master-key-file', key1]), plain);
  });

  it('a knobs run directory: checkpoints/ left out and listed, the same sampled tokens', async () => {
    const again = await knobs(['seal', run, '--out', join(root, 'again'), '--master-key-file', key1, '--json']);
    assert.equal(again.code, 0, again.stderr);
    const out = JSON.parse(again.stdout) as { sealed: string[]; skipped: string[] };
    assert.ok(out.sealed.includes('model.safetensors') && out.sealed.includes('recipe.json'), again.stdout);
    assert.ok(out.skipped.includes('checkpoints/'), again.stdout);
    const plain = await generate(run, ['--seed', '7']);
    assert.deepEqual(await generate(sealedRun, ['--seed', '7', '--master-key-file', key1]), plain);
  });

  it('eval scores a sealed model on a text like the plain one', async () => {
    const text = join(root, 'text.txt');
    await writeFile(text, 'the cat sat on the mat, and then the dog sat too.');
    const plain = await knobs(['eval', hf, '--data', text, '--json']);
    const sealed = await knobs(['eval', sealedHf, '--data', text, '--json', '--master-key-file', key1]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(sealed.code, 0, sealed.stderr);
    assert.equal(sealed.stdout, plain.stdout);
  });

  it('decrypts into memory the exact bytes of every file', async () => {
    const key = (await readMasterKey(key1, {}))!;
    const files = await openSealed(sealedHf, key);
    for (const name of await readdir(hf))
      assert.deepEqual(files.get(name), new Uint8Array(await readFile(join(hf, name))), name);
  });
});

describe('sealed files as ByteSources', () => {
  it('reads of any range, across chunk boundaries, give the plaintext; empty, one-chunk and ragged files too', async () => {
    const plain = join(root, 'sizes');
    await mkdir(plain);
    const contents = new Map<string, Buffer>();
    for (const size of [0, 1, CHUNK, CHUNK + 1, 5 * CHUNK - 7]) {
      contents.set(`f${size}`, randomBytes(size));
      await writeFile(join(plain, `f${size}`), contents.get(`f${size}`)!);
    }
    const sealed = join(root, 'sizes-sealed');
    const key = (await readMasterKey(key1, {}))!;
    await sealModel(plain, sealed, key, { chunkSize: CHUNK });
    const files = await sealedFiles(sealed, key);
    assert.deepEqual([...files.names].sort(), [...contents.keys()].sort());
    assert.equal(await files.open('absent'), null);
    for (const [name, bytes] of contents) {
      const source = (await files.open(name))!;
      try {
        assert.equal(source.size, bytes.byteLength);
        assert.deepEqual(await source.read(0, source.size), new Uint8Array(bytes), name);
        for (let k = 0; k < 20 && bytes.byteLength > 0; k++) {
          const offset = randomInt(0, bytes.byteLength);
          const length = randomInt(0, bytes.byteLength - offset + 1);
          assert.deepEqual(await source.read(offset, length), new Uint8Array(bytes.subarray(offset, offset + length)));
        }
        await assert.rejects(source.read(0, bytes.byteLength + 1), /cannot read/);
      } finally {
        await source.close();
      }
      await assert.rejects(source.read(0, 0), /read after close/);
    }
  });
});

describe('knobs seal: keys', () => {
  it('a sealed model without a key, or with the wrong one: E_KEY, saying what to do, no key material', async () => {
    const none = await knobs(['generate', sealedHf, '--prompt', 'a']);
    assert.equal(none.code, 1);
    assert.match(
      none.stderr,
      /^knobs: error \[E_KEY\]: .*sealed-hf is sealed .*--master-key-file FILE or KNOBS_MASTER_KEY\n$/,
    );
    const wrong = await knobs(['generate', sealedHf, '--prompt', 'a', '--master-key-file', key2]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /^knobs: error \[E_KEY\]: the master key does not open .*sealed-hf/);
    const keyText = (await readFile(key2, 'utf8')).trim();
    assert.ok(!wrong.stderr.includes(keyText) && !wrong.stderr.includes(keyText.slice(0, 16)));
    assert.doesNotMatch(wrong.stderr, /\n\s+at /, 'no stack');
  });

  it('a malformed key file or KNOBS_MASTER_KEY: E_KEY naming where it came from, not what it holds', async () => {
    const bad = join(root, 'bad.key');
    await writeFile(bad, 'c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n');
    const r = await knobs(['generate', sealedHf, '--prompt', 'a', '--master-key-file', bad]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^knobs: error \[E_KEY\]: .*bad\.key does not hold a master key: a key is 32 bytes in base64/,
    );
    assert.ok(!r.stderr.includes('c2VjcmV0'));
    await assert.rejects(readMasterKey(undefined, { [MASTER_KEY_ENV]: 'secret' }), (e: unknown) => {
      assert.ok(
        e instanceof KeyError &&
          e.message.startsWith(`${MASTER_KEY_ENV} does not hold`) &&
          !e.message.includes('secret'),
      );
      return true;
    });
    const fromEnv = (await readFile(key1, 'utf8')).trim();
    assert.deepEqual(await readMasterKey(undefined, { [MASTER_KEY_ENV]: fromEnv }), await readMasterKey(key1, {}));
    assert.equal(await readMasterKey(undefined, {}), null);
  });

  it('--rewrap: the new key opens it, the old one no longer does, and no blob changed', async () => {
    const dir = join(root, 'rewrap');
    await cp(sealedHf, dir, { recursive: true });
    const blobs = async () => Promise.all([0, 1, 2, 3, 4].map((id) => readFile(join(dir, blobName(id)))));
    const before = await blobs();
    const r = await knobs(['seal', '--rewrap', dir, '--master-key-file', key1, '--new-master-key-file', key2]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await blobs(), before);
    assert.deepEqual(await generate(dir, ['--master-key-file', key2]), await generate(hf));
    const old = await knobs(['generate', dir, '--prompt', 'a', '--master-key-file', key1]);
    assert.equal(old.code, 1);
    assert.match(old.stderr, /\[E_KEY\]: the master key does not open/);
    const again = await knobs(['seal', '--rewrap', dir, '--master-key-file', key1, '--new-master-key-file', key2]);
    assert.equal(again.code, 1, 'rewrapping needs the current key');
  });

  it('--gen-key writes a 0600 key and never overwrites one', async () => {
    assert.equal((await stat(key1)).mode & 0o777, 0o600);
    const before = await readFile(key1);
    const r = await knobs(['seal', '--gen-key', '--out', key1]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /\[E_IO\]: .*one\.key already exists/);
    assert.deepEqual(await readFile(key1), before);
  });

  it('usage: an existing --out, a sealed input, no key', async () => {
    const exists = await knobs(['seal', hf, '--out', sealedHf, '--master-key-file', key1]);
    assert.equal(exists.code, 2);
    assert.match(exists.stderr, /already exists/);
    const twice = await knobs(['seal', sealedHf, '--out', join(root, 'x'), '--master-key-file', key1]);
    assert.equal(twice.code, 2);
    assert.match(twice.stderr, /already sealed/);
    const saved = process.env[MASTER_KEY_ENV];
    delete process.env[MASTER_KEY_ENV];
    try {
      const noKey = await knobs(['seal', hf, '--out', join(root, 'y')]);
      assert.equal(noKey.code, 2);
      assert.match(noKey.stderr, /needs the master key/);
    } finally {
      if (saved !== undefined) process.env[MASTER_KEY_ENV] = saved;
    }
    assert.deepEqual(
      (await readdir(root)).filter((n) => n.startsWith('.')),
      [],
      'no temporary directory left',
    );
  });

  it('a symbolic link in the model directory is refused, and nothing is left behind', async () => {
    const linked = join(root, 'linked');
    await cp(hf, linked, { recursive: true });
    await symlink(join(hf, 'config.json'), join(linked, 'zz-link.json'));
    const out = join(root, 'linked-sealed');
    const r = await knobs(['seal', linked, '--out', out, '--master-key-file', key1]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^knobs: error \[E_FORMAT\]: .*zz-link\.json is a symbolic link; .*cp -rL/);
    await assert.rejects(stat(out), /ENOENT/);
    assert.deepEqual(
      (await readdir(root)).filter((n) => n.startsWith('.')),
      [],
      'no temporary directory left',
    );
  });
});

describe('knobs seal: tampering is refused, naming the file', () => {
  /** A fresh copy of the sealed HF model with `edit` applied; generate must fail with `pattern`. */
  async function refused(what: string, edit: (dir: string) => Promise<void>, pattern: RegExp): Promise<void> {
    const dir = join(root, `tampered-${what}`);
    await cp(sealedHf, dir, { recursive: true });
    await edit(dir);
    const r = await knobs(['generate', dir, '--prompt', 'a', '--master-key-file', key1]);
    assert.equal(r.code, 1, `${what}: ${r.stderr}`);
    assert.match(r.stderr, /^knobs: error \[E_FORMAT\]: /, what);
    assert.match(r.stderr, pattern, what);
    assert.equal(r.stdout, '', what);
  }

  const weights = async (dir: string): Promise<string> =>
    join(dir, blobName((await entry(dir, 'model.safetensors')).id));
  const sealedChunk = CHUNK + 16;

  it('a flipped bit', async () => {
    await refused(
      'bit',
      async (dir) => {
        const path = await weights(dir);
        const bytes = await readFile(path);
        bytes[3 * sealedChunk + 100]! ^= 0x10;
        await writeFile(path, bytes);
      },
      /model\.safetensors\): chunk 4 of \d+ does not authenticate/,
    );
  });

  it('truncation, by a byte and by whole chunks', async () => {
    for (const cut of [1, 2 * sealedChunk]) {
      await refused(
        `cut-${cut}`,
        async (dir) => {
          const path = await weights(dir);
          await truncate(path, (await stat(path)).size - cut);
        },
        /model\.safetensors\) is \d+ bytes where the manifest implies \d+; it was truncated/,
      );
    }
  });

  it('two chunks swapped', async () => {
    await refused(
      'reorder',
      async (dir) => {
        const path = await weights(dir);
        const bytes = await readFile(path);
        const first = Buffer.from(bytes.subarray(0, sealedChunk));
        bytes.copy(bytes, 0, sealedChunk, 2 * sealedChunk);
        first.copy(bytes, sealedChunk);
        await writeFile(path, bytes);
      },
      /model\.safetensors\): chunk 1 of \d+ does not authenticate/,
    );
  });

  it('a chunk from another file, at the same index', async () => {
    await refused(
      'swap',
      async (dir) => {
        const path = await weights(dir);
        const other = await readFile(join(dir, blobName((await entry(dir, 'expected.json')).id)));
        const bytes = await readFile(path);
        other.copy(bytes, sealedChunk, sealedChunk, 2 * sealedChunk);
        await writeFile(path, bytes);
      },
      /model\.safetensors\): chunk 2 of \d+ does not authenticate/,
    );
  });

  it('an edited manifest: a size, a name, a wrapped key; a missing blob; not JSON', async () => {
    const editManifest = (change: (m: { files: Record<string, unknown>[] }) => void) => async (dir: string) => {
      const path = join(dir, MANIFEST_NAME);
      const m = JSON.parse(await readFile(path, 'utf8')) as { files: Record<string, unknown>[] };
      change(m);
      await writeFile(path, JSON.stringify(m));
    };
    const edited = /knobs-sealed\.json was edited after sealing/;
    await refused(
      'size',
      editManifest((m) => void (m.files[0]!.size = (m.files[0]!.size as number) + 1)),
      edited,
    );
    await refused(
      'name',
      editManifest((m) => void (m.files[1]!.name = 'config.json.bak')),
      edited,
    );
    await refused(
      'key',
      editManifest((m) => {
        const k = Buffer.from(m.files[3]!.wrapped_key as string, 'base64');
        k[20]! ^= 1;
        m.files[3]!.wrapped_key = k.toString('base64');
      }),
      /the wrapped data key of model\.safetensors does not authenticate/,
    );
    await refused('blob', async (dir) => rm(await weights(dir)), /model\.safetensors\) is missing/);
    await refused(
      'json',
      async (dir) => writeFile(join(dir, MANIFEST_NAME), '{"format":'),
      /knobs-sealed\.json: not JSON/,
    );
  });
});

describe('knobs seal: nothing plaintext outside memory', () => {
  it('after sealing and generating, no window of the weights and no key is in the temporary directory', async () => {
    await generate(sealedRun, ['--master-key-file', key1]);
    const weights = await readFile(join(run, 'model.safetensors'));
    const headerEnd = 8 + Number(weights.readBigUInt64LE(0));
    const windows = [0.1, 0.5, 0.9].map((f) => {
      const at = headerEnd + Math.floor(f * (weights.byteLength - headerEnd - 64));
      return weights.subarray(at, at + 64);
    });
    const keyText = (await readFile(key1, 'utf8')).trim();
    const keyBytes = Buffer.from(keyText, 'base64');
    // Files written since this test file started, anywhere under the temporary directory, except the
    // plain model directories and the key files themselves (they hold plaintext and keys by design).
    const exempt = new Set([run, hf, key1, key2]);
    let searched = 0;
    for (const path of await recentFiles(tmpdir(), started, exempt)) {
      const bytes = await readFile(path).catch(() => null);
      if (!bytes) continue;
      searched++;
      for (const w of windows) assert.equal(bytes.indexOf(w), -1, `plaintext weights in ${path}`);
      assert.equal(bytes.indexOf(keyBytes), -1, `the raw key in ${path}`);
      assert.equal(bytes.indexOf(keyText), -1, `the key text in ${path}`);
    }
    assert.ok(searched >= 5, `searched ${searched} files (the sealed blobs at least)`);
  });
});

/** Regular files under `dir` modified at or after `since` (ms), at most 16 MiB each, skipping `exempt` paths. */
async function recentFiles(dir: string, since: number, exempt: ReadonlySet<string>): Promise<string[]> {
  const found: string[] = [];
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    const path = join(dir, e.name);
    if (exempt.has(path)) continue;
    if (e.isDirectory()) found.push(...(await recentFiles(path, since, exempt)));
    else if (e.isFile()) {
      const st = await stat(path).catch(() => null);
      if (st && st.mtimeMs >= since - 1000 && st.size <= 16 << 20) found.push(path);
    }
  }
  return found;
}
