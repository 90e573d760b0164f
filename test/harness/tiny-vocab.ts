/**
 * A byte-level tokenizer.json for the 64-token models of test/fixtures/hf/ (made without one):
 * token i is the byte-level character of the i-th of 64 common bytes, with no merges. llama.cpp
 * needs some tokenizer to load a model; this one lets it run the PyTorch fixtures unchanged.
 */
import { cp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BYTE_TO_CHAR } from '../../src/tokenizer/byte-level.js';

export const TINY_VOCAB_TEXT = '\n abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

export function tinyTokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  [...TINY_VOCAB_TEXT].forEach((c, i) => {
    vocab[BYTE_TO_CHAR[c.charCodeAt(0)]!] = i;
  });
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, fuse_unk: false, byte_fallback: false, vocab, merges: [] },
  };
}

/** A copy of fixture directory `from` at `to`, with the tiny tokenizer.json added. */
export async function fixtureWithTokenizer(from: string, to: string): Promise<string> {
  await cp(from, to, { recursive: true });
  await writeFile(join(to, 'tokenizer.json'), JSON.stringify(tinyTokenizerJson()));
  return to;
}
