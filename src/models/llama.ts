/**
 * Llama (LlamaForCausalLM's math), which also covers Mistral (no sliding window shorter than the
 * context) and Qwen2 (biases on q/k/v). Parameter names are Hugging Face's, so their checkpoints
 * load 1:1 and knobs' files load in transformers.
 *
 * Legend: B batch, T time (new positions), S = past + T attended positions, C hidden_size,
 * V vocab_size, H attention heads, K key/value heads (H/K query heads share one), D head_dim = C/H,
 * F intermediate_size, L layers.
 *
 *   model.embed_tokens.weight                          [V, C]
 *   model.layers.{i}.input_layernorm.weight            [C]
 *   model.layers.{i}.self_attn.q_proj.{weight,bias}    [H·D, C], [H·D]   (bias: qwen2 only)
 *   model.layers.{i}.self_attn.k_proj.{weight,bias}    [K·D, C], [K·D]   (bias: qwen2 only)
 *   model.layers.{i}.self_attn.v_proj.{weight,bias}    [K·D, C], [K·D]   (bias: qwen2 only)
 *   model.layers.{i}.self_attn.o_proj.weight           [C, H·D]
 *   model.layers.{i}.post_attention_layernorm.weight   [C]
 *   model.layers.{i}.mlp.{gate,up}_proj.weight         [F, C]
 *   model.layers.{i}.mlp.down_proj.weight              [C, F]
 *   model.norm.weight                                  [C]
 *   lm_head.weight                                     [V, C]   (absent when tie_word_embeddings)
 *
 * Block: x = x + o_proj(attn(rope(q), rope(k), v)) of input_layernorm(x);
 *        x = x + down_proj(silu(gate_proj(h)) · up_proj(h)) with h = post_attention_layernorm(x).
 * RoPE rotates "half" pairs: element j of a head pairs with element j + D/2 (not interleaved).
 * Init (LlamaPreTrainedModel): linear and embedding weights N(0, initializer_range), biases 0,
 * norms 1.
 */
import type { DType } from '../dtype.js';
import { noGrad } from '../autograd/tape.js';
import { ArgumentError, ShapeError } from '../errors.js';
import { fromArray } from '../ops/creation.js';
import { add, mul, neg, silu } from '../ops/elementwise.js';
import { matmul } from '../ops/linalg.js';
import { crossEntropy, type CrossEntropyOptions } from '../ops/nn.js';
import { concat } from '../ops/shape-ops.js';
import { assignInto, expand, reshape, slice, transpose } from '../ops/view.js';
import { Generator } from '../random.js';
import { formatShape } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { causalAttentionAfter, KVCache, type LayerCache } from '../nn/attention.js';
import { normal_, ones_, zeros_ } from '../nn/init.js';
import { Embedding, RMSNorm } from '../nn/layers.js';
import { Linear } from '../nn/linear.js';
import {
  type LoadStateDictOptions,
  type LoadStateDictResult,
  Module,
  ModuleList,
  type StateDictInput,
} from '../nn/module.js';
import {
  type CausalLM,
  checkTokenIds,
  type EosTokenId,
  type GenerateOptions,
  type GenerateResult,
  generateTokens,
  stepWithCache,
} from './causal-lm.js';

export type LlamaModelType = 'llama' | 'mistral' | 'qwen2';

/** rope_scaling: positions stretched by `factor` (linear), or Llama 3's frequency-dependent rescaling. */
export type RopeScaling =
  | null
  | { rope_type: 'linear'; factor: number }
  | {
      rope_type: 'llama3';
      factor: number;
      low_freq_factor: number;
      high_freq_factor: number;
      original_max_position_embeddings: number;
    };

/** Llama / Mistral / Qwen2 hyperparameters, named as Hugging Face's LlamaConfig. */
export interface LlamaConfig {
  model_type: LlamaModelType;
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  rms_norm_eps: number;
  rope_theta: number;
  rope_scaling: RopeScaling;
  max_position_embeddings: number;
  tie_word_embeddings: boolean;
  hidden_act: 'silu';
  bos_token_id: number | null;
  eos_token_id: EosTokenId;
  initializer_range: number;
  /** Mistral / Qwen2: null, or a window at least max_position_embeddings long (so it never applies). */
  sliding_window: number | null;
}

