/**
 * config.json and generation_config.json of Hugging Face model directories, read as real ones are
 * written: every field that changes the math is checked (docs/hf-models.md has the table); a value
 * knobs cannot compute exactly is an error naming the file, the field and the value, never a model
 * that silently computes something else. Informational fields (torch_dtype, transformers_version,
 * use_cache, architectures, dropouts, initializer_range, …) are ignored. Missing fields take the
 * defaults of transformers' config class for the model_type.
 */
import { FormatError } from '../../errors.js';
import { type GPTConfig, gptConfig } from '../gpt.js';
import { type LlamaConfig, type LlamaModelType, type RopeScaling, llamaConfig } from '../llama.js';

export const CONFIG_NAME = 'config.json';
export const GENERATION_CONFIG_NAME = 'generation_config.json';

export type LlamaFamily = LlamaModelType;
export type HfModelType = 'gpt2' | LlamaFamily;
export const HF_MODEL_TYPES: readonly HfModelType[] = ['gpt2', 'llama', 'mistral', 'qwen2'];

export type HfModelConfig =
  | { kind: 'gpt2'; config: GPTConfig; eosTokenIds: number[] }
  | { kind: LlamaFamily; config: LlamaConfig; eosTokenIds: number[] };

/** What generation_config.json says; absent fields are undefined. */
export interface GenerationConfig {
  /** Generation stops at any of these (empty: never at a token). */
  eosTokenIds: number[];
  bosTokenId?: number | null;
  maxNewTokens?: number;
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
}

type Json = Record<string, unknown>;

/** Reads fields of one JSON object, with errors naming the file and field. */
class Fields {
  constructor(
    readonly json: Json,
    readonly path: string,
  ) {}

  has(field: string): boolean {
    return Object.hasOwn(this.json, field) && this.json[field] !== undefined;
  }

  private get(field: string): unknown {
    return Object.hasOwn(this.json, field) ? this.json[field] : undefined;
  }

  invalid(field: string, expected: string): never {
    const value = this.get(field);
    throw new FormatError(
      'hf_invalid_config',
      `${this.path}: ${field} is ${JSON.stringify(value) ?? 'missing'}; expected ${expected}`,
      { file: this.path, field, value: value ?? null, expected },
    );
  }

  unsupported(field: string, value: unknown, expected: string): never {
    throw new FormatError(
      'hf_unsupported_config',
      `${this.path}: ${field} is ${JSON.stringify(value)}, which knobs does not support; knobs computes this architecture with ${expected}`,
      { file: this.path, field, value, expected },
    );
  }

  int(field: string, fallback: number | undefined, min = 1): number {
    const v = this.get(field) ?? fallback;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) this.invalid(field, `an integer ≥ ${min}`);
    return v;
  }

  positive(field: string, fallback: number): number {
    const v = this.get(field) ?? fallback;
    if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) this.invalid(field, 'a positive number');
    return v;
  }

  bool(field: string, fallback: boolean): boolean {
    const v = this.get(field) ?? fallback;
    if (typeof v !== 'boolean') this.invalid(field, 'true or false');
    return v;
  }

  /** A field whose only supported value is `supported` (the default when absent). */
  require(field: string, supported: unknown, expected: string): void {
    const v = this.get(field) ?? null;
    if (v !== null && v !== supported) this.unsupported(field, v, expected);
  }

  /** A token id, or null. */
  tokenId(field: string, fallback: number | null, vocab: number): number | null {
    const v = this.get(field) ?? fallback;
    if (v !== null && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v >= vocab))
      this.invalid(field, `a token id in [0, ${vocab}) or null`);
    return v;
  }

  /** eos_token_id: a token id, a list of them, or null. */
  tokenIds(field: string, fallback: number | null, vocab: number): number[] {
    const v = this.get(field) ?? fallback;
    const list = v === null ? [] : Array.isArray(v) ? v : [v];
    for (const id of list) {
      if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0 || id >= vocab)
        this.invalid(field, `a token id in [0, ${vocab}), a list of them, or null`);
    }
    return list as number[];
  }
}

/** Parses a config.json object; `path` names it in errors. */
export function parseHfConfig(json: Json, path: string): HfModelConfig {
  const f = new Fields(json, path);
  const type = json.model_type;
  if (typeof type !== 'string' || !(HF_MODEL_TYPES as readonly string[]).includes(type)) {
    if (typeof type !== 'string') f.invalid('model_type', `one of ${HF_MODEL_TYPES.join(', ')}`);
    f.unsupported('model_type', type, `one of the architectures ${HF_MODEL_TYPES.join(', ')}`);
  }
  return type === 'gpt2' ? parseGPT2(f) : parseLlamaFamily(f, type as LlamaFamily);
}

