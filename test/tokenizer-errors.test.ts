/**
 * Bad tokenizer.json files: each a typed error (E_FORMAT) whose rule and message name the field or
 * component — never a crash or a silently different tokenizer.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { onigToRegExp } from '../src/tokenizer/regex.js';
import { Tokenizer } from '../src/tokenizer/tokenizer.js';
import { byteLevelVariants } from './harness/tokenizers.js';

function rejects(json: Record<string, unknown>, rule: string, message: RegExp): void {
  assert.throws(
    () => Tokenizer.fromJSON(json, 'dir/tokenizer.json'),
    (err: Error & { code?: string; details?: { rule?: string } }) => {
      assert.equal(err.code, 'E_FORMAT', err.message);
      assert.equal(err.details?.rule, rule, err.message);
      assert.match(err.message, message);
      assert.match(err.message, /^dir\/tokenizer\.json: /);
      return true;
    },
  );
}

const base = () => structuredClone(byteLevelVariants()['gpt2']!);
const model = () => base().model as Record<string, unknown>;

describe('tokenizer.json errors', () => {
  it('unsupported components are named', () => {
    rejects(
      { ...base(), model: { type: 'WordPiece', vocab: {} } },
      'tokenizer_unsupported',
      /model WordPiece is not supported/,
    );
    rejects(
      { ...base(), normalizer: { type: 'BertNormalizer' } },
      'tokenizer_unsupported',
      /normalizer BertNormalizer is not supported/,
    );
    rejects(
      { ...base(), pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Whitespace' }] } },
      'tokenizer_unsupported',
      /pre_tokenizer\.pretokenizers\[0\] Whitespace is not supported/,
    );
    rejects(
      { ...base(), post_processor: { type: 'Magic' } },
      'tokenizer_unsupported',
      /post_processor Magic is not supported/,
    );
    rejects(
      { ...base(), decoder: { type: 'WordPiece' } },
      'tokenizer_unsupported',
      /decoder WordPiece is not supported/,
    );
    rejects({ ...base(), model: { ...model(), dropout: 0.1 } }, 'tokenizer_unsupported', /model\.dropout/);
    rejects({ ...base(), truncation: { max_length: 8 } }, 'tokenizer_unsupported', /truncation is set/);
    rejects({ ...base(), version: '2.0' }, 'tokenizer_unsupported', /version "2\.0"/);
    rejects(
      { ...base(), pre_tokenizer: { type: 'Split', pattern: { Regex: '\\s++' }, behavior: 'Isolated' } },
      'tokenizer_unsupported',
      /pre_tokenizer\.pattern pattern "\\\\s\+\+"/,
    );
    rejects(
      { ...base(), pre_tokenizer: { type: 'Split', pattern: { Regex: 'a' }, behavior: 'Sideways' } },
      'tokenizer_unsupported',
      /behavior "Sideways"/,
    );
    rejects(
      { ...base(), pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'sometimes' } },
      'tokenizer_unsupported',
      /prepend_scheme "sometimes"/,
    );
  });

  it('invalid fields are named with what was expected', () => {
    rejects(
      { ...base(), model: { ...model(), merges: ['a b c'] } },
      'tokenizer_invalid',
      /model\.merges\[0\] must be "a b" or \["a", "b"\]/,
    );
    rejects(
      { ...base(), model: { ...model(), merges: [['Ġ', 'zzz']] } },
      'tokenizer_invalid',
      /model\.merges\[0\] .*"zzz", which is not in model\.vocab/,
    );
    rejects(
      { ...base(), model: { ...model(), vocab: { a: -1 } } },
      'tokenizer_invalid',
      /model\.vocab\["a"\] must be a non-negative integer/,
    );
    rejects({ ...base(), model: 'BPE' }, 'tokenizer_invalid', /model must be an object/);
    rejects(
      { ...base(), added_tokens: [{ content: 5 }] },
      'tokenizer_invalid',
      /added_tokens\[0\]\.content must be a string/,
    );
    rejects(
      { ...base(), added_tokens: [{ content: 'x', lstrip: 'yes' }] },
      'tokenizer_invalid',
      /added_tokens\[0\]\.lstrip must be true or false/,
    );
    rejects(
      {
        ...base(),
        post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>' } }], special_tokens: {} },
      },
      'tokenizer_invalid',
      /special_tokens has no entry for "<s>"/,
    );
    assert.throws(
      () => Tokenizer.fromJSON('{"model": ', 'dir/tokenizer.json'),
      /dir\/tokenizer\.json: \(file\) is not JSON/,
    );
  });

  it('Oniguruma constructs JavaScript lacks are refused rather than changed in meaning', () => {
    for (const p of ['(?>ab)', 'a*+', '[a[b]]', '[a&&b]', '[\\W]', '(?m)a', '\\Gx']) {
      assert.throws(
        () => onigToRegExp(p, 'f', 'Split'),
        (err: Error & { code?: string }) => err.code === 'E_FORMAT',
        p,
      );
    }
    // and those it has are rewritten to mean what Oniguruma means
    assert.equal(onigToRegExp('\\s', 'f', 'x').test('\u0085'), true);
    assert.equal(onigToRegExp('\\s', 'f', 'x').test('\ufeff'), false);
    assert.equal(onigToRegExp("(?i:'s)", 'f', 'x').test("'\u017f"), true);
    assert.equal(onigToRegExp('\\x{263A}\\-', 'f', 'x').test('\u263a-'), true);
    assert.equal(onigToRegExp('\\p{Han}+', 'f', 'x').test('中文'), true);
  });
});
