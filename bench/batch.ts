/**
 * Continuous batching (`npm run bench -- batch`, a named group): the ~76M Llama of llama-decode
 * (DECODE_CONFIG), f32 and q8_0, N clients each sending a 64-token prompt and taking 128 greedy
 * tokens, N = 1, 4, 16, 64. Rows (each peer measured in the same run):
 *
 *   batch_{type}_c{N}_tokens   aggregate tokens/s (all tokens / wall time, prefill included), knobs'
 *                              engine in process vs llama.cpp (node-llama-cpp 3.21.1) with
 *                              createContext({sequences: N}) decoding N sequences at once, same GGUF;
 *                              knobs' figure (and its latencies) is the median of REPEAT runs (default
 *                              3), the client counts taking turns so that a slow minute of a shared
 *                              machine falls on all of them, not on one side of the scaling ratio
 *   batch_{type}_c{N}_p50/p99  per-token latency (gaps between a sequence's tokens), same peer
 *   batch_{type}_c{N}_http     aggregate tokens/s over HTTP (streaming completions on loopback) vs the
 *                              engine in process: what the server keeps
 *   batch_{type}_scaling_c{N}  16 (target ≥ 4) and 64 clients' tokens/s vs one client's
 *   bi_matmul_m{M}_k768_n2048  the batch-invariant f32 matmul vs oneDNN's sgemm on a decode shape
 *
 * KNOBS_BENCH_BATCH_MODELS=llama,gpt2 adds the same rows for a GPT-2 of GPT-2 small's blocks (768 wide,
 * 12 layers, 12 heads; ~85M parameters) on kjv-gpt's byte vocabulary, named batch_gpt2_{type}_…: knobs'
 * BatchedGpt against llama.cpp's gpt2 graph on the GGUF `knobs convert` writes.
 * KNOBS_BENCH_BATCH_TOKENS, _PROMPT, _CLIENTS, _TYPES (comma lists: 1,4,16,64 and f32,q8_0) and _REPEAT
 * shorten it while iterating. KNOBS_BENCH_BATCH_KV=f16 runs both sides on an f16 KV cache (llama.cpp's
 * default cache type; knobs' --kv-cache-dtype f16) instead of f32, its rows named batch_{type}_kvf16_….
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k from '../src/index.js';
import { loadNativeAddon, loadNativeBackend, nativeLoadError } from '../src/backends/native/index.js';
import type { OpenedLanguageModel } from '../src/load/language-model.js';
import { chatTemplateOf } from '../src/server/chat-template.js';
import { NO_CHAT_TEMPLATE } from '../src/load/chat-template-source.js';
import { SERVER_DEFAULTS, createApiServer } from '../src/server/server.js';
import { BatchGenerator } from '../src/serve/batch-generator.js';
import type { BatchedModel } from '../src/serve/batched-decoder.js';
import { BatchedGpt } from '../src/serve/batched-gpt.js';
import { BatchedLlama } from '../src/serve/batched-llama.js';
import { BatchEngine } from '../src/serve/engine.js';
import { KV_CACHE_DTYPES, type KvCacheDtype } from '../src/serve/paged-kv.js';
import { saveSafetensors } from '../src/formats/safetensors.js';
import { convertModel } from '../src/load/convert.js';
import { byteLevelTokenizerJson } from '../src/tokenizer/export.js';
import { DECODE_CONFIG } from './llama-decode.js';
import { writeLlamaGguf } from './llama-gguf.js';
import { PeerMissingError } from './peer.js';
import { type BenchOptions, type BenchRow, makeRow, median } from './row.js';
import { percentile } from './serve-load.js';

const env = (name: string, fallback: string): string => process.env[`KNOBS_BENCH_BATCH_${name}`] ?? fallback;
const PROMPT = Number(env('PROMPT', '64'));
const TOKENS = Number(env('TOKENS', '128'));
const CLIENTS = env('CLIENTS', '1,4,16,64').split(',').map(Number);
const TYPES = env('TYPES', 'f32,q8_0').split(',');
const REPEAT = Number(env('REPEAT', '3'));
const KV = env('KV', 'f32') as KvCacheDtype;
const MODELS = env('MODELS', 'llama').split(',');
const LLAMA_CPP = 'node-llama-cpp 3.21.1 (llama.cpp, sequences: N)';

/** Timestamps (ms) of each client's tokens. */
type Trace = number[][];

interface Load {
  tokensPerSecond: number;
  gapsMs: number[];
}

/** The run with the median tokens/s (its latencies come with it). */
function medianLoad(runs: readonly Load[]): Load {
  return [...runs].sort((a, b) => a.tokensPerSecond - b.tokensPerSecond)[(runs.length - 1) >> 1]!;
}

