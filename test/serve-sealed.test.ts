/**
 * `knobs serve` of a sealed model, as a user runs it: it answers as the plain model does, a missing
 * key refuses to start, no route returns weight bytes, and after it ran neither the weights nor the
 * key are in any file it could have written (the test's temporary directory) or in its logs.
 */
import assert from 'node:assert/strict';
import { readFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeServedModelDir } from './harness/api-server.js';
import { cli } from './harness/cli.js';
import { startServe as serve } from './harness/serve-cli.js';

let tmp: string;
let plain: string;
let sealed: string;
let key: string;
let started: number;

before(async () => {
  started = Date.now();
  ({ tmp, dir: plain } = await makeServedModelDir());
  key = join(tmp, 'master.key');
  sealed = join(tmp, 'sealed');
  assert.equal((await cli(['seal', '--gen-key', '--out', key])).code, 0);
  const r = await cli(['seal', plain, '--out', sealed, '--master-key-file', key]);
  assert.equal(r.code, 0, r.stderr);
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const complete = async (url: string): Promise<string> => {
  const r = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'tiny', prompt: 'abc', max_tokens: 12, temperature: 0 }),
  });
  assert.equal(r.status, 200);
  return ((await r.json()) as { choices: { text: string }[] }).choices[0]!.text;
};

/** Three 64-byte windows of the plain weights' data. */
async function weightWindows(): Promise<Buffer[]> {
  const name = (await readdir(plain)).find((n) => n.endsWith('.safetensors'))!;
  const weights = await readFile(join(plain, name));
  const headerEnd = 8 + Number(weights.readBigUInt64LE(0));
  return [0.1, 0.5, 0.9].map((f) => {
    const at = headerEnd + Math.floor(f * (weights.byteLength - headerEnd - 64));
    return weights.subarray(at, at + 64);
  });
}

describe('serve: a sealed model', () => {
  it('answers as the plain model, leaks neither weights nor key, and refuses to start without its key', async () => {
    const plainServer = await serve([plain]);
    const expected = await complete(plainServer.url);
    assert.equal((await plainServer.stop()).code, 0);

    const env = { ...process.env };
    delete env.KNOBS_MASTER_KEY;
    const missing = await cli(['serve', sealed, '--insecure-no-auth', '--port', '0'], { env });
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /E_KEY.*is sealed/);
    assert.doesNotMatch(missing.stderr, /\n\s+at /); // a message, not a stack

    const server = await serve([sealed, '--master-key-file', key]);
    assert.equal(await complete(server.url), expected);
    const windows = await weightWindows();
    const bodies: Buffer[] = [];
    for (const path of ['/v1/models', '/v1/models/tiny', '/healthz', '/metrics', '/model.safetensors', '/tiny'])
      bodies.push(Buffer.from(await (await fetch(`${server.url}${path}`)).arrayBuffer()));
    const run = await server.stop();
    assert.equal(run.code, 0, run.stderr);

    const keyText = (await readFile(key, 'utf8')).trim();
    const keyBytes = Buffer.from(keyText, 'base64');
    const logs = Buffer.from(run.stdout + run.stderr);
    for (const bytes of [...bodies, logs]) {
      for (const w of windows) assert.equal(bytes.indexOf(w), -1, 'weight bytes in a response or a log');
      assert.equal(bytes.indexOf(keyText), -1, 'the key in a response or a log');
    }
    // Every file under the test's directory, except the plain model and the key file (plaintext by design).
    let searched = 0;
    for (const path of await filesUnder(tmp, new Set([plain, key]))) {
      const bytes = await readFile(path);
      searched++;
      for (const w of windows) assert.equal(bytes.indexOf(w), -1, `plaintext weights in ${path}`);
      assert.equal(bytes.indexOf(keyBytes), -1, `the raw key in ${path}`);
      assert.equal(bytes.indexOf(keyText), -1, `the key text in ${path}`);
    }
    assert.ok(searched >= 3, `searched ${searched} files (the sealed blobs at least)`);
  });
});

/** Regular files under `dir` written since the test started, skipping `exempt` paths. */
async function filesUnder(dir: string, exempt: ReadonlySet<string>): Promise<string[]> {
  const found: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (exempt.has(path)) continue;
    if (e.isDirectory()) found.push(...(await filesUnder(path, exempt)));
    else if (e.isFile() && (await stat(path)).mtimeMs >= started - 1000) found.push(path);
  }
  return found;
}
