/**
 * Whether and how an opened model runs on the continuous-batching engine: Llama-family models
 * (Llama, Mistral, Qwen2) and GPT-2 with f32, q8_0 or q4_0 linear weights on the native backend.
 * Anything else is served one sequence at a time by ModelGenerator, and `reason` says why.
 */
import { loadNativeAddon, nativeLoadError } from '../backends/native/index.js';
import type { AdapterSet } from '../finetune/adapter-set.js';
import type { OpenedLanguageModel } from '../load/language-model.js';
import { GPT } from '../models/gpt.js';
import { Llama } from '../models/llama.js';
import { KnobsError } from '../errors.js';
import { BatchedGpt } from './batched-gpt.js';
import { BatchedLlama } from './batched-llama.js';
import { BatchEngine, type KvReserve } from './engine.js';
import type { KvCacheDtype } from './paged-kv.js';

export const DEFAULT_KV_CACHE_MB = 512;

export interface BatchEngineChoice {
  engine: BatchEngine | null;
  /** Why the engine is not used (null when it is). */
  reason: string | null;
}

export function openBatchEngine(
  opened: OpenedLanguageModel,
  opts: {
    kvCacheMb: number;
    kvCacheDtype?: KvCacheDtype;
    prefixCache?: boolean;
    kvReserve?: KvReserve;
    adapters?: AdapterSet;
  },
): BatchEngineChoice {
  const model = opened.model;
  if (!(model instanceof Llama) && !(model instanceof GPT))
    return { engine: null, reason: `batching runs Llama-family and GPT-2 models; this is ${model.constructor.name}` };
  if (opened.adapters.length > 0)
    return { engine: null, reason: 'adapters attached to the model at load; serve them per request instead' };
  const addon = loadNativeAddon();
  if (!addon) return { engine: null, reason: `batching needs the native backend: ${nativeLoadError()}` };
  try {
    const batched = model instanceof GPT ? new BatchedGpt(model, addon) : new BatchedLlama(model, addon);
    // every tensor an adapter trains a copy of must be one the engine reads, or its rows would miss it
    for (const name of opts.adapters?.names ?? []) {
      const unread = batched.unreadCopy(opts.adapters!.get(name));
      if (unread !== null)
        return {
          engine: null,
          reason: `adapter ${JSON.stringify(name)} trains a copy of ${unread}, which the batching engine does not read`,
        };
    }
    return {
      engine: new BatchEngine(batched, {
        kvCacheBytes: opts.kvCacheMb * 2 ** 20,
        kvCacheDtype: opts.kvCacheDtype,
        prefixCache: opts.prefixCache,
        kvReserve: opts.kvReserve,
        adapters: opts.adapters,
      }),
      reason: null,
    };
  } catch (e) {
    if (e instanceof KnobsError) return { engine: null, reason: e.message };
    throw e;
  }
}
