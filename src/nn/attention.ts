/**
 * Multi-head causal self-attention (GPT-2 / nanoGPT layout) and the key/value cache that lets
 * generation feed one token at a time.
 *
 * Legend: B batch, T new positions, P cached (past) positions, S = P + T, C channels,
 * H heads, D = C / H head size.
 *
 * Children: c_attn (C → 3C: q, k, v side by side, in that order), c_proj (C → C), attn_dropout
 * (on the attention weights), resid_dropout (on the output) — Hugging Face GPT-2's names.
 */
import type { DType } from '../dtype.js';
import { noGrad } from '../autograd/tape.js';
import { ArgumentError, ShapeError } from '../errors.js';
import { arange, zeros } from '../ops/creation.js';
import { le, mul, sub, where } from '../ops/elementwise.js';
import { matmul } from '../ops/linalg.js';
import { causalAttentionQKV, scaledDotProductAttention, softmax } from '../ops/nn.js';
import { split } from '../ops/shape-ops.js';
import { assignInto, reshape, slice, transpose } from '../ops/view.js';
import type { Generator } from '../random.js';
import { formatShape } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { Dropout } from './layers.js';
import { Conv1D, Linear } from './linear.js';
import { Module } from './module.js';

export interface CausalSelfAttentionOptions {
  /** Biases on c_attn and c_proj (default true). */
  bias?: boolean;
  /** Dropout on the attention weights (GPT-2's attn_pdrop). */
  attnDropout?: number;
  /** Dropout on the output projection (GPT-2's resid_pdrop). */
  residDropout?: number;
  /** 'in_out' makes c_attn/c_proj GPT-2 Conv1D layers; 'out_in' (default) nn.Linear layers. */
  layout?: 'out_in' | 'in_out';
  dtype?: Extract<DType, 'f32' | 'f64'>;
  /** Initialisation and dropout masks. */
  generator?: Generator;
}

/** One layer's slice of a KVCache: buffers [B, H, maxLength, D] and how many positions are filled. */
export interface LayerCache {
  keys: Tensor;
  values: Tensor;
  past: number;
}

export class CausalSelfAttention extends Module {
  readonly nEmbd: number;
  readonly nHead: number;
  readonly headDim: number;
  readonly c_attn: Linear;
  readonly c_proj: Linear;
  readonly attn_dropout: Dropout;
  readonly resid_dropout: Dropout;

  constructor(nEmbd: number, nHead: number, opts: CausalSelfAttentionOptions = {}) {
    super();
    if (!Number.isInteger(nHead) || nHead <= 0 || nEmbd % nHead !== 0) {
      throw new ArgumentError(`CausalSelfAttention: n_embd (${nEmbd}) must be divisible by n_head (${nHead})`);
    }
    this.nEmbd = nEmbd;
    this.nHead = nHead;
    this.headDim = nEmbd / nHead;
    const Affine = opts.layout === 'in_out' ? Conv1D : Linear;
    const lin = { bias: opts.bias ?? true, dtype: opts.dtype, generator: opts.generator };
    this.c_attn = this.registerModule('c_attn', new Affine(nEmbd, 3 * nEmbd, lin));
    this.c_proj = this.registerModule('c_proj', new Affine(nEmbd, nEmbd, lin));
    const g = opts.generator ? { generator: opts.generator } : {};
    this.attn_dropout = this.registerModule('attn_dropout', new Dropout(opts.attnDropout ?? 0, g));
    this.resid_dropout = this.registerModule('resid_dropout', new Dropout(opts.residDropout ?? 0, g));
  }

