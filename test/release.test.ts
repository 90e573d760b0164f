/**
 * Signed releases (docs/release.md): keys made by knobs and by openssl (P-256, P-384, Ed25519)
 * sign and verify; every tampering is refused, naming the file; OpenSSF model-signing's own
 * committed key-signed vectors (test/fixtures/model-signing, from sigstore/model-transparency at
 * commit e3430730bca924e672b2e59f10524a7ffb5adf79, scripts/tests/) verify and tampered copies of
 * them do not; a signed run loads through `--public-key`, and a file swapped after verification
 * is refused when the model loads.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { cp, lstat, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { type GgufValue } from '../src/formats/gguf.js';
import { writeGguf } from '../src/formats/gguf-write.js';
import { openLanguageModel } from '../src/load/language-model.js';
import { loadPrivateKey } from '../src/release/keys.js';
import { createRelease } from '../src/release/release.js';
import { verifyModel } from '../src/release/verify.js';
import type { Manifest } from '../src/release/manifest.js';
import { signManifest } from '../src/release/signature.js';
import { openVerifiedBundle } from '../src/release/verified-files.js';
import { cliInProcess, untimedGeneration } from './harness/cli.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/', import.meta.url));
const VECTORS = join(FIXTURES, 'model-signing');
const VECTOR_KEY = join(VECTORS, 'keys', 'signing-key-pub.pem');
const GPT2 = join(FIXTURES, 'hf', 'gpt2-tiny');
const TEXT = join(FIXTURES, 'text', 'genesis-1-4.txt');

let dir: string;
let p256: string; // a knobs-made P-256 key, used for the tampering cases
let bundle: string; // a pristine release of the GPT-2 fixture signed with it

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-release-'));
  p256 = join(dir, 'p256.pem');
  assert.equal((await cliInProcess(['signing-key', 'create', '--out', p256])).code, 0);
  bundle = join(dir, 'pristine');
  const r = await cliInProcess(['release', GPT2, '--out', bundle, '--signing-key', p256, '--license', 'MIT']);
  assert.equal(r.code, 0, r.stderr);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The library call behind `knobs ARGS` (verify, release, generate), to read the error's rule. */
async function libraryCall(args: string[]): Promise<unknown> {
  const { values, positionals } = parseArgs({
    args,
    strict: false,
    allowPositionals: true,
    options: {
      'ignore-paths': { type: 'string', multiple: true },
      ...Object.fromEntries(
        ['public-key', 'signature', 'out', 'signing-key', 'card', 'license', 'prompt', 'data'].map((f) => [
          f,
          { type: 'string' as const },
        ]),
      ),
    },
  });
  const v = values as Record<string, string | undefined>;
  if (positionals[0] === 'verify')
    return verifyModel(positionals[1]!, v['public-key']!, {
      signature: v.signature,
      ignorePaths: values['ignore-paths'] as string[] | undefined,
    });
  if (positionals[0] === 'release')
    return createRelease({
      model: positionals[1]!,
      out: v.out!,
      signingKey: v['signing-key']!,
      card: v.card,
      license: v.license,
    });
  return openLanguageModel(positionals[1]!, { publicKey: v['public-key'] });
}

/**
 * Runs `knobs ARGS` expecting exit `code` with only an error on stderr; with `rule`, the same
 * call through the library must fail with that E_FORMAT rule. Returns stderr.
 */
async function fails(args: string[], rule: string, code = 1): Promise<string> {
  const r = await cliInProcess(args);
  assert.equal(r.code, code, `exit code (stderr: ${r.stderr})`);
  assert.equal(r.stdout, '', 'nothing on stdout');
  assert.match(r.stderr, /^knobs: error \[E_[A-Z]+\]/);
  if (rule)
    await assert.rejects(
      libraryCall(args),
      (e: any) => e.details?.rule === rule || assert.fail(`expected ${rule}, got ${e.details?.rule}: ${e.message}`),
    );
  return r.stderr;
}

/** A fresh copy of `from` to tamper with. */
async function copyOf(from: string, name: string): Promise<string> {
  const to = join(dir, name);
  await cp(from, to, { recursive: true });
  return to;
}

async function flipByte(path: string, at = -1): Promise<void> {
  const bytes = await readFile(path);
  const i = at < 0 ? bytes.length + at : at;
  bytes[i] ^= 1;
  await writeFile(path, bytes);
}

