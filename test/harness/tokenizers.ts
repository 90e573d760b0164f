/**
 * What the tokenizer tests share: the judge (the real Hugging Face tokenizers, Rust, through the
 * N-API build @anush008/tokenizers — a dev dependency), a varied corpus, and tokenizer.json files
 * that exercise each component, built on a byte-level BPE trained on committed text.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { trainByteLevelBpe } from '../../src/tokenizer/train-bpe.js';

export interface JudgeEncoding {
  getIds(): number[];
  getTokens(): string[];
}
export interface JudgeTokenizer {
  encode(text: string, pair?: null, opts?: { addSpecialTokens?: boolean }): Promise<JudgeEncoding>;
  decode(ids: number[], skipSpecialTokens: boolean): Promise<string>;
  getVocabSize(withAdded?: boolean): number;
}

/** The Rust library, loaded from a tokenizer.json object. */
export function judge(json: unknown): JudgeTokenizer {
  const require = createRequire(import.meta.url);
  const hf = require('@anush008/tokenizers') as { Tokenizer: { fromString(s: string): JudgeTokenizer } };
  return hf.Tokenizer.fromString(JSON.stringify(json));
}

export const TEXT_FIXTURE = fileURLToPath(new URL('../../../test/fixtures/text/genesis-1-4.txt', import.meta.url));

/** Inputs that have tripped tokenizers up: Unicode, emoji ZWJ sequences, whitespace runs, digits, code, contractions. */
export const CORPUS: readonly string[] = [
  '',
  ' ',
  'a',
  'Hello world',
  'Hello, world! How are you?',
  'In the beginning God created the heaven and the earth.',
  "I'm sure it's fine, we'll see; they've done it, you'd know, she'd've",
  "DON'T SHOUT, IT'S RUDE. I'M sure we'LL manage. 'Tis 'S",
  "Long s: 'ſ and Kelvin: 'K",
  '   leading spaces',
  'trailing spaces   ',
  'tabs\tand\t\ttabs\nnew\nlines\r\n\r\nwindows\n\n\n',
  'multiple     spaces   between\u00a0nbsp\u2003em\u3000ideographic',
  'numbers 1 12 123 1234 12345 3.14159 1,000,000 0x1F 1e-9',
  'Arabic-Indic ٣٤٥ and fullwidth １２３ and superscript ²³',
  'function add(a, b) {\n  return a + b; // sum\n}\n',
  'def f(x):\n    if x >= 10:\n        return [i**2 for i in range(x)]\n',
  '<html><body class="x">&amp; &lt;tag&gt;</body></html>',
  'Café, naïve, résumé, coöperate, Zürich, Ærø',
  'e\u0301 (combining acute) vs é; Å vs A\u030a; ﬁ ligature; ① circled',
  'Ελληνικά, Русский текст, עברית, العربية, हिन्दी, ไทย',
  '中文分词测试，日本語のテキスト、한국어 텍스트',
  'Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷 ❤️ 1️⃣',
  'zero\u200bwidth\u200djoiner\ufeffbom',
  '\ufeffstarts with a byte order mark',
  'control\u0000chars\u0001\u007f and \u0085 nel',
  'mixed CASE Words And snake_case_names and camelCaseNames',
  '!!!??? ... --- ___ *** ### $$$ %%% ^^^ &&& ((( ))) [[[ ]]]',
  'https://example.com/path?query=1&x=%20#frag user@example.com',
  'The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX.',
  'a\n\nb\n \nc \n d',
  '                                                                  ',
];

let base: Record<string, unknown> | null = null;
/** A byte-level BPE (GPT-2 pre-tokenizer, 700 tokens) trained on Genesis 1–4 and the corpus. */
export function baseByteLevel(): Record<string, unknown> {
  base ??= trainByteLevelBpe(`${readFileSync(TEXT_FIXTURE, 'utf8')}\n${CORPUS.join('\n').repeat(3)}`, {
    vocabSize: 700,
    specialTokens: ['<|endoftext|>'],
  });
  return structuredClone(base);
}

export const LLAMA3_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
export const QWEN2_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

function added(
  content: string,
  flags: Partial<{
    special: boolean;
    lstrip: boolean;
    rstrip: boolean;
    single_word: boolean;
    normalized: boolean;
  }> = {},
) {
  const special = flags.special ?? true;
  return {
    id: 0,
    content,
    single_word: flags.single_word ?? false,
    lstrip: flags.lstrip ?? false,
    rstrip: flags.rstrip ?? false,
    normalized: flags.normalized ?? !special,
    special,
  };
}