  /**
   * x [B, T, C] → [B, T, C]. With `cache`, the new keys/values are written at positions
   * past..past+T−1 and the queries attend to all S = past + T positions (inference only: the
   * cache is written outside the tape, so no gradient reaches earlier positions through it).
   */
  forward(x: Tensor, cache?: LayerCache): Tensor {
    if (x.rank !== 3 || x.shape[2] !== this.nEmbd) {
      throw new ShapeError(`CausalSelfAttention: input must be [B, T, ${this.nEmbd}], got ${formatShape(x.shape)}`, {
        op: 'CausalSelfAttention',
        shapes: [x.shape],
        expected: ['B', 'T', this.nEmbd],
      });
    }
    const [B, T, C] = x.shape as [number, number, number];
    const H = this.nHead;
    const D = this.headDim;
    const qkv = this.c_attn.forward(x); // [B, T, 3C]
    if (!cache && !dropoutActive(this.attn_dropout)) {
      // training and plain forwards: heads read in place from qkv, merged on the way out (no copies)
      return this.resid_dropout.forward(this.c_proj.forward(causalAttentionQKV(qkv, H)));
    }
    const heads = (t: Tensor): Tensor => transpose(reshape(t, [B, T, H, D]), 1, 2); // [B, T, C] → [B, H, T, D]
    const [qFlat, kFlat, vFlat] = split(qkv, C, 2) as [Tensor, Tensor, Tensor];
    const q = heads(qFlat); // [B, H, T, D]
    let k = heads(kFlat); // [B, H, T, D]
    let v = heads(vFlat); // [B, H, T, D]
    let past = 0;
    if (cache) {
      past = cache.past;
      const max = cache.keys.shape[2]!;
      if (cache.keys.shape[0] !== B || past + T > max) {
        throw new ShapeError(
          `CausalSelfAttention: the cache holds batch ${cache.keys.shape[0]} and ${max} positions; cannot add ${T} positions of batch ${B} after ${past}`,
          { op: 'CausalSelfAttention', shapes: [x.shape, cache.keys.shape], past },
        );
      }
      noGrad(() => {
        assignInto(slice(cache.keys, 2, past, past + T), k);
        assignInto(slice(cache.values, 2, past, past + T), v);
      });
      k = slice(cache.keys, 2, 0, past + T); // [B, H, S, D]
      v = slice(cache.values, 2, 0, past + T); // [B, H, S, D]
    }
    const y = this.attend(q, k, v, past); // [B, H, T, D]
    const merged = reshape(transpose(y, 1, 2), [B, T, C]); // [B, T, C]
    return this.resid_dropout.forward(this.c_proj.forward(merged));
  }

  private attend(q: Tensor, k: Tensor, v: Tensor, past: number): Tensor {
    return causalAttentionAfter(q, k, v, past, this.attn_dropout);
  }
}

/**
 * softmax(q·kᵀ/√D, causal) · v for q [B, H, T, D] and k, v [B, H, S, D], where query i sits at
 * absolute position past + i (S = past + T). Without a past or dropout it is the fused causal
 * attention; otherwise the scores are built with a bottom-right aligned mask.
 */
export function causalAttentionAfter(q: Tensor, k: Tensor, v: Tensor, past: number, attnDropout?: Dropout): Tensor {
  const dropout = dropoutActive(attnDropout);
  if (past === 0 && !dropout) return scaledDotProductAttention(q, k, v, { causal: true });
  const T = q.shape[2]!;
  const S = k.shape[2]!;
  let scores = mul(matmul(q, transpose(k, -2, -1)), 1 / Math.sqrt(q.shape[3]!)); // [B, H, T, S]
  if (T > 1) {
    // key j is visible from query i when j ≤ past + i (bottom-right aligned causal mask)
    const visible = le(sub(reshape(arange(S), [1, S]), reshape(arange(T), [T, 1])), past); // [T, S]
    scores = where(visible, scores, -Infinity);
  }
  const weights = softmax(scores, -1); // [B, H, T, S]
  return matmul(dropout ? attnDropout!.forward(weights) : weights, v); // [B, H, T, D]
}

function dropoutActive(d: Dropout | undefined): boolean {
  return d !== undefined && d.training && d.p > 0;
}

export interface KVCacheOptions {
  layers: number;
  batch: number;
  heads: number;
  headDim: number;
  /** Positions the cache can hold (the model's n_positions). */
  maxLength: number;
  dtype?: Extract<DType, 'f32' | 'f64'>;
}

/**
 * Preallocated keys and values for every layer, [B, H, maxLength, D] each, filled left to right.
 * A model's forwardWithCache advances `length` after all layers have written.
 */
export class KVCache {
  readonly keys: Tensor[];
  readonly values: Tensor[];
  readonly maxLength: number;
  readonly batch: number;
  /** Positions filled so far. */
  length = 0;

  constructor(opts: KVCacheOptions) {
    const shape = [opts.batch, opts.heads, opts.maxLength, opts.headDim];
    const dtype = opts.dtype ?? 'f32';
    this.keys = Array.from({ length: opts.layers }, () => zeros(shape, { dtype }));
    this.values = Array.from({ length: opts.layers }, () => zeros(shape, { dtype }));
    this.maxLength = opts.maxLength;
    this.batch = opts.batch;
  }

  /** The view one attention layer reads and writes. */
  layer(i: number): LayerCache {
    const keys = this.keys[i];
    const values = this.values[i];
    if (!keys || !values) throw new ArgumentError(`KVCache: no layer ${i} (the cache has ${this.keys.length})`);
    return { keys, values, past: this.length };
  }

  /** Forgets every position (the buffers are reused). */
  reset(): void {
    this.length = 0;
  }
}