/** GPT2Config. */
function parseGPT2(f: Fields): HfModelConfig {
  const act = f.json.activation_function ?? 'gelu_new';
  if (act !== 'gelu_new' && act !== 'gelu_pytorch_tanh')
    f.unsupported('activation_function', act, "the tanh GELU ('gelu_new')");
  f.require('scale_attn_weights', true, 'attention scores scaled by 1/√head_dim (scale_attn_weights true)');
  f.require(
    'scale_attn_by_inverse_layer_idx',
    false,
    'no per-layer scaling of attention (scale_attn_by_inverse_layer_idx false)',
  );
  f.require('reorder_and_upcast_attn', false, 'plain attention (reorder_and_upcast_attn false)');
  f.require('add_cross_attention', false, 'a decoder without cross-attention');
  f.require('tie_word_embeddings', true, 'the output head tied to wte (tie_word_embeddings true)');
  const vocab = f.int('vocab_size', 50257);
  const nEmbd = f.int('n_embd', 768);
  const nHead = f.int('n_head', 12);
  if (nEmbd % nHead !== 0) f.invalid('n_head', `a divisor of n_embd (${nEmbd})`);
  const inner = f.json.n_inner ?? null;
  if (inner !== null) f.int('n_inner', undefined);
  const special = vocab > 50256 ? 50256 : null;
  const eosTokenIds = f.tokenIds('eos_token_id', special, vocab);
  const config = gptConfig({
    vocab_size: vocab,
    n_positions: f.int('n_positions', f.has('n_ctx') ? f.int('n_ctx', undefined) : 1024),
    n_embd: nEmbd,
    n_layer: f.int('n_layer', 12),
    n_head: nHead,
    n_inner: inner as number | null,
    layer_norm_epsilon: f.positive('layer_norm_epsilon', 1e-5),
    bos_token_id: f.tokenId('bos_token_id', special, vocab),
    eos_token_id: eosTokenIds[0] ?? null,
    dropout: 0,
  });
  return { kind: 'gpt2', config, eosTokenIds };
}

/** transformers' defaults for the fields that differ between the Llama-family config classes. */
const FAMILY_DEFAULTS: Record<
  LlamaFamily,
  {
    vocab: number;
    intermediate: number;
    kvHeads: number | null;
    positions: number;
    bos: number | null;
    eos: number | null;
  }
> = {
  llama: { vocab: 32000, intermediate: 11008, kvHeads: null, positions: 2048, bos: 1, eos: 2 },
  mistral: { vocab: 32000, intermediate: 14336, kvHeads: 8, positions: 4096 * 32, bos: 1, eos: 2 },
  qwen2: { vocab: 151936, intermediate: 22016, kvHeads: 32, positions: 32768, bos: null, eos: null },
};

/** LlamaConfig, MistralConfig, Qwen2Config. */
function parseLlamaFamily(f: Fields, type: LlamaFamily): HfModelConfig {
  const d = FAMILY_DEFAULTS[type];
  const act = f.json.hidden_act ?? 'silu';
  if (act !== 'silu') f.unsupported('hidden_act', act, "the SiLU-gated MLP (hidden_act 'silu')");
  if (type === 'llama') {
    f.require('attention_bias', false, 'no biases on the attention projections (attention_bias false)');
    f.require('mlp_bias', false, 'no biases in the MLP (mlp_bias false)');
  }
  const vocab = f.int('vocab_size', d.vocab);
  const hidden = f.int('hidden_size', 4096);
  const heads = f.int('num_attention_heads', 32);
  const kvHeads = f.int('num_key_value_heads', d.kvHeads ?? heads);
  if (hidden % heads !== 0) f.invalid('num_attention_heads', `a divisor of hidden_size (${hidden})`);
  if (heads % kvHeads !== 0) f.invalid('num_key_value_heads', `a divisor of num_attention_heads (${heads})`);
  const headDim = hidden / heads;
  if (f.json.head_dim != null && f.json.head_dim !== headDim)
    f.unsupported('head_dim', f.json.head_dim, `head_dim = hidden_size / num_attention_heads = ${headDim}`);
  const positions = f.int('max_position_embeddings', d.positions);
  checkSlidingWindow(f, type, positions);
  if (f.json.partial_rotary_factor != null && f.json.partial_rotary_factor !== 1)
    f.unsupported(
      'partial_rotary_factor',
      f.json.partial_rotary_factor,
      'rotary embeddings on the whole head (partial_rotary_factor 1)',
    );
  const eos = f.tokenIds('eos_token_id', d.eos, vocab);
  const rawEos = f.json.eos_token_id === undefined ? d.eos : f.json.eos_token_id;
  const config = llamaConfig({
    model_type: type,
    vocab_size: vocab,
    hidden_size: hidden,
    intermediate_size: f.int('intermediate_size', d.intermediate),
    num_hidden_layers: f.int('num_hidden_layers', 32),
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    head_dim: headDim,
    rms_norm_eps: f.positive('rms_norm_eps', 1e-6),
    rope_theta: f.positive('rope_theta', 10000),
    rope_scaling: parseRopeScaling(f),
    max_position_embeddings: positions,
    tie_word_embeddings: f.bool('tie_word_embeddings', false),
    hidden_act: 'silu',
    bos_token_id: f.tokenId('bos_token_id', d.bos, vocab),
    eos_token_id: Array.isArray(rawEos) ? eos : (eos[0] ?? null),
    initializer_range: typeof f.json.initializer_range === 'number' ? f.json.initializer_range : 0.02,
    sliding_window: null,
  });
  return { kind: type, config, eosTokenIds: eos };
}