function verifyArgs(b: string, key = `${p256}.pub`, ...more: string[]): string[] {
  return ['verify', b, '--public-key', key, '--json', ...more];
}

describe('keys: knobs-made and openssl-made, P-256, P-384 and Ed25519', () => {
  const openssl = (out: string, ...args: string[]) => {
    const r = spawnSync('openssl', ['genpkey', ...args, '-out', out]);
    assert.equal(r.status, 0, r.stderr?.toString());
    const p = spawnSync('openssl', ['pkey', '-in', out, '-pubout', '-out', `${out}.pub`]);
    assert.equal(p.status, 0, p.stderr?.toString());
  };
  const makers: Array<[string, (out: string) => Promise<void>]> = [
    ['knobs p256', async (out) => assert.equal((await cliInProcess(['signing-key', 'create', '--out', out])).code, 0)],
    [
      'knobs p384',
      async (out) =>
        assert.equal((await cliInProcess(['signing-key', 'create', '--out', out, '--type', 'p384'])).code, 0),
    ],
    [
      'knobs ed25519',
      async (out) =>
        assert.equal((await cliInProcess(['signing-key', 'create', '--out', out, '--type', 'ed25519'])).code, 0),
    ],
    ['openssl P-256', async (out) => openssl(out, '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256')],
    ['openssl P-384', async (out) => openssl(out, '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384')],
    ['openssl Ed25519', async (out) => openssl(out, '-algorithm', 'ED25519')],
  ];
  for (const [label, make] of makers) {
    it(`${label}: release, then verify; another key is refused`, async () => {
      const key = join(dir, `${label.replace(/ /g, '-')}.pem`);
      await make(key);
      const out = join(dir, `bundle-${label.replace(/ /g, '-')}`);
      const r = await cliInProcess(['release', GPT2, '--out', out, '--signing-key', key, '--json']);
      assert.equal(r.code, 0, r.stderr);
      const v = await cliInProcess(verifyArgs(out, `${key}.pub`));
      assert.equal(v.code, 0, v.stderr);
      const result = JSON.parse(v.stdout);
      assert.equal(result.verified, true);
      assert.deepEqual(
        result.files.map((f: { name: string }) => f.name),
        ['README.md', 'config.json', 'expected.json', 'model.safetensors'],
      );
      await fails(verifyArgs(out, `${p256}.pub`), 'signature_wrong_key');
    });
  }

  it('knobs signing-key writes the private key with mode 0600 and never overwrites', async () => {
    const key = join(dir, 'mode.pem');
    assert.equal((await cliInProcess(['signing-key', 'create', '--out', key, '--type', 'ed25519'])).code, 0);
    assert.equal((await stat(key)).mode & 0o777, 0o600);
    assert.match(await readFile(`${key}.pub`, 'utf8'), /^-----BEGIN PUBLIC KEY-----\n/);
    const before = await readFile(key);
    await fails(['signing-key', 'create', '--out', key], '', 2);
    assert.deepEqual(await readFile(key), before);
  });

  it('a key of an unsupported type (RSA, secp256k1) is a typed error, for signing and for verifying', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const k1 = generateKeyPairSync('ec', { namedCurve: 'secp256k1' });
    for (const [name, pair] of [
      ['rsa', rsa],
      ['k1', k1],
    ] as const) {
      const priv = join(dir, `${name}.pem`);
      await writeFile(priv, pair.privateKey.export({ type: 'pkcs8', format: 'pem' }));
      await writeFile(`${priv}.pub`, pair.publicKey.export({ type: 'spki', format: 'pem' }));
      await fails(['release', GPT2, '--out', join(dir, `never-${name}`), '--signing-key', priv], 'key_unsupported');
      await fails(verifyArgs(bundle, `${priv}.pub`), 'key_unsupported');
      await assert.rejects(lstat(join(dir, `never-${name}`)));
    }
    await writeFile(join(dir, 'garbage.pub'), 'not a key\n');
    await fails(verifyArgs(bundle, join(dir, 'garbage.pub')), 'key_invalid');
  });
});

