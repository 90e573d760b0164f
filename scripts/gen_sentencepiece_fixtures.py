#!/usr/bin/python3
"""SentencePiece fixtures for knobs' tokenizer tests; run by hand, outputs committed.

    /usr/bin/python3 scripts/gen_sentencepiece_fixtures.py

Needs Debian's python3-sentencepiece (0.1.97 here); nothing else. It

  1. trains a small SentencePiece BPE model the way Llama-2 / Mistral models are trained
     (byte_fallback, split_digits, identity normalization, dummy prefix, whitespace kept) on
     test/fixtures/text/genesis-1-4.txt plus the multilingual lines below;
  2. encodes CASES with sentencepiece itself (ids and pieces, no BOS) — the expected answers;
  3. converts the model to tokenizer.json the way Hugging Face transformers' LlamaConverter does:
       model      BPE(vocab = piece -> id, merges from SentencePieceExtractor: every split of a
                  piece into two pieces in the vocab, ordered by the piece's score, best first),
                  unk "<unk>", fuse_unk, byte_fallback
       added      <unk>, <s>, </s> (special, normalized false)
       post       TemplateProcessing "<s> $A"
       decoder    Sequence[Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)]
     in two flavours: "legacy" (normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], no
     pre-tokenizer: Llama-2, TinyLlama, Mistral v0.1) and "metaspace" (no normalizer,
     pre_tokenizer Metaspace(prepend_scheme "first", split false): legacy=False conversions).

Writes test/fixtures/tokenizers/:
  sp-bpe.model                       the trained SentencePiece model
  sp-bpe.legacy.tokenizer.json       the conversions
  sp-bpe.metaspace.tokenizer.json
  sp-bpe.expected.json               {provenance, cases: [{text, ids, pieces}]}
"""
import datetime
import hashlib
import json
import os
import sys
import tempfile

import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'test', 'fixtures', 'tokenizers')
TEXT = os.path.join(ROOT, 'test', 'fixtures', 'text', 'genesis-1-4.txt')

EXTRA_TRAINING = [
    'Café, naïve, résumé, Zürich. Ελληνικά και Русский текст.',
    '中文分词测试，日本語のテキスト。한국어 텍스트.',
    'function add(a, b) { return a + b; } // 12345 67890',
]

CASES = [
    '',
    ' ',
    'a',
    'Hello world',
    'In the beginning God created the heaven and the earth.',
    '   leading and trailing spaces   ',
    'multiple     spaces\tand\ttabs\nand\nnewlines\n\n',
    "It's a contraction; we'll see, they've gone.",
    'numbers 1 12 123 1234 3.14159 1,000,000',
    'Café, naïve, résumé, Zürich, Ærø',
    'Ελληνικά, Русский текст, עברית, العربية',
    '中文分词测试，日本語のテキスト、한국어 텍스트',
    'Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️',
    'def f(x):\n    return [i**2 for i in range(x)]\n',
    'And God said, Let there be light: and there was light.',
    'unseen letters: ǅ ŋ Ω ∑ ∫ ≠ → ★',
    '▁ already has a meta symbol ▁▁',
]


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(TEXT, encoding='utf-8') as f:
        training = f.read().splitlines() + EXTRA_TRAINING
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, 'corpus.txt')
        with open(corpus, 'w', encoding='utf-8') as f:
            f.write('\n'.join(training) + '\n')
        prefix = os.path.join(tmp, 'sp-bpe')
        spm.SentencePieceTrainer.train(
            input=corpus, model_prefix=prefix, model_type='bpe', vocab_size=600,
            character_coverage=0.995, byte_fallback=True, split_digits=True,
            normalization_rule_name='identity', add_dummy_prefix=True, remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            num_threads=1, seed_sentencepiece_size=100000, minloglevel=2,
        )
        with open(prefix + '.model', 'rb') as f:
            model_bytes = f.read()
    with open(os.path.join(OUT, 'sp-bpe.model'), 'wb') as f:
        f.write(model_bytes)
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)

    cases = [{'text': t, 'ids': sp.encode(t, out_type=int), 'pieces': sp.encode(t, out_type=str)} for t in CASES]

    base = convert(sp)
    legacy = dict(base, normalizer={'type': 'Sequence', 'normalizers': [
        {'type': 'Prepend', 'prepend': '▁'},
        {'type': 'Replace', 'pattern': {'String': ' '}, 'content': '▁'},
    ]}, pre_tokenizer=None)
    metaspace = dict(base, normalizer=None, pre_tokenizer={'type': 'Metaspace', 'replacement': '▁', 'prepend_scheme': 'first', 'split': False})
    for name, tok in [('legacy', legacy), ('metaspace', metaspace)]:
        with open(os.path.join(OUT, f'sp-bpe.{name}.tokenizer.json'), 'w', encoding='utf-8') as f:
            json.dump(tok, f, ensure_ascii=False, indent=1)
            f.write('\n')

    expected = {
        'provenance': {
            'script': 'scripts/gen_sentencepiece_fixtures.py',
            'sentencepiece': spm.__version__,
            'python': sys.version.split()[0],
            'date': datetime.date.today().isoformat(),
            'model_sha256': hashlib.sha256(model_bytes).hexdigest(),
            'vocab_size': sp.get_piece_size(),
        },
        'cases': cases,
    }
    with open(os.path.join(OUT, 'sp-bpe.expected.json'), 'w', encoding='utf-8') as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
        f.write('\n')
    print(f'wrote {OUT}: {len(cases)} cases, vocab {sp.get_piece_size()}')


