/**
 * One batched forward pass of a GPT-2 (src/models/gpt.ts) over rows from many sequences
 * (src/serve/batched-decoder.ts). GPT-2 differs from a Llama in ways each kernel keeps
 * batch-invariant:
 *
 *  - learned positions: a row's input is wte[token] + wpe[position], one f32 add per value, and the
 *    keys go into the cache unrotated (biStoreKv);
 *  - LayerNorm with a bias, through the model's own row kernel (statistics in an order fixed by C,
 *    one row at a time: the same bits as the unbatched model's norms);
 *  - Conv1D weights stored [in, out], multiplied as stored (biMatmulKn: no transposed copy);
 *  - fused q/k/v (c_attn) and biases on every projection; the tanh GELU elementwise.
 */
import { type NativeAddon, UNARY_CODE } from '../backends/native/index.js';
import { ArgumentError } from '../errors.js';
import type { GPT } from '../models/gpt.js';
import type { LayerNorm } from '../nn/layers.js';
import { BatchedDecoder, type BatchRow, type F32, type Projection, type Site } from './batched-decoder.js';
import { KV_BLOCK, type PagedKvCache, type PagedKvShape } from './paged-kv.js';

interface Norm {
  weight: Site;
  bias: Site;
}

export class BatchedGpt extends BatchedDecoder {
  readonly shape: PagedKvShape;
  readonly vocabSize: number;
  readonly contextLength: number;
  private readonly C: number;
  private readonly H: number;
  private readonly eps: number;
  private readonly wte: Site;
  private readonly wpe: Site;
  private readonly act: number;
  private readonly layers: { ln1: Norm; ln2: Norm; qkv: Projection; o: Projection; fc: Projection; down: Projection }[];
  private readonly lnF: Norm;
  private readonly head: Projection;

  constructor(model: GPT, addon: NativeAddon) {
    super(addon);
    const c = model.config;
    this.C = c.n_embd;
    this.H = c.n_head;
    this.eps = c.layer_norm_epsilon;
    this.vocabSize = c.vocab_size;
    this.contextLength = model.contextLength;
    this.shape = { layers: c.n_layer, kvHeads: c.n_head, headDim: c.n_embd / c.n_head };
    this.wte = this.site(model.wte.weight, 'wte.weight');
    this.wpe = this.site(model.wpe.weight, 'wpe.weight');
    const norm = (ln: LayerNorm, path: string): Norm => {
      if (!ln.weight || !ln.bias) throw new ArgumentError(`batched decoding: ${path} has no weight or bias`);
      return { weight: this.site(ln.weight, `${path}.weight`), bias: this.site(ln.bias, `${path}.bias`) };
    };
    // Adapters name GPT-2's modules by their Hugging Face paths (GPT2LMHeadModel's `transformer.`).
    const blocks = [...model.h];
    this.layers = blocks.map((block, i) => {
      const at = `transformer.h.${i}`;
      return {
        ln1: norm(block.ln_1, `h.${i}.ln_1`),
        ln2: norm(block.ln_2, `h.${i}.ln_2`),
        qkv: this.projection(block.attn.c_attn, `${at}.attn.c_attn`),
        o: this.projection(block.attn.c_proj, `${at}.attn.c_proj`),
        fc: this.projection(block.mlp.c_fc, `${at}.mlp.c_fc`),
        down: this.projection(block.mlp.c_proj, `${at}.mlp.c_proj`),
      };
    });
    this.act = UNARY_CODE[blocks[0]?.mlp.act.approximate === 'none' ? 'gelu' : 'gelu_tanh'];
    this.lnF = norm(model.ln_f, 'ln_f');
    this.head = this.dense(this.wte, null, c.vocab_size, c.n_embd, 'lm_head'); // tied to wte
  }

  forward(rows: readonly BatchRow[], kv: PagedKvCache): F32[] {
    const { C, H, eps } = this;
    const D = this.shape.headDim;
    const { tables, stride, positions, lens } = this.layout(rows);
    const R = rows.length;
    const x = this.buffer('x', R * C);
    rows.forEach((row, r) => {
      const [t, p] = [row.token * C, row.position * C];
      const [wte, wpe] = [this.values(this.wte, row.adapter), this.values(this.wpe, row.adapter)];
      for (let c = 0; c < C; c++) x[r * C + c] = wte[t + c]! + wpe[p + c]!;
    });
    const h = this.buffer('h', R * C);
    const [q, k, v] = [this.buffer('q', R * C), this.buffer('k', R * C), this.buffer('v', R * C)];
    const attn = this.buffer('attn', R * C);
    const scale = 1 / Math.sqrt(D);
    const part = (a: F32, r0: number, n: number): F32 => a.subarray(r0 * C, (r0 + n) * C);
    // h = ln(x), or x += r first (the residual add and the next norm in one pass, as the model's
    // addNorm): runs of rows, each with its norm's weight and bias (an adapter's copies or the base's)
    const norm = (ln: Norm, r: F32 | null): void =>
      this.inRuns(rows, [ln.weight, ln.bias], (r0, n, [w, b]) => {
        const [xs, hs] = [part(x, r0, n), part(h, r0, n)];
        if (r) this.addon.addLayerNorm(xs, part(r, r0, n), w!, b!, n, C, eps, xs, hs, null, null);
        else this.addon.layerNorm(xs, w!, b!, n, C, eps, hs, null, null);
      });
    norm(this.layers[0]?.ln1 ?? this.lnF, null);
    this.layers.forEach((L, l) => {
      const qkv = this.project(L.qkv, h, rows, C, 'qkv'); // [R, 3C]: q, k, v side by side
      for (let r = 0; r < R; r++) {
        q.set(qkv.subarray(3 * r * C, (3 * r + 1) * C), r * C);
        k.set(qkv.subarray((3 * r + 1) * C, (3 * r + 2) * C), r * C);
        v.set(qkv.subarray((3 * r + 2) * C, (3 * r + 3) * C), r * C);
      }
      const [keys, values] = [kv.keys[l]!, kv.values[l]!];
      this.addon.biStoreKv(k, v, R, H, D, positions, keys, values, KV_BLOCK, tables, stride);
      this.addon.biPagedAttention(q, R, H, D, keys, values, H, KV_BLOCK, tables, stride, lens, scale, attn);
      const o = this.project(L.o, attn, rows, C, 'o');
      norm(L.ln2, o);
      const fc = this.project(L.fc, h, rows, C, 'fc');
      this.addon.biasActivation(fc, R, L.fc.out, null, this.act, fc);
      const down = this.project(L.down, fc, rows, L.fc.out, 'down');
      norm(l + 1 < this.layers.length ? this.layers[l + 1]!.ln1 : this.lnF, down);
    });
    return this.logits(this.head, h, rows, C);
  }
}