describe("OpenSSF model-signing's own vectors (elliptic-curve key, P-384)", () => {
  it('v0.3.1 and v1.0.0 (one-file models, publicKey.rawBytes) verify', async () => {
    for (const v of ['v0.3.1', 'v1.0.0']) {
      const d = join(VECTORS, `${v}-elliptic-key`);
      const r = await cliInProcess(verifyArgs(join(d, 'signme-1'), VECTOR_KEY, '--signature', join(d, 'model.sig')));
      assert.equal(r.code, 0, `${v}: ${r.stderr}`);
    }
  });

  it('v1.0.1 (ignore-me given on the command line) and v1.1.0 (publicKey.hint, signed ignore_paths) verify', async () => {
    const a = await cliInProcess(
      verifyArgs(join(VECTORS, 'v1.0.1-elliptic-key'), VECTOR_KEY, '--ignore-paths', 'ignore-me'),
    );
    assert.equal(a.code, 0, a.stderr);
    assert.deepEqual(
      JSON.parse(a.stdout).files.map((f: { name: string }) => f.name),
      ['signme-1', 'signme-2'],
    );
    const b = await cliInProcess(verifyArgs(join(VECTORS, 'v1.1.0-elliptic-key'), VECTOR_KEY));
    assert.equal(b.code, 0, b.stderr);
    // Without model-signing's --ignore-paths, the unsigned file is an extra file.
    const e = await fails(verifyArgs(join(VECTORS, 'v1.0.1-elliptic-key'), VECTOR_KEY), 'bundle_extra');
    assert.match(e, /ignore-me/);
  });

  it('tampered copies are refused: a changed file, a changed statement, another key', async () => {
    const changed = await copyOf(join(VECTORS, 'v1.1.0-elliptic-key'), 'vector-changed');
    await flipByte(join(changed, 'signme-2'), 0);
    assert.match(await fails(verifyArgs(changed, VECTOR_KEY), 'bundle_changed'), /signme-2/);

    const statement = await copyOf(join(VECTORS, 'v1.1.0-elliptic-key'), 'vector-statement');
    const sig = JSON.parse(await readFile(join(statement, 'model.sig'), 'utf8'));
    const payload = Buffer.from(sig.dsseEnvelope.payload, 'base64').toString('utf8');
    sig.dsseEnvelope.payload = Buffer.from(payload.replace('"signme-2"', '"signme-3"')).toString('base64');
    await writeFile(join(statement, 'model.sig'), JSON.stringify(sig));
    await fails(verifyArgs(statement, VECTOR_KEY), 'signature_mismatch');

    await fails(verifyArgs(join(VECTORS, 'v1.1.0-elliptic-key'), `${p256}.pub`), 'signature_wrong_key');
    const d = join(VECTORS, 'v1.0.0-elliptic-key'); // no hint: the signature itself must fail
    await fails(
      verifyArgs(join(d, 'signme-1'), `${p256}.pub`, '--signature', join(d, 'model.sig')),
      'signature_mismatch',
    );
  });
});

