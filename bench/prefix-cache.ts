/**
 * What prefix caching buys (not a bench row: an on/off comparison of knobs' own engine). The bench's
 * ~76M Llama (q8_0), a 192-token system prompt that 16 requests share, each with 16 tokens of its own
 * and 32 greedy new tokens: wall time, tokens/s and the median time to a request's first token, with
 * the prefix cache off, on with the 16 arriving at once on a new system prompt (one of them computes
 * it, the others wait for its blocks), and on after one request has read it; twice in turn.
 *
 *   node --single-threaded-gc dist/bench/prefix-cache.js [threads]
 */
import * as k from '../src/index.js';
import { loadNativeAddon, nativeLoadError } from '../src/backends/native/index.js';
import { BatchedLlama } from '../src/serve/batched-llama.js';
import { BatchEngine, type SequenceRequest } from '../src/serve/engine.js';
import { DECODE_CONFIG } from './llama-decode.js';

const [threadsArg = '2'] = process.argv.slice(2);
const addon = loadNativeAddon();
if (!addon) throw new Error(`prefix-cache needs the native addon: ${nativeLoadError()}`);
addon.setThreads(Number(threadsArg));
const model = new k.Llama(DECODE_CONFIG, { seed: 0 });
k.quantizeModel(model, 'q8_0');
const V = DECODE_CONFIG.vocab_size;
const system = Array.from({ length: 192 }, (_, i) => (i * 37 + 11) % V);
const request = (c: number): SequenceRequest => ({
  prompt: [...system, ...Array.from({ length: 16 }, (_, i) => (i * 5 + c * 3) % V)],
  maxTokens: 32,
  sampling: { greedy: true },
  seed: 0,
  eos: new Set(),
  adapter: null,
});

const modes = [
  { name: 'off', prefixCache: false, primed: false },
  { name: 'on, burst', prefixCache: true, primed: false },
  { name: 'on, primed', prefixCache: true, primed: true },
];
for (let round = 1; round <= 2; round++)
  for (const { name, prefixCache, primed } of modes) {
    const engine = new BatchEngine(new BatchedLlama(model, addon), { kvCacheBytes: 1024 * 2 ** 20, prefixCache });
    if (primed) await engine.submit(request(99)); // the system prompt read once
    const start = performance.now();
    const first: number[] = [];
    await Promise.all(
      Array.from({ length: 16 }, (_, c) =>
        engine.submit({ ...request(c), onToken: () => void (first[c] ??= performance.now() - start) }),
      ),
    );
    const ms = performance.now() - start;
    first.sort((a, b) => a - b);
    console.log(
      `round ${round}, prefix cache ${name}: ${ms.toFixed(0)} ms for 16 × 32 tokens (${((16 * 32) / (ms / 1000)).toFixed(1)} tokens/s), first token p50 ${first[8]!.toFixed(0)} ms, ${engine.stats.reusedPromptTokens} prompt tokens reused`,
    );
  }
