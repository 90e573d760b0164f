/**
 * Several prompts in one POST /v1/completions, in OpenAI's forms (a list of strings, token ids, a
 * list of token-id lists), through the official `openai` client: choice index = prompt × n + j,
 * each prompt's choices are those it gets alone, usage is summed, streaming tags chunks by index,
 * and the limits (prompts × n ≤ --max-choices, token quota reserved for every prompt) hold.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { SqliteKeyStore } from '../src/server/sqlite-keys.js';
import { type Served, type ServedWithClient, serveTiny, serveTinyWithClient } from './harness/api-server.js';

let setup: ServedWithClient;
let served: Served;
let client: OpenAI;

before(async () => {
  setup = await serveTinyWithClient(64, { maxN: 2, maxChoices: 6, maxTokens: 40 });
  ({ served, client } = setup);
});
after(() => setup.close());

/** Sampled (temperature 1) with a seed: choices differ, yet repeat exactly. */
const ask = { model: 'tiny', max_tokens: 5, seed: 11, ignore_eos: true } as const;
type Prompt = string | string[] | number[] | number[][];
const complete = (prompt: Prompt, n = 1) =>
  client.completions.create({ ...ask, prompt, n } as never) as Promise<OpenAI.Completion>;

async function expect400(body: Record<string, unknown>, code: string, param: string): Promise<string> {
  const r = await fetch(`${served.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...ask, ...body }),
  });
  const { error } = (await r.json()) as { error: { code: string; param: string; message: string } };
  assert.equal(r.status, 400, error.message);
  assert.deepEqual([error.code, error.param], [code, param], error.message);
  return error.message;
}

describe('serve: several prompts per completions request', () => {
  it('a list of strings: index = prompt × n + j, each prompt answered as alone, usage summed', async () => {
    const prompts = ['ab', 'cd', 'ef'];
    const together = await complete(prompts, 2);
    assert.deepEqual(
      together.choices.map((c) => c.index),
      [0, 1, 2, 3, 4, 5],
    );
    let promptTokens = 0;
    let completionTokens = 0;
    for (const [i, p] of prompts.entries()) {
      const alone = await complete(p, 2);
      promptTokens += alone.usage!.prompt_tokens;
      completionTokens += alone.usage!.completion_tokens;
      for (let j = 0; j < 2; j++)
        assert.equal(together.choices[i * 2 + j]!.text, alone.choices[j]!.text, `prompt ${i} choice ${j}`);
    }
    const texts = new Set(together.choices.map((c) => c.text));
    assert.ok(texts.size >= 4, `sampled choices differ: ${[...texts].join(' | ')}`);
    assert.deepEqual(together.usage, {
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens,
    });
  });

  it('token ids and lists of token ids: taken as they are (no start token added)', async () => {
    const lists = await complete([[4, 5], [6, 7, 8], [9]]);
    assert.equal(lists.choices.length, 3);
    assert.equal(lists.usage!.prompt_tokens, 6);
    const one = await complete([6, 7, 8]);
    assert.equal(one.usage!.prompt_tokens, 3);
    assert.equal(one.choices[0]!.text, lists.choices[1]!.text);
  });

  it('streaming several prompts: chunks tagged by index add up to the unstreamed choices', async () => {
    const prompts = ['ab', 'cd'];
    const whole = await complete(prompts, 2);
    const stream = (await client.completions.create({
      ...ask,
      prompt: prompts,
      n: 2,
      stream: true,
      stream_options: { include_usage: true },
    } as never)) as unknown as AsyncIterable<OpenAI.Completion>;
    const texts = ['', '', '', ''];
    const finished: (string | null)[] = [null, null, null, null];
    let usage = null;
    for await (const chunk of stream) {
      for (const c of chunk.choices) {
        texts[c.index] += c.text;
        if (c.finish_reason) finished[c.index] = c.finish_reason;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    assert.deepEqual(
      texts,
      whole.choices.map((c) => c.text),
    );
    assert.deepEqual(finished, ['length', 'length', 'length', 'length']);
    assert.deepEqual(usage, whole.usage);
  });

  it('limits and bad input: 400 with the field named, and the server keeps serving', async () => {
    assert.match(
      await expect400({ prompt: ['a', 'b', 'c', 'd'], n: 2 }, 'invalid_value', 'prompt'),
      /8 choices.*at most 6/,
    );
    await expect400({ prompt: ['a'], n: 3 }, 'invalid_value', 'n');
    assert.match(await expect400({ prompt: [] }, 'invalid_value', 'prompt'), /empty list/);
    await expect400({ prompt: ['a', 1] }, 'invalid_value', 'prompt');
    await expect400({ prompt: [[1], []] }, 'invalid_value', 'prompt');
    assert.match(await expect400({ prompt: [[1], [2, 64]] }, 'invalid_value', 'prompt.1'), /vocabulary size 64/);
    await expect400({ prompt: ['ab', 'x'.repeat(70)] }, 'context_length_exceeded', 'prompt.1');
    assert.equal((await complete('ab')).choices.length, 1);
  });

  it("the token quota reserves every prompt: a request over the key's day is refused whole", async () => {
    const store = SqliteKeyStore.open(join(setup.tmp, 'keys.db'), { create: true });
    const limited = await serveTiny(setup.dir, { keys: store, maxChoices: 4 });
    try {
      // 'ab' is 3 tokens with the start token; max_tokens 5: 8 tokens reserved per prompt.
      const { key } = await store.create({ name: 'k', rpm: null, tokensPerDay: 20, models: null, admin: false });
      const c = new OpenAI({ baseURL: `${limited.url}/v1`, apiKey: key, maxRetries: 0 });
      const three = c.completions.create({ ...ask, prompt: ['ab', 'ab', 'ab'] } as never);
      await assert.rejects(three, (err: InstanceType<typeof OpenAI.APIError>) => {
        assert.equal(err.status, 429);
        assert.equal(err.code, 'tokens_per_day_exceeded');
        return true;
      });
      const two = (await c.completions.create({ ...ask, prompt: ['ab', 'ab'] } as never)) as OpenAI.Completion;
      assert.equal(two.usage!.total_tokens, 16);
      const usage = await store.usage();
      assert.deepEqual(
        usage.map((u) => [u.requests, u.promptTokens, u.completionTokens]),
        [[1, 6, 10]],
      );
    } finally {
      await limited.close();
      await store.close();
    }
  });
});