describe('every tampering of a knobs bundle is refused, naming the file', () => {
  it('the pristine bundle verifies; its model.sig has the format model-signing writes', async () => {
    const r = await cliInProcess(verifyArgs(bundle));
    assert.equal(r.code, 0, r.stderr);
    const sig = JSON.parse(await readFile(join(bundle, 'model.sig'), 'utf8'));
    assert.equal(sig.mediaType, 'application/vnd.dev.sigstore.bundle.v0.3+json');
    assert.match(sig.verificationMaterial.publicKey.hint, /^[0-9a-f]{64}$/);
    assert.equal(sig.dsseEnvelope.payloadType, 'application/vnd.in-toto+json');
    const statement = JSON.parse(Buffer.from(sig.dsseEnvelope.payload, 'base64').toString('utf8'));
    assert.equal(statement._type, 'https://in-toto.io/Statement/v1');
    assert.equal(statement.predicateType, 'https://model_signing/signature/v1.0');
    assert.equal(statement.subject.length, 1);
    assert.equal(statement.predicate.serialization.method, 'files');
    assert.deepEqual(
      statement.predicate.resources.map((r: { name: string }) => r.name),
      ['README.md', 'config.json', 'expected.json', 'model.safetensors'],
    );
  });

  it('a changed, a missing and an extra file', async () => {
    const changed = await copyOf(bundle, 't-changed');
    await flipByte(join(changed, 'model.safetensors'));
    assert.match(await fails(verifyArgs(changed), 'bundle_changed'), /model\.safetensors/);

    const missing = await copyOf(bundle, 't-missing');
    await rm(join(missing, 'config.json'));
    assert.match(await fails(verifyArgs(missing), 'bundle_missing'), /config\.json/);

    const extra = await copyOf(bundle, 't-extra');
    await writeFile(join(extra, 'notes.txt'), 'unsigned\n');
    assert.match(await fails(verifyArgs(extra), 'bundle_extra'), /notes\.txt/);
    await mkdir(join(extra, 'sub'));
    await rm(join(extra, 'notes.txt'));
    await writeFile(join(extra, 'sub', 'x.bin'), 'x');
    assert.match(await fails(verifyArgs(extra), 'bundle_extra'), /sub\/x\.bin/);
  });

  it('a symbolic link, even to identical bytes', async () => {
    const linked = await copyOf(bundle, 't-link');
    await cp(join(linked, 'config.json'), join(dir, 'outside-config.json'));
    await rm(join(linked, 'config.json'));
    await symlink(join(dir, 'outside-config.json'), join(linked, 'config.json'));
    assert.match(await fails(verifyArgs(linked), 'bundle_symlink'), /config\.json/);
  });

  it('signed manifests that name a path outside the bundle, or one file twice', async () => {
    const signer = await loadPrivateKey(p256);
    const digest = 'a'.repeat(64);
    const sign = async (name: string, resources: Manifest['resources']) => {
      const b = await copyOf(bundle, name);
      const manifest: Manifest = {
        modelName: name,
        resources,
        serialization: { method: 'files', hash_type: 'sha256', allow_symlinks: false, ignore_paths: ['model.sig'] },
      };
      await writeFile(join(b, 'model.sig'), signManifest(manifest, signer));
      return b;
    };
    const escape = await sign('t-escape', [{ name: '../outside-config.json', algorithm: 'sha256', digest }]);
    assert.match(await fails(verifyArgs(escape), 'bundle_bad_path'), /outside-config/);
    const absolute = await sign('t-absolute', [{ name: '/etc/passwd', algorithm: 'sha256', digest }]);
    await fails(verifyArgs(absolute), 'bundle_bad_path');
    const twice = await sign('t-twice', [
      { name: 'config.json', algorithm: 'sha256', digest },
      { name: 'config.json', algorithm: 'sha256', digest },
    ]);
    assert.match(await fails(verifyArgs(twice), 'manifest_duplicate'), /config\.json/);
  });

  it('a truncated, non-JSON or malformed model.sig', async () => {
    const sigPath = (b: string) => join(b, 'model.sig');
    const truncated = await copyOf(bundle, 't-truncated');
    const text = await readFile(sigPath(truncated), 'utf8');
    await writeFile(sigPath(truncated), text.slice(0, text.length >> 1));
    await fails(verifyArgs(truncated), 'signature_not_json');
    await writeFile(sigPath(truncated), 'PK\x03\x04 not json at all');
    await fails(verifyArgs(truncated), 'signature_not_json');
    const cases: Array<(s: any) => void> = [
      (s) => (s.mediaType = 'application/vnd.dev.sigstore.bundle+json;version=0.2'),
      (s) => delete s.dsseEnvelope,
      (s) => (s.dsseEnvelope.payloadType = 'text/plain'),
      (s) => s.dsseEnvelope.signatures.push(s.dsseEnvelope.signatures[0]),
      (s) => (s.dsseEnvelope.signatures = []),
      (s) => (s.dsseEnvelope.payload = '%%%'),
      (s) => (s.verificationMaterial = null),
    ];
    for (const [i, change] of cases.entries()) {
      const s = JSON.parse(text);
      change(s);
      await writeFile(sigPath(truncated), JSON.stringify(s));
      await fails(verifyArgs(truncated), 'signature_invalid');
      void i;
    }
    await rm(sigPath(truncated));
    await fails(verifyArgs(truncated), '');
  });
});

