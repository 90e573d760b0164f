/**
 * What taking KV blocks on demand buys (not a bench row: knobs' engine on a tight budget). The bench's
 * ~76M Llama (q8_0; or f32, q4_0), 32 requests of a PROMPT-token prompt each allowed MAX new tokens, on a 64-block
 * cache (24 MiB of f32): reserved whole, a request of the defaults (16 + 240) needs 16 blocks, so at
 * most four would run at once. Two workloads: answers that stop after STOP tokens (as a stop string
 * or an end of text would end them), and answers that all run to their limit. Wall time, tokens/s,
 * the median time to a first token, the most requests running at once and the preemptions.
 *
 *   node --single-threaded-gc dist/bench/kv-on-demand.js [threads] [PROMPT] [MAX] [STOP] [q8_0|f32|q4_0]
 */
import * as k from '../src/index.js';
import { loadNativeAddon, nativeLoadError } from '../src/backends/native/index.js';
import { BatchedLlama } from '../src/serve/batched-llama.js';
import { BatchEngine } from '../src/serve/engine.js';
import { PagedKvCache } from '../src/serve/paged-kv.js';
import { DECODE_CONFIG } from './llama-decode.js';

const [threadsArg = '2', promptArg = '16', maxArg = '240', stopArg = '64', type = 'q8_0'] = process.argv.slice(2);
const addon = loadNativeAddon();
if (!addon) throw new Error(`kv-on-demand needs the native addon: ${nativeLoadError()}`);
addon.setThreads(Number(threadsArg));
const model = new k.Llama(DECODE_CONFIG, { seed: 0 });
if (type !== 'f32') k.quantizeModel(model, type as 'q8_0' | 'q4_0');
const V = DECODE_CONFIG.vocab_size;
const [REQUESTS, BLOCKS] = [32, 64];
const [PROMPT, MAX_TOKENS, STOP] = [Number(promptArg), Number(maxArg), Number(stopArg)];

for (const stopAfter of [STOP, MAX_TOKENS]) {
  const batched = new BatchedLlama(model, addon);
  const engine = new BatchEngine(batched, { kvCacheBytes: BLOCKS * PagedKvCache.blockBytes(batched.shape) });
  const start = performance.now();
  const first: number[] = [];
  let peak = 0;
  let tokens = 0;
  await Promise.all(
    Array.from({ length: REQUESTS }, (_, c) => {
      let n = 0;
      return engine.submit({
        prompt: Array.from({ length: PROMPT }, (_, i) => (i * 37 + c * 11 + 5) % V),
        maxTokens: MAX_TOKENS,
        sampling: { greedy: true },
        seed: 0,
        eos: new Set(),
        adapter: null,
        onToken: () => {
          first[c] ??= performance.now() - start;
          peak = Math.max(peak, engine.stats.running);
          tokens++;
          return ++n < stopAfter;
        },
      });
    }),
  );
  const ms = performance.now() - start;
  first.sort((a, b) => a - b);
  console.log(
    `stop after ${stopAfter}: ${ms.toFixed(0)} ms for ${tokens} tokens (${(tokens / (ms / 1000)).toFixed(1)} tokens/s), first token p50 ${first[REQUESTS / 2]!.toFixed(0)} ms, at most ${peak} running, ${engine.stats.preemptions} preemptions`,
  );
}
