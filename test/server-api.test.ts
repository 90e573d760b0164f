/**
 * `knobs serve`'s OpenAI-compatible API on loopback, without keys: the official `openai` client
 * (streaming and not), request validation with its stable codes, and bad input that must not stop
 * the server from serving the next request.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import {
  type Served,
  type ServedWithClient,
  makeServedModelDir,
  serveTiny,
  serveTinyWithClient,
} from './harness/api-server.js';

let setup: ServedWithClient;
let served: Served;
let client: OpenAI;

before(async () => {
  setup = await serveTinyWithClient(64, { maxN: 2, maxTokens: 40, maxBody: 4096 });
  ({ served, client } = setup);
});
after(() => setup.close());

const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(served.url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body),
  });

async function expectError(
  r: Response,
  status: number,
  code: string,
): Promise<{ message: string; param: string | null }> {
  const body = (await r.json()) as { error: { code: string; type: string; message: string; param: string | null } };
  assert.equal(r.status, status, JSON.stringify(body));
  assert.equal(body.error.code, code, body.error.message);
  assert.equal(typeof body.error.type, 'string');
  return body.error;
}

const messages = [{ role: 'user' as const, content: 'hello there' }];

describe('serve: the openai client, unchanged', () => {
  it('lists the model', async () => {
    const list = await client.models.list();
    assert.deepEqual(
      list.data.map((m) => m.id),
      ['tiny'],
    );
    assert.equal((await client.models.retrieve('tiny')).id, 'tiny');
  });

  it('chat: greedy text, streamed deltas concatenating to the same text, and streamed usage', async () => {
    const whole = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 12, temperature: 0 });
    const text = whole.choices[0]!.message.content!;
    assert.ok(whole.usage!.completion_tokens >= 1 && whole.usage!.completion_tokens <= 12);
    assert.equal(whole.usage!.total_tokens, whole.usage!.prompt_tokens + whole.usage!.completion_tokens);
    const stream = await client.chat.completions.create({
      model: 'tiny',
      messages,
      max_tokens: 12,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let streamed = '';
    let usage = null;
    let finish = null;
    for await (const chunk of stream) {
      streamed += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(streamed, text);
    assert.equal(finish, whole.choices[0]!.finish_reason);
    assert.deepEqual(usage, whole.usage);
  });

  it('completions: seed makes sampling repeatable; n choices; logprobs with 5 alternatives', async () => {
    const ask = () =>
      client.completions.create({
        model: 'tiny',
        prompt: 'abc',
        max_tokens: 8,
        seed: 7,
        n: 2,
        logprobs: 5,
        ignore_eos: true,
      } as never);
    const [a, b] = [await ask(), await ask()];
    assert.deepEqual(
      a.choices.map((c) => c.text),
      b.choices.map((c) => c.text),
    );
    assert.equal(a.choices.length, 2);
    assert.equal(a.usage!.completion_tokens, 16);
    const lp = a.choices[0]!.logprobs!;
    assert.equal(lp.token_logprobs!.length, 8);
    for (const top of lp.top_logprobs!)
      assert.equal(Object.keys(top).length <= 5 && Object.keys(top).length >= 4, true);
    assert.ok(lp.token_logprobs!.every((v) => v! <= 0));
  });

  it('stop ends the text before the stop string; logit_bias steers greedy decoding', async () => {
    const free = await client.completions.create({
      model: 'tiny',
      prompt: 'abc',
      max_tokens: 10,
      temperature: 0,
      ignore_eos: true,
    } as never);
    const text = free.choices[0]!.text;
    assert.ok(text.length >= 3, text);
    const stopped = await client.completions.create({
      model: 'tiny',
      prompt: 'abc',
      max_tokens: 10,
      temperature: 0,
      ignore_eos: true,
      stop: [text.slice(2, 3)],
    } as never);
    assert.equal(stopped.choices[0]!.finish_reason, 'stop');
    assert.ok(!stopped.choices[0]!.text.includes(text.slice(2, 3)));
    // id 3 is 'a': a large bias makes greedy decoding pick it every time.
    const biased = await client.completions.create({
      model: 'tiny',
      prompt: 'abc',
      max_tokens: 4,
      temperature: 0,
      logit_bias: { '3': 100 },
    });
    assert.equal(biased.choices[0]!.text, 'aaaa');
  });

  it('the client sees OpenAI-shaped errors as APIError with the code', async () => {
    await assert.rejects(
      client.chat.completions.create({ model: 'nope', messages }),
      (err: InstanceType<typeof OpenAI.APIError>) => err.status === 404 && err.code === 'model_not_found',
    );
  });
});

describe('serve: bad requests get a stable code and the server keeps serving', () => {
  const good = { model: 'tiny', prompt: 'ab', max_tokens: 2 };
  it('unknown, unsupported and invalid fields', async () => {
    assert.equal(
      (await expectError(await post('/v1/completions', { ...good, bogus: 1 }), 400, 'unknown_parameter')).param,
      'bogus',
    );
    await expectError(await post('/v1/completions', { ...good, echo: true }), 400, 'unsupported_parameter');
    await expectError(
      await post('/v1/chat/completions', { model: 'tiny', messages, response_format: { type: 'json_object' } }),
      400,
      'unsupported_parameter',
    );
    assert.equal(
      (await post('/v1/chat/completions', { model: 'tiny', messages, max_tokens: 1, tools: [], store: false })).status,
      200,
    );
    assert.equal(
      (await expectError(await post('/v1/completions', { ...good, temperature: 'hot' }), 400, 'invalid_value')).param,
      'temperature',
    );
    await expectError(await post('/v1/completions', { ...good, max_tokens: -1 }), 400, 'invalid_value');
    await expectError(await post('/v1/completions', { ...good, n: 3 }), 400, 'invalid_value');
    await expectError(await post('/v1/completions', { ...good, max_tokens: 41 }), 400, 'max_tokens_too_large');
    await expectError(
      await post('/v1/completions', { ...good, prompt: 'x'.repeat(70) }),
      400,
      'context_length_exceeded',
    );
    await expectError(
      await post('/v1/completions', { ...good, prompt: 'x'.repeat(30), max_tokens: 40 }),
      400,
      'context_length_exceeded',
    );
    await expectError(await post('/v1/completions', { ...good, prompt: [1, 64] }), 400, 'invalid_value');
    await expectError(await post('/v1/completions', '{"model": "tiny",'), 400, 'invalid_json');
    await expectError(await post('/v1/completions', new Uint8Array([0x7b, 0xff, 0x7d])), 400, 'invalid_utf8');
    await expectError(await post('/v1/completions', [1, 2]), 400, 'invalid_body');
    await expectError(await fetch(`${served.url}/v1/completions`), 405, 'method_not_allowed');
    await expectError(await fetch(`${served.url}/v2/anything`), 404, 'not_found');
    assert.equal((await post('/v1/completions', good)).status, 200);
  });

  it('a body over --max-body is refused with 413, by its length or while it streams', async () => {
    await expectError(await post('/v1/completions', { ...good, prompt: 'a'.repeat(5000) }), 413, 'body_too_large');
    const chunked = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode('{"prompt": "' + 'a'.repeat(5000)));
        c.close();
      },
    });
    const r = await fetch(`${served.url}/v1/completions`, {
      method: 'POST',
      body: chunked,
      duplex: 'half',
    } as RequestInit);
    await expectError(r, 413, 'body_too_large');
    assert.equal((await post('/v1/completions', good)).status, 200);
  });

  it('GET /healthz says ok and nothing about the model', async () => {
    const r = await fetch(`${served.url}/healthz`);
    assert.equal(r.status, 200);
    assert.equal(await r.text(), '{"status":"ok"}');
  });

  it('a header that never ends is cut off by the header timeout; others are served meanwhile', async () => {
    const slow = await serveTiny((await makeServedModelDir(64)).dir, { headersTimeoutMs: 300, requestTimeoutMs: 600 });
    try {
      const port = Number(new URL(slow.url).port);
      const socket = connect(port, '127.0.0.1');
      socket.write('POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ');
      const closed = new Promise<string>((resolve) => {
        let got = '';
        socket.on('data', (d) => (got += d.toString()));
        socket.on('close', () => resolve(got));
      });
      const other = await fetch(`${slow.url}/healthz`);
      assert.equal(other.status, 200);
      const t0 = Date.now();
      const answer = await closed;
      assert.ok(Date.now() - t0 < 5000, 'cut off within seconds');
      assert.match(answer, /^HTTP\/1.1 408/);
      // A body that never finishes: the request timeout.
      const body = connect(port, '127.0.0.1');
      body.write(
        'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"mo',
      );
      await new Promise<void>((resolve) => body.on('close', () => resolve()).resume());
      assert.equal((await fetch(`${slow.url}/healthz`)).status, 200);
    } finally {
      await slow.close();
    }
  });
});
