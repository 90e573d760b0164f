/**
 * Llama decode, tokens/s: batch 1, greedy, 128 new tokens after a 64-token prompt, at width 768,
 * intermediate 2048, 12 layers, 12/4 heads, a 259-token byte vocabulary, untied head (75.9M
 * parameters). Decode tokens/s = 127 / (time from the first new token to the last), so the
 * prompt's forward pass is not in it.
 *
 * Rows (each peer measured in the same run, rounds interleaved):
 *   llama_decode_f32   vs PyTorch eager (bench/llama_decode_torch.py: KV cache, f32, inference_mode)
 *   llama_decode_f32   vs llama.cpp (node-llama-cpp 3.21.1) on the same weights as an F32 GGUF, F32 KV cache
 *   llama_decode_q8_0  vs llama.cpp on the same Q8_0 GGUF (knobs quantizes exactly as ggml, so the blocks are equal)
 *   llama_decode_q4_0  vs llama.cpp on the same Q4_0 GGUF
 * Both sides use the bench's core count as threads (1, pinned to core 0; or every core). The
 * GGUF files come from bench/llama-gguf.ts (a stand-in for `knobs convert`) in a temporary directory.
 *
 * A named group (`npm run bench -- llama-decode`): it takes several minutes, outside the default suite.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k from '../src/index.js';
import { loadNativeAddon, loadNativeBackend, nativeLoadError } from '../src/backends/native/index.js';
import type { GgufWriteType } from '../src/formats/gguf-write.js';
import { writeLlamaGguf } from './llama-gguf.js';
import { PeerMissingError, TorchPeer, pinnedToCore0 } from './peer.js';
import { type BenchOptions, type BenchRow, makeRow, median } from './row.js';

const PROMPT = 64;
const TOKENS = 128;
const ROUNDS = 3;
const LLAMA_CPP = 'node-llama-cpp 3.21.1';

export const DECODE_CONFIG = {
  vocab_size: 259,
  hidden_size: 768,
  intermediate_size: 2048,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  num_key_value_heads: 4,
  max_position_embeddings: 256, // llama.cpp rounds its context up to 256; the same on both sides
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  tie_word_embeddings: false,
  bos_token_id: 1,
  eos_token_id: null,
};

const prompt = Array.from({ length: PROMPT }, (_, i) => (i * 37 + 11) % DECODE_CONFIG.vocab_size);

/**
 * The bench's model (seed 0). Its text must not end before 128 tokens on either side: the head's
 * row for </s> (id 2) is zero, so that logit is 0, never the largest of 259 random logits.
 */
function makeModel(): k.Llama {
  const model = new k.Llama(DECODE_CONFIG, { seed: 0 });
  const C = DECODE_CONFIG.hidden_size;
  (model.lm_head!.weight.storage as Float32Array).fill(0, 2 * C, 3 * C); // [V, C], contiguous from 0
  return model;
}

/** One greedy generate on knobs: decode tokens/s (and the tokens, to compare with llama.cpp's). */
function knobsDecode(model: k.Llama, tokens?: number[]): number {
  let first = 0;
  let last = 0;
  const out = model.generate(prompt, {
    greedy: true,
    maxNewTokens: TOKENS,
    eosTokenId: null,
    onToken: () => {
      last = performance.now();
      if (first === 0) first = last;
    },
  });
  tokens?.push(...out.tokens);
  return (TOKENS - 1) / ((last - first) / 1000);
}

type LlamaCpp = typeof import('node-llama-cpp');
interface CppModel {
  decode(tokens?: number[]): Promise<number>;
  dispose(): Promise<void>;
}

/** A GGUF in llama.cpp with `threads` threads; decode() runs one greedy generate and gives tokens/s. */
async function loadCpp(
  cpp: LlamaCpp,
  llama: Awaited<ReturnType<LlamaCpp['getLlama']>>,
  path: string,
  threads: number,
): Promise<CppModel> {
  const model = await llama.loadModel({ modelPath: path });
  const context = await model.createContext({
    contextSize: DECODE_CONFIG.max_position_embeddings,
    threads,
    flashAttention: false,
    experimentalKvCacheKeyType: 'F32',
    experimentalKvCacheValueType: 'F32',
  });
  const sequence = context.getSequence();
  void cpp;
  return {
    async decode(tokens?: number[]) {
      await sequence.clearHistory();
      let n = 0;
      let first = 0;
      let last = 0;
      for await (const token of sequence.evaluate(
        prompt.map((t) => t as unknown as import('node-llama-cpp').Token),
        { temperature: 0 },
      )) {
        tokens?.push(token);
        last = performance.now();
        if (first === 0) first = last;
        if (++n === TOKENS) break;
      }
      if (n !== TOKENS) throw new Error(`llama.cpp stopped after ${n} tokens (expected ${TOKENS})`);
      return (TOKENS - 1) / ((last - first) / 1000);
    },
    async dispose() {
      await context.dispose();
      await model.dispose();
    },
  };
}

