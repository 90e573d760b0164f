/**
 * Shared pieces of the continuous-batching tests (test/serve-batching*.test.ts): seeded weights, a
 * relative logit difference, LoRA adapters with random weights, the sixteen mixed requests, and a request's trace (its tokens,
 * finish reason and a hash of every step's logits) to compare runs bit for bit.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import * as k from '../../src/index.js';
import { saveLoraAdapter } from '../../src/finetune/adapter.js';
import { applyLora, parseLoraConfig } from '../../src/finetune/lora.js';
import type { BatchEngine, SequenceRequest } from '../../src/serve/engine.js';

/** The small Llama of the batching tests (GQA: 4 query heads over 2 KV heads of 16). */
export function tinyLlamaConfig(maxPositions = 128) {
  return {
    vocab_size: 96,
    hidden_size: 64,
    intermediate_size: 160,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: maxPositions,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 2,
  } satisfies k.LlamaConfigInput;
}

export function randoms(n: number, seed: number, scale: number): Float32Array {
  const g = new k.Generator(seed);
  return Float32Array.from({ length: n }, () => g.normal() * scale);
}

/** max |a − b| over max |b|. */
export function maxRelDiff(a: Float32Array, b: Float32Array): number {
  let scale = 0;
  let d = 0;
  for (let i = 0; i < a.length; i++) {
    scale = Math.max(scale, Math.abs(b[i]!));
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
  }
  return d / scale;
}

/**
 * Sixteen requests of the issue: prompt lengths 1…46, adapters in turn from `adapters` (null: the
 * base), greedy and seeded sampling, a repetition penalty on every fourth.
 */
export function sixteenRequests(vocab: number, adapters: readonly (string | null)[] = [null]): SequenceRequest[] {
  return Array.from({ length: 16 }, (_, i) => {
    const sampled = i % 2 === 1;
    return {
      prompt: Array.from({ length: 1 + ((i * 13) % 47) }, (_, t) => (t * 7 + i * 3 + 1) % vocab),
      maxTokens: 6 + ((i * 5) % 17),
      sampling: sampled ? { temperature: 0.8 + (i % 3) * 0.2, topP: 0.9 } : { greedy: true },
      seed: 1000 + i,
      eos: new Set([2]),
      adapter: adapters[i % adapters.length]!,
      adjustLogits:
        i % 4 === 3
          ? (logits, produced) => {
              for (const id of produced) logits[id] = logits[id]! - 0.5;
              return logits;
            }
          : undefined,
    };
  });
}

export interface Trace {
  tokens: number[];
  finishReason: string;
  hash: string;
}

export function traced(engine: BatchEngine, req: SequenceRequest): Promise<Trace> {
  const h = createHash('sha256');
  return engine
    .submit({
      ...req,
      onToken: (_, logits) => void h.update(new Uint8Array(logits.buffer, logits.byteOffset, logits.byteLength)),
    })
    .then((r) => ({ tokens: r.tokens, finishReason: r.finishReason, hash: h.digest('hex') }));
}

/** What an adapter trains besides its deltas: PEFT's `modules_to_save` and `bias` (src/finetune/saved-tensors.ts). */
export interface SavedSpec {
  modules_to_save?: string[];
  bias?: 'all' | 'lora_only';
}

/**
 * Saves one PEFT adapter directory `dir/NAME` per spec [name, seed, target_modules, DoRA?, saved?],
 * rank 4, α 8, each made on a fresh twin of the base (`twin()`) with a random, nonzero B (and for
 * DoRA a magnitude scaled by random factors in [0.5, 1.5), so m / ‖W + ΔW‖ is not 1); the copies
 * of `saved` are the base's values scaled by random factors in [0.5, 1.5), plus noise.
 */
export async function saveRandomAdapters(
  dir: string,
  twin: () => k.Module,
  specs: readonly (readonly [string, number, readonly string[], boolean?, SavedSpec?])[],
): Promise<void> {
  for (const [name, seed, targets, dora = false, saved = {}] of specs) {
    const base = twin();
    const config = parseLoraConfig({ r: 4, lora_alpha: 8, target_modules: [...targets], use_dora: dora, ...saved });
    const adapter = applyLora(base, config, { generator: new k.Generator(seed) });
    for (const l of adapter.layers.values()) {
      const b = l.lora_B.weight.storage as Float32Array;
      b.set(randoms(b.length, seed + 100, 0.2));
      if (l.magnitude) {
        const m = l.magnitude.weight.storage as Float32Array;
        const g = new k.Generator(seed + 200);
        for (let i = 0; i < m.length; i++) m[i]! *= 0.5 + g.random();
      }
    }
    const g = new k.Generator(seed + 300);
    for (const copy of adapter.saved) {
      const v = copy.value.storage as Float32Array;
      for (let i = 0; i < v.length; i++) v[i] = v[i]! * (0.5 + g.random()) + 0.05 * g.normal(); // biases start at 0
    }
    await saveLoraAdapter(join(dir, name), base, adapter);
  }
}
