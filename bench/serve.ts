/**
 * `knobs serve` under load: requests/s, tokens/s and p50/p99 latency at 1, 4 and 16 clients
 * (chat requests of 32 greedy tokens to the tiny Llama fixture, --max-concurrency 4, queue 32).
 * The peer is the same generations in-process (no HTTP server: llama.cpp's server is not installed
 * here), alternated with the HTTP runs; the ratio says how much of the model's speed the server keeps.
 */
import { rm } from 'node:fs/promises';
import { openLanguageModel } from '../src/load/language-model.js';
import { chatTemplateOf } from '../src/server/chat-template.js';
import { ModelGenerator } from '../src/server/generation.js';
import { makeServedModelDir, serveTiny } from '../test/harness/api-server.js';
import { type BenchOptions, type BenchRow, makeRow, median } from './row.js';
import { type LoadResult, httpLoad, inProcessLoad, percentile } from './serve-load.js';

const CLIENTS = [1, 4, 16];
const SECONDS = 2;
const ROUNDS = 2;
const PEER = 'knobs in-process generation (no HTTP)';

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
  } finally {
    await served.close();
    await rm(tmp, { recursive: true, force: true });
  }
  return rows;
}