export async function run(opts: BenchOptions): Promise<BenchRow[]> {
  const backend = loadNativeBackend();
  const addon = loadNativeAddon();
  if (!backend || !addon) throw new Error(`llama-decode bench needs the native backend: ${nativeLoadError()}`);
  if (!k.backends().includes('native')) k.registerBackend(backend);
  let cpp: LlamaCpp;
  try {
    cpp = await import('node-llama-cpp');
  } catch (e) {
    throw new PeerMissingError(`node-llama-cpp is not installed (${(e as Error).message})`, '');
  }
  const threads = opts.cores === 1 ? 1 : cpus().length;
  const dir = await mkdtemp(join(tmpdir(), 'knobs-bench-decode-'));
  const body = async (): Promise<BenchRow[]> => {
    const threadsBefore = addon.info().threads;
    const peer = await TorchPeer.start(opts.cores);
    const cppModels: CppModel[] = [];
    try {
      return await k.withBackend('native', async () => {
        addon.setThreads(threads);
        const f32 = makeModel();
        const types: [GgufWriteType, 'q8_0' | 'q4_0' | null][] = [
          ['F32', null],
          ['Q8_0', 'q8_0'],
          ['Q4_0', 'q4_0'],
        ];
        const llama = await cpp.getLlama({ gpu: false, build: 'never', logLevel: cpp.LlamaLogLevel.error });
        const sides: { name: string; knobs: k.Llama; cpp: CppModel }[] = [];
        for (const [fileType, quant] of types) {
          const path = join(dir, `llama-${fileType}.gguf`);
          await writeLlamaGguf(f32, fileType, path);
          const model = quant ? makeModel() : f32;
          if (quant) k.quantizeModel(model, quant);
          const c = await loadCpp(cpp, llama, path, threads);
          cppModels.push(c);
          sides.push({ name: fileType.toLowerCase(), knobs: model, cpp: c });
        }
        const torchRequest = { op: 'llama_decode', config: DECODE_CONFIG, prompt: PROMPT, tokens: TOKENS };
        const torchDecode = async (): Promise<number> => {
          const r = await peer.request<{ decode_s: number }>(torchRequest);
          return (TOKENS - 1) / r.decode_s;
        };
        // Warm-up: every side once (JIT, page faults, the peer builds its model). The greedy
        // tokens of both sides are compared: a check on the GGUF stand-in, not a test (see docs/gguf.md).
        for (const s of sides) {
          const mine: number[] = [];
          const theirs: number[] = [];
          knobsDecode(s.knobs, mine);
          await s.cpp.decode(theirs);
          const agree = mine.findIndex((t, i) => t !== theirs[i]);
          process.stderr.write(
            `llama-decode ${s.name}: knobs and llama.cpp greedy tokens ${agree < 0 ? 'agree' : `differ from position ${agree}`}\n`,
          );
        }
        await torchDecode();
        const knobsRates = new Map<string, number[]>(sides.map((s) => [s.name, []]));
        const cppRates = new Map<string, number[]>(sides.map((s) => [s.name, []]));
        const torchRates: number[] = [];
        for (let r = 0; r < ROUNDS; r++) {
          for (const s of sides) {
            knobsRates.get(s.name)!.push(knobsDecode(s.knobs));
            cppRates.get(s.name)!.push(await s.cpp.decode());
          }
          torchRates.push(await torchDecode());
        }
        const name = (type: string) => `llama_decode_${type}_c768_f2048_l12_h12_kv4_v259_p${PROMPT}_n${TOKENS}_b1`;
        const rows = [
          makeRow(
            name('f32'),
            opts.cores,
            'tokens/s',
            median(knobsRates.get('f32')!),
            peer.version,
            median(torchRates),
            true,
            1,
          ),
        ];
        for (const s of sides) {
          rows.push(
            makeRow(
              name(s.name),
              opts.cores,
              'tokens/s',
              median(knobsRates.get(s.name)!),
              LLAMA_CPP,
              median(cppRates.get(s.name)!),
              true,
              0.8,
            ),
          );
        }
        return rows;
      });
    } finally {
      for (const c of cppModels) await c.dispose();
      addon.setThreads(threadsBefore);
      peer.close();
      await rm(dir, { recursive: true, force: true });
    }
  };
  return opts.cores === 1 ? pinnedToCore0(body) : body();
}