function loadOf(traces: Trace, start: number): Load {
  const end = Math.max(...traces.map((t) => t[t.length - 1] ?? start));
  const tokens = traces.reduce((n, t) => n + t.length, 0);
  const gapsMs = traces.flatMap((t) => t.slice(1).map((at, i) => at - t[i]!));
  return { tokensPerSecond: tokens / ((end - start) / 1000), gapsMs };
}

/** A model the bench serves: knobs' copy in memory, and the same weights as a GGUF for llama.cpp. */
interface BenchModel {
  name: 'llama' | 'gpt2';
  vocab: number;
  /** Positions of llama.cpp's context (it rounds up to 256; knobs' model holds as many). */
  context: number;
  make(): k.Llama | k.GPT;
  batched(model: k.Llama | k.GPT, addon: NonNullable<ReturnType<typeof loadNativeAddon>>): BatchedModel;
  /** Writes the (not yet quantized) model as a GGUF of `fileType` at `path`, using `dir` for scratch. */
  writeGguf(model: k.Llama | k.GPT, fileType: 'F32' | 'Q8_0', path: string, dir: string): Promise<void>;
}

export const GPT2_CONFIG = { vocab_size: 256, n_positions: 256, n_embd: 768, n_layer: 12, n_head: 12, dropout: 0 };

const BENCH_MODELS: readonly BenchModel[] = [
  {
    name: 'llama',
    vocab: DECODE_CONFIG.vocab_size,
    context: DECODE_CONFIG.max_position_embeddings,
    make: () => {
      const model = new k.Llama(DECODE_CONFIG, { seed: 0 });
      const C = DECODE_CONFIG.hidden_size;
      (model.lm_head!.weight.storage as Float32Array).fill(0, 2 * C, 3 * C); // no </s>, as llama-decode
      return model;
    },
    batched: (model, addon) => new BatchedLlama(model as k.Llama, addon),
    writeGguf: (model, fileType, path) => writeLlamaGguf(model as k.Llama, fileType, path),
  },
  {
    name: 'gpt2',
    vocab: GPT2_CONFIG.vocab_size,
    context: GPT2_CONFIG.n_positions,
    make: () => {
      const model = new k.GPT(k.gptConfig(GPT2_CONFIG), { seed: 0 });
      // Without an eos in the file llama.cpp takes token 11 as gpt2's end of text and stops there: its
      // row of the tied head is zeroed so that greedy decoding never picks it (on both sides)
      const C = GPT2_CONFIG.n_embd;
      (model.wte.weight.storage as Float32Array).fill(0, 11 * C, 12 * C);
      return model;
    },
    batched: (model, addon) => new BatchedGpt(model as k.GPT, addon),
    writeGguf: async (model, fileType, path, dir) => {
      const hf = join(dir, `gpt2-${fileType}`);
      await mkdir(hf, { recursive: true });
      await writeFile(join(hf, 'config.json'), JSON.stringify((model as k.GPT).toHFConfig()));
      await saveSafetensors(join(hf, 'model.safetensors'), model.stateDict());
      await writeFile(join(hf, 'tokenizer.json'), JSON.stringify(byteLevelTokenizerJson()));
      await convertModel({ input: hf, format: 'gguf', dtype: fileType === 'F32' ? 'f32' : 'q8_0', out: path });
      await rm(hf, { recursive: true, force: true });
    },
  },
];

let promptCalls = 0;
/**
 * n prompts of `length` tokens, new ones on every call. The engine keeps a finished request's blocks
 * in its prefix cache, so a prompt seen in an earlier run (the warm-up, the round before) would skip
 * most of its prefill, where llama.cpp's fresh context per run computes all of it: measured that way,
 * one client ran warm on every run while 16 ran cold on the first. Each prompt is its own 32-bit LCG
 * stream, seeded by the call and the client, so in practice no two share a first block of the cache.
 */
export function freshPrompts(n: number, vocab: number, length = PROMPT): number[][] {
  const call = ++promptCalls;
  return Array.from({ length: n }, (_, c) => {
    let s = (Math.imul(call, 0x9e3779b1) ^ Math.imul(c + 1, 0x85ebca6b)) >>> 0;
    return Array.from({ length }, () => {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      return (s >>> 8) % vocab;
    });
  });
}

async function engineLoad(engine: BatchEngine, clients: number): Promise<Load> {
  const traces: Trace = Array.from({ length: clients }, () => []);
  const start = performance.now();
  await Promise.all(
    freshPrompts(clients, engine.model.vocabSize).map((prompt, c) =>
      engine.submit({
        prompt,
        maxTokens: TOKENS,
        sampling: { greedy: true },
        seed: 0,
        eos: new Set(),
        adapter: null,
        onToken: () => void traces[c]!.push(performance.now()),
      }),
    ),
  );
  return loadOf(traces, start);
}

