/**
 * GPT in the GPT-2 architecture, with GPT-2's parameter names and layouts, so Hugging Face GPT-2
 * checkpoints load 1:1 and knobs checkpoints load in transformers' GPT2LMHeadModel.
 *
 * Legend: B batch, T time (positions), C channels (n_embd), V vocabulary, P n_positions,
 * H heads, D = C / H, F = 4C (or n_inner) MLP width, L layers.
 *
 *   wte.weight            [V, C]   token embedding, also the output head (tied)
 *   wpe.weight            [P, C]   learned positions
 *   h.{i}.ln_1.{weight,bias}           [C]
 *   h.{i}.attn.c_attn.{weight,bias}    [C, 3C], [3C]   Conv1D: stored [in, out]
 *   h.{i}.attn.c_proj.{weight,bias}    [C, C],  [C]
 *   h.{i}.ln_2.{weight,bias}           [C]
 *   h.{i}.mlp.c_fc.{weight,bias}       [C, F],  [F]
 *   h.{i}.mlp.c_proj.{weight,bias}     [F, C],  [C]
 *   ln_f.{weight,bias}                 [C]
 *
 * Block: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)) (pre-LayerNorm), mlp = c_proj(gelu_tanh(c_fc)).
 * Init (GPT-2 / nanoGPT): weights N(0, 0.02), biases 0, norms 1/0, and the residual projections
 * (attn.c_proj, mlp.c_proj) N(0, 0.02/√(2L)).
 */
import type { DType } from '../dtype.js';
import { ArgumentError, ShapeError } from '../errors.js';
import { arange } from '../ops/creation.js';
import { add } from '../ops/elementwise.js';
import { matmul } from '../ops/linalg.js';
import { addLayerNorm, crossEntropy, type CrossEntropyOptions } from '../ops/nn.js';
import { reshape, transpose } from '../ops/view.js';
import { Generator } from '../random.js';
import { formatShape } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { CausalSelfAttention, KVCache, type LayerCache } from '../nn/attention.js';
import { normal_, ones_, zeros_ } from '../nn/init.js';
import { Dropout, Embedding, GELU, LayerNorm } from '../nn/layers.js';
import { Conv1D, Linear } from '../nn/linear.js';
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
  type GenerateOptions,
  type GenerateResult,
  generateTokens,
  stepWithCache,
} from './causal-lm.js';

export type { GenerateOptions, GenerateResult } from './causal-lm.js';

/** GPT-2 hyperparameters, named as Hugging Face's GPT2Config. */
export interface GPTConfig {
  vocab_size: number;
  n_positions: number;
  n_embd: number;
  n_layer: number;
  n_head: number;
  /** MLP width; null means 4·n_embd. */
  n_inner: number | null;
  layer_norm_epsilon: number;
  /** Dropout after the embeddings. */
  embd_pdrop: number;
  /** Dropout on attention weights. */
  attn_pdrop: number;
  /** Dropout on each residual branch's output. */
  resid_pdrop: number;
  /** Standard deviation of the normal init. */
  initializer_range: number;
  bos_token_id: number | null;
  eos_token_id: number | null;
}

/** What gptConfig accepts: the required sizes, any other field, and `dropout` as a shorthand for all three dropouts. */
export type GPTConfigInput = Partial<GPTConfig> &
  Pick<GPTConfig, 'n_positions' | 'n_embd' | 'n_layer' | 'n_head'> & { dropout?: number };