describe('knobs release: model cards and bad input', () => {
  it('a card with invalid YAML front matter is a typed error and leaves nothing behind', async () => {
    const card = join(dir, 'bad-card.md');
    await writeFile(card, '---\nlicense: [mit\nfoo: : bar\n---\n# Card\n');
    const out = join(dir, 'never-card');
    await fails(['release', GPT2, '--out', out, '--signing-key', p256, '--card', card], 'card_invalid_yaml');
    await assert.rejects(lstat(out));
    assert.deepEqual(
      (await readdir(dir)).filter((n) => n.startsWith('.never-card')),
      [],
    );
    await writeFile(card, '---\n- a list\n---\n');
    await fails(['release', GPT2, '--out', out, '--signing-key', p256, '--card', card], 'card_invalid_yaml');
  });

  it('a card given with --card: its fields win, its text is the body; an existing --out is refused', async () => {
    const card = join(dir, 'card.md');
    await writeFile(card, '---\nintended_use: Teaching.\nlanguage: en\n---\n# Tiny GPT-2\n\nHand-written text.\n');
    const out = join(dir, 'carded');
    assert.equal((await cliInProcess(['release', GPT2, '--out', out, '--signing-key', p256, '--card', card])).code, 0);
    const readme = await readFile(join(out, 'README.md'), 'utf8');
    const front = parseYaml(/^---\n([\s\S]*?)\n---\n/.exec(readme)![1]!);
    assert.equal(front.intended_use, 'Teaching.');
    assert.equal(front.language, 'en');
    assert.equal(front.architecture, 'GPT2LMHeadModel');
    assert.equal(front.parameters, 28544);
    assert.match(readme, /\n# Tiny GPT-2\n\nHand-written text\.\n$/);
    await fails(['release', GPT2, '--out', out, '--signing-key', p256], '', 2);
  });
});

describe('knobs release of a GGUF file', () => {
  it('copies the file, describes it in the card, and verifies', async () => {
    const gguf = join(dir, 'tiny.gguf');
    await writeGguf(gguf, {
      metadata: new Map<string, GgufValue>([['general.architecture', { type: 'string', value: 'llama' }]]),
      tensors: [
        { name: 'a', shape: [4, 32], data: new Float32Array(128).fill(0.5), type: 'F32' },
        { name: 'b', shape: [3], data: new Float32Array(3), type: 'F16' },
      ],
    });
    const out = join(dir, 'gguf-bundle');
    const r = await cliInProcess(['release', gguf, '--out', out, '--signing-key', p256, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await readdir(out)).sort(), ['README.md', 'model.sig', 'tiny.gguf']);
    const front = parseYaml(/^---\n([\s\S]*?)\n---\n/.exec(await readFile(join(out, 'README.md'), 'utf8'))![1]!);
    assert.equal(front.architecture, 'llama');
    assert.equal(front.parameters, 131);
    assert.equal(front.training.data, 'unknown');
    assert.equal((await cliInProcess(verifyArgs(out))).code, 0);
  });
});

describe('verify before use: a signed run loads through --public-key', () => {
  let run: string;
  let signed: string;
  before(async () => {
    const recipe = join(dir, 'recipe.json');
    await writeFile(
      recipe,
      JSON.stringify({
        name: 'signed-gpt',
        model: { type: 'gpt', n_positions: 16, n_embd: 16, n_layer: 1, n_head: 2 },
        data: { type: 'text', path: TEXT, validation_fraction: 0.1 },
        optimizer: { type: 'adamw', lr: 0.003 },
        batch_size: 2,
        steps: 2,
        log_every: 1,
        eval_every: 2,
        eval_batches: 1,
      }),
    );
    run = join(dir, 'run');
    assert.equal((await cliInProcess(['train', recipe, '--out', run, '--json'])).code, 0);
    signed = join(dir, 'signed-run');
    const r = await cliInProcess([
      'release',
      run,
      '--out',
      signed,
      '--signing-key',
      p256,
      '--license',
      'MIT',
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
  });

  it("the card records the recipe, the data's SHA-256 and the final metrics; checkpoints are left out", async () => {
    const readme = await readFile(join(signed, 'README.md'), 'utf8');
    const front = parseYaml(/^---\n([\s\S]*?)\n---\n/.exec(readme)![1]!);
    const record = JSON.parse(await readFile(join(run, 'training-data.json'), 'utf8'));
    assert.equal(front.license, 'MIT');
    assert.equal(front.training.recipe.name, 'signed-gpt');
    assert.equal(front.training.data[0].sha256, record.files[0].sha256);
    assert.equal(front.training.final_metrics.train.step, 2);
    assert.equal(typeof front.training.final_metrics.evaluation.eval_loss, 'number');
    assert.ok(!(await readdir(signed)).includes('checkpoints'));
  });

  it('generates the same text as the run it came from', async () => {
    const args = ['--prompt', 'In the', '--max-tokens', '8', '--temperature', '0', '--json'];
    const plain = await cliInProcess(['generate', run, ...args]);
    const verified = await cliInProcess(['generate', signed, ...args, '--public-key', `${p256}.pub`]);
    assert.equal(verified.code, 0, verified.stderr);
    assert.deepEqual(untimedGeneration(verified.stdout), untimedGeneration(plain.stdout));
  });

  it('a signed GGUF file generates as the file itself; a changed copy is refused', async () => {
    const gguf = join(dir, 'run.gguf');
    assert.equal((await cliInProcess(['convert', run, '--format', 'gguf', '--dtype', 'f32', '--out', gguf])).code, 0);
    const out = join(dir, 'signed-gguf');
    assert.equal((await cliInProcess(['release', gguf, '--out', out, '--signing-key', p256])).code, 0);
    const args = ['--prompt', 'In the', '--max-tokens', '8', '--temperature', '0', '--json'];
    const plain = await cliInProcess(['generate', gguf, ...args]);
    const verified = await cliInProcess(['generate', out, ...args, '--public-key', `${p256}.pub`]);
    assert.equal(verified.code, 0, verified.stderr);
    assert.deepEqual(untimedGeneration(verified.stdout), untimedGeneration(plain.stdout));
    await flipByte(join(out, 'run.gguf'));
    await fails(['generate', out, '--prompt', 'In', '--public-key', `${p256}.pub`], 'bundle_changed');
  });

  it('a bundle verified, then loaded with a file swapped in between, is refused', async () => {
    const b = await copyOf(signed, 'swapped-run');
    assert.equal((await cliInProcess(verifyArgs(b))).code, 0);
    await flipByte(join(b, 'model.safetensors')); // still a loadable safetensors file
    const stderr = await fails(['generate', b, '--prompt', 'In', '--public-key', `${p256}.pub`], 'bundle_changed');
    assert.match(stderr, /model\.safetensors changed since it was signed/);
  });

  it('a file swapped after the bundle is opened (signature and listing checked) is refused when read', async () => {
    const b = await copyOf(signed, 'swapped-later');
    const files = await openVerifiedBundle(b, `${p256}.pub`);
    const config = await files.open('config.json');
    assert.ok(config);
    await flipByte(join(b, 'model.safetensors'));
    await assert.rejects(files.open('model.safetensors'), (e: any) => e.details?.rule === 'bundle_changed');
    await cp(join(b, 'config.json'), join(dir, 'outside.json'));
    await rm(join(b, 'config.json'));
    await symlink(join(dir, 'outside.json'), join(b, 'config.json'));
    await assert.rejects(files.open('config.json'), (e: any) => e.details?.rule === 'bundle_symlink');
    assert.equal(await files.open('notes.txt'), null);
  });

  it('eval --public-key scores a signed model as eval scores the unsigned one (with a tokenizer, and byte-level)', async () => {
    // The run without recipe.json is a Hugging Face directory (config.json, weights, tokenizer.json).
    const hf = await copyOf(run, 'as-hf');
    await rm(join(hf, 'recipe.json'));
    await rm(join(hf, 'checkpoints'), { recursive: true });
    const hfSigned = join(dir, 'as-hf-signed');
    assert.equal((await cliInProcess(['release', hf, '--out', hfSigned, '--signing-key', p256])).code, 0);
    const plain = await cliInProcess(['eval', hf, '--data', TEXT, '--context', '16', '--json']);
    assert.equal(plain.code, 0, plain.stderr);
    const verified = await cliInProcess([
      'eval',
      hfSigned,
      '--data',
      TEXT,
      '--context',
      '16',
      '--json',
      '--public-key',
      `${p256}.pub`,
    ]);
    assert.equal(verified.code, 0, verified.stderr);
    assert.equal(verified.stdout, plain.stdout);
    // A byte-level run: scored as 'knobs eval RUN --data FILE' scores it.
    const runEval = await cliInProcess(['eval', run, '--data', TEXT, '--json']);
    const bytesEval = await cliInProcess(['eval', signed, '--data', TEXT, '--json', '--public-key', `${p256}.pub`]);
    assert.equal(bytesEval.code, 0, bytesEval.stderr);
    const [a, b] = [JSON.parse(bytesEval.stdout), JSON.parse(runEval.stdout)];
    assert.equal(a.tokens, b.tokens);
    // The same windows in other batches: equal up to f32 summation order.
    for (const k of ['loss', 'bits_per_byte'])
      assert.ok(Math.abs(a[k] - b[k]) < 1e-6 * b[k], `${k}: ${a[k]} vs ${b[k]}`);
    await fails(['eval', signed, '--public-key', `${p256}.pub`], '', 2);
  });
});
