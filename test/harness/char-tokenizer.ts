/**
 * A character-level tokenizer.json whose ids are those of the Llama fixture of test/fixtures/hf
 * (64 ids), so the fixture runs as a text model: `knobs generate`, `eval` and `serve` tests.
 */
import { cp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot } from './fixtures.js';

/** id 0 <unk>, 1 <s>, 2 </s>, then these characters from id 3: exactly the fixture's 64 ids. */
export const CHARS = [...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,012345'];

export const LLAMA_FIXTURE = join(repoRoot(), 'test', 'fixtures', 'hf', 'llama-gqa-bf16-llama3');

export function tokenizerJson(chars: readonly string[]): Record<string, unknown> {
  const special = (id: number, content: string) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  chars.forEach((c, i) => {
    vocab[c] = i + 3;
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
    normalizer: null,
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '<s>', type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: { type: 'Fuse' },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges: [],
    },
  };
}

/**
 * A model fixture (the Llama one unless `fixture` names another of test/fixtures/hf with a 64-token
 * vocabulary) copied to `dir` with the character tokenizer (and, when given, a chat template).
 */
export async function tinyTextModel(dir: string, chatTemplate?: string, fixture = LLAMA_FIXTURE): Promise<void> {
  await cp(fixture, dir, { recursive: true });
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson(CHARS)));
  if (chatTemplate !== undefined)
    await writeFile(
      join(dir, 'tokenizer_config.json'),
      JSON.stringify({ bos_token: '<s>', eos_token: '</s>', chat_template: chatTemplate }),
    );
}