/** What llamaConfig accepts: the sizes, any other field, and the fields that would change the math (rejected unless neutral). */
export type LlamaConfigInput = Partial<LlamaConfig> &
  Pick<LlamaConfig, 'hidden_size' | 'intermediate_size' | 'num_hidden_layers' | 'num_attention_heads'> & {
    rope_scaling?: RopeScaling | { type?: string; rope_type?: string; [k: string]: unknown };
    attention_bias?: boolean;
    mlp_bias?: boolean;
    use_sliding_window?: boolean;
  };

/** Hugging Face's per-architecture defaults for the fields a config may leave out. */
const DEFAULTS: Record<
  LlamaModelType,
  { vocab_size: number; max_position_embeddings: number; bos: number | null; eos: number | null; tie: boolean }
> = {
  llama: { vocab_size: 32000, max_position_embeddings: 2048, bos: 1, eos: 2, tie: false },
  mistral: { vocab_size: 32000, max_position_embeddings: 4096 * 32, bos: 1, eos: 2, tie: false },
  qwen2: { vocab_size: 151936, max_position_embeddings: 32768, bos: null, eos: null, tie: false },
};

function fail(field: string, message: string): never {
  throw new ArgumentError(`Llama config: ${field} ${message}`, { field });
}

function ropeScaling(input: LlamaConfigInput['rope_scaling']): RopeScaling {
  if (input === undefined || input === null) return null;
  // Older configs name the kind `type`; transformers reads either.
  const kind = input.rope_type ?? (input as { type?: string }).type;
  const num = (k: string): number => {
    const v = (input as Record<string, unknown>)[k];
    if (typeof v !== 'number' || !(v > 0))
      fail(`rope_scaling.${k}`, `must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  };
  if (kind === 'linear') return { rope_type: 'linear', factor: num('factor') };
  if (kind === 'llama3') {
    const s = {
      rope_type: 'llama3' as const,
      factor: num('factor'),
      low_freq_factor: num('low_freq_factor'),
      high_freq_factor: num('high_freq_factor'),
      original_max_position_embeddings: num('original_max_position_embeddings'),
    };
    if (!(s.high_freq_factor > s.low_freq_factor))
      fail(
        'rope_scaling.high_freq_factor',
        `(${s.high_freq_factor}) must be above low_freq_factor (${s.low_freq_factor})`,
      );
    return s;
  }
  if (kind === 'default') return null;
  return fail('rope_scaling.rope_type', `'${String(kind)}' is not supported; knobs implements 'linear' and 'llama3'`);
}

/** The integer sizes of a LlamaConfig, each a positive integer. */
const SIZE_FIELDS = [
  'vocab_size',
  'hidden_size',
  'intermediate_size',
  'num_hidden_layers',
  'num_attention_heads',
  'num_key_value_heads',
  'head_dim',
  'max_position_embeddings',
] as const;

/** Fills Hugging Face's defaults for `model_type` (default 'llama') and validates every size. */
export function llamaConfig(input: LlamaConfigInput): LlamaConfig {
  const type = input.model_type ?? 'llama';
  if (!(type in DEFAULTS)) fail('model_type', `'${String(type)}' is not one of 'llama', 'mistral', 'qwen2'`);
  const d = DEFAULTS[type];
  const heads = input.num_attention_heads;
  const c: LlamaConfig = {
    model_type: type,
    vocab_size: input.vocab_size ?? d.vocab_size,
    hidden_size: input.hidden_size,
    intermediate_size: input.intermediate_size,
    num_hidden_layers: input.num_hidden_layers,
    num_attention_heads: heads,
    num_key_value_heads: input.num_key_value_heads ?? heads,
    head_dim: input.head_dim ?? Math.floor(input.hidden_size / heads),
    rms_norm_eps: input.rms_norm_eps ?? 1e-6,
    rope_theta: input.rope_theta ?? 10000,
    rope_scaling: ropeScaling(input.rope_scaling),
    max_position_embeddings: input.max_position_embeddings ?? d.max_position_embeddings,
    tie_word_embeddings: input.tie_word_embeddings ?? d.tie,
    hidden_act: input.hidden_act ?? 'silu',
    bos_token_id: input.bos_token_id === undefined ? d.bos : input.bos_token_id,
    eos_token_id: input.eos_token_id === undefined ? d.eos : input.eos_token_id,
    initializer_range: input.initializer_range ?? 0.02,
    // Qwen2 uses its sliding_window only with use_sliding_window true (default false), Mistral always.
    sliding_window: (type === 'qwen2' ? input.use_sliding_window !== true : input.use_sliding_window === false)
      ? null
      : (input.sliding_window ?? null),
  };
  for (const key of SIZE_FIELDS) {
    if (!Number.isInteger(c[key]) || c[key] <= 0)
      fail(key, `must be a positive integer, got ${JSON.stringify(c[key])}`);
  }
  if (c.num_attention_heads % c.num_key_value_heads !== 0) {
    fail(
      'num_key_value_heads',
      `(${c.num_key_value_heads}) must divide num_attention_heads (${c.num_attention_heads}): each key/value head serves a whole group of query heads`,
    );
  }
  if (c.head_dim * c.num_attention_heads !== c.hidden_size) {
    fail(
      'head_dim',
      `(${c.head_dim}) must equal hidden_size / num_attention_heads (${c.hidden_size} / ${c.num_attention_heads}); knobs does not implement a head_dim of another size`,
    );
  }
  if (c.head_dim % 2 !== 0)
    fail('head_dim', `(${c.head_dim}) must be even: rotary embeddings rotate pairs of channels`);
  if (c.hidden_act !== 'silu')
    fail('hidden_act', `'${String(c.hidden_act)}' is not supported; Llama's MLP uses 'silu'`);
  if (!(c.rms_norm_eps > 0)) fail('rms_norm_eps', `must be > 0, got ${c.rms_norm_eps}`);
  if (!(c.rope_theta > 0)) fail('rope_theta', `must be > 0, got ${c.rope_theta}`);
  if (!(c.initializer_range >= 0)) fail('initializer_range', `must be >= 0, got ${c.initializer_range}`);
  if (typeof c.tie_word_embeddings !== 'boolean')
    fail('tie_word_embeddings', `must be true or false, got ${JSON.stringify(c.tie_word_embeddings)}`);
  if (
    c.sliding_window !== null &&
    !(Number.isInteger(c.sliding_window) && c.sliding_window >= c.max_position_embeddings)
  ) {
    fail(
      'sliding_window',
      `(${c.sliding_window}) is shorter than the context (max_position_embeddings ${c.max_position_embeddings}); knobs does not implement sliding-window attention`,
    );
  }
  for (const key of ['attention_bias', 'mlp_bias'] as const) {
    if (input[key] === true)
      fail(
        key,
        `true is not supported; knobs' ${type} has no biases there${type === 'qwen2' ? ' (Qwen2 has q/k/v biases only)' : ''}`,
      );
  }
  if (c.bos_token_id !== null && !validId(c.bos_token_id, c.vocab_size))
    fail(
      'bos_token_id',
      `${JSON.stringify(c.bos_token_id)} is outside the vocabulary [0, ${c.vocab_size}); use null for none`,
    );
  const eos = c.eos_token_id;
  if (
    eos !== null &&
    !(typeof eos === 'number'
      ? validId(eos, c.vocab_size)
      : Array.isArray(eos) && eos.every((e) => validId(e, c.vocab_size)))
  ) {
    fail('eos_token_id', `${JSON.stringify(eos)} must be an id in [0, ${c.vocab_size}), a list of such ids, or null`);
  }
  return c;
}

const validId = (id: unknown, vocab: number): boolean =>
  Number.isInteger(id) && (id as number) >= 0 && (id as number) < vocab;

/**
 * RoPE's inverse frequencies θ^(−2j/D) for j < D/2, rescaled as rope_scaling says (transformers'
 * _compute_default_rope_parameters, _compute_linear_scaling_rope_parameters and
 * _compute_llama3_parameters), rounded to float32 as transformers keeps them.
 */
export function ropeInverseFrequencies(
  config: Pick<LlamaConfig, 'head_dim' | 'rope_theta' | 'rope_scaling'>,
): Float32Array {
  const D = config.head_dim;
  const inv = Float32Array.from({ length: D / 2 }, (_, j) => 1 / config.rope_theta ** Math.fround((2 * j) / D));
  const s = config.rope_scaling;
  if (s?.rope_type === 'linear') return inv.map((f) => f / s.factor);
  if (s?.rope_type === 'llama3') {
    const lowFreqWavelen = s.original_max_position_embeddings / s.low_freq_factor;
    const highFreqWavelen = s.original_max_position_embeddings / s.high_freq_factor;
    return inv.map((f) => {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < highFreqWavelen) return f; // high frequencies: unchanged
      if (wavelen > lowFreqWavelen) return f / s.factor; // low frequencies: stretched
      const smooth =
        (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      return (1 - smooth) * (f / s.factor) + smooth * f;
    });
  }
  return inv;
}

/** cos and sin [T, D] of positions start..start+T−1; each frequency appears twice (the two halves). */
export function ropeTables(
  invFreq: Float32Array,
  start: number,
  T: number,
  dtype: Extract<DType, 'f32' | 'f64'>,
): { cos: Tensor; sin: Tensor } {
  const half = invFreq.length;
  const D = 2 * half;
  const cos = new Float64Array(T * D);
  const sin = new Float64Array(T * D);
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < half; j++) {
      const angle = Math.fround((start + t) * invFreq[j]!); // transformers multiplies in float32
      cos[t * D + j] = cos[t * D + j + half] = Math.cos(angle);
      sin[t * D + j] = sin[t * D + j + half] = Math.sin(angle);
    }
  }
  return { cos: fromArray(cos, [T, D], { dtype }), sin: fromArray(sin, [T, D], { dtype }) };
}

