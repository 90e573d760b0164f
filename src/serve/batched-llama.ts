/**
 * One batched forward pass of a Llama (Llama, Mistral, Qwen2) over rows from many sequences: each
 * row is one token at its own position of its own sequence, read against that sequence's paged KV
 * cache (src/serve/paged-kv.ts). Decode steps are one row per sequence; a prompt chunk is several
 * rows of one sequence. Every kernel on the way is batch-invariant (native/kernels/bi_decode.cpp;
 * its q8_0/q4_0 product gives qmatmul's bits), and the elementwise steps (RoPE, residual adds) work
 * one value at a time, so a row's logits are the same bits whatever rows share its step.
 *
 * LoRA: each row names its adapter (or none); for every adapted projection the rows of one adapter
 * are gathered and get `scaling · B(A x)` added, computed with the same batch-invariant matmul.
 */
import { GGML_TYPE_ID, type NativeAddon, packedOf, quantizedProduct } from '../backends/native/index.js';
import { ArgumentError } from '../errors.js';
import type { LoraAdapter } from '../finetune/lora.js';
import type { Llama } from '../models/llama.js';
import { Linear } from '../nn/linear.js';
import { QuantizedLinear } from '../nn/quantized-linear.js';
import type { Tensor } from '../tensor.js';
import { KV_BLOCK, type PagedKvCache, type PagedKvShape } from './paged-kv.js';

type F32 = Float32Array;

/** One token of one sequence in a step. */
export interface BatchRow {
  token: number;
  /** Its position in the sequence (0-based); positions before it must already be in the cache. */
  position: number;
  /** The sequence's block table. */
  table: Int32Array;
  adapter: LoraAdapter | null;
  /** Whether the step returns logits for this row (the last row of a prompt, and decode rows). */
  wantLogits: boolean;
}

/** y [M, out] = x [M, in] · Wᵀ (+ b) into y, for one projection of the model, batch-invariant. */
interface Projection {
  path: string;
  out: number;
  apply(x: F32, M: number, y: F32): F32;
}

function f32Data(t: Tensor, what: string): F32 {
  if (t.dtype !== 'f32') throw new ArgumentError(`batched decoding needs f32 weights; ${what} is ${t.dtype}`);
  return t.contiguousStorage() as F32;
}

function addBias(y: F32, M: number, bias: F32 | null): F32 {
  if (!bias) return y;
  const N = bias.length;
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) y[m * N + n] += bias[n]!;
  return y;
}

export class BatchedLlama {
  readonly shape: PagedKvShape;
  readonly vocabSize: number;
  readonly contextLength: number;
  private readonly C: number;
  private readonly H: number;
  private readonly eps: number;
  private readonly embed: F32;
  private readonly layers: {
    inputNorm: F32;
    postNorm: F32;
    q: Projection;
    k: Projection;
    v: Projection;
    o: Projection;
    gate: Projection;
    up: Projection;
    down: Projection;
  }[];
  private readonly finalNorm: F32;
  private readonly head: Projection;
  /** cos and sin [contextLength, D/2] of every position, as the model's ropeTables computes them. */
  private readonly cos: F32;
  private readonly sin: F32;
  /**
   * Each step's intermediates (x, q, k, …) reuse these buffers, grown to the largest step seen:
   * fresh arrays of up to megabytes per projection and step made the garbage collector run several
   * times a step. Only the logits, handed out, are new each step.
   */
  private readonly scratch = new Map<string, F32>();

