/**
 * One batched forward pass of a Llama (Llama, Mistral, Qwen2) over rows from many sequences
 * (src/serve/batched-decoder.ts). Every kernel on the way is batch-invariant
 * (native/kernels/bi_decode.cpp; its q8_0/q4_0 product gives qmatmul's bits), and the elementwise
 * steps (RoPE, residual adds) work one value at a time, so a row's logits are the same bits
 * whatever rows share its step.
 */
import type { NativeAddon } from '../backends/native/index.js';
import type { Llama } from '../models/llama.js';
import { BatchedDecoder, type BatchRow, type F32, type Projection, type Site } from './batched-decoder.js';
import { KV_BLOCK, type PagedKvCache, type PagedKvShape } from './paged-kv.js';

export class BatchedLlama extends BatchedDecoder {
  readonly shape: PagedKvShape;
  readonly vocabSize: number;
  readonly contextLength: number;
  private readonly C: number;
  private readonly H: number;
  private readonly eps: number;
  private readonly embed: Site;
  private readonly layers: {
    inputNorm: Site;
    postNorm: Site;
    q: Projection;
    k: Projection;
    v: Projection;
    o: Projection;
    gate: Projection;
    up: Projection;
    down: Projection;
  }[];
  private readonly finalNorm: Site;
  private readonly head: Projection;
  /** cos and sin [contextLength, D/2] of every position, as the model's ropeTables computes them. */
  private readonly cos: F32;
  private readonly sin: F32;

  constructor(model: Llama, addon: NativeAddon) {
    super(addon);
    const c = model.config;
    this.C = c.hidden_size;
    this.H = c.num_attention_heads;
    this.eps = c.rms_norm_eps;
    this.vocabSize = c.vocab_size;
    this.contextLength = model.contextLength;
    this.shape = { layers: c.num_hidden_layers, kvHeads: c.num_key_value_heads, headDim: c.head_dim };
    this.embed = this.site(model.model.embed_tokens.weight, 'model.embed_tokens.weight');
    this.layers = [...model.model.layers].map((layer, i) => {
      const at = `model.layers.${i}`;
      const a = layer.self_attn;
      const m = layer.mlp;
      return {
        inputNorm: this.site(layer.input_layernorm.weight, `${at}.input_layernorm.weight`),
        postNorm: this.site(layer.post_attention_layernorm.weight, `${at}.post_attention_layernorm.weight`),
        q: this.projection(a.q_proj, `${at}.self_attn.q_proj`),
        k: this.projection(a.k_proj, `${at}.self_attn.k_proj`),
        v: this.projection(a.v_proj, `${at}.self_attn.v_proj`),
        o: this.projection(a.o_proj, `${at}.self_attn.o_proj`),
        gate: this.projection(m.gate_proj, `${at}.mlp.gate_proj`),
        up: this.projection(m.up_proj, `${at}.mlp.up_proj`),
        down: this.projection(m.down_proj, `${at}.mlp.down_proj`),
      };
    });
    this.finalNorm = this.site(model.model.norm.weight, 'model.norm.weight');
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

  forward(rows: readonly BatchRow[], kv: PagedKvCache): F32[] {
    const { C, H } = this;
    const { kvHeads: KVH, headDim: D } = this.shape;
    const { tables, stride, positions, lens } = this.layout(rows);
    const R = rows.length;
    const x = this.buffer('x', R * C);
    rows.forEach((row, r) =>
      x.set(this.values(this.embed, row.adapter).subarray(row.token * C, (row.token + 1) * C), r * C),
    );
    const h = this.buffer('h', R * C);
    const attn = this.buffer('attn', R * H * D);
    const scale = 1 / Math.sqrt(D);
    const last = this.layers.length - 1;
    // The residual adds ride with the norms: x += o before the post-attention norm, x += down before
    // the next layer's input norm (or, after the last layer, the final norm, row by row).
    const part = (a: F32, r0: number, n: number): F32 => a.subarray(r0 * C, (r0 + n) * C);
    // x += r (when given), then h = norm(x): runs of rows, each with its norm weight (an adapter's copy or the base's)
    const norm = (site: Site, r: F32 | null): void =>
      this.inRuns(rows, [site], (r0, n, [w]) =>
        this.addon.biAddRmsNorm(part(x, r0, n), r && part(r, r0, n), n, C, w!, this.eps, part(h, r0, n)),
      );
    norm(this.layers[0]?.inputNorm ?? this.finalNorm, null);
    this.layers.forEach((L, l) => {
      const q = this.project(L.q, h, rows, C, 'q');
      const k = this.project(L.k, h, rows, C, 'k');
      const v = this.project(L.v, h, rows, C, 'v');
      const [keys, values] = [kv.keys[l]!, kv.values[l]!];
      this.addon.biRopeKv(q, k, v, R, H, KVH, D, this.cos, this.sin, positions, keys, values, KV_BLOCK, tables, stride);
      this.addon.biPagedAttention(q, R, H, D, keys, values, KVH, KV_BLOCK, tables, stride, lens, scale, attn);
      const o = this.project(L.o, attn, rows, H * D, 'o');
      norm(L.postNorm, o);
      const gate = this.project(L.gate, h, rows, C, 'gate');
      const up = this.project(L.up, h, rows, C, 'up');
      this.addon.biSwiglu(gate, up, gate.length, gate);
      const down = this.project(L.down, gate, rows, L.gate.out, 'down');
      norm(l < last ? this.layers[l + 1]!.inputNorm : this.finalNorm, down);
    });
    return this.logits(this.head, h, rows, C);
  }
}