/** x·cos + rotate_half(x)·sin for x [B, h, T, D], where rotate_half([a, b]) = [−b, a] over the two halves. */
export function applyRotary(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const half = x.shape[x.rank - 1]! / 2;
  const rotated = concat([neg(slice(x, -1, half)), slice(x, -1, 0, half)], -1); // [B, h, T, D]
  return add(mul(x, cos), mul(rotated, sin)); // [B, h, T, D]
}

/** [B, K, S, D] → [B, K·n, S, D]: each key/value head repeated for the n query heads it serves. */
function repeatKV(x: Tensor, n: number): Tensor {
  if (n === 1) return x;
  const [B, K, S, D] = x.shape as [number, number, number, number];
  return reshape(expand(reshape(x, [B, K, 1, S, D]), [B, K, n, S, D]), [B, K * n, S, D]);
}

interface LayerOptions {
  dtype: Extract<DType, 'f32' | 'f64'>;
  generator: Generator;
}

export class LlamaAttention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly o_proj: Linear;
  private readonly heads: number;
  private readonly kvHeads: number;
  private readonly headDim: number;

  constructor(config: LlamaConfig, opts: LayerOptions) {
    super();
    const { hidden_size: C, num_attention_heads: H, num_key_value_heads: K, head_dim: D } = config;
    this.heads = H;
    this.kvHeads = K;
    this.headDim = D;
    const qkv = { bias: config.model_type === 'qwen2', ...opts };
    this.q_proj = this.registerModule('q_proj', new Linear(C, H * D, qkv));
    this.k_proj = this.registerModule('k_proj', new Linear(C, K * D, qkv));
    this.v_proj = this.registerModule('v_proj', new Linear(C, K * D, qkv));
    this.o_proj = this.registerModule('o_proj', new Linear(H * D, C, { bias: false, ...opts }));
  }

  /** x [B, T, C] → [B, T, C]; cos/sin [T, D] for the new positions; `cache` supplies and keeps past keys/values. */
  forward(x: Tensor, cos: Tensor, sin: Tensor, cache?: LayerCache): Tensor {
    const [B, T] = x.shape as [number, number, number];
    const D = this.headDim;
    const heads = (t: Tensor, n: number): Tensor => transpose(reshape(t, [B, T, n, D]), 1, 2); // [B, T, n·D] → [B, n, T, D]
    const q = applyRotary(heads(this.q_proj.forward(x), this.heads), cos, sin); // [B, H, T, D]
    let k = applyRotary(heads(this.k_proj.forward(x), this.kvHeads), cos, sin); // [B, K, T, D]
    let v = heads(this.v_proj.forward(x), this.kvHeads); // [B, K, T, D]
    let past = 0;
    if (cache) {
      past = cache.past;
      noGrad(() => {
        assignInto(slice(cache.keys, 2, past, past + T), k);
        assignInto(slice(cache.values, 2, past, past + T), v);
      });
      k = slice(cache.keys, 2, 0, past + T); // [B, K, S, D]
      v = slice(cache.values, 2, 0, past + T); // [B, K, S, D]
    }
    const group = this.heads / this.kvHeads;
    const y = causalAttentionAfter(q, repeatKV(k, group), repeatKV(v, group), past); // [B, H, T, D]
    return this.o_proj.forward(reshape(transpose(y, 1, 2), [B, T, this.heads * D])); // [B, T, C]
  }
}