/**
 * knobs attends to every earlier position. That equals sliding-window attention only when the
 * window covers the whole context (max_position_embeddings).
 */
function checkSlidingWindow(f: Fields, type: LlamaFamily, positions: number): void {
  const used = type === 'mistral' || (type === 'qwen2' && f.json.use_sliding_window === true);
  if (!used || f.json.sliding_window == null) return;
  const window = f.int('sliding_window', undefined);
  if (window < positions) {
    f.unsupported(
      'sliding_window',
      window,
      `full causal attention, which equals sliding-window attention only when sliding_window is null or ≥ max_position_embeddings (${positions})`,
    );
  }
}

function parseRopeScaling(f: Fields): RopeScaling {
  const raw = f.json.rope_scaling;
  if (raw == null) return null;
  if (typeof raw !== 'object' || Array.isArray(raw)) f.invalid('rope_scaling', 'null or an object with rope_type');
  const sub = new Fields(raw as Json, f.path);
  const kind = (raw as Json).rope_type ?? (raw as Json).type;
  const field = (name: string): string => `rope_scaling.${name}`;
  const positive = (name: string): number => {
    const v = (raw as Json)[name];
    if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) f.invalid(field(name), 'a positive number');
    return v;
  };
  switch (kind) {
    case 'default':
      return null;
    case 'linear':
      return { rope_type: 'linear', factor: positive('factor') };
    case 'llama3': {
      const low = positive('low_freq_factor');
      const high = positive('high_freq_factor');
      if (!(high > low)) f.invalid(field('high_freq_factor'), `a number greater than low_freq_factor (${low})`);
      return {
        rope_type: 'llama3',
        factor: positive('factor'),
        low_freq_factor: low,
        high_freq_factor: high,
        original_max_position_embeddings: sub.int('original_max_position_embeddings', undefined),
      };
    }
    default:
      return f.unsupported(
        field('rope_type'),
        kind ?? null,
        "rope_scaling null or rope_type 'default', 'linear' or 'llama3'",
      );
  }
}

/** Parses generation_config.json; `fallback` supplies eos ids when it names none (as transformers). */
export function parseGenerationConfig(
  json: Json,
  path: string,
  vocab: number,
  fallbackEos: number[],
): GenerationConfig {
  const f = new Fields(json, path);
  const out: GenerationConfig = {
    eosTokenIds: f.has('eos_token_id') ? f.tokenIds('eos_token_id', null, vocab) : fallbackEos,
  };
  if (f.has('bos_token_id')) out.bosTokenId = f.tokenId('bos_token_id', null, vocab);
  if (f.has('max_new_tokens')) out.maxNewTokens = f.int('max_new_tokens', undefined, 0);
  if (f.has('do_sample')) out.doSample = f.bool('do_sample', false);
  if (f.has('temperature')) out.temperature = f.positive('temperature', 1);
  if (f.has('top_k')) out.topK = f.int('top_k', undefined, 0);
  if (f.has('top_p')) out.topP = f.positive('top_p', 1);
  return out;
}
