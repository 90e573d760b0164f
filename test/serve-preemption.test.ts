/**
 * Blocks on demand and preemption in the batching engine (src/serve/engine.ts): a sequence takes
 * its KV blocks as it grows instead of all its `maxTokens` might need, so answers that end early
 * leave room for others; when a growing sequence finds none free, the sequence admitted last is
 * sent back to the queue and computed again later — with the same tokens and logits, bit for bit,
 * since every kernel is batch-invariant.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as k from '../src/index.js';
import { AdapterSet } from '../src/finetune/adapter-set.js';
import { BatchedLlama } from '../src/serve/batched-llama.js';
import { BatchEngine, type SequenceRequest } from '../src/serve/engine.js';
import { PagedKvCache } from '../src/serve/paged-kv.js';
import { type Trace, saveRandomAdapters, traced, tinyLlamaConfig } from './harness/batching.js';
import { addon, skip } from './harness/native.js';

const CONFIG = tinyLlamaConfig(160);

describe('the paged cache grows a table', () => {
  it('allocate(n, table) keeps the table’s blocks, adds n, and one release gives all back', () => {
    const kv = new PagedKvCache({ layers: 1, kvHeads: 1, headDim: 4 }, 5);
    const a = kv.allocate(2)!;
    const grown = kv.allocate(2, a)!;
    assert.deepEqual([...grown.subarray(0, 2)], [...a]);
    assert.equal(new Set(grown).size, 4);
    assert.equal(kv.usedBlocks, 4);
    assert.equal(kv.allocate(2, grown), null, 'one block left: nothing taken');
    assert.equal(kv.usedBlocks, 4);
    kv.release(grown);
    assert.deepEqual([kv.usedBlocks, kv.freeBlocks], [0, 5]);
  });
});

describe('KV blocks on demand, and preemption', { skip }, () => {
  let dir = '';
  let model: k.Llama;
  let adapters: AdapterSet;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'knobs-preempt-'));
    await saveRandomAdapters(dir, () => new k.Llama(CONFIG, { seed: 0 }), [
      ['a', 7, ['q_proj', 'v_proj', 'down_proj']],
    ]);
    model = new k.Llama(CONFIG, { seed: 0 });
    model.eval();
    adapters = new AdapterSet(model);
    await adapters.load('a', join(dir, 'a'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  /** An engine of exactly `blocks` KV blocks (a big one when omitted). */
  const engineOf = (blocks = 400, prefixCache = true): BatchEngine => {
    const batched = new BatchedLlama(model, addon!);
    return new BatchEngine(batched, {
      kvCacheBytes: blocks * PagedKvCache.blockBytes(batched.shape),
      prefillChunk: 11,
      adapters,
      prefixCache,
    });
  };

  /** Six requests of 40 new tokens (4 blocks each with their ~20-token prompts), some sampled, some on the adapter. */
  function requests(): SequenceRequest[] {
    return Array.from({ length: 6 }, (_, i) => ({
      prompt: Array.from({ length: 17 + i }, (_, t) => (t * 7 + i * 5 + 3) % 96),
      maxTokens: 40,
      sampling: i % 2 === 0 ? { greedy: true } : { temperature: 0.9, topP: 0.95 },
      seed: 500 + i,
      eos: new Set<number>(), // every request runs to its limit: the cache must fill
      adapter: i % 3 === 1 ? 'a' : null,
    }));
  }

  /**
   * Eight answers that stop after two of their 40 tokens: the engine learns that answers end early
   * (expectedShare 1/20), so it admits on what the prompts need and has to preempt when they run long.
   */
  async function shortAnswers(engine: BatchEngine): Promise<void> {
    await Promise.all(
      Array.from({ length: 8 }, (_, i) => {
        let n = 0;
        return engine.submit({
          ...requests()[i % 6]!,
          prompt: [i + 3],
          onToken: () => ++n < 2,
        });
      }),
    );
  }

  it('preempted requests give the tokens and logits they give alone, bit for bit, and every block comes back', async () => {
    const alone: Trace[] = [];
    for (const r of requests()) alone.push(await traced(engineOf(), r));
    for (const prefixCache of [true, false]) {
      // Six blocks: after the short answers three requests start (2 blocks each), and as they grow
      // past 32 and 48 positions the first ones take the later ones' blocks.
      const engine = engineOf(6, prefixCache);
      await shortAnswers(engine);
      const batched = await Promise.all(requests().map((r) => traced(engine, r)));
      assert.deepEqual(batched, alone, `prefix cache ${prefixCache ? 'on' : 'off'}`);
      assert.ok(engine.stats.preemptions > 0, 'the budget forced preemptions');
      assert.equal(engine.kv.usedBlocks, 0);
      assert.deepEqual([engine.stats.running, engine.stats.waiting], [0, 0]);
      assert.deepEqual(engine.kvGauges().preemptions, engine.stats.preemptions);
    }
    // Without that history every request is expected to run to its limit: none is preempted.
    const fresh = engineOf(6);
    assert.deepEqual(await Promise.all(requests().map((r) => traced(fresh, r))), alone);
    assert.equal(fresh.stats.preemptions, 0);
  });

  it('answers that end early leave room: once the engine has seen them, more run at once than their maxTokens would reserve', async () => {
    // maxTokens 100 on a 10-token prompt could fill 7 blocks of the 8; each stops after 5 tokens (a stop string).
    const engine = engineOf(8);
    const peaks: number[] = [];
    const results = await Promise.all(
      Array.from({ length: 16 }, (_, i) => {
        let n = 0;
        return engine.submit({
          prompt: Array.from({ length: 10 }, (_, t) => (t + i) % 96),
          maxTokens: 100,
          sampling: { greedy: true },
          seed: 0,
          eos: new Set(),
          adapter: null,
          onToken: () => {
            peaks[i] = Math.max(peaks[i] ?? 0, engine.stats.running);
            return ++n < 5;
          },
        });
      }),
    );
    assert.ok(results.every((r) => r.tokens.length === 5 && r.finishReason === 'stop'));
    // The first eight run one at a time, as if reserved whole; then answers are known to use 5 %
    // of their limit, and the other eight run at once on a block each.
    assert.deepEqual(peaks.slice(0, 8), Array<number>(8).fill(1));
    assert.equal(Math.max(...peaks.slice(8)), 8);
    assert.equal(engine.stats.preemptions, 0);
    assert.equal(engine.kv.usedBlocks, 0);
  });

  it("kvReserve 'whole' keeps room for every maxTokens: after short answers, long ones are never preempted", async () => {
    const batched = new BatchedLlama(model, addon!);
    const engine = new BatchEngine(batched, {
      kvCacheBytes: 6 * PagedKvCache.blockBytes(batched.shape),
      prefillChunk: 11,
      adapters,
      kvReserve: 'whole',
    });
    await shortAnswers(engine);
    const alone: Trace[] = [];
    for (const r of requests()) alone.push(await traced(engineOf(), r));
    assert.deepEqual(await Promise.all(requests().map((r) => traced(engine, r))), alone);
    assert.equal(engine.stats.preemptions, 0, 'the same six preempt with the expected share (first test)');
    assert.throws(
      () => new BatchEngine(batched, { kvCacheBytes: 2 ** 20, kvReserve: 'all' as 'whole' }),
      /kvReserve is one of expected, whole, got all/,
    );
  });

  it('a request cancelled while preempted ends with its tokens so far and holds nothing', async () => {
    const engine = engineOf(6);
    await shortAnswers(engine);
    const controllers = requests().map(() => new AbortController());
    let cancelled = -1;
    const pending = requests().map((r, i) =>
      engine.submit({
        ...r,
        signal: controllers[i]!.signal,
        // request 0's callback cancels request 1 (admitted after it, so the one preempted) once preempted
        onToken:
          i === 0
            ? () => {
                if (cancelled >= 0 || engine.stats.preemptions === 0) return;
                cancelled = engine.stats.waiting;
                controllers[1]!.abort();
              }
            : undefined,
      }),
    );
    const results = await Promise.all(pending);
    assert.ok(cancelled > 0, 'a preemption happened while request 0 ran');
    assert.equal(results[1]!.finishReason, 'cancelled');
    const whole = await traced(engineOf(), requests()[1]!);
    assert.ok(results[1]!.tokens.length < 40);
    assert.deepEqual(results[1]!.tokens, whole.tokens.slice(0, results[1]!.tokens.length), 'a prefix of its answer');
    assert.equal(engine.kv.usedBlocks, 0);
    assert.deepEqual([engine.stats.running, engine.stats.waiting], [0, 0]);
  });
});