/** SwiGLU: down_proj(silu(gate_proj(x)) · up_proj(x)). */
export class LlamaMLP extends Module {
  readonly gate_proj: Linear;
  readonly up_proj: Linear;
  readonly down_proj: Linear;

  constructor(config: LlamaConfig, opts: LayerOptions) {
    super();
    const lin = { bias: false, ...opts };
    this.gate_proj = this.registerModule('gate_proj', new Linear(config.hidden_size, config.intermediate_size, lin));
    this.up_proj = this.registerModule('up_proj', new Linear(config.hidden_size, config.intermediate_size, lin));
    this.down_proj = this.registerModule('down_proj', new Linear(config.intermediate_size, config.hidden_size, lin));
  }

  forward(x: Tensor): Tensor {
    return this.down_proj.forward(mul(silu(this.gate_proj.forward(x)), this.up_proj.forward(x))); // [B, T, F] → [B, T, C]
  }
}

export class LlamaDecoderLayer extends Module {
  readonly self_attn: LlamaAttention;
  readonly mlp: LlamaMLP;
  readonly input_layernorm: RMSNorm;
  readonly post_attention_layernorm: RMSNorm;

  constructor(config: LlamaConfig, opts: LayerOptions) {
    super();
    const norm = { eps: config.rms_norm_eps, dtype: opts.dtype };
    this.self_attn = this.registerModule('self_attn', new LlamaAttention(config, opts));
    this.mlp = this.registerModule('mlp', new LlamaMLP(config, opts));
    this.input_layernorm = this.registerModule('input_layernorm', new RMSNorm(config.hidden_size, norm));
    this.post_attention_layernorm = this.registerModule(
      'post_attention_layernorm',
      new RMSNorm(config.hidden_size, norm),
    );
  }

