/**
 * knobs' tokenizer against the real Hugging Face tokenizers (Rust): ids, tokens, pre-tokenized
 * pieces and decoded text on a varied corpus, for tokenizer.json files that exercise each
 * component (GPT-2, Llama-3 and Qwen2 pre-tokenizers, added tokens with every flag, templates,
 * split behaviours, decoders).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { Tokenizer } from '../src/tokenizer/tokenizer.js';
import { CORPUS, TEXT_FIXTURE, byteLevelVariants, judge } from './harness/tokenizers.js';

/** Strings that hit the added tokens of the variants, and the regexes' corner cases. */
const EXTRA = [
  'Hello<|endoftext|>world',
  ' <|endoftext|> x<|endoftext|><|endoftext|>',
  'a <mask> b  <mask>c\n<mask>',
  '[R]   x [LR]  y  [LR]z[R]',
  'word words sword word. word_x (word)',
  'A <Norm> B <norm> <NORM> <Raw> <raw>',
  'the theme The THE',
  '<mask>x <mask>y',
  '<|begin_of_text|>hi<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello',
  '<|im_start|>user\nHi<|im_end|>\n',
  'price $5, #tag! ok? yes.',
  'a <mask> b [LR] c word\u00a0<mask>  '.repeat(300),
  "it'ſ IT'S we'LL x'Ss x'K 'd 'D'll",
  'a\u0085b c\ufeffd x\u2028y',
  ' zqxw zqxwz zqxw',
  '  \u0085 \t\u000b\u000c end',
];
const TEXTS = [...CORPUS, ...EXTRA];

describe('tokenizer.json against Hugging Face tokenizers (Rust)', () => {
  for (const [name, json] of Object.entries(byteLevelVariants())) {
    it(`${name}: same ids, tokens and decoded text`, async () => {
      const ours = Tokenizer.fromJSON(json, name);
      const rust = judge(json);
      assert.equal(ours.vocabSize, rust.getVocabSize(true));
      for (const text of TEXTS) {
        for (const addSpecialTokens of [true, false]) {
          const e = ours.encode(text, { addSpecialTokens });
          const j = await rust.encode(text, null, { addSpecialTokens });
          assert.deepEqual(
            e.ids,
            j.getIds(),
            `${name} ${JSON.stringify(text)} ids (add_special_tokens ${addSpecialTokens})`,
          );
          assert.deepEqual(e.tokens, j.getTokens(), `${name} ${JSON.stringify(text)} tokens`);
          for (const skipSpecialTokens of [false, true]) {
            assert.equal(
              ours.decode(e.ids, { skipSpecialTokens }),
              await rust.decode(e.ids, skipSpecialTokens),
              `${name} decode ${JSON.stringify(text)}`,
            );
          }
        }
      }
    });
  }

  it('the pre-tokenizer patterns cut text where Oniguruma does', () => {
    for (const [name, json] of Object.entries(byteLevelVariants())) {
      if (json.normalizer) continue; // the judge's preTokenizeString skips the normalizer
      const ours = Tokenizer.fromJSON(json, name);
      const rust = (
        judge(json) as unknown as { getPreTokenizer(): { preTokenizeString(s: string): [string, unknown][] } }
      ).getPreTokenizer();
      for (const text of TEXTS)
        assert.deepEqual(
          ours.preTokenize(text),
          rust.preTokenizeString(text).map((p) => p[0]),
          `${name} ${JSON.stringify(text)}`,
        );
    }
  });

  it('a whole book chapter encodes the same, and decodes back to the text', async () => {
    const text = readFileSync(TEXT_FIXTURE, 'utf8');
    for (const name of ['gpt2', 'llama3', 'qwen2']) {
      const json = byteLevelVariants()[name]!;
      const ours = Tokenizer.fromJSON(json, name);
      const e = ours.encode(text, { addSpecialTokens: false });
      assert.deepEqual(e.ids, (await judge(json).encode(text, null, { addSpecialTokens: false })).getIds(), name);
      assert.equal(ours.decode(e.ids), text);
    }
  });

  it('the streaming decoder yields the same text as decoding at once, never a broken character', () => {
    const ours = Tokenizer.fromJSON(byteLevelVariants()['gpt2']!);
    for (const text of TEXTS) {
      const { ids } = ours.encode(text);
      const stream = ours.decodeStream();
      const parts = ids.map((id) => stream.step(id));
      assert.equal(parts.join(''), ours.decode(ids), JSON.stringify(text));
      for (const p of parts)
        assert.ok(
          !p.includes('\ufffd') || text.includes('\ufffd'),
          `${JSON.stringify(text)}: part ${JSON.stringify(p)}`,
        );
    }
  });
});
