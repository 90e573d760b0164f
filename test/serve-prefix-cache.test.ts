/**
 * Prefix caching in the batching engine (src/serve/paged-kv.ts, src/serve/engine.ts): whole prompt
 * blocks a request shares with an earlier one are reused instead of computed, and since every
 * kernel is batch-invariant the tokens and logits are the same bits as without the cache — checked
 * here with shared system prompts, adapters (never shared across them), a budget small enough to
 * evict, and the block accounting.
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
import { KV_BLOCK, PagedKvCache } from '../src/serve/paged-kv.js';
import { type Trace, saveRandomAdapters, traced, tinyLlamaConfig } from './harness/batching.js';
import { addon, skip } from './harness/native.js';

const CONFIG = tinyLlamaConfig(160);

describe('the paged cache as a prefix index', () => {
  const shape = { layers: 1, kvHeads: 1, headDim: 4 };

  it('registered blocks are found by key run, held while in use, cached when released, evicted oldest first', () => {
    const kv = new PagedKvCache(shape, 4);
    const a = kv.allocate(2)!;
    kv.register(a[0]!, 'k0');
    kv.register(a[1]!, 'k1');
    kv.register(a[1]!, 'other'); // a block has one key
    assert.deepEqual(kv.lookup(['k0', 'k1', 'k2']), [a[0], a[1]], 'the run stops at the first miss');
    assert.deepEqual(kv.lookup(['k1']), [a[1]]);
    assert.deepEqual(kv.lookup(['other']), [], 'only the first key of a block is indexed');
    kv.release([a[0]!, a[1]!, a[1]!]); // the lookups' holds
    assert.equal(kv.usedBlocks, 2, 'still held by the first sequence');
    kv.release(a);
    assert.deepEqual([kv.usedBlocks, kv.freeBlocks, kv.cachedBlocks], [0, 4, 2]);
    const b = kv.allocate(3)!; // two empty blocks, then the least recently released cached one
    assert.equal(b.length, 3);
    assert.equal(kv.cachedBlocks, 1);
    // a table is released from its end: k1's block went first, so k0 (the run's start) is kept
    assert.deepEqual(kv.lookup(['k1']), [], 'k1 evicted');
    const reused = kv.lookup(['k0', 'k1']);
    assert.deepEqual(reused, [a[0]], 'the run is k0 alone now');
    assert.equal(kv.allocate(1), null, 'full: three new blocks and one reused');
    kv.release(b);
    kv.release(reused);
    assert.deepEqual([kv.usedBlocks, kv.freeBlocks, kv.cachedBlocks], [0, 4, 1]);
  });
});

describe('prefix caching', { skip }, () => {
  let dir = '';
  let model: k.Llama;
  let adapters: AdapterSet;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'knobs-prefix-'));
    await saveRandomAdapters(dir, () => new k.Llama(CONFIG, { seed: 0 }), [['a', 11, ['q_proj', 'k_proj', 'v_proj']]]);
    model = new k.Llama(CONFIG, { seed: 0 });
    model.eval();
    adapters = new AdapterSet(model);
    await adapters.load('a', join(dir, 'a'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const engineOf = (prefixCache: boolean, mb = 4): BatchEngine =>
    new BatchEngine(new BatchedLlama(model, addon!), {
      kvCacheBytes: mb * 2 ** 20,
      prefillChunk: 9,
      adapters,
      prefixCache,
    });

  /** Twelve requests on two system prompts (37 and 50 tokens) with their own endings, some on the adapter. */
  function chats(): SequenceRequest[] {
    const system = [
      Array.from({ length: 37 }, (_, t) => (t * 5 + 3) % 96),
      Array.from({ length: 50 }, (_, t) => (t * 11 + 7) % 96),
    ];
    return Array.from({ length: 12 }, (_, i) => ({
      prompt: [...system[i % 2]!, ...Array.from({ length: 1 + (i % 5) * 4 }, (_, t) => (t * 13 + i) % 96)],
      maxTokens: 5 + (i % 4),
      sampling: i % 3 === 0 ? { greedy: true } : { temperature: 0.9, topP: 0.95 },
      seed: 100 + i,
      eos: new Set([2]),
      adapter: i % 4 === 1 ? 'a' : null,
    }));
  }

  /** The requests one after another (each reads what the earlier ones left), then all at once. */
  async function serve(engine: BatchEngine): Promise<Trace[]> {
    const out: Trace[] = [];
    for (const r of chats()) out.push(await traced(engine, r));
    out.push(...(await Promise.all(chats().map((r) => traced(engine, r)))));
    return out;
  }

  it('reused prompt blocks give the same tokens and logits, bit for bit, as computing them', async () => {
    const [cold, warm] = [engineOf(false), engineOf(true)];
    const [without, withCache] = [await serve(cold), await serve(warm)];
    assert.deepEqual(withCache, without);
    assert.equal(cold.stats.reusedPromptTokens, 0);
    // One after another: requests 2–11 find their system prompt's whole blocks (2 of the 37-token
    // one, 3 of the 50-token one); the adapter's requests only the adapter's.
    assert.ok(warm.stats.reusedPromptTokens >= 20 * 2 * KV_BLOCK, `${warm.stats.reusedPromptTokens}`);
    assert.ok(warm.stats.steps < cold.stats.steps, `${warm.stats.steps} vs ${cold.stats.steps} steps`);
    assert.equal(warm.kv.usedBlocks, 0, 'every hold came back');
    assert.ok(warm.kv.cachedBlocks > 0);
  });

  it('an adapter never reads the base model’s blocks (its keys and values differ)', async () => {
    const engine = engineOf(true);
    const req = chats()[2]!;
    await traced(engine, { ...req, adapter: null });
    const before = engine.stats.reusedPromptTokens;
    const onAdapter = await traced(engine, { ...req, adapter: 'a' });
    assert.equal(engine.stats.reusedPromptTokens, before, 'no reuse across adapters');
    assert.deepEqual(onAdapter, await traced(engineOf(false), { ...req, adapter: 'a' }));
    await traced(engine, { ...req, adapter: 'a' });
    assert.ok(engine.stats.reusedPromptTokens > before, 'the adapter reuses its own');
  });

  it("a conversation's next turn reads the blocks of the previous answer too", async () => {
    const [engine, cold] = [engineOf(true), engineOf(false)];
    const first = { ...chats()[3]!, maxTokens: 40, eos: new Set<number>() }; // 63 prompt tokens, 40 new
    const answer = await traced(engine, first);
    // 63 + 39 fed positions: 6 whole blocks, the last three (from position 48) holding produced tokens
    const next = { ...first, prompt: [...first.prompt, ...answer.tokens, 5, 6, 7] };
    const before = engine.stats.reusedPromptTokens;
    assert.deepEqual(await traced(engine, next), await traced(cold, next));
    assert.equal(engine.stats.reusedPromptTokens - before, 6 * KV_BLOCK);
  });

  it('a burst of requests on one new system prompt computes it once: the others wait for its blocks', async () => {
    const system = Array.from({ length: 4 * KV_BLOCK }, (_, t) => (t * 17 + 5) % 96);
    const burst = Array.from({ length: 8 }, (_, i) => ({
      prompt: [...system, ...Array.from({ length: 5 }, (_, t) => (t * 3 + i * 7) % 96)],
      maxTokens: 4,
      sampling: { greedy: true },
      seed: 0,
      eos: new Set<number>(),
      adapter: null,
    }));
    const [warm, cold] = [engineOf(true), engineOf(false)];
    const got = await Promise.all(burst.map((r) => traced(warm, r)));
    assert.deepEqual(got, await Promise.all(burst.map((r) => traced(cold, r))));
    // The first request computes the 4 system blocks; the other seven read them.
    assert.equal(warm.stats.reusedPromptTokens, 7 * 4 * KV_BLOCK);
    assert.ok(warm.stats.steps < cold.stats.steps, `${warm.stats.steps} vs ${cold.stats.steps} steps`);
  });

  it('a budget that must evict cached blocks still answers the same', async () => {
    // 12 blocks: two sequences of up to 74 positions (5 blocks each) at once, little left to keep.
    const blockBytes = PagedKvCache.blockBytes(new BatchedLlama(model, addon!).shape);
    const small = new BatchEngine(new BatchedLlama(model, addon!), {
      kvCacheBytes: 12 * blockBytes,
      prefillChunk: 9,
      adapters,
    });
    const full = engineOf(false);
    const reqs = [...chats(), ...chats().reverse()];
    const got: Trace[] = [];
    for (const r of reqs) got.push(await traced(small, r));
    const want: Trace[] = [];
    for (const r of reqs) want.push(await traced(full, r));
    assert.deepEqual(got, want);
    assert.equal(small.kv.usedBlocks, 0);
    assert.equal(small.kv.freeBlocks, 12);
  });

  it("a request cancelled by another's callback in the same step is not indexed, and gives back its blocks", async () => {
    const engine = new BatchEngine(new BatchedLlama(model, addon!), { kvCacheBytes: 2 ** 20, prefillChunk: 64 });
    const ctl = new AbortController();
    const base = { sampling: { greedy: true }, seed: 0, eos: new Set<number>(), adapter: null };
    let tokens = 0;
    // Step 1: A's 3-token prompt and 61 of B's; step 2: A's first decode row and B's other 39,
    // which complete B's blocks 1–5 — while A's second token cancels B.
    const a = engine.submit({
      ...base,
      prompt: [1, 2, 3],
      maxTokens: 4,
      onToken: () => void (++tokens === 2 && ctl.abort()),
    });
    const b = engine.submit({
      ...base,
      prompt: Array.from({ length: 100 }, (_, t) => (t * 3) % 96),
      maxTokens: 4,
      signal: ctl.signal,
    });
    assert.equal((await b).finishReason, 'cancelled');
    assert.equal((await a).tokens.length, 4);
    assert.deepEqual([engine.kv.usedBlocks, engine.stats.running], [0, 0]);
  });

  it('aborted requests give back their holds; a prompt of whole blocks still computes its last one', async () => {
    const engine = engineOf(true);
    const prompt = Array.from({ length: 3 * KV_BLOCK }, (_, t) => (t * 7 + 1) % 96);
    const req = { prompt, maxTokens: 4, sampling: { greedy: true }, seed: 0, eos: new Set<number>(), adapter: null };
    const first = await traced(engine, req);
    const controllers = Array.from({ length: 8 }, () => new AbortController());
    const runs = controllers.map((c) => traced(engine, { ...req, signal: c.signal }));
    controllers.forEach((c, i) => i % 2 === 0 && c.abort());
    for (const [i, t] of (await Promise.all(runs)).entries())
      if (i % 2 === 1) assert.deepEqual(t, first, `request ${i}`);
    assert.equal(engine.kv.usedBlocks, 0);
    // 48 tokens: blocks 0 and 1 reused, block 2 (holding the last prompt position) computed
    assert.equal(engine.stats.reusedPromptTokens % (2 * KV_BLOCK), 0);
    assert.ok(engine.stats.reusedPromptTokens >= 4 * 2 * KV_BLOCK);
  });
});