  forward(x: Tensor, cos: Tensor, sin: Tensor, cache?: LayerCache): Tensor {
    const a = add(x, this.self_attn.forward(this.input_layernorm.forward(x), cos, sin, cache)); // [B, T, C]
    return add(a, this.mlp.forward(this.post_attention_layernorm.forward(a))); // [B, T, C]
  }
}

/** Hugging Face's LlamaModel: the embedding, the layers and the final norm (the `model.` prefix). */
export class LlamaModel extends Module {
  readonly embed_tokens: Embedding;
  readonly layers: ModuleList<LlamaDecoderLayer>;
  readonly norm: RMSNorm;

  constructor(config: LlamaConfig, opts: LayerOptions) {
    super();
    this.embed_tokens = this.registerModule('embed_tokens', new Embedding(config.vocab_size, config.hidden_size, opts));
    this.layers = this.registerModule(
      'layers',
      new ModuleList(Array.from({ length: config.num_hidden_layers }, () => new LlamaDecoderLayer(config, opts))),
    );
    this.norm = this.registerModule(
      'norm',
      new RMSNorm(config.hidden_size, { eps: config.rms_norm_eps, dtype: opts.dtype }),
    );
  }
}

export interface LlamaOptions {
  /** Initialisation (default: a Generator seeded with `seed`). */
  generator?: Generator;
  seed?: number;
  dtype?: Extract<DType, 'f32' | 'f64'>;
  /**
   * Divisors of the rotary inverse frequencies, one per frequency (D/2): llama.cpp's
   * `rope_freqs.weight`, which is how a GGUF file stores llama3 rope scaling.
   */
  ropeFreqFactors?: Float32Array;
}

/** LlamaForCausalLM: LlamaModel and the output head (lm_head, or embed_tokens when tied). */
export class Llama extends Module implements CausalLM {
  readonly config: LlamaConfig;
  readonly model: LlamaModel;
  readonly lm_head: Linear | null;
  readonly dtype: Extract<DType, 'f32' | 'f64'>;
  private invFreq: Float32Array;