  constructor(
    model: Llama,
    private readonly addon: NativeAddon,
  ) {
    const c = model.config;
    this.C = c.hidden_size;
    this.H = c.num_attention_heads;
    this.eps = c.rms_norm_eps;
    this.vocabSize = c.vocab_size;
    this.contextLength = model.contextLength;
    this.shape = { layers: c.num_hidden_layers, kvHeads: c.num_key_value_heads, headDim: c.head_dim };
    this.embed = f32Data(model.model.embed_tokens.weight, 'model.embed_tokens.weight');
    this.layers = [...model.model.layers].map((layer, i) => {
      const at = `model.layers.${i}`;
      const a = layer.self_attn;
      const m = layer.mlp;
      return {
        inputNorm: f32Data(layer.input_layernorm.weight, `${at}.input_layernorm.weight`),
        postNorm: f32Data(layer.post_attention_layernorm.weight, `${at}.post_attention_layernorm.weight`),
        q: this.projection(a.q_proj, `${at}.self_attn.q_proj`),
        k: this.projection(a.k_proj, `${at}.self_attn.k_proj`),
        v: this.projection(a.v_proj, `${at}.self_attn.v_proj`),
        o: this.projection(a.o_proj, `${at}.self_attn.o_proj`),
        gate: this.projection(m.gate_proj, `${at}.mlp.gate_proj`),
        up: this.projection(m.up_proj, `${at}.mlp.up_proj`),
        down: this.projection(m.down_proj, `${at}.mlp.down_proj`),
      };
    });
    this.finalNorm = f32Data(model.model.norm.weight, 'model.norm.weight');
    this.head = model.lm_head
      ? this.projection(model.lm_head, 'lm_head')
      : this.dense(this.embed, null, c.vocab_size, c.hidden_size, 'lm_head');
    const inv = model.ropeFrequencies;
    const half = inv.length;
    const P = this.contextLength;
    this.cos = new Float32Array(P * half);
    this.sin = new Float32Array(P * half);
    for (let p = 0; p < P; p++)
      for (let j = 0; j < half; j++) {
        const angle = Math.fround(p * inv[j]!); // as ropeTables: the product in float32
        this.cos[p * half + j] = Math.cos(angle);
        this.sin[p * half + j] = Math.sin(angle);
      }
  }

  private projection(layer: Linear | QuantizedLinear, path: string): Projection {
    if (layer.adapter !== null)
      throw new ArgumentError(
        `batched decoding applies adapters per request; ${path} has one attached to the model (serve adapters as request-level adapters instead)`,
      );
    const bias = layer.bias ? f32Data(layer.bias, `${path}.bias`) : null;
    if (layer instanceof QuantizedLinear) {
      const weight = layer.weight;
      const N = weight.rows;
      return {
        path,
        out: N,
        apply: (x, M, y) => {
          // The packed copy the backend's decode step also uses (made once per weight), with each
          // weight vector loaded once per tile of rows; where there is none, the blocks' product.
          const packed = M > 0 ? packedOf(this.addon, weight) : null;
          if (packed) this.addon.biQmatmulPacked(GGML_TYPE_ID[weight.type], x, M, weight.cols, packed, N, y);
          else if (M > 0) quantizedProduct(this.addon, x, M, weight, y);
          return addBias(y, M, bias);
        },
      };
    }
    if (!(layer instanceof Linear) || layer.layout !== 'out_in')
      throw new ArgumentError(`batched decoding: ${path} is not a Linear with weight [out, in]`);
    return this.dense(f32Data(layer.weight, `${path}.weight`), bias, layer.outFeatures, layer.inFeatures, path);
  }

  private dense(w: F32, bias: F32 | null, N: number, K: number, path: string): Projection {
    return {
      path,
      out: N,
      apply: (x, M, y) => {
        if (M > 0) this.addon.biMatmul(x, M, K, w, N, y);
        return addBias(y, M, bias);
      },
    };
  }

  /** `n` floats of the buffer `name` (contents left from earlier use: callers overwrite them). */
  private buffer(name: string, n: number): F32 {
    let b = this.scratch.get(name);
    if (!b || b.length < n) {
      b = new Float32Array(Math.max(n, 2 * (b?.length ?? 0)));
      this.scratch.set(name, b);
    }
    return b.subarray(0, n);
  }

