/**
 * Keys and limits of `knobs serve` on loopback: missing, wrong, revoked keys; keys refused in the
 * URL and never logged; rpm and token quotas under concurrent requests (no overrun, 429 with
 * Retry-After, usage settled to what was used); bounded concurrency and queue; a client that
 * leaves frees its slot; the per-request deadline; /metrics for admin keys only; `knobs keys` and
 * `knobs serve` as a user runs them, SIGTERM included.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SqliteKeyStore } from '../src/server/sqlite-keys.js';
import { cli, startCli } from './harness/cli.js';
import { type Served, makeServedModelDir, serveTiny } from './harness/api-server.js';

let tmp: string;
let dir: string;
before(async () => {
  ({ tmp, dir } = await makeServedModelDir());
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const chat = (url: string, key: string | null, extra: Record<string, unknown> = {}, signal?: AbortSignal) =>
  fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, ...extra }),
    signal,
  });
const codeOf = async (r: Response) => ((await r.json()) as { error?: { code: string } }).error?.code ?? 'ok';

async function withKeys<T>(
  name: string,
  run: (store: SqliteKeyStore, served: Served) => Promise<T>,
  opts = {},
): Promise<T> {
  const store = SqliteKeyStore.open(join(tmp, `${name}.db`), { create: true });
  const served = await serveTiny(dir, { keys: store, ...opts });
  try {
    return await run(store, served);
  } finally {
    await served.close();
    await store.close();
  }
}

const spec = { rpm: null, tokensPerDay: null, models: null, admin: false };

describe('serve: keys', () => {
  it('missing, wrong and revoked keys get 401; keys in the URL 400; no key reaches the logs', () =>
    withKeys('auth', async (store, s) => {
      const { key } = await store.create({ ...spec, name: 'alice' });
      assert.equal((await chat(s.url, key)).status, 200);
      const missing = await chat(s.url, null);
      assert.equal(missing.status, 401);
      assert.equal(missing.headers.get('www-authenticate'), 'Bearer');
      assert.equal(await codeOf(missing), 'missing_api_key');
      const wrong = key.slice(0, -1) + (key.endsWith('A') ? 'B' : 'A');
      assert.equal(await codeOf(await chat(s.url, wrong)), 'invalid_api_key');
      assert.equal(await codeOf(await chat(s.url, 'not-a-key')), 'invalid_api_key');
      const inUrl = await fetch(`${s.url}/v1/models?api_key=${key}`, { headers: { authorization: `Bearer ${key}` } });
      assert.equal(inUrl.status, 400);
      assert.equal(await codeOf(inUrl), 'key_in_url');
      assert.equal(await store.revoke('alice'), true);
      assert.equal(await codeOf(await chat(s.url, key)), 'invalid_api_key', 'revoked: refused on the next request');
      const text = JSON.stringify(s.logs);
      assert.ok(!text.includes(key) && !text.includes(wrong) && !text.includes(key.slice(6, 30)), 'no key in the logs');
      assert.ok(
        s.logs.some((l) => l.key === 'alice'),
        'logs name the key',
      );
    }));

  it('a key limited to other models sees none; /metrics needs an admin key', () =>
    withKeys('scope', async (store, s) => {
      const { key: other } = await store.create({ ...spec, name: 'other', models: ['big'] });
      const { key: admin } = await store.create({ ...spec, name: 'ops', admin: true });
      assert.equal(await codeOf(await chat(s.url, other)), 'model_not_found');
      const list = (await (
        await fetch(`${s.url}/v1/models`, { headers: { authorization: `Bearer ${other}` } })
      ).json()) as { data: unknown[] };
      assert.deepEqual(list.data, []);
      assert.equal((await fetch(`${s.url}/metrics`, { headers: { authorization: `Bearer ${other}` } })).status, 403);
      const m = await fetch(`${s.url}/metrics`, { headers: { authorization: `Bearer ${admin}` } });
      assert.equal(m.status, 200);
      assert.match(await m.text(), /knobs_requests_total\{route="chat",status="404"\} 1/);
    }));

  it('rpm under 8 concurrent requests: exactly rpm admitted, the rest 429 with Retry-After', () =>
    withKeys('rpm', async (store, s) => {
      const { key } = await store.create({ ...spec, name: 'r', rpm: 3 });
      const rs = await Promise.all(Array.from({ length: 8 }, () => chat(s.url, key)));
      assert.equal(rs.filter((r) => r.status === 200).length, 3);
      const limited = rs.filter((r) => r.status === 429);
      assert.equal(limited.length, 5);
      for (const r of limited) {
        assert.equal(await codeOf(r), 'rate_limit_exceeded');
        const retry = Number(r.headers.get('retry-after'));
        assert.ok(retry >= 1 && retry <= 60, `Retry-After ${retry}`);
      }
    }));

  it('tokens per day under concurrent requests: reservations never overrun; usage settles to what was used', () =>
    withKeys('tokens', async (store, s) => {
      // Each request reserves its prompt (17 tokens) plus max_tokens 20: the quota holds two, not three.
      const { key } = await store.create({ ...spec, name: 't', tokensPerDay: 100 });
      const rs = await Promise.all(
        Array.from({ length: 6 }, () => chat(s.url, key, { max_tokens: 20, ignore_eos: true })),
      );
      const ok = rs.filter((r) => r.status === 200);
      assert.equal(ok.length, 2, `statuses ${rs.map((r) => r.status).join()}`);
      let used = 0;
      let prompt = 0;
      for (const r of ok) {
        const usage = ((await r.json()) as { usage: { prompt_tokens: number; total_tokens: number } }).usage;
        used += usage.total_tokens;
        prompt = usage.prompt_tokens;
      }
      for (const r of rs.filter((r) => r.status !== 200)) {
        assert.equal(r.status, 429);
        assert.equal(await codeOf(r), 'tokens_per_day_exceeded');
        assert.ok(Number(r.headers.get('retry-after')) >= 1);
      }
      const usage = await store.usage();
      assert.equal(usage.length, 1);
      assert.equal(usage[0]!.requests, 2);
      assert.equal(usage[0]!.promptTokens + usage[0]!.completionTokens, used);
      // Settled, nothing stays reserved: exactly the rest of the day's quota can still be used, not a token more.
      const rest = 100 - used - prompt;
      assert.ok(rest >= 1, `quota left after the prompt: ${rest}`);
      assert.equal((await chat(s.url, key, { max_tokens: rest, ignore_eos: true })).status, 200);
      assert.equal(await codeOf(await chat(s.url, key, { max_tokens: 1 })), 'tokens_per_day_exceeded');
    }));
});

describe('serve: capacity', () => {
  it('beyond --max-concurrency and --queue: 503 at once; the others finish', async () => {
    const s = await serveTiny(dir, { maxConcurrency: 1, maxQueue: 1 });
    try {
      const long = { max_tokens: 200, ignore_eos: true };
      const rs = await Promise.all(Array.from({ length: 4 }, () => chat(s.url, null, long)));
      const statuses = rs.map((r) => r.status).sort();
      assert.deepEqual(statuses, [200, 200, 503, 503]);
      const busy = rs.find((r) => r.status === 503)!;
      assert.equal(await codeOf(busy), 'server_overloaded');
      assert.equal(busy.headers.get('retry-after'), '1');
    } finally {
      await s.close();
    }
  });

  it('a client that disconnects mid-stream cancels its generation and frees the slot', async () => {
    const s = await serveTiny(dir, { maxConcurrency: 1, maxQueue: 0, maxTokens: 4000 });
    try {
      const abort = new AbortController();
      const r = await chat(s.url, null, { max_tokens: 4000, ignore_eos: true, stream: true }, abort.signal);
      const reader = r.body!.getReader();
      await reader.read();
      abort.abort();
      // The slot is free again within a bounded number of tries (no queue: a busy slot answers 503).
      let status = 0;
      for (let i = 0; i < 50 && status !== 200; i++) {
        status = (await chat(s.url, null)).status;
        if (status !== 200) await new Promise((done) => setTimeout(done, 20));
      }
      assert.equal(status, 200);
      const closed = s.logs.find((l) => l.client_closed === true)!;
      assert.ok(closed, 'the disconnect is logged');
      assert.ok(
        (closed.completion_tokens as number) < 4000,
        `stopped after ${String(closed.completion_tokens)} tokens`,
      );
    } finally {
      await s.close();
    }
  });

  it('a request past the deadline gets 504 deadline_exceeded', async () => {
    const s = await serveTiny(dir, { deadlineMs: 100, maxTokens: 4000 });
    try {
      const r = await chat(s.url, null, { max_tokens: 4000, ignore_eos: true });
      assert.equal(r.status, 504);
      assert.equal(await codeOf(r), 'deadline_exceeded');
    } finally {
      await s.close();
    }
  });
});

describe('knobs keys and knobs serve, as a user runs them', () => {
  it('create prints the key once; list shows no secret; revoke; serve refuses to start without keys', async () => {
    const file = join(tmp, 'cli.db');
    const made = await cli(['keys', 'create', '--keys', file, '--name', 'bob', '--rpm', '5', '--json']);
    assert.equal(made.code, 0, made.stderr);
    const { key, name } = JSON.parse(made.stdout) as { key: string; name: string };
    assert.equal(name, 'bob');
    assert.match(key, /^knobs_[A-Za-z0-9_-]{43}$/);
    const list = await cli(['keys', 'list', '--keys', file, '--json']);
    assert.ok(!list.stdout.includes(key.slice(6, 20)));
    assert.equal((JSON.parse(list.stdout) as { keys: { name: string; rpm: number }[] }).keys[0]!.rpm, 5);
    assert.equal((await cli(['keys', 'create', '--keys', file, '--name', 'bob'])).code, 2);
    const noAuth = await cli(['serve', dir]);
    assert.equal(noAuth.code, 2);
    assert.match(noAuth.stderr, /--keys FILE/);
    const open = await cli(['serve', dir, '--insecure-no-auth', '--host', '0.0.0.0']);
    assert.equal(open.code, 2);
    assert.match(open.stderr, /loopback/);
    assert.equal((await cli(['keys', 'revoke', '--keys', file, 'bob'])).code, 0);
    assert.equal((await cli(['keys', 'revoke', '--keys', file, 'bob'])).code, 2);
  });

  it('serve prints its url, answers, and on SIGTERM finishes the request in flight and exits 0', async () => {
    const file = join(tmp, 'serve.db');
    const { key } = JSON.parse((await cli(['keys', 'create', '--keys', file, '--name', 'k', '--json'])).stdout) as {
      key: string;
    };
    let url = '';
    let served!: { child: import('node:child_process').ChildProcess; done: ReturnType<typeof startCli>['done'] };
    const ready = new Promise<void>((resolve) => {
      const { child, done } = startCli(['serve', dir, '--name', 'tiny', '--keys', file, '--port', '0']);
      child.stdout!.on('data', (d: Buffer) => {
        url = (JSON.parse(d.toString()) as { url: string }).url;
        resolve();
      });
      served = { child, done };
    });
    await ready;
    const inFlight = chat(url, key, { max_tokens: 300, ignore_eos: true });
    await new Promise((done) => setTimeout(done, 100));
    served.child.kill('SIGTERM');
    const r = await inFlight;
    assert.equal(r.status, 200);
    const run = await served.done;
    assert.equal(run.code, 0, run.stderr);
    assert.ok(!run.stderr.includes(key));
    await assert.rejects(fetch(`${url}/healthz`));
  });
});