  constructor(config: LlamaConfigInput | LlamaConfig, opts: LlamaOptions = {}) {
    super();
    const c = llamaConfig(config);
    this.config = c;
    this.dtype = opts.dtype ?? 'f32';
    const generator = opts.generator ?? new Generator(opts.seed ?? 0);
    const mod = { dtype: this.dtype, generator };
    this.model = this.registerModule('model', new LlamaModel(c, mod));
    this.lm_head = c.tie_word_embeddings
      ? null
      : this.registerModule('lm_head', new Linear(c.hidden_size, c.vocab_size, { bias: false, ...mod }));
    this.invFreq = ropeInverseFrequencies(c);
    const factors = opts.ropeFreqFactors;
    if (factors !== undefined) {
      if (factors.length !== this.invFreq.length)
        throw new ArgumentError(
          `Llama: ropeFreqFactors has ${factors.length} values; head_dim ${c.head_dim} needs ${this.invFreq.length}`,
          { field: 'ropeFreqFactors' },
        );
      this.invFreq = this.invFreq.map((f, j) => f / factors[j]!);
    }
    this.initWeights(generator);
  }

  /** LlamaPreTrainedModel's init (see the file comment), in parameter order, from `generator`. */
  initWeights(generator: Generator): void {
    for (const [name, p] of this.namedParameters()) {
      if (/layernorm\.weight$|^model\.norm\.weight$/.test(name)) ones_(p);
      else if (name.endsWith('.bias')) zeros_(p);
      else normal_(p, 0, this.config.initializer_range, { generator });
    }
  }

  get contextLength(): number {
    return this.config.max_position_embeddings;
  }

  /** RoPE's inverse frequencies as this model applies them (rope_scaling and GGUF frequency factors included). */
  get ropeFrequencies(): Float32Array {
    return this.invFreq;
  }

  /** The hidden states after the final norm: ids [B, T] → [B, T, C]. `cache` (inference) supplies past positions. */
  hidden(ids: Tensor, cache?: KVCache): Tensor {
    checkTokenIds(ids, 'Llama');
    const T = ids.shape[1]!;
    const past = cache?.length ?? 0;
    if (past + T > this.contextLength) {
      throw new ShapeError(
        `Llama: ${past + T} positions exceed max_position_embeddings ${this.contextLength}; crop the context to the last ${this.contextLength} tokens`,
        { op: 'Llama', shapes: [ids.shape], past },
      );
    }
    if (cache && cache.batch !== ids.shape[0]) {
      throw new ShapeError(`Llama: the cache was made for batch ${cache.batch}, ids are ${formatShape(ids.shape)}`, {
        op: 'Llama',
        shapes: [ids.shape],
        cacheBatch: cache.batch,
      });
    }
    const { cos, sin } = ropeTables(this.invFreq, past, T, this.dtype); // [T, D] each
    let x = this.model.embed_tokens.forward(ids); // [B, T, C]
    let i = 0;
    for (const layer of this.model.layers) x = layer.forward(x, cos, sin, cache?.layer(i++)); // [B, T, C]
    return this.model.norm.forward(x); // [B, T, C]
  }

  /** x [..., C] → logits [..., V]. */
  head(x: Tensor): Tensor {
    return this.lm_head ? this.lm_head.forward(x) : matmul(x, transpose(this.model.embed_tokens.weight, 0, 1));
  }

  /** ids [B, T] → logits [B, T, V]. */
  forward(ids: Tensor): Tensor {
    return this.head(this.hidden(ids));
  }