/** Fills GPT2Config's defaults (vocab 50257, dropouts 0.1, eps 1e-5, init 0.02, bos/eos 50256) and validates. */
export function gptConfig(input: GPTConfigInput): GPTConfig {
  const drop = input.dropout;
  const vocab = input.vocab_size ?? 50257;
  const special = vocab > 50256 ? 50256 : null;
  const c: GPTConfig = {
    vocab_size: vocab,
    n_positions: input.n_positions,
    n_embd: input.n_embd,
    n_layer: input.n_layer,
    n_head: input.n_head,
    n_inner: input.n_inner ?? null,
    layer_norm_epsilon: input.layer_norm_epsilon ?? 1e-5,
    embd_pdrop: input.embd_pdrop ?? drop ?? 0.1,
    attn_pdrop: input.attn_pdrop ?? drop ?? 0.1,
    resid_pdrop: input.resid_pdrop ?? drop ?? 0.1,
    initializer_range: input.initializer_range ?? 0.02,
    bos_token_id: input.bos_token_id === undefined ? special : input.bos_token_id,
    eos_token_id: input.eos_token_id === undefined ? special : input.eos_token_id,
  };
  for (const key of ['vocab_size', 'n_positions', 'n_embd', 'n_layer', 'n_head'] as const) {
    if (!Number.isInteger(c[key]) || c[key] <= 0)
      throw new ArgumentError(`GPT config: ${key} must be a positive integer, got ${c[key]}`);
  }
  if (c.n_embd % c.n_head !== 0)
    throw new ArgumentError(`GPT config: n_embd (${c.n_embd}) must be divisible by n_head (${c.n_head})`);
  if (c.n_inner !== null && (!Number.isInteger(c.n_inner) || c.n_inner <= 0))
    throw new ArgumentError(`GPT config: n_inner must be a positive integer or null, got ${c.n_inner}`);
  for (const key of ['embd_pdrop', 'attn_pdrop', 'resid_pdrop'] as const) {
    if (!(c[key] >= 0 && c[key] <= 1)) throw new ArgumentError(`GPT config: ${key} must be in [0, 1], got ${c[key]}`);
  }
  if (!(c.layer_norm_epsilon > 0))
    throw new ArgumentError(`GPT config: layer_norm_epsilon must be > 0, got ${c.layer_norm_epsilon}`);
  for (const key of ['bos_token_id', 'eos_token_id'] as const) {
    const id = c[key];
    if (id !== null && (!Number.isInteger(id) || id < 0 || id >= c.vocab_size)) {
      throw new ArgumentError(
        `GPT config: ${key} ${id} is outside the vocabulary [0, ${c.vocab_size}); use null for none`,
      );
    }
  }
  return c;
}

/** A GPTConfig from a Hugging Face config.json object (model_type "gpt2"). */
export function gptConfigFromHF(json: Record<string, unknown>): GPTConfig {
  if (json.model_type !== undefined && json.model_type !== 'gpt2') {
    throw new ArgumentError(`GPT config: model_type is '${String(json.model_type)}', expected 'gpt2'`);
  }
  const act = json.activation_function ?? 'gelu_new';
  if (act !== 'gelu_new' && act !== 'gelu_pytorch_tanh') {
    throw new ArgumentError(
      `GPT config: activation_function '${String(act)}' is not supported; knobs' GPT uses the tanh GELU (gelu_new)`,
    );
  }
  if (json.tie_word_embeddings === false)
    throw new ArgumentError('GPT config: tie_word_embeddings=false is not supported; GPT-2 ties lm_head to wte');
  const num = (k: string): number | undefined => (typeof json[k] === 'number' ? (json[k] as number) : undefined);
  const idOrNull = (k: string): number | null | undefined => (json[k] === null ? null : num(k));
  const positions = num('n_positions') ?? num('n_ctx');
  if (
    positions === undefined ||
    num('n_embd') === undefined ||
    num('n_layer') === undefined ||
    num('n_head') === undefined
  ) {
    throw new ArgumentError('GPT config: config.json needs n_positions (or n_ctx), n_embd, n_layer and n_head');
  }
  const input: GPTConfigInput = {
    n_positions: positions,
    n_embd: num('n_embd')!,
    n_layer: num('n_layer')!,
    n_head: num('n_head')!,
  };
  const optional = [
    'vocab_size',
    'layer_norm_epsilon',
    'embd_pdrop',
    'attn_pdrop',
    'resid_pdrop',
    'initializer_range',
  ] as const;
  for (const k of optional) if (num(k) !== undefined) input[k] = num(k)!;
  if (json.n_inner !== undefined) input.n_inner = (json.n_inner as number | null) ?? null;
  if (idOrNull('bos_token_id') !== undefined) input.bos_token_id = idOrNull('bos_token_id')!;
  if (idOrNull('eos_token_id') !== undefined) input.eos_token_id = idOrNull('eos_token_id')!;
  return gptConfig(input);
}