  /**
   * Projection plus each row's LoRA delta (rows grouped by adapter; each group's delta is row-wise),
   * into the buffer `into` (or a new array).
   */
  private project(p: Projection, x: F32, rows: readonly BatchRow[], inDim: number, into: string | null): F32 {
    const M = rows.length;
    const y = p.apply(x, M, into ? this.buffer(into, M * p.out) : new Float32Array(M * p.out));
    const groups = new Map<LoraAdapter, number[]>();
    rows.forEach((r, i) => {
      if (r.adapter?.layers.has(p.path)) {
        const g = groups.get(r.adapter);
        if (g) g.push(i);
        else groups.set(r.adapter, [i]);
      }
    });
    const N = p.out;
    for (const [adapter, idx] of groups) {
      const lora = adapter.layers.get(p.path)!;
      const A = f32Data(lora.lora_A.weight, `${p.path}.lora_A.weight`); // [r, in]
      const B = f32Data(lora.lora_B.weight, `${p.path}.lora_B.weight`); // [out, r]
      const r = lora.r;
      const G = idx.length;
      const xg = new Float32Array(G * inDim);
      idx.forEach((row, j) => xg.set(x.subarray(row * inDim, (row + 1) * inDim), j * inDim));
      const t = new Float32Array(G * r);
      this.addon.biMatmul(xg, G, inDim, A, r, t);
      const d = new Float32Array(G * N);
      this.addon.biMatmul(t, G, r, B, N, d);
      const s = lora.scaling;
      idx.forEach((row, j) => {
        for (let n = 0; n < N; n++) y[row * N + n] += Math.fround(s * d[j * N + n]!);
      });
    }
    return y;
  }

  /**
   * Runs the rows through the model, writing their keys and values into `kv`; returns the logits
   * [V] of each row with wantLogits, in row order.
   */
  forward(rows: readonly BatchRow[], kv: PagedKvCache): F32[] {
    const { C, H } = this;
    const { kvHeads: KVH, headDim: D } = this.shape;
    const R = rows.length;
    for (const row of rows)
      if (row.position >= this.contextLength || row.position >= row.table.length * KV_BLOCK)
        throw new ArgumentError(`batched decoding: position ${row.position} is past the sequence's cache`);
    const x = this.buffer('x', R * C);
    rows.forEach((row, r) => x.set(this.embed.subarray(row.token * C, (row.token + 1) * C), r * C));
    const h = this.buffer('h', R * C);
    const tables = new Int32Array(R * Math.max(1, ...rows.map((r) => r.table.length)));
    const stride = tables.length / Math.max(R, 1);
    const positions = new Int32Array(R);
    const lens = new Int32Array(R);
    rows.forEach((row, r) => {
      tables.set(row.table, r * stride);
      positions[r] = row.position;
      lens[r] = row.position + 1;
    });
    const attn = this.buffer('attn', R * H * D);
    const scale = 1 / Math.sqrt(D);
    const last = this.layers.length - 1;
    // The residual adds ride with the norms: x += o before the post-attention norm, x += down before
    // the next layer's input norm (or, after the last layer, the final norm, row by row).
    this.addon.biRmsNorm(x, R, C, this.layers[0]?.inputNorm ?? this.finalNorm, this.eps, h);
    this.layers.forEach((L, l) => {
      const q = this.project(L.q, h, rows, C, 'q');
      const k = this.project(L.k, h, rows, C, 'k');
      const v = this.project(L.v, h, rows, C, 'v');
      const [keys, values] = [kv.keys[l]!, kv.values[l]!];
      this.addon.biRopeKv(q, k, v, R, H, KVH, D, this.cos, this.sin, positions, keys, values, KV_BLOCK, tables, stride);
      this.addon.biPagedAttention(q, R, H, D, keys, values, KVH, KV_BLOCK, tables, stride, lens, scale, attn);
      const o = this.project(L.o, attn, rows, H * D, 'o');
      this.addon.biAddRmsNorm(x, o, R, C, L.postNorm, this.eps, h);
      const gate = this.project(L.gate, h, rows, C, 'gate');
      const up = this.project(L.up, h, rows, C, 'up');
      this.addon.biSwiglu(gate, up, gate.length, gate);
      const down = this.project(L.down, gate, rows, L.gate.out, 'down');
      this.addon.biAddRmsNorm(x, down, R, C, l < last ? this.layers[l + 1]!.inputNorm : this.finalNorm, this.eps, h);
    });
    const picked = rows.flatMap((row, r) => (row.wantLogits ? [r] : []));
    const M = picked.length;
    const normed = this.buffer('normed', M * C);
    picked.forEach((r, j) => normed.set(h.subarray(r * C, (r + 1) * C), j * C));
    const logits = this.project(
      this.head,
      normed,
      picked.map((r) => rows[r]!),
      C,
      null, // the logits leave with the caller
    );
    const V = this.vocabSize;
    return picked.map((_, j) => logits.subarray(j * V, (j + 1) * V));
  }
}