  /** Mean next-token cross-entropy of ids [B, T] against targets [B, T] (ignoreIndex −100 skips positions). */
  loss(ids: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor {
    if (targets.rank !== 2 || targets.shape[0] !== ids.shape[0] || targets.shape[1] !== ids.shape[1]) {
      throw new ShapeError(
        `Llama.loss: targets must have the shape of ids ${formatShape(ids.shape)}, got ${formatShape(targets.shape)}`,
        { op: 'Llama.loss', shapes: [ids.shape, targets.shape] },
      );
    }
    const logits = this.forward(ids); // [B, T, V]
    return crossEntropy(reshape(logits, [-1, this.config.vocab_size]), reshape(targets, [-1]), opts); // [B·T, V] vs [B·T]
  }

  /** A cache of K key/value heads per layer for batch B and every position. */
  createCache(batch = 1): KVCache {
    const c = this.config;
    return new KVCache({
      layers: c.num_hidden_layers,
      batch,
      heads: c.num_key_value_heads,
      headDim: c.head_dim,
      maxLength: c.max_position_embeddings,
      dtype: this.dtype,
    });
  }

  /** Inference step: ids [B, T] after the cache's positions → logits [B, T, V]; advances the cache. */
  forwardWithCache(ids: Tensor, cache: KVCache): Tensor {
    return stepWithCache(cache, ids.shape[1]!, () => this.head(this.hidden(ids, cache)));
  }

  generate(prompt: readonly number[], opts: GenerateOptions = {}): GenerateResult {
    return generateTokens(this, prompt, opts);
  }

  /** The config.json content transformers reads (LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM). */
  toHFConfig(): Record<string, unknown> {
    const c = this.config;
    const architecture = { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM' }[
      c.model_type
    ];
    return {
      architectures: [architecture],
      model_type: c.model_type,
      vocab_size: c.vocab_size,
      hidden_size: c.hidden_size,
      intermediate_size: c.intermediate_size,
      num_hidden_layers: c.num_hidden_layers,
      num_attention_heads: c.num_attention_heads,
      num_key_value_heads: c.num_key_value_heads,
      head_dim: c.head_dim,
      hidden_act: c.hidden_act,
      max_position_embeddings: c.max_position_embeddings,
      initializer_range: c.initializer_range,
      rms_norm_eps: c.rms_norm_eps,
      rope_theta: c.rope_theta,
      rope_scaling: c.rope_scaling,
      tie_word_embeddings: c.tie_word_embeddings,
      bos_token_id: c.bos_token_id,
      eos_token_id: c.eos_token_id,
      ...(c.model_type === 'llama' ? { attention_bias: false, mlp_bias: false } : {}),
      ...(c.model_type === 'qwen2' ? { use_sliding_window: false } : {}),
      ...(c.model_type !== 'llama' ? { sliding_window: c.sliding_window } : {}),
      attention_dropout: 0,
      use_cache: true,
      torch_dtype: this.dtype === 'f64' ? 'float64' : 'float32',
    };
  }

  /**
   * Loads Hugging Face names; with a tied head, a file's `lm_head.weight` (some tied checkpoints
   * carry it) is the embedding again and is skipped, as are old checkpoints' rotary_emb.inv_freq
   * buffers (knobs computes them from the config).
   */
  override loadStateDict(state: StateDictInput, opts: LoadStateDictOptions = {}): LoadStateDictResult {
    const entries: Iterable<[string, Tensor]> =
      state instanceof Map ? (state as Map<string, Tensor>) : Object.entries(state);
    const kept = new Map<string, Tensor>();
    for (const [key, t] of entries) {
      if ((key === 'lm_head.weight' && this.lm_head === null) || /\.rotary_emb\.inv_freq$/.test(key)) continue;
      kept.set(key, t);
    }
    return super.loadStateDict(kept, opts);
  }
}

/** A LlamaConfig from a Hugging Face config.json object (model_type llama, mistral or qwen2). */
export function llamaConfigFromHF(json: Record<string, unknown>): LlamaConfig {
  for (const key of ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads'] as const) {
    if (typeof json[key] !== 'number') fail(key, `is missing from config.json (got ${JSON.stringify(json[key])})`);
  }
  const known: readonly string[] = [
    ...SIZE_FIELDS,
    'model_type',
    'rms_norm_eps',
    'rope_theta',
    'rope_scaling',
    'tie_word_embeddings',
    'hidden_act',
    'bos_token_id',
    'eos_token_id',
    'initializer_range',
    'sliding_window',
    'use_sliding_window',
    'attention_bias',
    'mlp_bias',
  ];
  const input: Record<string, unknown> = {};
  for (const key of known) if (json[key] !== undefined) input[key] = json[key];
  if (input.head_dim === null) delete input.head_dim;
  return llamaConfig(input as LlamaConfigInput);
}