export interface GPTOptions {
  /** Initialisation and dropout masks (default: a Generator seeded with `seed`). */
  generator?: Generator;
  seed?: number;
  dtype?: Extract<DType, 'f32' | 'f64'>;
}

/** The feed-forward half of a block: c_fc → tanh-GELU → c_proj → dropout. */
export class MLP extends Module {
  readonly c_fc: Conv1D;
  readonly act: GELU;
  readonly c_proj: Conv1D;
  readonly dropout: Dropout;

  constructor(config: GPTConfig, opts: { dtype?: Extract<DType, 'f32' | 'f64'>; generator: Generator }) {
    super();
    const F = config.n_inner ?? 4 * config.n_embd;
    this.c_fc = this.registerModule('c_fc', new Conv1D(config.n_embd, F, opts));
    this.act = this.registerModule('act', new GELU('tanh'));
    this.c_proj = this.registerModule('c_proj', new Conv1D(F, config.n_embd, opts));
    this.dropout = this.registerModule('dropout', new Dropout(config.resid_pdrop, { generator: opts.generator }));
  }

  forward(x: Tensor): Tensor {
    // c_fc with `act` fused into its bias pass (quantizeModel may have swapped c_fc for a layer without it)
    const h =
      this.c_fc instanceof Linear
        ? this.c_fc.forwardActivated(x, this.act.approximate === 'tanh' ? 'gelu_tanh' : 'gelu')
        : this.act.forward((this.c_fc as Module & { forward(x: Tensor): Tensor }).forward(x)); // [B, T, F]
    return this.dropout.forward(this.c_proj.forward(h)); // [B, T, C]
  }
}

export class Block extends Module {
  readonly ln_1: LayerNorm;
  readonly attn: CausalSelfAttention;
  readonly ln_2: LayerNorm;
  readonly mlp: MLP;

  constructor(config: GPTConfig, opts: { dtype?: Extract<DType, 'f32' | 'f64'>; generator: Generator }) {
    super();
    const ln = { eps: config.layer_norm_epsilon, dtype: opts.dtype };
    this.ln_1 = this.registerModule('ln_1', new LayerNorm(config.n_embd, ln));
    this.attn = this.registerModule(
      'attn',
      new CausalSelfAttention(config.n_embd, config.n_head, {
        layout: 'in_out',
        attnDropout: config.attn_pdrop,
        residDropout: config.resid_pdrop,
        dtype: opts.dtype,
        generator: opts.generator,
      }),
    );
    this.ln_2 = this.registerModule('ln_2', new LayerNorm(config.n_embd, ln));
    this.mlp = this.registerModule('mlp', new MLP(config, opts));
  }

  forward(x: Tensor, cache?: LayerCache): Tensor {
    const a = add(x, this.attn.forward(this.ln_1.forward(x), cache)); // [B, T, C]
    return add(a, this.mlp.forward(this.ln_2.forward(a))); // [B, T, C]
  }

  /**
   * forward() with each residual add fused into the norm that reads it: `normed` is ln_1(x), and
   * the block's output comes back with `next` (the next block's ln_1, or ln_f) applied, as
   * [output, next(output)]. The same values as forward() followed by next.forward().
   */
  forwardNormed(x: Tensor, normed: Tensor, next: LayerNorm, cache?: LayerCache): [Tensor, Tensor] {
    const [a, a2] = addNorm(x, this.attn.forward(normed, cache), this.ln_2); // [B, T, C] each
    return addNorm(a, this.mlp.forward(a2), next); // [B, T, C] each
  }
}

/** [x + r, ln(x + r)], in one pass where the backend fuses it. */
function addNorm(x: Tensor, r: Tensor, ln: LayerNorm): [Tensor, Tensor] {
  return addLayerNorm(x, r, ln.normalizedShape, ln.weight, ln.bias, ln.eps);
}

export class GPT extends Module implements CausalLM {
  readonly config: GPTConfig;
  readonly wte: Embedding;
  readonly wpe: Embedding;
  readonly drop: Dropout;
  readonly h: ModuleList<Block>;
  readonly ln_f: LayerNorm;
  readonly dtype: Extract<DType, 'f32' | 'f64'>;

