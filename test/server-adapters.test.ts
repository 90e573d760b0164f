/**
 * `knobs serve MODEL --adapter NAME=DIR …`: each LoRA adapter is its own model id (listed with its
 * base as `parent`), requests for the base and two adapters interleaved at once give exactly the
 * tokens `knobs generate MODEL [--adapter DIR]` gives for each, keys' model allow-lists and usage
 * work per id, and an adapter made for another base refuses to start unless allowed.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { SqliteKeyStore } from '../src/server/sqlite-keys.js';
import { makeServedModelDir, serveTiny } from './harness/api-server.js';
import { cli, cliInProcess, startCli } from './harness/cli.js';
import { makeRandomAdapter } from './harness/lora-adapter.js';

let tmp: string;
let base: string;
const adapterDir = (name: string): string => join(tmp, `adapter-${name}`);
const ADAPTERS = [
  { name: 'poems', targets: ['q_proj', 'v_proj'], seed: 1 },
  { name: 'legal', targets: ['o_proj', 'down_proj'], seed: 2 },
];

before(async () => {
  ({ tmp, dir: base } = await makeServedModelDir());
  for (const a of ADAPTERS) await makeRandomAdapter(base, adapterDir(a.name), a.targets, a.seed);
  await makeRandomAdapter(base, adapterDir('other-base'), ['q_proj'], 3, `sha256:${'0'.repeat(64)}`);
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const PROMPT = 'And God said';
const MAX = 12;

/** What `knobs generate BASE [--adapter DIR] --temperature 0` produces. */
async function generated(adapter: string | null): Promise<{ text: string; ids: number[] }> {
  const r = await cliInProcess([
    'generate',
    base,
    ...(adapter === null ? [] : ['--adapter', adapterDir(adapter)]),
    '--prompt',
    PROMPT,
    '--temperature',
    '0',
    '--max-tokens',
    String(MAX),
    '--ignore-eos',
    '--json',
  ]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as { text: string; ids: number[] };
}

const specs = () => ADAPTERS.map((a) => ({ name: a.name, dir: adapterDir(a.name) }));

describe('serve: LoRA adapters as model ids', () => {
  it('lists each adapter with its base as parent; interleaved requests match knobs generate --adapter', async () => {
    const expected = new Map<string, { text: string; ids: number[] }>();
    expected.set('tiny', await generated(null));
    for (const a of ADAPTERS) expected.set(a.name, await generated(a.name));
    const texts = new Set([...expected.values()].map((e) => e.text));
    assert.equal(texts.size, 3, `the base and both adapters generate differently: ${[...texts].join(' | ')}`);

    const served = await serveTiny(base, { maxConcurrency: 8 }, { adapters: specs() });
    try {
      const client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      const list = await client.models.list();
      assert.deepEqual(
        list.data.map((m) => [m.id, (m as unknown as { parent: string | null }).parent]),
        [
          ['tiny', null],
          ['poems', 'tiny'],
          ['legal', 'tiny'],
        ],
      );
      const poems = (await client.models.retrieve('poems')) as unknown as Record<string, unknown>;
      assert.equal(poems.root, 'tiny');
      assert.equal(poems.owned_by, 'knobs');
      assert.equal(poems.max_model_len, 4096);

      // Started together, streamed and not: the generator interleaves them token by token.
      const order = ['legal', 'tiny', 'poems', 'poems', 'tiny', 'legal', 'poems', 'legal'];
      const answers = await Promise.all(
        order.map(async (model, i) => {
          const params = { model, prompt: PROMPT, max_tokens: MAX, temperature: 0, ignore_eos: true } as never;
          if (i % 2 === 0) {
            const r = await client.completions.create(params);
            return { text: r.choices[0]!.text, tokens: r.usage!.completion_tokens };
          }
          const stream = await client.completions.create({
            ...(params as object),
            stream: true,
            stream_options: { include_usage: true },
          } as never);
          let text = '';
          let tokens = -1;
          for await (const chunk of stream as unknown as AsyncIterable<OpenAI.Completion>) {
            text += chunk.choices[0]?.text ?? '';
            if (chunk.usage) tokens = chunk.usage.completion_tokens;
          }
          return { text, tokens };
        }),
      );
      order.forEach((model, i) => {
        const want = expected.get(model)!;
        assert.equal(answers[i]!.text, want.text, `request ${i} (${model})`);
        assert.equal(answers[i]!.tokens, want.ids.length, `request ${i} (${model}) tokens`);
      });
    } finally {
      await served.close();
    }
  });

  it("keys' --models allow-lists apply per model id, and usage is recorded per id", async () => {
    const store = SqliteKeyStore.open(join(tmp, 'keys.db'), { create: true });
    const served = await serveTiny(base, { keys: store }, { adapters: specs() });
    try {
      const none = { rpm: null, tokensPerDay: null, admin: false };
      const { key: poemsOnly } = await store.create({ ...none, name: 'poet', models: ['poems'] });
      const { key: all } = await store.create({ ...none, name: 'all', models: null });
      const client = (key: string) => new OpenAI({ baseURL: `${served.url}/v1`, apiKey: key, maxRetries: 0 });
      const ask = (key: string, model: string) =>
        client(key).completions.create({ model, prompt: 'ab', max_tokens: 3, temperature: 0 });

      assert.deepEqual(
        (await client(poemsOnly).models.list()).data.map((m) => m.id),
        ['poems'],
      );
      await ask(poemsOnly, 'poems');
      for (const model of ['tiny', 'legal'])
        await assert.rejects(
          ask(poemsOnly, model),
          (err: InstanceType<typeof OpenAI.APIError>) => err.status === 404,
          model,
        );
      await assert.rejects(
        client(poemsOnly).models.retrieve('tiny'),
        (err: InstanceType<typeof OpenAI.APIError>) => err.status === 404,
      );
      await ask(all, 'legal');
      await ask(all, 'legal');
      await ask(all, 'tiny');

      const usage = (await store.usage()).map((u) => [u.key, u.model, u.requests]).sort();
      assert.deepEqual(usage, [
        ['all', 'legal', 2],
        ['all', 'tiny', 1],
        ['poet', 'poems', 1],
      ]);
    } finally {
      await served.close();
      await store.close();
    }
  });

  it('knobs serve: an adapter for another base refuses to start unless --allow-base-mismatch; bad specs are usage errors', async () => {
    const args = ['serve', base, '--name', 'tiny', '--insecure-no-auth', '--port', '0'];
    const mismatch = ['--adapter', `x=${adapterDir('other-base')}`];
    const refused = await cli([...args, ...mismatch]);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /E_FORMAT.*trained on another base.*--allow-base-mismatch/);
    assert.doesNotMatch(refused.stderr, /\n\s+at /);

    for (const bad of [
      ['--adapter', adapterDir('poems')],
      ['--adapter', `tiny=${adapterDir('poems')}`],
    ]) {
      const r = await cli([...args, ...bad]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /E_USAGE.*(NAME=DIR|given twice)/);
    }

    const { child, done } = startCli([...args, ...mismatch, '--allow-base-mismatch']);
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout!.once('data', (d: Buffer) => resolve((JSON.parse(d.toString()) as { url: string }).url));
      void done.then((run) => reject(new Error(`serve exited ${run.code}: ${run.stderr}`)));
    });
    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string; parent: string }[] };
    assert.deepEqual(
      models.data.map((m) => [m.id, m.parent]),
      [
        ['tiny', null],
        ['x', 'tiny'],
      ],
    );
    child.kill('SIGTERM');
    assert.equal((await done).code, 0);
  });
});