function template(bos: [string, number] | null, eos: [string, number] | null) {
  const single: unknown[] = [];
  const special_tokens: Record<string, unknown> = {};
  for (const tok of [bos, eos]) {
    if (!tok) continue;
    special_tokens[tok[0]] = { id: tok[0], ids: [tok[1]], tokens: [tok[0]] };
  }
  if (bos) single.push({ SpecialToken: { id: bos[0], type_id: 0 } });
  single.push({ Sequence: { id: 'A', type_id: 0 } });
  if (eos) single.push({ SpecialToken: { id: eos[0], type_id: 0 } });
  return {
    type: 'TemplateProcessing',
    single,
    pair: [...single, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens,
  };
}

const byteLevelSplit = (pattern: string) => ({
  type: 'Sequence',
  pretokenizers: [
    { type: 'Split', pattern: { Regex: pattern }, behavior: 'Isolated', invert: false },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
  ],
});

/** tokenizer.json variants on the byte-level base, one per family of components. */
export function byteLevelVariants(): Record<string, Record<string, unknown>> {
  const b = baseByteLevel();
  const size = Object.keys((b.model as { vocab: object }).vocab).length;
  const v: Record<string, Record<string, unknown>> = {};
  v['gpt2'] = b;
  const legacy = baseByteLevel();
  (legacy.model as { merges: unknown }).merges = [
    '#version: 0.2',
    ...(legacy.model as { merges: [string, string][] }).merges.map(([x, y]) => `${x} ${y}`),
  ];
  legacy.pre_tokenizer = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true };
  v['gpt2-prefix-space-string-merges'] = legacy;
  // "Ġzqxw" is in the vocab but no merge builds it: only ignore_merges makes " zqxw" one token.
  const llamaModel = baseByteLevel().model as { vocab: Record<string, number> };
  llamaModel.vocab['Ġzqxw'] = size;
  v['llama3'] = {
    ...baseByteLevel(),
    pre_tokenizer: byteLevelSplit(LLAMA3_PATTERN),
    added_tokens: [
      '<|begin_of_text|>',
      '<|end_of_text|>',
      '<|eot_id|>',
      '<|start_header_id|>',
      '<|end_header_id|>',
    ].map((t) => added(t)),
    post_processor: {
      type: 'Sequence',
      processors: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
        template(['<|begin_of_text|>', size + 1], null),
      ],
    },
    model: { ...llamaModel, ignore_merges: true },
  };
  v['qwen2'] = {
    ...baseByteLevel(),
    normalizer: { type: 'NFC' },
    pre_tokenizer: byteLevelSplit(QWEN2_PATTERN),
    added_tokens: ['<|endoftext|>', '<|im_start|>', '<|im_end|>'].map((t) => added(t)),
  };
  v['added-flags'] = {
    ...baseByteLevel(),
    normalizer: { type: 'Sequence', normalizers: [{ type: 'NFKC' }, { type: 'Lowercase' }] },
    added_tokens: [
      added('<|endoftext|>'),
      added('<mask>', { lstrip: true }),
      added('[R]', { rstrip: true }),
      added('[LR]', { lstrip: true, rstrip: true }),
      added('word', { special: false, single_word: true }),
      added('<Norm>', { special: false, normalized: true }),
      added('<Raw>', { special: true, normalized: false }),
      added('the', { special: false }),
      added('<mask>x', { special: true }),
    ],
    post_processor: template(['<|endoftext|>', size], ['<|endoftext|>', size]),
  };
  v['split-behaviors'] = {
    ...baseByteLevel(),
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { String: ',' }, behavior: 'Removed', invert: false },
        { type: 'Split', pattern: { Regex: '[.!?]' }, behavior: 'MergedWithPrevious', invert: false },
        { type: 'Split', pattern: { Regex: '\\$|#' }, behavior: 'MergedWithNext', invert: false },
        { type: 'Split', pattern: { Regex: '\\p{L}+' }, behavior: 'Contiguous', invert: true },
        { type: 'Digits', individual_digits: true },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      ],
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
        { type: 'Replace', pattern: { String: 'e' }, content: 'E' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
  };
  return v;
}