  constructor(config: GPTConfigInput | GPTConfig, opts: GPTOptions = {}) {
    super();
    const c = gptConfig(config);
    this.config = c;
    this.dtype = opts.dtype ?? 'f32';
    const generator = opts.generator ?? new Generator(opts.seed ?? 0);
    const mod = { dtype: this.dtype, generator };
    this.wte = this.registerModule('wte', new Embedding(c.vocab_size, c.n_embd, mod));
    this.wpe = this.registerModule('wpe', new Embedding(c.n_positions, c.n_embd, mod));
    this.drop = this.registerModule('drop', new Dropout(c.embd_pdrop, { generator }));
    this.h = this.registerModule('h', new ModuleList(Array.from({ length: c.n_layer }, () => new Block(c, mod))));
    this.ln_f = this.registerModule('ln_f', new LayerNorm(c.n_embd, { eps: c.layer_norm_epsilon, dtype: this.dtype }));
    this.initWeights(generator);
  }

  /** GPT-2's init (see the file comment), in parameter order, from `generator`. */
  initWeights(generator: Generator): void {
    const std = this.config.initializer_range;
    const residualStd = std / Math.sqrt(2 * this.config.n_layer);
    for (const [name, p] of this.namedParameters()) {
      if (/(^|\.)ln_(1|2|f)\.weight$/.test(name)) ones_(p);
      else if (name.endsWith('.bias')) zeros_(p);
      else normal_(p, 0, /\.c_proj\.weight$/.test(name) ? residualStd : std, { generator });
    }
  }

  /** n_positions: the longest context one forward pass holds. */
  get contextLength(): number {
    return this.config.n_positions;
  }

  /** Parameters, excluding the position embedding when `nonEmbedding` (nanoGPT's count). */
  override numParameters(opts: { trainableOnly?: boolean; nonEmbedding?: boolean } = {}): number {
    const n = super.numParameters(opts);
    return opts.nonEmbedding ? n - this.wpe.weight.size : n;
  }

  /** The hidden states after ln_f: ids [B, T] → [B, T, C]. `cache` (inference) supplies past positions. */
  hidden(ids: Tensor, cache?: KVCache): Tensor {
    checkTokenIds(ids, 'GPT');
    const T = ids.shape[1]!;
    const past = cache?.length ?? 0;
    if (past + T > this.config.n_positions) {
      throw new ShapeError(
        `GPT: ${past + T} positions exceed n_positions ${this.config.n_positions}; crop the context to the last ${this.config.n_positions} tokens`,
        { op: 'GPT', shapes: [ids.shape], positions: past + T, nPositions: this.config.n_positions },
      );
    }
    const tok = this.wte.forward(ids); // [B, T, C]
    const pos = this.wpe.forward(arange(past, past + T)); // [T, C]
    let x = this.drop.forward(add(tok, pos)); // [B, T, C]
    const blocks = [...this.h];
    if (blocks.length === 0) return this.ln_f.forward(x);
    let normed = blocks[0]!.ln_1.forward(x); // [B, T, C]
    for (let i = 0; i < blocks.length; i++) {
      const next = i + 1 < blocks.length ? blocks[i + 1]!.ln_1 : this.ln_f;
      [x, normed] = blocks[i]!.forwardNormed(x, normed, next, cache?.layer(i)); // [B, T, C] each
    }
    return normed; // ln_f of the last block's output
  }

  /** ids [B, T] → logits [B, T, V] (the head is wte, tied). */
  forward(ids: Tensor): Tensor {
    return this.head(this.hidden(ids));
  }

  /** x [..., C] → logits [..., V] = x · wteᵀ. */
  head(x: Tensor): Tensor {
    return matmul(x, transpose(this.wte.weight, 0, 1));
  }

