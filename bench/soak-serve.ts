/**
 * `npm run soak`: abuse for `knobs serve` (not part of `npm test`; about 90 s). Against a served
 * tiny model (--max-concurrency 2, --queue 4):
 *   1. 1,000 clients that leave mid-stream (6 at a time): every generation is cancelled and its slot freed;
 *   2. twice the capacity (12 clients) for 60 s: only 200s and designed 503s, memory bounded;
 *   3. afterwards, one request is served at its normal latency within seconds.
 * Prints one JSON summary; exits 1 when a check fails.
 */
import { rm } from 'node:fs/promises';
import { makeServedModelDir, serveTiny } from '../test/harness/api-server.js';
import { REQUEST, httpLoad, percentile } from './serve-load.js';

const ABORTS = 1000;
/** At most the capacity (2 running + 4 queued), so every one of them gets its stream. */
const ABORT_PARALLEL = 6;
const OVERLOAD_SECONDS = Number(process.env.KNOBS_SOAK_SECONDS ?? 60);
const RSS_GROWTH_LIMIT = 256 * 2 ** 20;

/** True when the client got its stream and left in the middle of it. */
async function abortMidStream(url: string): Promise<boolean> {
  const abort = new AbortController();
  const r = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'tiny',
      messages: [{ role: 'user', content: 'hi' }],
      ...REQUEST,
      max_tokens: 2000,
      stream: true,
    }),
    signal: abort.signal,
  });
  if (r.status !== 200) {
    await r.arrayBuffer();
    return false;
  }
  await r.body!.getReader().read();
  abort.abort();
  return true;
}

async function main(): Promise<number> {
  const { tmp, dir } = await makeServedModelDir();
  const served = await serveTiny(dir, { maxConcurrency: 2, maxQueue: 4, maxTokens: 2000 });
  const failures: string[] = [];
  const rss0 = process.memoryUsage().rss;
  try {
    const baseline = await httpLoad(served.url, 1, 3);
    // A slot frees a moment after its client leaves, so a client may meet a full queue (503): it
    // waits a little and tries again, within a bounded number of attempts.
    let attempts = 0;
    let midStream = 0;
    await Promise.all(
      Array.from({ length: ABORT_PARALLEL }, async () => {
        while (midStream < ABORTS && attempts < 10 * ABORTS) {
          attempts++;
          if (await abortMidStream(served.url)) midStream++;
          else await new Promise((done) => setTimeout(done, 10));
        }
      }),
    );
    if (midStream < ABORTS) failures.push(`only ${midStream} of ${ABORTS} clients got a stream to leave`);
    // Every aborted generation ends within a bounded wait: no slot stays taken.
    let active = -1;
    for (let i = 0; i < 100 && active !== 0; i++) {
      await new Promise((done) => setTimeout(done, 50));
      const m = await (await fetch(`${served.url}/metrics`)).text();
      active = Number(/knobs_generations_active (\d+)/.exec(m)![1]);
    }
    if (active !== 0) failures.push(`${active} generations still active after the aborts`);
    const cancelled = served.logs.filter((l) => l.client_closed === true).length;
    let peakRss = 0;
    const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 500);
    const overload = await httpLoad(served.url, 12, OVERLOAD_SECONDS);
    clearInterval(sampler);
    const unexpected = Object.keys(overload.statuses).filter((s) => s !== '200' && s !== '503');
    if (unexpected.length > 0)
      failures.push(`statuses other than 200/503 under overload: ${JSON.stringify(overload.statuses)}`);
    if (peakRss - rss0 > RSS_GROWTH_LIMIT) failures.push(`RSS grew by ${((peakRss - rss0) / 2 ** 20).toFixed(0)} MiB`);
    const t0 = performance.now();
    const after = await httpLoad(served.url, 1, 3);
    const recovered = (performance.now() - t0) / 1000;
    const p50 = percentile(after.latenciesMs, 50);
    const base50 = percentile(baseline.latenciesMs, 50);
    if (!(p50 < 3 * base50 + 50))
      failures.push(`p50 latency after the load ${p50.toFixed(0)} ms vs ${base50.toFixed(0)} ms before`);
    console.log(
      JSON.stringify({
        aborts: ABORTS,
        aborted_mid_stream: midStream,
        attempts,
        aborted_generations_logged: cancelled,
        overload_seconds: OVERLOAD_SECONDS,
        overload_statuses: overload.statuses,
        overload_requests_per_s: overload.requests / overload.seconds,
        rss_start_mib: Math.round(rss0 / 2 ** 20),
        rss_peak_mib: Math.round(peakRss / 2 ** 20),
        p50_ms_before: Math.round(base50),
        p50_ms_after: Math.round(p50),
        after_window_s: Number(recovered.toFixed(1)),
        failures,
      }),
    );
  } finally {
    await served.close();
    await rm(tmp, { recursive: true, force: true });
  }
  return failures.length === 0 ? 0 : 1;
}

process.exitCode = await main();
