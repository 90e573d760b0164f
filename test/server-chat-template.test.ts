/**
 * The chat template is read through the files the model was opened from: a sealed model's from its
 * decrypted bytes (no plaintext on disk), a signed bundle's from its verified files, a GGUF file's
 * from its metadata; chat_template.jinja wins over tokenizer_config.json's chat_template, as in
 * transformers. Asserted on the rendered prompt and on the prompt tokens the server counts.
 */
import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { type OpenedLanguageModel, openLanguageModel } from '../src/load/language-model.js';
import { parseMasterKey } from '../src/seal/keys.js';
import { chatTemplateOf } from '../src/server/chat-template.js';
import { makeServedModelDir, serveTiny } from './harness/api-server.js';
import { cliInProcess } from './harness/cli.js';
import { LLAMA_FIXTURE } from './harness/char-tokenizer.js';
import { fixtureWithTokenizer } from './harness/tiny-vocab.js';

/** Unlike the harness's template and the default one: the test can tell which was rendered. */
const CONFIG_TEMPLATE =
  '{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}';
const JINJA_TEMPLATE =
  '{% for m in messages %}[{{ m.role | upper }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[ASSISTANT]{% endif %}';
const messages = [
  { role: 'system', content: 'be brief' },
  { role: 'user', content: 'hello there' },
];
/** CONFIG_TEMPLATE rendered (the leading bos dropped: the tokenizer adds it). */
const CONFIG_RENDERED = '<system>be brief</s><user>hello there</s><assistant>';
const JINJA_RENDERED = '[SYSTEM] be brief\n[USER] hello there\n[ASSISTANT]';

let tmp: string;
let plain: string;
let withJinja: string;
let masterKeyFile: string;

before(async () => {
  ({ tmp, dir: plain } = await makeServedModelDir(256));
  const configPath = join(plain, 'tokenizer_config.json');
  const config = JSON.parse(await readFile(configPath, 'utf8')) as Record<string, unknown>;
  await writeFile(configPath, JSON.stringify({ ...config, chat_template: CONFIG_TEMPLATE }));
  ({ dir: withJinja } = await makeServedModelDir(256));
  await writeFile(
    join(withJinja, 'tokenizer_config.json'),
    JSON.stringify({ ...config, chat_template: CONFIG_TEMPLATE }),
  );
  await writeFile(join(withJinja, 'chat_template.jinja'), JINJA_TEMPLATE);
  masterKeyFile = join(tmp, 'master.key');
  assert.equal((await cliInProcess(['seal', '--gen-key', '--out', masterKeyFile])).code, 0);
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
  await rm(join(withJinja, '..'), { recursive: true, force: true });
});

const render = (opened: OpenedLanguageModel): string => chatTemplateOf(opened).render(messages);
const masterKey = async () => parseMasterKey(await readFile(masterKeyFile, 'utf8'), masterKeyFile);

async function seal(dir: string, name: string): Promise<string> {
  const out = join(tmp, name);
  const r = await cliInProcess(['seal', dir, '--out', out, '--master-key-file', masterKeyFile]);
  assert.equal(r.code, 0, r.stderr);
  return out;
}

describe('chat templates through the opened model', () => {
  it('a plain directory: tokenizer_config.json, and chat_template.jinja winning over it', async () => {
    assert.equal(render(await openLanguageModel(plain)), CONFIG_RENDERED);
    assert.equal(render(await openLanguageModel(withJinja)), JINJA_RENDERED);
  });

  it('a sealed model renders its own template, served: the prompt tokens are those of the rendered text', async () => {
    const sealed = await seal(plain, 'sealed');
    const opened = await openLanguageModel(sealed, { masterKey: await masterKey() });
    assert.equal(render(opened), CONFIG_RENDERED);
    assert.equal(
      render(await openLanguageModel(await seal(withJinja, 'sealed-jinja'), { masterKey: await masterKey() })),
      JINJA_RENDERED,
    );

    const served = await serveTiny(sealed, {}, { masterKey: await masterKey() });
    try {
      const client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      const ask = { model: 'tiny', max_tokens: 6, temperature: 0, ignore_eos: true } as const;
      const chat = await client.chat.completions.create({ ...ask, messages } as never);
      const completion = await client.completions.create({ ...ask, prompt: CONFIG_RENDERED } as never);
      const expectedIds = opened.textOptions.codec!.encode(CONFIG_RENDERED);
      assert.equal(chat.usage!.prompt_tokens, expectedIds.length);
      assert.equal(chat.usage!.prompt_tokens, completion.usage!.prompt_tokens);
      assert.equal(chat.choices[0]!.message.content, completion.choices[0]!.text);
    } finally {
      await served.close();
    }
  });

  it('a signed bundle reads its template from its verified files', async () => {
    const key = join(tmp, 'signing.pem');
    assert.equal((await cliInProcess(['signing-key', 'create', '--out', key])).code, 0);
    const bundle = join(tmp, 'bundle');
    const r = await cliInProcess(['release', withJinja, '--out', bundle, '--signing-key', key]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(render(await openLanguageModel(bundle, { publicKey: `${key}.pub` })), JINJA_RENDERED);
  });

  it("a GGUF file's template comes from its metadata, with its bos and eos tokens", async () => {
    const dir = await fixtureWithTokenizer(LLAMA_FIXTURE, join(tmp, 'gguf-src'));
    await writeFile(
      join(dir, 'tokenizer_config.json'),
      JSON.stringify({ bos_token: 'a', eos_token: 'b', add_bos_token: false, chat_template: CONFIG_TEMPLATE }),
    );
    const gguf = join(tmp, 'chat.gguf');
    const r = await cliInProcess(['convert', dir, '--format', 'gguf', '--dtype', 'f32', '--out', gguf]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(render(await openLanguageModel(gguf)), 'a<system>be briefb<user>hello thereb<assistant>');
  });
});