  /** Mean next-token cross-entropy of ids [B, T] against targets [B, T] (ignoreIndex −100 skips positions). */
  loss(ids: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor {
    const logits = this.forward(ids); // [B, T, V]
    if (targets.rank !== 2 || targets.shape[0] !== ids.shape[0] || targets.shape[1] !== ids.shape[1]) {
      throw new ShapeError(
        `GPT.loss: targets must have the shape of ids ${formatShape(ids.shape)}, got ${formatShape(targets.shape)}`,
        { op: 'GPT.loss', shapes: [ids.shape, targets.shape] },
      );
    }
    const V = this.config.vocab_size;
    return crossEntropy(reshape(logits, [-1, V]), reshape(targets, [-1]), opts); // [B·T, V] vs [B·T]
  }

  /** A cache sized for this model (batch B, all n_positions). */
  createCache(batch = 1): KVCache {
    const c = this.config;
    return new KVCache({
      layers: c.n_layer,
      batch,
      heads: c.n_head,
      headDim: c.n_embd / c.n_head,
      maxLength: c.n_positions,
      dtype: this.dtype,
    });
  }

  /**
   * Inference step: ids [B, T] are the next T tokens after the cache's positions; returns
   * logits [B, T, V] and advances the cache. Runs without recording gradients.
   */
  forwardWithCache(ids: Tensor, cache: KVCache): Tensor {
    if (ids.rank === 2 && cache.batch !== ids.shape[0]) {
      throw new ShapeError(
        `GPT.forwardWithCache: the cache was made for batch ${cache.batch}, ids are ${formatShape(ids.shape)}`,
        { op: 'GPT.forwardWithCache', shapes: [ids.shape], cacheBatch: cache.batch },
      );
    }
    return stepWithCache(cache, ids.shape[1]!, () => this.head(this.hidden(ids, cache)));
  }

  /** Generation with the KV cache; see generateTokens in causal-lm.ts. */
  generate(prompt: readonly number[], opts: GenerateOptions = {}): GenerateResult {
    return generateTokens(this, prompt, opts);
  }

  /** The config.json content Hugging Face transformers reads for this model. */
  toHFConfig(): Record<string, unknown> {
    const c = this.config;
    return {
      architectures: ['GPT2LMHeadModel'],
      model_type: 'gpt2',
      activation_function: 'gelu_new',
      vocab_size: c.vocab_size,
      n_positions: c.n_positions,
      n_ctx: c.n_positions,
      n_embd: c.n_embd,
      n_layer: c.n_layer,
      n_head: c.n_head,
      n_inner: c.n_inner,
      layer_norm_epsilon: c.layer_norm_epsilon,
      embd_pdrop: c.embd_pdrop,
      attn_pdrop: c.attn_pdrop,
      resid_pdrop: c.resid_pdrop,
      initializer_range: c.initializer_range,
      bos_token_id: c.bos_token_id,
      eos_token_id: c.eos_token_id,
      scale_attn_weights: true,
      scale_attn_by_inverse_layer_idx: false,
      reorder_and_upcast_attn: false,
      tie_word_embeddings: true,
      use_cache: true,
      torch_dtype: this.dtype === 'f64' ? 'float64' : 'float32',
    };
  }

  /**
   * Loads GPT-2 weights: accepts the original names, names with the `transformers`
   * `transformer.` prefix, and ignores what GPT2LMHeadModel files carry besides the weights
   * (`lm_head.weight`, tied to wte; the `attn.bias` / `attn.masked_bias` mask buffers).
   */
  override loadStateDict(state: StateDictInput, opts: LoadStateDictOptions = {}): LoadStateDictResult {
    return super.loadStateDict(normalizeGPT2Keys(state), opts);
  }
}

/** GPT-2 checkpoint names → knobs' names (see GPT.loadStateDict). */
export function normalizeGPT2Keys(state: StateDictInput): Map<string, Tensor> {
  const entries: Iterable<[string, Tensor]> =
    state instanceof Map ? (state as Map<string, Tensor>) : Object.entries(state);
  const out = new Map<string, Tensor>();
  for (const [rawKey, t] of entries) {
    const key = rawKey.startsWith('transformer.') ? rawKey.slice('transformer.'.length) : rawKey;
    if (key === 'lm_head.weight' || /^h\.\d+\.attn\.(bias|masked_bias)$/.test(key)) continue;
    out.set(key, t);
  }
  return out;
}