def convert(sp):
    """LlamaConverter's tokenizer.json, minus normalizer and pre_tokenizer."""
    size = sp.get_piece_size()
    vocab = {sp.id_to_piece(i): i for i in range(size)}
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in range(size)}
    # SentencePieceExtractor.extract with vocab_scores: candidate merges of each piece, ordered
    # within a piece by (left id, right id), then all sorted by the piece's score, best first.
    merges = []
    for piece, score in scores.items():
        local = [(piece[:i], piece[i:], score) for i in range(1, len(piece)) if piece[:i] in vocab and piece[i:] in vocab]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2], reverse=True)
    specials = ['<unk>', '<s>', '</s>']
    return {
        'version': '1.0',
        'truncation': None,
        'padding': None,
        'added_tokens': [{'id': vocab[t], 'content': t, 'single_word': False, 'lstrip': False, 'rstrip': False, 'normalized': False, 'special': True} for t in specials],
        'normalizer': None,
        'pre_tokenizer': None,
        'post_processor': {
            'type': 'TemplateProcessing',
            'single': [{'SpecialToken': {'id': '<s>', 'type_id': 0}}, {'Sequence': {'id': 'A', 'type_id': 0}}],
            'pair': [{'SpecialToken': {'id': '<s>', 'type_id': 0}}, {'Sequence': {'id': 'A', 'type_id': 0}},
                     {'SpecialToken': {'id': '<s>', 'type_id': 1}}, {'Sequence': {'id': 'B', 'type_id': 1}}],
            'special_tokens': {'<s>': {'id': '<s>', 'ids': [vocab['<s>']], 'tokens': ['<s>']}},
        },
        'decoder': {'type': 'Sequence', 'decoders': [
            {'type': 'Replace', 'pattern': {'String': '▁'}, 'content': ' '},
            {'type': 'ByteFallback'},
            {'type': 'Fuse'},
            {'type': 'Strip', 'content': ' ', 'start': 1, 'stop': 0},
        ]},
        'model': {
            'type': 'BPE', 'dropout': None, 'unk_token': '<unk>', 'continuing_subword_prefix': None,
            'end_of_word_suffix': None, 'fuse_unk': True, 'byte_fallback': True, 'ignore_merges': False,
            'vocab': vocab, 'merges': [[a, b] for a, b, _ in merges],
        },
    }


if __name__ == '__main__':
    main()
