/**
 * Slow: `knobs serve` with continuous batching and a small KV cache (--kv-cache-mb 1) takes 1,000
 * streaming requests whose clients leave — before the first token, or after one to three — fifty
 * at a time. Afterwards /metrics shows every KV cache block free and nothing running, and the
 * server still answers. Run with `npm run test:slow`.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { request } from 'node:http';
import { after, it } from 'node:test';
import { makeServedModelDir } from '../harness/api-server.js';
import { startServe } from '../harness/serve-cli.js';

const skip = process.env['KNOBS_SLOW_TESTS'] === '1' ? false : 'slow: run with npm run test:slow';
const TOTAL = 1000;
const WAVE = 50;

let tmp: string | undefined;
after(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/** One streaming completion, cut off by the client after `after` data chunks (0: as soon as it is sent). */
function abandoned(url: string, i: number, after: number): Promise<void> {
  return new Promise((done) => {
    const req = request(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    req.on('error', () => done());
    req.on('close', () => done());
    req.on('response', (res) => {
      let chunks = 0;
      res.on('data', () => {
        if (++chunks >= after) req.destroy();
      });
      res.on('error', () => done());
    });
    req.end(
      JSON.stringify({
        model: 'tiny',
        prompt: 'abc '.repeat(1 + (i % 7)),
        max_tokens: 120,
        stream: true,
        temperature: 0,
      }),
      () => {
        if (after === 0) setImmediate(() => req.destroy());
      },
    );
  });
}

const gauge = (metrics: string, line: RegExp): number => Number(line.exec(metrics)?.[1] ?? NaN);

it('1,000 aborted streams leave no KV cache block behind', { skip, timeout: 600_000 }, async () => {
  const made = await makeServedModelDir(512);
  tmp = made.tmp;
  const server = await startServe([made.dir, '--kv-cache-mb', '1', '--queue', '200']);
  try {
    for (let start = 0; start < TOTAL; start += WAVE)
      await Promise.all(Array.from({ length: WAVE }, (_, j) => abandoned(server.url, start + j, (start + j) % 4)));
    let metrics = '';
    for (let i = 0; i < 500; i++) {
      metrics = await (await fetch(`${server.url}/metrics`)).text();
      if (
        gauge(metrics, /^knobs_kv_cache_blocks\{state="used"\} (\d+)$/m) === 0 &&
        gauge(metrics, /^knobs_generations_active (\d+)$/m) === 0
      )
        break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(gauge(metrics, /^knobs_kv_cache_blocks\{state="used"\} (\d+)$/m), 0, metrics);
    assert.ok(gauge(metrics, /^knobs_kv_cache_blocks\{state="free"\} (\d+)$/m) > 0, metrics);
    assert.equal(gauge(metrics, /^knobs_generations_active (\d+)$/m), 0, metrics);
    assert.ok(gauge(metrics, /^knobs_generations_cancelled_total (\d+)$/m) >= TOTAL / 2, metrics);
    const r = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny', prompt: 'abc', max_tokens: 5, temperature: 0 }),
    });
    assert.equal(r.status, 200);
  } finally {
    await server.stop();
  }
});
