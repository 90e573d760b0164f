/**
 * `knobs tokenize` and `knobs tokenizer train`, run as a user would; the trained tokenizer.json is
 * checked with the Rust library (it loads it and encodes exactly as knobs does).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from '../src/tokenizer/tokenizer.js';
import { cli } from './harness/cli.js';
import { CORPUS, TEXT_FIXTURE, judge } from './harness/tokenizers.js';

const SP = fileURLToPath(new URL('../../test/fixtures/tokenizers/sp-bpe.legacy.tokenizer.json', import.meta.url));
let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-tok-cli-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('knobs tokenizer train', () => {
  it('trains a byte-level BPE that Hugging Face tokenizers loads and encodes identically', async () => {
    const out = join(dir, 'tokenizer.json');
    const r = await cli(['tokenizer', 'train', TEXT_FIXTURE, '--vocab-size', '500', '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout);
    assert.equal(summary.vocab_size, 500);
    assert.equal(summary.merges, 500 - 256 - 1);
    assert.match(r.stderr, /merges 243\/243/);
    assert.deepEqual(
      (await readdir(dir)).filter((f) => f.startsWith('.')),
      [],
      'no temporary file left',
    );
    const json = JSON.parse(await readFile(out, 'utf8'));
    const ours = Tokenizer.fromJSON(json);
    const rust = judge(json);
    assert.equal(rust.getVocabSize(true), 500);
    const text = await readFile(TEXT_FIXTURE, 'utf8');
    for (const t of [text, ...CORPUS, 'x<|endoftext|>y']) {
      const e = ours.encode(t);
      assert.deepEqual(e.ids, (await rust.encode(t)).getIds(), JSON.stringify(t.slice(0, 40)));
      assert.equal(await rust.decode(e.ids, false), t);
    }
    assert.ok(
      ours.encode(text).ids.length < Buffer.byteLength(text) / 2.5,
      'merges compress the text it was trained on',
    );
  });

  it('bad usage is a usage error, and nothing is written', async () => {
    const out = join(dir, 'bad.json');
    for (const args of [
      ['tokenizer', 'train', TEXT_FIXTURE, '--out', out],
      ['tokenizer', 'train', TEXT_FIXTURE, '--vocab-size', '100', '--out', out],
      ['tokenizer', 'fit', TEXT_FIXTURE],
    ]) {
      const r = await cli(args);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /^knobs: error \[E_USAGE\]/);
      assert.equal(r.stdout, '');
    }
    const missing = await cli(['tokenizer', 'train', join(dir, 'nope.txt'), '--vocab-size', '300', '--out', out]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /E_IO.*nope\.txt/);
    assert.equal(existsSync(out), false);
  });
});

describe('knobs tokenize', () => {
  it('prints ids and tokens as JSON, and a readable listing', async () => {
    const json = await cli(['tokenize', SP, '--text', 'Hello wörld', '--json']);
    assert.equal(json.code, 0, json.stderr);
    const expected = Tokenizer.fromJSON(JSON.parse(await readFile(SP, 'utf8'))).encode('Hello wörld');
    assert.deepEqual(JSON.parse(json.stdout), { ids: expected.ids, tokens: expected.tokens });
    assert.equal(expected.ids[0], 1);

    const plain = await cli(['tokenize', SP, '--text', 'Hello', '--no-special']);
    assert.equal(plain.code, 0, plain.stderr);
    assert.doesNotMatch(plain.stdout, /<s>/);
    assert.match(plain.stdout, /^ *\d+  "▁"  = ""$/m, 'a first ▁ adds no space');
    assert.match(plain.stdout, /\d+ tokens\n$/);
  });

  it('reads the tokenizer.json of a model directory, and a text file', async () => {
    const model = join(dir, 'model');
    await rm(model, { recursive: true, force: true });
    await cli(['tokenizer', 'train', TEXT_FIXTURE, '--vocab-size', '300', '--out', join(dir, 'tk.json')]);
    await mkdir(model);
    await writeFile(join(model, 'tokenizer.json'), await readFile(join(dir, 'tk.json')));
    const r = await cli(['tokenize', model, '--file', TEXT_FIXTURE, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const { ids } = JSON.parse(r.stdout);
    assert.equal(
      Tokenizer.fromJSON(JSON.parse(await readFile(join(dir, 'tk.json'), 'utf8'))).decode(ids),
      await readFile(TEXT_FIXTURE, 'utf8'),
    );
  });

  it('a broken or unsupported tokenizer.json is an E_FORMAT error naming the component', async () => {
    const bad = join(dir, 'unigram.json');
    await writeFile(bad, JSON.stringify({ model: { type: 'Unigram', vocab: [] } }));
    const r = await cli(['tokenize', bad, '--text', 'x']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /knobs: error \[E_FORMAT\]: .*unigram\.json: model Unigram is not supported/);
    assert.equal(r.stdout, '');
    const usage = await cli(['tokenize', bad]);
    assert.equal(usage.code, 2);
  });
});
