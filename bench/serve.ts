/**
 * `knobs serve` under load: requests/s, tokens/s and p50/p99 latency at 1, 4 and 16 clients
 * (chat requests of 32 greedy tokens to the tiny Llama fixture, --max-concurrency 4, queue 32).
 * The peer is the same generations in-process (no HTTP server: llama.cpp's server is not installed
 * here), alternated with the HTTP runs; the ratio says how much of the model's speed the server keeps.
 * The adapter rows: 4 in-process clients on a LoRA adapter served through the AdapterSet (attached
 * and detached every step, a second adapter loaded), against the same clients on the bare base.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { openLanguageModel } from '../src/load/language-model.js';
import { chatTemplateOf } from '../src/server/chat-template.js';
import { ModelGenerator } from '../src/server/generation.js';
import { servedModels } from '../src/server/served-models.js';
import { makeServedModelDir, serveTiny } from '../test/harness/api-server.js';
import { makeRandomAdapter } from '../test/harness/lora-adapter.js';
import { type BenchOptions, type BenchRow, makeRow, median } from './row.js';
import { type LoadResult, httpLoad, inProcessLoad, percentile } from './serve-load.js';

const CLIENTS = [1, 4, 16];
const SECONDS = 2;
const ROUNDS = 2;
const PEER = 'knobs in-process generation (no HTTP)';
const ADAPTER_PEER = 'knobs in-process generation on the bare base (no adapters)';
const ADAPTER_CLIENTS = 4;

export async function run(opts: BenchOptions): Promise<BenchRow[]> {
  const { tmp, dir } = await makeServedModelDir();
  const served = await serveTiny(dir, { maxConcurrency: 4, maxQueue: 32 });
  const rows: BenchRow[] = [];
  try {
    const opened = await openLanguageModel(dir);
    const peer = new ModelGenerator(opened);
    const prompt = chatTemplateOf(opened).render([{ role: 'user', content: 'hello there' }]);
    await httpLoad(served.url, 1, 0.5); // warm-up
    for (const clients of CLIENTS) {
      const http: LoadResult[] = [];
      const local: LoadResult[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        http.push(await httpLoad(served.url, clients, SECONDS));
        local.push(await inProcessLoad(peer, prompt, clients, SECONDS));
      }
      const rps = (xs: LoadResult[]) => median(xs.map((x) => x.requests / x.seconds));
      const tps = (xs: LoadResult[]) => median(xs.map((x) => x.tokens / x.seconds));
      const p = (xs: LoadResult[], q: number) => median(xs.map((x) => percentile(x.latenciesMs, q)));
      const name = `serve_chat_n32_tiny_llama_c${clients}`;
      rows.push(
        makeRow(`${name}_requests`, opts.cores, 'requests/s', rps(http), PEER, rps(local), true),
        makeRow(`${name}_tokens`, opts.cores, 'tokens/s', tps(http), PEER, tps(local), true),
        makeRow(`${name}_p50`, opts.cores, 'ms (p50 latency)', p(http, 50), PEER, p(local, 50), false),
        makeRow(`${name}_p99`, opts.cores, 'ms (p99 latency)', p(http, 99), PEER, p(local, 99), false),
      );
    }
    rows.push(await adapterRow(opts, dir, tmp, prompt, peer));
  } finally {
    await served.close();
    await rm(tmp, { recursive: true, force: true });
  }
  return rows;
}

/** Tokens/s of generation on a served adapter against the bare base, the same clients and prompt. */
async function adapterRow(
  opts: BenchOptions,
  dir: string,
  tmp: string,
  prompt: string,
  bare: ModelGenerator,
): Promise<BenchRow> {
  const adapters = [
    { name: 'poems', dir: join(tmp, 'poems') },
    { name: 'legal', dir: join(tmp, 'legal') },
  ];
  await makeRandomAdapter(dir, adapters[0]!.dir, ['q_proj', 'v_proj'], 1);
  await makeRandomAdapter(dir, adapters[1]!.dir, ['o_proj', 'down_proj'], 2);
  const opened = await openLanguageModel(dir);
  const models = await servedModels(opened, { id: 'tiny', chat: chatTemplateOf(opened), adapters });
  const adapter = models.find((m) => m.id === 'poems')!.generator;
  const withAdapter: LoadResult[] = [];
  const base: LoadResult[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    withAdapter.push(await inProcessLoad(adapter, prompt, ADAPTER_CLIENTS, SECONDS));
    base.push(await inProcessLoad(bare, prompt, ADAPTER_CLIENTS, SECONDS));
  }
  const tps = (xs: LoadResult[]) => median(xs.map((x) => x.tokens / x.seconds));
  return makeRow(
    `serve_lora_adapter_tokens_tiny_llama_c${ADAPTER_CLIENTS}`,
    opts.cores,
    'tokens/s',
    tps(withAdapter),
    ADAPTER_PEER,
    tps(base),
    true,
  );
}
