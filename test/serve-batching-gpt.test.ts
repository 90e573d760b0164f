/**
 * Continuous batching of GPT-2 models (src/serve/batched-gpt.ts): the product on weights stored
 * [in, out] (biMatmulKn; the cache store without RoPE, biStoreKv, is tested with biRopeKv in
 * test/serve-batching.test.ts), and the batched GPT against PyTorch's logits (the gpt2 fixtures), against the model's own forward
 * with and without adapters, f32 and q8_0, and sixteen concurrent requests that give each
 * request's tokens and logits bit for bit as it gives alone, at 1 and 2 threads.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import * as k from '../src/index.js';
import { AdapterSet } from '../src/finetune/adapter-set.js';
import { loadHfModel } from '../src/models/hf/load.js';
import { quantizeModel } from '../src/nn/quantized-linear.js';
import { BatchedGpt } from '../src/serve/batched-gpt.js';
import { BatchEngine, type SequenceRequest } from '../src/serve/engine.js';
import { matmulKnRows } from './harness/bi-matmul-kn-rows.js';
import { repoRoot } from './harness/fixtures.js';
import { type Trace, maxRelDiff, saveRandomAdapters, sixteenRequests, traced } from './harness/batching.js';
import { addon, skip } from './harness/native.js';

const CONFIG = { vocab_size: 96, n_positions: 96, n_embd: 64, n_layer: 2, n_head: 4, dropout: 0 } as const;

describe('GPT-2 kernels of the batched forward', { skip }, () => {
  it('biMatmulKn: x · W with W [K, N]; a row the same bits in any batch, tile and thread count; near f64', () => {
    const before = addon!.setThreads(1);
    try {
      const r = matmulKnRows();
      assert.equal(r.mismatches, 0, r.detail);
      assert.ok(r.maxError < 1e-5, `max error against f64 ${r.maxError}`);
      addon!.setThreads(3);
      assert.equal(matmulKnRows().hash, r.hash, 'threads 1 and 3');
    } finally {
      addon!.setThreads(before);
    }
  });

  it('biMatmulKn without the AVX2 tiles (KNOBS_BI_NO_AVX2=1, in a child process): the same bits', () => {
    const script = fileURLToPath(new URL('./harness/bi-matmul-kn-rows.js', import.meta.url));
    const out = execFileSync(process.execPath, [script], {
      env: { ...process.env, KNOBS_BI_NO_AVX2: '1' },
      encoding: 'utf8',
    });
    const plain = JSON.parse(out) as ReturnType<typeof matmulKnRows>;
    assert.equal(plain.mismatches, 0, plain.detail);
    assert.equal(plain.hash, matmulKnRows().hash);
  });

  it('biMatmulKn refuses arrays shorter than the shapes; K = 0 gives zeros', () => {
    const zeros = new Float32Array(6).fill(7);
    addon!.biMatmulKn(new Float32Array(0), 2, 0, new Float32Array(0), 3, zeros);
    assert.deepEqual(zeros, new Float32Array(6));
    const y = new Float32Array(6);
    assert.throws(() => addon!.biMatmulKn(new Float32Array(8), 2, 4, new Float32Array(11), 3, y), /w/);
    assert.throws(() => addon!.biMatmulKn(new Float32Array(7), 2, 4, new Float32Array(12), 3, y), /x/);
    assert.throws(() => addon!.biMatmulKn(new Float32Array(8), 2, 4, new Float32Array(12), 3, y.subarray(1)), /y/);
  });
});

describe('continuous batching of GPT-2', { skip }, () => {
  let dir = '';
  let model: k.GPT;
  let adapters: AdapterSet;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'knobs-batching-gpt-'));
    // Two adapters with random (nonzero) B on GPT-2's Conv1D layers, saved as PEFT directories.
    await saveRandomAdapters(dir, () => new k.GPT(k.gptConfig(CONFIG), { seed: 0 }), [
      ['a', 11, ['c_attn']],
      ['b', 12, ['attn.c_proj', 'c_fc', 'mlp.c_proj']],
      ['d', 13, ['c_attn', 'mlp.c_proj'], true], // DoRA, on biased Conv1D layers
      // trained copies of every bias, two norms, the position embedding and c_attn beside its deltas
      ['s', 14, ['c_fc'], false, { modules_to_save: ['ln_f', 'h.0.ln_1', 'wpe', 'c_attn'], bias: 'all' }],
    ]);
    model = new k.GPT(k.gptConfig(CONFIG), { seed: 0 });
    model.eval();
    adapters = new AdapterSet(model);
    await adapters.load('a', join(dir, 'a'));
    await adapters.load('b', join(dir, 'b'));
    await adapters.load('d', join(dir, 'd'));
    await adapters.load('s', join(dir, 's'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const engineOf = (m: k.GPT, prefillChunk = 7): BatchEngine =>
    new BatchEngine(new BatchedGpt(m, addon!), { kvCacheBytes: 2 ** 20, prefillChunk, adapters });

  /** The sixteen requests, on the base and the adapters a, b, d (DoRA) and s (copies) in turn (or the base only). */
  const sixteen = (withAdapters = true): SequenceRequest[] =>
    sixteenRequests(CONFIG.vocab_size, withAdapters ? [null, 'a', 'b', 'd', 's'] : [null]);

  /** The last row of model.forward(ids): the unbatched reference. */
  function referenceLogits(m: k.GPT, ids: readonly number[]): Float32Array {
    const logits = k.noGrad(() => m.forward(k.fromArray(ids, [1, ids.length], { dtype: 'i32' })));
    const V = CONFIG.vocab_size;
    return (logits.contiguousStorage() as Float32Array).slice((ids.length - 1) * V, ids.length * V);
  }

  async function stepLogits(engine: BatchEngine, prompt: number[], adapter: string | null) {
    const got: Float32Array[] = [];
    const { tokens } = await engine.submit({
      prompt,
      maxTokens: 6,
      sampling: { greedy: true },
      seed: 0,
      eos: new Set(),
      adapter,
      onToken: (_, logits) => void got.push(logits.slice()),
    });
    return { tokens, got };
  }

  it('matches the model forward (base, adapters on c_attn, c_proj, c_fc, a DoRA adapter, trained copies) step after step', async () => {
    const engine = engineOf(model);
    const prompt = [1, 5, 9, 33, 20, 7, 64, 3, 3, 12, 40];
    for (const name of [null, 'a', 'b', 'd', 's'] as const) {
      const { tokens, got } = await stepLogits(engine, prompt, name);
      await adapters.use(name, () => {
        tokens.forEach((_, i) => {
          const ref = referenceLogits(model, [...prompt, ...tokens.slice(0, i)]);
          assert.ok(maxRelDiff(got[i]!, ref) < 1e-4, `adapter ${name}, step ${i}: ${maxRelDiff(got[i]!, ref)}`);
        });
      });
    }
  });

  it('16 concurrent requests give the tokens and logits each gives alone, at 1 and 2 threads', async () => {
    const before = addon!.setThreads(1);
    try {
      const runs: Trace[][] = [];
      for (const threads of [1, 2]) {
        addon!.setThreads(threads);
        const engine = engineOf(model);
        const together = await Promise.all(sixteen().map((r) => traced(engine, r)));
        assert.ok(engine.stats.steps < together.reduce((n, t) => n + t.tokens.length, 0), 'requests shared steps');
        for (const [i, r] of sixteen().entries())
          assert.deepEqual(await traced(engineOf(model), r), together[i], `threads ${threads}, request ${i}`);
        assert.equal(engine.kv.usedBlocks, 0, 'every block came back');
        runs.push(together);
      }
      assert.deepEqual(runs[1], runs[0], 'threads 1 and 2 agree');
      const sampled = runs[0]!.filter((_, i) => i % 2 === 1);
      assert.ok(new Set(sampled.map((t) => t.tokens.join())).size > 1, 'the requests really differ');
    } finally {
      addon!.setThreads(before);
    }
  });

  it('q8_0 weights: batched equals alone and follows the quantized model, with and without a DoRA adapter', async () => {
    const q = new k.GPT(k.gptConfig(CONFIG), { seed: 0 });
    q.eval();
    assert.ok(quantizeModel(q, 'q8_0').quantized.length > 0);
    const engine = new BatchEngine(new BatchedGpt(q, addon!), { kvCacheBytes: 2 ** 20, prefillChunk: 5 });
    const reqs = sixteen(false).slice(0, 8);
    const together = await Promise.all(reqs.map((r) => traced(engine, r)));
    for (const [i, r] of reqs.entries()) assert.deepEqual(await traced(engine, r), together[i]);
    const prompt = [4, 8, 15, 16, 23, 42];
    // and with the DoRA adapter on the quantized base (its norm taken over the dequantized weight)
    const qAdapters = new AdapterSet(q);
    await qAdapters.load('d', join(dir, 'd'), { allowBaseMismatch: true }); // made on the f32 twin
    const withDora = new BatchEngine(new BatchedGpt(q, addon!), { kvCacheBytes: 2 ** 20, adapters: qAdapters });
    for (const [e, name] of [
      [engine, null],
      [withDora, 'd'],
    ] as const) {
      const { tokens, got } = await stepLogits(e, prompt, name);
      await qAdapters.use(name, () => {
        tokens.forEach((_, i) => {
          const ref = referenceLogits(q, [...prompt, ...tokens.slice(0, i)]);
          assert.ok(maxRelDiff(got[i]!, ref) < 1e-4, `${name}, step ${i}: ${maxRelDiff(got[i]!, ref)}`);
        });
      });
    }
  });

  it('an f16 KV cache: batched equals alone, near the f32 cache', async () => {
    const f16 = (): BatchEngine =>
      new BatchEngine(new BatchedGpt(model, addon!), { kvCacheBytes: 2 ** 20, kvCacheDtype: 'f16', adapters });
    const reqs = sixteen().slice(0, 6);
    const engine = f16();
    const together = await Promise.all(reqs.map((r) => traced(engine, r)));
    for (const [i, r] of reqs.entries()) assert.deepEqual(await traced(f16(), r), together[i], `request ${i}`);
    const prompt = [1, 5, 9, 33, 20, 7];
    const [a, b] = [(await stepLogits(f16(), prompt, 'a')).got, (await stepLogits(engineOf(model), prompt, 'a')).got];
    assert.notDeepEqual(a[0], b[0], 'the f16 cache is really used');
    a.forEach((x, i) => assert.ok(maxRelDiff(x, b[i]!) < 1e-3, `step ${i}: ${maxRelDiff(x, b[i]!)}`));
  });

  it("Hugging Face GPT-2 directories (f32, f16 shards): PyTorch's greedy tokens and logits", async () => {
    for (const name of ['gpt2-tiny', 'gpt2-prefix-f16-shards']) {
      const fixture = join(repoRoot(), 'test', 'fixtures', 'hf', name);
      const expected = JSON.parse(await readFile(join(fixture, 'expected.json'), 'utf8')) as {
        prompt: number[];
        greedy: number[];
        logits: number[][];
      };
      const gpt = (await loadHfModel(fixture)).model as k.GPT;
      const engine = new BatchEngine(new BatchedGpt(gpt, addon!), { kvCacheBytes: 2 ** 20, prefillChunk: 4 });
      const got: Float32Array[] = [];
      const { tokens } = await engine.submit({
        prompt: expected.prompt,
        maxTokens: expected.greedy.length,
        sampling: { greedy: true },
        seed: 0,
        eos: new Set(),
        adapter: null,
        onToken: (_, logits) => void got.push(logits.slice()),
      });
      assert.deepEqual(tokens, expected.greedy, name);
      got.forEach((row, i) => {
        const torch = Float32Array.from(expected.logits[expected.prompt.length - 1 + i]!);
        assert.ok(maxRelDiff(row, torch) < 1e-4, `${name} step ${i}: ${maxRelDiff(row, torch)}`);
      });
    }
  });

  it('a prompt past n_positions is refused at admission', () => {
    const engine = engineOf(model);
    const req = { prompt: [1], maxTokens: CONFIG.n_positions + 1, sampling: { greedy: true }, seed: 0 };
    assert.throws(
      () => engine.submit({ ...req, eos: new Set(), adapter: null }),
      (e: unknown) => e instanceof k.ArgumentError && /exceed the context of 96/.test(e.message),
    );
  });
});
