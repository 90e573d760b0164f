/**
 * The batching engine behind the HTTP server: concurrent requests answer as each does alone
 * (streaming and not, seeded sampling, stop strings, logprobs), a request that can never fit in the
 * KV budget is refused with an OpenAI-shaped 400, and aborted streams give every block back
 * (knobs_kv_cache_blocks on /metrics).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadNativeAddon, loadNativeBackend, nativeLoadError } from '../src/backends/native/index.js';
import { openLanguageModel } from '../src/load/language-model.js';
import { chatTemplateOf } from '../src/server/chat-template.js';
import { type ApiServer, SERVER_DEFAULTS, createApiServer } from '../src/server/server.js';
import { BatchGenerator } from '../src/serve/batch-generator.js';
import type { BatchEngine } from '../src/serve/engine.js';
import { openBatchEngine } from '../src/serve/open.js';
import { makeServedModelDir } from './harness/api-server.js';
import { tinyTextModel } from './harness/char-tokenizer.js';
import { cli } from './harness/cli.js';
import { repoRoot } from './harness/fixtures.js';
import { startServe } from './harness/serve-cli.js';

const skip = loadNativeBackend() ? false : `native backend not built: ${nativeLoadError()}`;

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

async function post(url: string, path: string, body: unknown): Promise<Answer> {
  const res = await fetch(url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('serve with continuous batching', { skip }, () => {
  let tmp = '';
  let api: ApiServer;
  let url = '';
  let engine: BatchEngine;

  before(async () => {
    const made = await makeServedModelDir(512);
    tmp = made.tmp;
    const opened = await openLanguageModel(made.dir);
    // A small budget, so that requests wait for room: 16 blocks of 16 positions.
    const choice = openBatchEngine(opened, { kvCacheMb: 1 / 16 });
    assert.ok(choice.engine, choice.reason ?? '');
    engine = choice.engine;
    assert.equal(engine.kv.totalBlocks, 16);
    api = createApiServer({
      ...SERVER_DEFAULTS,
      maxConcurrency: 64,
      maxQueue: 64,
      keys: null,
      models: [
        {
          id: 'tiny',
          created: 0,
          generator: new BatchGenerator(opened, engine),
          chat: chatTemplateOf(opened),
        },
      ],
      kvBlocks: () => engine.kvGauges(),
      log: () => {},
    });
    url = await api.listen(0, '127.0.0.1');
  });
  after(async () => {
    await api?.drain();
    await rm(tmp, { recursive: true, force: true });
  });

  const body = (i: number): Record<string, unknown> => ({
    model: 'tiny',
    prompt: 'abc def '.repeat(1 + (i % 4)) + String(i),
    max_tokens: 12 + (i % 5),
    temperature: i % 2 === 0 ? 0 : 1,
    seed: 7 + i,
    ...(i % 3 === 0 ? { logprobs: 2 } : {}),
    ...(i % 4 === 1 ? { stop: ['a'] } : {}),
  });

  it('concurrent completions answer as each does alone, at 2 threads and at 1', async () => {
    const strip = (b: Record<string, unknown>): unknown => ({ choices: b.choices, usage: b.usage });
    const addon = loadNativeAddon()!;
    const threads = addon.setThreads(2);
    let together: Answer[];
    try {
      together = await Promise.all(Array.from({ length: 10 }, (_, i) => post(url, '/v1/completions', body(i))));
      addon.setThreads(1);
      for (const [i, t] of together.entries()) {
        assert.equal(t.status, 200, JSON.stringify(t.body));
        const alone = await post(url, '/v1/completions', body(i));
        assert.deepEqual(strip(t.body), strip(alone.body), `request ${i}`);
      }
    } finally {
      addon.setThreads(threads);
    }
    const choice = (together[0]!.body.choices as { logprobs: { tokens: string[] } }[])[0]!;
    assert.equal(choice.logprobs.tokens.length, 12);
  });

  it('a request that can never fit in the KV budget is refused at admission', async () => {
    const blocks = engine.kv.totalBlocks;
    const r = await post(url, '/v1/completions', {
      model: 'tiny',
      prompt: 'abc',
      max_tokens: blocks * 16 + 1,
      stream: true,
    });
    assert.equal(r.status, 400);
    const error = r.body.error as Record<string, unknown>;
    assert.equal(error.code, 'kv_cache_too_small');
    assert.equal(error.type, 'invalid_request_error');
    assert.match(String(error.message), /needs \d+ KV cache blocks .* holds \d+; lower max_tokens/);
    // Without max_tokens a request reserves for the rest of the context (under --max-tokens): here
    // more than the 16 blocks, so it is refused too — it could otherwise run out of cache mid-way.
    const open = await post(url, '/v1/completions', { model: 'tiny', prompt: 'abc' });
    assert.equal(open.status, 400);
    const why = String((open.body.error as Record<string, unknown>).message);
    const [, prompt, most] = /\((\d+) prompt tokens, up to (\d+) new\)/.exec(why) ?? [];
    assert.equal(Number(prompt) + Number(most), Math.min(engine.model.contextLength, Number(prompt) + 1024), why);
  });

  it('streams cut off by their clients give every block back', async () => {
    const cut = Array.from(
      { length: 24 },
      (_, i) =>
        new Promise<void>((done) => {
          const req = request(`${url}/v1/completions`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
          });
          req.on('response', (res) => {
            let chunks = 0;
            res.on('data', () => {
              if (++chunks === 1 + (i % 3)) req.destroy();
            });
            res.on('close', done);
          });
          req.on('error', () => done());
          req.end(
            JSON.stringify({
              model: 'tiny',
              prompt: 'abc '.repeat(i % 5),
              max_tokens: 200,
              stream: true,
              temperature: 0,
            }),
          );
        }),
    );
    await Promise.all(cut);
    // The server notices each close on its next turn; wait for the engine to drain.
    for (let i = 0; i < 200 && engine.stats.running + engine.stats.waiting > 0; i++)
      await new Promise((r) => setTimeout(r, 10));
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.match(metrics, /knobs_kv_cache_blocks\{state="used"\} 0\n/);
    assert.match(metrics, new RegExp(`knobs_kv_cache_blocks\\{state="free"\\} ${engine.kv.totalBlocks}\\n`));
    assert.match(metrics, new RegExp(`\\nknobs_kv_cache_preemptions_total ${engine.stats.preemptions}\\n`));
    assert.match(metrics, /knobs_batch_sequences\{state="running"\} 0\nknobs_batch_sequences\{state="waiting"\} 0\n/);
  });

  it('a prompt that starts as an earlier one reads its blocks from the cache: the same answer, counted on /metrics', async () => {
    const metric = async (name: string): Promise<number> =>
      Number(new RegExp(`\\n${name} (\\d+)`).exec(await (await fetch(`${url}/metrics`)).text())![1]);
    const ask = { model: 'tiny', prompt: 'the same long system prompt, '.repeat(3), max_tokens: 6, seed: 3 };
    const before = await metric('knobs_kv_cache_reused_prompt_tokens_total');
    const first = await post(url, '/v1/completions', ask);
    const second = await post(url, '/v1/completions', ask);
    assert.equal(second.status, 200);
    assert.deepEqual(second.body.choices, first.body.choices);
    assert.ok((await metric('knobs_kv_cache_reused_prompt_tokens_total')) >= before + 64);
    assert.ok((await metric('knobs_kv_cache_prefix_blocks')) > 0);
  });

  it('knobs serve batches by default; --no-batching runs the old path; --kv-cache-dtype f16 doubles the blocks; --kv-reserve', async () => {
    const made = await makeServedModelDir(512);
    try {
      const free: number[] = [];
      for (const [flags, batched] of [
        [['--kv-cache-mb', '8'], true],
        [['--kv-cache-mb', '8', '--kv-cache-dtype', 'f16', '--kv-reserve', 'whole'], true],
        [['--no-batching'], false],
      ] as const) {
        const server = await startServe([made.dir, ...flags]);
        try {
          const answer = await post(server.url, '/v1/completions', { model: 'tiny', prompt: 'abc', max_tokens: 4 });
          assert.equal(answer.status, 200);
          const metrics = await (await fetch(`${server.url}/metrics`)).text();
          const blocks = /knobs_kv_cache_blocks\{state="free"\} (\d+)/.exec(metrics);
          assert.equal(blocks !== null, batched, metrics);
          if (blocks) free.push(Number(blocks[1]));
        } finally {
          const { stderr } = await server.stop();
          const said = stderr
            .split('\n')
            .filter((l) => l.includes('"event":"batching"'))
            .map(
              (l) =>
                (
                  JSON.parse(l) as {
                    kv_cache: {
                      dtype: string;
                      blocks: number;
                      positions: number;
                      prefix_cache: boolean;
                      reserve: string;
                    };
                  }
                ).kv_cache,
            );
          if (batched) {
            const dtype = (flags as readonly string[]).includes('f16') ? 'f16' : 'f32';
            assert.equal(said.length, 1, stderr);
            assert.equal(said[0]!.dtype, dtype);
            assert.equal(said[0]!.prefix_cache, true);
            assert.equal(said[0]!.reserve, (flags as readonly string[]).includes('whole') ? 'whole' : 'expected');
            assert.equal(said[0]!.positions, 16 * said[0]!.blocks);
          } else assert.equal(said.length, 0, stderr);
        }
      }
      assert.equal(free[1], 2 * free[0]!, 'f16 holds twice the blocks in 8 MiB');
      for (const [flags, why] of [
        [['--kv-cache-dtype', 'bf16'], /E_USAGE.*--kv-cache-dtype is one of f32, f16, got bf16/],
        [['--kv-cache-dtype', 'f16', '--no-batching'], /E_USAGE.*does not apply with --no-batching/],
        [['--no-prefix-cache', '--no-batching'], /E_USAGE.*--no-prefix-cache .*does not apply with --no-batching/],
        [['--kv-reserve', 'all'], /E_USAGE.*--kv-reserve is one of expected, whole, got all/],
        [['--kv-reserve', 'whole', '--no-batching'], /E_USAGE.*--kv-reserve .*does not apply with --no-batching/],
      ] as const) {
        const r = await cli(['serve', made.dir, '--insecure-no-auth', '--port', '0', ...flags]);
        assert.equal(r.code, 2, r.stderr);
        assert.match(r.stderr, why);
      }
    } finally {
      await rm(made.tmp, { recursive: true, force: true });
    }
  });

  it('knobs serve batches a GPT-2 model too', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'knobs-serve-gpt-'));
    const dir = join(tmp, 'gpt');
    try {
      await tinyTextModel(dir, undefined, join(repoRoot(), 'test', 'fixtures', 'hf', 'gpt2-tiny'));
      const server = await startServe([dir, '--kv-cache-mb', '1']);
      let answers: Answer[];
      try {
        const ask = (i: number) =>
          post(server.url, '/v1/completions', { model: 'tiny', prompt: 'ab'.repeat(1 + i), max_tokens: 5, seed: i });
        const together = await Promise.all([0, 1, 2, 3].map(ask));
        answers = [];
        for (const i of [0, 1, 2, 3]) answers.push(await ask(i));
        together.forEach((a, i) => {
          assert.equal(a.status, 200, JSON.stringify(a.body));
          assert.deepEqual(a.body.choices, answers[i]!.body.choices, `request ${i}: together = alone`);
        });
        const metrics = await (await fetch(`${server.url}/metrics`)).text();
        assert.match(metrics, /knobs_kv_cache_blocks\{state="free"\} \d+/);
      } finally {
        const { stderr } = await server.stop();
        assert.equal(stderr.split('\n').filter((l) => l.includes('"event":"batching"')).length, 1, stderr);
      }
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
});
