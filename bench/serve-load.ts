/**
 * Load for `knobs serve` benches and the soak: N clients, each sending chat requests back to back
 * for a while, over HTTP to a served tiny model — or, as the peer, the same generations called
 * in-process on the same TextGenerator (no HTTP, no JSON, no admission), so the difference is what
 * the server costs.
 */
import type { TextGenerator } from '../src/server/generation.js';

export const REQUEST = { max_tokens: 32, ignore_eos: true, temperature: 0 };
const MESSAGES = [{ role: 'user', content: 'hello there' }];

export interface LoadResult {
  requests: number;
  tokens: number;
  seconds: number;
  latenciesMs: number[];
  /** Status code → count (HTTP only). */
  statuses: Record<number, number>;
}

async function drive(
  clients: number,
  seconds: number,
  once: () => Promise<{ status: number; tokens: number }>,
): Promise<LoadResult> {
  const end = performance.now() + seconds * 1000;
  const result: LoadResult = { requests: 0, tokens: 0, seconds, latenciesMs: [], statuses: {} };
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < end) {
        const start = performance.now();
        const { status, tokens } = await once();
        result.statuses[status] = (result.statuses[status] ?? 0) + 1;
        if (status !== 200) continue;
        result.latenciesMs.push(performance.now() - start);
        result.requests++;
        result.tokens += tokens;
      }
    }),
  );
  result.seconds = (performance.now() - t0) / 1000;
  return result;
}

export function httpLoad(
  url: string,
  clients: number,
  seconds: number,
  key: string | null = null,
): Promise<LoadResult> {
  return drive(clients, seconds, async () => {
    const r = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: JSON.stringify({ model: 'tiny', messages: MESSAGES, ...REQUEST }),
    });
    const body = (await r.json()) as { usage?: { completion_tokens: number } };
    return { status: r.status, tokens: body.usage?.completion_tokens ?? 0 };
  });
}

export function inProcessLoad(
  generator: TextGenerator,
  prompt: string,
  clients: number,
  seconds: number,
): Promise<LoadResult> {
  const signal = new AbortController().signal;
  return drive(clients, seconds, async () => {
    const r = await generator.generate(
      {
        prompt,
        maxTokens: REQUEST.max_tokens,
        temperature: 0,
        topP: 1,
        seed: 0,
        stop: [],
        ignoreEos: true,
        topLogprobs: null,
        presencePenalty: 0,
        frequencyPenalty: 0,
        logitBias: new Map(),
      },
      signal,
      () => {},
    );
    return { status: 200, tokens: r.completionTokens };
  });
}

export function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}
