/**
 * Tokenizer files of model directories: the byte-level tokenizer of knobs' models (checked with
 * the Rust library: text → exactly its UTF-8 bytes, and back), tokenizer_config.json read and
 * written, loadTokenizerDir, and training a byte-level BPE whose output the Rust library reads.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadTokenizerDir, parseTokenizerConfig } from '../src/tokenizer/config.js';
import { byteLevelTokenizerFiles, writeTokenizerFiles } from '../src/tokenizer/export.js';
import { Tokenizer, checkTokenizerFitsVocab } from '../src/tokenizer/tokenizer.js';
import { CORPUS, judge } from './harness/tokenizers.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'knobs-tok-'));
  dirs.push(d);
  return d;
}

describe('tokenizer files of model directories', () => {
  it('byte-level models: the Rust library encodes text to exactly its UTF-8 bytes and decodes them back', async () => {
    const dir = await tempDir();
    await writeTokenizerFiles(dir, byteLevelTokenizerFiles(128));
    assert.deepEqual((await readdir(dir)).sort(), ['tokenizer.json', 'tokenizer_config.json']);
    const json = JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8'));
    const rust = judge(json);
    const { tokenizer, config } = await loadTokenizerDir(dir);
    assert.equal(tokenizer.vocabSize, 256);
    assert.equal(config?.modelMaxLength, 128);
    const allBytes = Buffer.from(Array.from({ length: 256 }, (_, b) => b)).toString('latin1');
    for (const text of [...CORPUS, allBytes]) {
      const bytes = [...Buffer.from(text, 'utf8')];
      const j = await rust.encode(text, null, { addSpecialTokens: true });
      assert.deepEqual(j.getIds(), bytes, JSON.stringify(text));
      assert.deepEqual(tokenizer.encode(text).ids, bytes);
      assert.equal(await rust.decode(bytes, false), text);
      assert.equal(tokenizer.decode(bytes), text);
    }
    checkTokenizerFitsVocab(tokenizer, 256, 'config.json');
    assert.throws(
      () => checkTokenizerFitsVocab(tokenizer, 200, 'model/config.json'),
      (err: Error & { code?: string; details?: { rule?: string } }) => {
        assert.equal(err.code, 'E_FORMAT');
        assert.equal(err.details?.rule, 'tokenizer_vocab_mismatch');
        assert.match(err.message, /tokenizer\.json produces token id 255 but model\/config\.json has vocab_size 200/);
        return true;
      },
    );
  });

  it('tokenizer_config.json: special tokens as strings or AddedToken objects, chat templates as a string or a list', () => {
    const c = parseTokenizerConfig({
      bos_token: '<s>',
      eos_token: {
        __type: 'AddedToken',
        content: '</s>',
        lstrip: false,
        normalized: false,
        rstrip: false,
        single_word: false,
      },
      unk_token: null,
      add_bos_token: true,
      add_eos_token: false,
      chat_template: [
        { name: 'default', template: '{{ messages }}' },
        { name: 'tool_use', template: '{{ tools }}' },
      ],
      model_max_length: 1000000000000000019884624838656,
      legacy: false,
    });
    assert.equal(c.bosToken, '<s>');
    assert.equal(c.eosToken, '</s>');
    assert.equal(c.unkToken, null);
    assert.equal(c.padToken, null);
    assert.equal(c.addBosToken, true);
    assert.equal(c.addEosToken, false);
    assert.equal(c.chatTemplate, '{{ messages }}');
    assert.deepEqual(Object.keys(c.chatTemplates), ['default', 'tool_use']);
    assert.equal(c.raw.legacy, false);
    assert.equal(
      parseTokenizerConfig({ chat_template: '{% for m in messages %}{{ m.content }}{% endfor %}' }).chatTemplate,
      '{% for m in messages %}{{ m.content }}{% endfor %}',
    );
    assert.throws(
      () => parseTokenizerConfig({ eos_token: 5 }, 'dir/tokenizer_config.json'),
      /dir\/tokenizer_config\.json: eos_token must be an object/,
    );
    assert.throws(() => parseTokenizerConfig({ add_bos_token: 'yes' }), /add_bos_token must be true or false/);
  });

  it('loadTokenizerDir: tokenizer_config.json is optional, tokenizer.json is not', async () => {
    const dir = await tempDir();
    await assert.rejects(
      loadTokenizerDir(dir),
      (err: Error & { code?: string }) => err.code === 'E_IO' && /tokenizer\.json/.test(err.message),
    );
    await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(byteLevelTokenizerFiles(8).tokenizer));
    assert.equal((await loadTokenizerDir(dir)).config, null);
    await writeFile(join(dir, 'tokenizer_config.json'), '{not json');
    await assert.rejects(loadTokenizerDir(dir), /tokenizer_config\.json: \(file\) is not JSON/);
  });
});

describe('toJSON', () => {
  it('gives back the file it was read from', () => {
    const json = byteLevelTokenizerFiles(8).tokenizer;
    assert.deepEqual(Tokenizer.fromJSON(json).toJSON(), json);
  });
});
