/**
 * `knobs generate` and `knobs eval` on a Hugging Face model directory: the Llama fixture of
 * test/fixtures/hf (torch's logits and greedy tokens) with a small character-level tokenizer.json
 * whose ids are the fixture's token ids, so the CLI's tokens, text and loss are checked against
 * what PyTorch computed.
 */
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli } from './harness/cli.js';
import { repoRoot } from './harness/fixtures.js';
import { CHARS, tokenizerJson } from './harness/char-tokenizer.js';

const FIXTURE = join(repoRoot(), 'test', 'fixtures', 'hf', 'llama-gqa-bf16-llama3');

interface Expected {
  prompt: number[];
  greedy: number[];
  logits_ids: number[];
  logits: number[][];
}

const textOf = (ids: readonly number[]): string => ids.map((id) => CHARS[id - 3]!).join('');

let tmp: string;
let dir: string;
let expected: Expected;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'knobs-hf-cli-'));
  dir = join(tmp, 'model');
  await cp(FIXTURE, dir, { recursive: true });
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson(CHARS)));
  expected = JSON.parse(await readFile(join(dir, 'expected.json'), 'utf8')) as Expected;
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('knobs generate / eval on a Hugging Face directory', () => {
  it('generate: greedy by default (no do_sample), the tokens torch computed, decoded, ending at an eos id from generation_config.json', async () => {
    const prompt = textOf(expected.prompt.slice(1)); // the tokenizer adds <s> (id 1)
    const r = await cli(['generate', dir, '--prompt', prompt, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { prompt_ids: number[]; ids: number[]; text: string; finish_reason: string };
    assert.deepEqual(out.prompt_ids, expected.prompt);
    assert.deepEqual(out.ids, expected.greedy);
    assert.equal(out.text, textOf(expected.greedy.slice(0, -1)));
    assert.equal(out.finish_reason, 'stop');
    assert.equal(r.stderr, prompt + out.text + '\n', 'the text streams to stderr with --json');
  });

  it("eval: loss per token and bits per byte of a text equal those of torch's logits", async () => {
    const ids = expected.logits_ids;
    const text = textOf(ids.slice(1));
    await writeFile(join(tmp, 'text.txt'), text);
    let nats = 0;
    for (let t = 0; t + 1 < ids.length; t++) {
      const row = expected.logits[t]!;
      const max = Math.max(...row);
      const logSum = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
      nats += logSum - row[ids[t + 1]!]!;
    }
    const r = await cli(['eval', dir, '--data', join(tmp, 'text.txt'), '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { loss: number; bits_per_byte: number; tokens: number; bytes: number };
    assert.equal(out.tokens, ids.length - 1);
    assert.equal(out.bytes, text.length);
    assert.ok(
      Math.abs(out.loss - nats / out.tokens) <= 1e-4 * (1 + nats / out.tokens),
      `loss ${out.loss} vs torch ${nats / out.tokens}`,
    );
    assert.ok(Math.abs(out.bits_per_byte - nats / Math.LN2 / text.length) <= 1e-4, `bits/byte ${out.bits_per_byte}`);

    const windows = await cli(['eval', dir, '--data', join(tmp, 'text.txt'), '--context', '4', '--json']);
    assert.equal(windows.code, 0, windows.stderr);
    assert.equal(
      (JSON.parse(windows.stdout) as { tokens: number }).tokens,
      ids.length - 1,
      'windows of 4 still predict every token once',
    );
    const human = await cli(['eval', dir, '--data', join(tmp, 'text.txt')]);
    assert.match(human.stdout, /^loss \d+\.\d{4} {2}bits\/byte \d+\.\d{4} {2}\(11 tokens, 11 bytes\)\n$/);
  });

  it('bad input: no --data, a context past the model, no tokenizer.json, a tokenizer that does not fit the vocabulary', async () => {
    const noData = await cli(['eval', dir]);
    assert.equal(noData.code, 2);
    assert.match(noData.stderr, /^knobs: error \[E_USAGE\]: .*needs --data FILE/);
    await writeFile(join(tmp, 't.txt'), 'abc');
    const long = await cli(['eval', dir, '--data', join(tmp, 't.txt'), '--context', '65']);
    assert.equal(long.code, 2);
    assert.match(long.stderr, /--context 65 is longer than the model's context \(64 positions\)/);

    const bare = join(tmp, 'bare');
    await cp(dir, bare, { recursive: true });
    await unlink(join(bare, 'tokenizer.json'));
    const noTok = await cli(['generate', bare, '--prompt', 'abc']);
    assert.equal(noTok.code, 1);
    assert.equal(noTok.stdout, '');
    assert.match(noTok.stderr, /^knobs: error \[E_FORMAT\]: .*bare has no tokenizer\.json/);

    const big = join(tmp, 'big');
    await cp(dir, big, { recursive: true });
    await writeFile(join(big, 'tokenizer.json'), JSON.stringify(tokenizerJson([...CHARS, '6', '7'])));
    const misfit = await cli(['generate', big, '--prompt', 'abc']);
    assert.equal(misfit.code, 1);
    assert.match(
      misfit.stderr,
      /^knobs: error \[E_FORMAT\]: .*tokenizer\.json produces token id 65 but .*config\.json has vocab_size 64/,
    );
  });
});
