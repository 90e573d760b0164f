/**
 * SentencePiece-style BPE (Llama-2, TinyLlama, Mistral): a model trained by sentencepiece itself
 * and converted as transformers' LlamaConverter does (scripts/gen_sentencepiece_fixtures.py).
 * knobs must encode like sentencepiece, and like Hugging Face tokenizers (Rust) on every variant
 * of the Metaspace pre-tokenizer.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from '../src/tokenizer/tokenizer.js';
import { CORPUS, judge } from './harness/tokenizers.js';

const DIR = fileURLToPath(new URL('../../test/fixtures/tokenizers/', import.meta.url));
const read = (name: string) => JSON.parse(readFileSync(DIR + name, 'utf8')) as Record<string, unknown>;
const expected = read('sp-bpe.expected.json') as { cases: { text: string; ids: number[]; pieces: string[] }[] };
const legacy = read('sp-bpe.legacy.tokenizer.json');
const metaspace = read('sp-bpe.metaspace.tokenizer.json');

/** Metaspace with each prepend_scheme and split, the legacy normalizer form, and added-token flags. */
function variants(): Record<string, Record<string, unknown>> {
  const withPre = (pre: Record<string, unknown>) => ({
    ...structuredClone(metaspace),
    pre_tokenizer: { type: 'Metaspace', replacement: '▁', ...pre },
  });
  const decoder = { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true };
  return {
    legacy: structuredClone(legacy),
    'metaspace-first': structuredClone(metaspace),
    'metaspace-always-split': {
      ...withPre({ prepend_scheme: 'always', split: true }),
      decoder: { type: 'Sequence', decoders: [{ type: 'ByteFallback' }, decoder] },
    },
    'metaspace-never': withPre({ prepend_scheme: 'never', split: true }),
    'metaspace-add-prefix-space-false': {
      ...withPre({ add_prefix_space: false, prepend_scheme: 'never', split: false }),
      decoder: { ...decoder, prepend_scheme: 'never' },
    },
    'unk-fused-no-byte-fallback': {
      ...structuredClone(legacy),
      model: { ...(legacy.model as object), byte_fallback: false, fuse_unk: true },
    },
    'unk-unfused-no-byte-fallback': {
      ...structuredClone(legacy),
      model: { ...(legacy.model as object), byte_fallback: false, fuse_unk: false },
    },
    'legacy-added-flags': {
      ...structuredClone(legacy),
      added_tokens: [
        ...(legacy.added_tokens as unknown[]),
        { id: 600, content: '<pad>', single_word: false, lstrip: true, rstrip: true, normalized: false, special: true },
        {
          id: 601,
          content: '▁God',
          single_word: false,
          lstrip: false,
          rstrip: false,
          normalized: true,
          special: false,
        },
        {
          id: 602,
          content: 'light',
          single_word: true,
          lstrip: false,
          rstrip: false,
          normalized: true,
          special: false,
        },
      ],
    },
  };
}

const SPECIAL_TEXTS = [
  '<s>Hello</s>',
  'a <s> b </s> c',
  '  <s>  x',
  '<pad> light lights God said <pad>x',
  'God<s>God',
  '</s>',
];

describe('SentencePiece BPE (Llama-2 style)', () => {
  it('the legacy conversion encodes every case exactly as sentencepiece does', () => {
    const t = Tokenizer.fromJSON(legacy, 'sp-bpe.legacy.tokenizer.json');
    for (const c of expected.cases) {
      const e = t.encode(c.text, { addSpecialTokens: false });
      assert.deepEqual(e.ids, c.ids, JSON.stringify(c.text));
      assert.deepEqual(e.tokens, c.pieces, JSON.stringify(c.text));
      assert.deepEqual(t.encode(c.text).ids, [1, ...c.ids], 'the template adds <s>');
    }
  });

  it('the metaspace conversion agrees with sentencepiece except where the text starts with a space (as in Hugging Face)', () => {
    const t = Tokenizer.fromJSON(metaspace);
    for (const c of expected.cases) {
      if (/^[ ▁]/.test(c.text)) continue;
      assert.deepEqual(t.encode(c.text, { addSpecialTokens: false }).ids, c.ids, JSON.stringify(c.text));
    }
  });

  for (const [name, json] of Object.entries(variants())) {
    it(`${name}: same ids, tokens and decoded text as Hugging Face tokenizers`, async () => {
      const ours = Tokenizer.fromJSON(json, name);
      const rust = judge(json);
      for (const text of [...expected.cases.map((c) => c.text), ...CORPUS, ...SPECIAL_TEXTS]) {
        for (const addSpecialTokens of [true, false]) {
          const e = ours.encode(text, { addSpecialTokens });
          const j = await rust.encode(text, null, { addSpecialTokens });
          assert.deepEqual(e.tokens, j.getTokens(), `${name} ${JSON.stringify(text)} tokens`);
          assert.deepEqual(e.ids, j.getIds(), `${name} ${JSON.stringify(text)} ids`);
          for (const skip of [false, true])
            assert.equal(
              ours.decode(e.ids, { skipSpecialTokens: skip }),
              await rust.decode(e.ids, skip),
              `${name} decode ${JSON.stringify(text)}`,
            );
        }
      }
    });
  }

  it('the streaming decoder gives the text decode gives, byte-fallback characters whole', () => {
    for (const json of [legacy, metaspace]) {
      const t = Tokenizer.fromJSON(json);
      for (const c of expected.cases) {
        const ids = t.encode(c.text).ids;
        const stream = t.decodeStream({ skipSpecialTokens: true });
        const parts = ids.map((id) => stream.step(id));
        assert.equal(parts.join(''), t.decode(ids, { skipSpecialTokens: true }), JSON.stringify(c.text));
        for (const p of parts) assert.ok(!p.includes('\ufffd'), `${JSON.stringify(c.text)}: ${JSON.stringify(p)}`);
      }
    }
  });

  it('byte fallback covers characters outside the vocabulary, and decoding restores them', () => {
    const t = Tokenizer.fromJSON(legacy);
    const text = 'unseen: ǅ ★ 👨‍👩‍👧';
    const { tokens, ids } = t.encode(text, { addSpecialTokens: false });
    assert.ok(
      tokens.some((tok) => /^<0x[0-9A-F]{2}>$/.test(tok)),
      tokens.join(' '),
    );
    assert.equal(t.decode(ids), text);
  });
});