/** Streaming completions; every token is one SSE event (logprobs: 0 makes even a partial character an event). */
async function httpLoad(url: string, clients: number, vocab: number): Promise<Load> {
  const traces: Trace = Array.from({ length: clients }, () => []);
  const start = performance.now();
  await Promise.all(
    freshPrompts(clients, vocab).map(
      (prompt, c) =>
        new Promise<void>((done, fail) => {
          const req = request(`${url}/v1/completions`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
          });
          req.on('response', (res) => {
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => {
              const now = performance.now();
              for (const _ of chunk.matchAll(/data: \{"id"/g)) traces[c]!.push(now);
            });
            res.on('end', done);
          });
          req.on('error', fail);
          req.end(
            JSON.stringify({
              model: 'bench',
              prompt,
              max_tokens: TOKENS,
              temperature: 0,
              logprobs: 0,
              stream: true,
            }),
          );
        }),
    ),
  );
  return loadOf(traces, start);
}

type LlamaCpp = typeof import('node-llama-cpp');

async function cppLoad(
  model: import('node-llama-cpp').LlamaModel,
  bench: BenchModel,
  clients: number,
  threads: number,
): Promise<Load> {
  const context = await model.createContext({
    contextSize: bench.context,
    sequences: clients,
    threads,
    flashAttention: false,
    experimentalKvCacheKeyType: KV === 'f16' ? 'F16' : 'F32',
    experimentalKvCacheValueType: KV === 'f16' ? 'F16' : 'F32',
  });
  try {
    const traces: Trace = Array.from({ length: clients }, () => []);
    const sequences = Array.from({ length: clients }, () => context.getSequence());
    const start = performance.now();
    await Promise.all(
      freshPrompts(clients, bench.vocab).map(async (prompt, c) => {
        let n = 0;
        for await (const _ of sequences[c]!.evaluate(prompt as unknown as import('node-llama-cpp').Token[], {
          temperature: 0,
        })) {
          traces[c]!.push(performance.now());
          if (++n === TOKENS) break;
        }
      }),
    );
    const short = traces.findIndex((t) => t.length !== TOKENS);
    if (short >= 0)
      throw new Error(`llama.cpp's sequence ${short} ended after ${traces[short]!.length} of ${TOKENS} tokens`);
    return loadOf(traces, start);
  } finally {
    await context.dispose();
  }
}

function kernelRows(addon: NonNullable<ReturnType<typeof loadNativeAddon>>, cores: 1 | 'all'): BenchRow[] {
  const [K, N] = [768, 2048];
  const w = Float32Array.from({ length: N * K }, (_, i) => Math.sin(i) * 0.05);
  const rows: BenchRow[] = [];
  for (const M of [1, 16, 64]) {
    const x = Float32Array.from({ length: M * K }, (_, i) => Math.cos(i));
    const y = new Float32Array(M * N);
    const time = (fn: () => void): number => {
      const reps = Math.max(3, Math.round(200 / M));
      fn();
      const t0 = performance.now();
      for (let r = 0; r < reps; r++) fn();
      return (2 * M * N * K * reps) / ((performance.now() - t0) / 1000) / 1e9;
    };
    const mine: number[] = [];
    const theirs: number[] = [];
    for (let r = 0; r < 5; r++) {
      mine.push(time(() => addon.biMatmul(x, M, K, w, N, y)));
      theirs.push(time(() => addon.sgemm(0, 1, M, N, K, x, w, y)));
    }
    rows.push(
      makeRow(`bi_matmul_m${M}_k${K}_n${N}`, cores, 'GFLOP/s', median(mine), 'oneDNN sgemm', median(theirs), true),
    );
  }
  return rows;
}

