/**
 * Where a batched run's time goes (not a bench row: a breakdown to read next to `batch`'s rows).
 * The bench's model and prompts (prompt 64, 128 new, greedy) through the engine in process, N clients;
 * every forward step is timed and classed as a prefill step (it carries prompt rows: a sequence with
 * more than one row) or a decode step, and within each, every native kernel call, the rest being JS.
 * Times are this process's CPU time, so other jobs on a shared machine distort them less than wall
 * time (at 2 threads it adds both threads', spinning included); KNOBS_PROFILE_WALL=1 gives wall time.
 *
 *   node --single-threaded-gc dist/bench/batch-profile.js [q8_0|f32] [threads] [clients,…] [f32|f16 (the KV cache)]
 *
 * KNOBS_PROFILE_MODEL=gpt2 profiles the bench's GPT-2 (`KNOBS_BENCH_BATCH_MODELS=gpt2`) instead of its Llama.
 */
import * as k from '../src/index.js';
import { loadNativeAddon, type NativeAddon } from '../src/backends/native/index.js';
import type { BatchRow } from '../src/serve/batched-decoder.js';
import { BatchedGpt } from '../src/serve/batched-gpt.js';
import { BatchedLlama } from '../src/serve/batched-llama.js';
import { BatchEngine } from '../src/serve/engine.js';
import type { KvCacheDtype, PagedKvCache } from '../src/serve/paged-kv.js';
import { GPT2_CONFIG, freshPrompts } from './batch.js';
import { DECODE_CONFIG } from './llama-decode.js';

const KERNELS = [
  'biQmatmulPacked',
  'biMatmul',
  'biMatmulKn',
  'biRopeKv',
  'biStoreKv',
  'biPagedAttention',
  'biAddRmsNorm',
  'biRmsNorm',
  'biSwiglu',
  'layerNorm',
  'addLayerNorm',
  'biasActivation',
];
/* KNOBS_PROFILE_WALL=1 times wall clock instead: at 2 threads CPU time counts the pool's spinning, wall
   time shows which kernels the second thread does not speed up (on a quiet machine). */
const wall = process.env.KNOBS_PROFILE_WALL === '1';
const clock = wall ? 'wall' : 'CPU';
const nowMs = (): number => {
  if (wall) return performance.now();
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

interface StepClass {
  steps: number;
  rows: number;
  ms: number;
  kernels: Map<string, number>;
}

const [type = 'q8_0', threadsArg = '1', clientsArg = '1,16', kvArg = 'f32'] = process.argv.slice(2);
const raw = loadNativeAddon();
if (!raw) throw new Error('batch-profile needs the native addon');
raw.setThreads(Number(threadsArg));
let current: Map<string, number> | null = null;
// The addon's functions are read-only properties: the engine gets a copy whose kernels are timed.
const addon = Object.fromEntries(
  Object.entries(raw).map(([name, fn]) => [
    name,
    KERNELS.includes(name)
      ? (...args: unknown[]): unknown => {
          const t = nowMs();
          const r = (fn as (...a: unknown[]) => unknown)(...args);
          current?.set(name, (current.get(name) ?? 0) + nowMs() - t);
          return r;
        }
      : fn,
  ]),
) as unknown as NativeAddon;

const gpt2 = process.env.KNOBS_PROFILE_MODEL === 'gpt2';
const model = gpt2 ? new k.GPT(k.gptConfig(GPT2_CONFIG), { seed: 0 }) : new k.Llama(DECODE_CONFIG, { seed: 0 });
if (type !== 'f32') k.quantizeModel(model, type as 'q8_0');
const batched = model instanceof k.GPT ? new BatchedGpt(model, addon) : new BatchedLlama(model, addon);
const vocab = batched.vocabSize;
const classes = new Map<string, StepClass>();
const forward = batched.forward.bind(batched);
batched.forward = (rows: readonly BatchRow[], kv: PagedKvCache): Float32Array[] => {
  const perTable = new Map<Int32Array, number>();
  for (const r of rows) perTable.set(r.table, (perTable.get(r.table) ?? 0) + 1);
  const kind = [...perTable.values()].some((n) => n > 1) ? 'prefill' : 'decode';
  let c = classes.get(kind);
  if (!c) classes.set(kind, (c = { steps: 0, rows: 0, ms: 0, kernels: new Map() }));
  current = c.kernels;
  const t = nowMs();
  const out = forward(rows, kv);
  c.ms += nowMs() - t;
  c.steps++;
  c.rows += rows.length;
  current = null;
  return out;
};
const engine = new BatchEngine(batched, { kvCacheBytes: 1024 * 2 ** 20, kvCacheDtype: kvArg as KvCacheDtype });

async function run(clients: number): Promise<number> {
  const prompts = freshPrompts(clients, vocab, 64);
  const t = nowMs();
  await Promise.all(
    Array.from({ length: clients }, (_, c) =>
      engine.submit({
        prompt: prompts[c]!,
        maxTokens: 128,
        sampling: { greedy: true },
        seed: 0,
        eos: new Set(),
        adapter: null,
      }),
    ),
  );
  return nowMs() - t;
}

await run(1); // warm-up
for (const clients of clientsArg.split(',').map(Number)) {
  classes.clear();
  const ms = await run(clients);
  console.log(
    `${type}, ${threadsArg} thread(s), ${clients} clients: ${ms.toFixed(0)} ms ${clock}, ${((clients * 128) / (ms / 1000)).toFixed(1)} tokens/${clock}-s`,
  );
  for (const [kind, c] of classes) {
    const inKernels = [...c.kernels.values()].reduce((a, b) => a + b, 0);
    const parts = [...c.kernels, ['JS', c.ms - inKernels] as const]
      .map(([name, t]) => `${name} ${t.toFixed(0)} (${((100 * t) / c.ms).toFixed(0)} %)`)
      .join(', ');
    console.log(
      `  ${kind}: ${c.steps} steps, ${c.rows} rows, ${c.ms.toFixed(0)} ms (${(c.ms / c.steps).toFixed(2)} a step) — ${parts}`,
    );
  }
}