export async function run(opts: BenchOptions): Promise<BenchRow[]> {
  if (!Number.isInteger(REPEAT) || REPEAT < 1)
    throw new Error(`KNOBS_BENCH_BATCH_REPEAT must be a positive integer, got ${env('REPEAT', '3')}`);
  if (!KV_CACHE_DTYPES.includes(KV))
    throw new Error(`KNOBS_BENCH_BATCH_KV is one of ${KV_CACHE_DTYPES.join(', ')}, got ${KV}`);
  const unknown = MODELS.filter((m) => !BENCH_MODELS.some((b) => b.name === m));
  if (unknown.length > 0) throw new Error(`KNOBS_BENCH_BATCH_MODELS lists llama and gpt2, not ${unknown.join(', ')}`);
  const backend = loadNativeBackend();
  const addon = loadNativeAddon();
  if (!backend || !addon) throw new Error(`batch bench needs the native backend: ${nativeLoadError()}`);
  let cpp: LlamaCpp;
  try {
    cpp = await import('node-llama-cpp');
  } catch (e) {
    throw new PeerMissingError(`node-llama-cpp is not installed (${(e as Error).message})`, '');
  }
  const threads = opts.cores === 1 ? 1 : cpus().length;
  const before = addon.info().threads;
  addon.setThreads(threads);
  const dir = await mkdtemp(join(tmpdir(), 'knobs-bench-batch-'));
  const rows: BenchRow[] = kernelRows(addon, opts.cores);
  const llama = await cpp.getLlama({ gpu: false, build: 'never', logLevel: cpp.LlamaLogLevel.error });
  try {
    for (const [bench, fileType, quant] of BENCH_MODELS.flatMap((b) =>
      (
        [
          ['F32', null],
          ['Q8_0', 'q8_0'],
        ] as const
      ).map(([f, q]) => [b, f, q] as const),
    )) {
      if (!TYPES.includes(fileType.toLowerCase()) || !MODELS.includes(bench.name)) continue;
      const model = bench.make();
      const path = join(dir, `${bench.name}-${fileType}.gguf`);
      await bench.writeGguf(model, fileType, path, dir);
      if (quant) k.quantizeModel(model, quant);
      const engine = new BatchEngine(bench.batched(model, addon), {
        kvCacheBytes: 1024 * 2 ** 20,
        kvCacheDtype: KV,
      });
      const opened: OpenedLanguageModel = {
        kind: 'run',
        path: dir,
        model,
        tokenizer: null,
        textOptions: {},
        defaults: { temperature: 1, topK: 0, topP: 1 },
        adapters: [],
        chatTemplate: NO_CHAT_TEMPLATE,
      };
      const api = createApiServer({
        ...SERVER_DEFAULTS,
        maxConcurrency: 64,
        maxQueue: 64,
        keys: null,
        models: [
          {
            id: 'bench',
            created: 0,
            generator: new BatchGenerator(opened, engine),
            chat: chatTemplateOf(opened),
          },
        ],
        log: () => {},
      });
      const url = await api.listen(0, '127.0.0.1');
      const cppModel = await llama.loadModel({ modelPath: path });
      try {
        const type =
          (bench.name === 'llama' ? '' : `${bench.name}_`) + fileType.toLowerCase() + (KV === 'f32' ? '' : `_kv${KV}`);
        await engineLoad(engine, 1); // warm-up
        const runs = new Map<number, Load[]>(CLIENTS.map((c) => [c, []]));
        for (let round = 0; round < REPEAT; round++)
          for (const clients of CLIENTS) runs.get(clients)!.push(await engineLoad(engine, clients));
        const tokens = new Map<number, number>();
        for (const clients of CLIENTS) {
          const mine = medianLoad(runs.get(clients)!);
          const overHttp = await httpLoad(url, clients, bench.vocab);
          const theirs = await cppLoad(cppModel, bench, clients, threads);
          tokens.set(clients, mine.tokensPerSecond);
          const name = `batch_${type}_p${PROMPT}_n${TOKENS}_c${clients}`;
          rows.push(
            makeRow(
              `${name}_tokens`,
              opts.cores,
              'tokens/s',
              mine.tokensPerSecond,
              LLAMA_CPP,
              theirs.tokensPerSecond,
              true,
            ),
            ...[50, 99].map((p) =>
              makeRow(
                `${name}_p${p}`,
                opts.cores,
                `ms/token (p${p})`,
                percentile(mine.gapsMs, p),
                LLAMA_CPP,
                percentile(theirs.gapsMs, p),
                false,
              ),
            ),
            makeRow(
              `${name}_http`,
              opts.cores,
              'tokens/s',
              overHttp.tokensPerSecond,
              'knobs engine in process',
              mine.tokensPerSecond,
              true,
            ),
          );
          const each = runs.get(clients)!.map((r) => r.tokensPerSecond.toFixed(1));
          process.stderr.write(
            `batch ${type} c${clients}: ${mine.tokensPerSecond.toFixed(1)} tok/s, median of ${each.join(', ')} (llama.cpp ${theirs.tokensPerSecond.toFixed(1)}, http ${overHttp.tokensPerSecond.toFixed(1)})\n`,
          );
        }
        for (const clients of [16, 64])
          if (tokens.has(1) && tokens.has(clients))
            rows.push(
              makeRow(
                `batch_${type}_scaling_c${clients}`,
                opts.cores,
                'tokens/s',
                tokens.get(clients)!,
                'knobs, one client',
                tokens.get(1)!,
                true,
                clients === 16 && bench.name === 'llama' ? 4 : null, // the target is on the Llama
              ),
            );
      } finally {
        await api.drain();
        await cppModel.dispose();
      }
    }
  } finally {
    addon.setThreads(before);
    await llama.dispose();
    await rm(dir, { recursive: true, force: true });
  }
  return rows;
}
