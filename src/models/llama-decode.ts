/**
 * Llama's decode step for one sequence and one new token, on a backend with decode kernels
 * (native): the same math as Llama.hidden + head over the KV cache, run as ~13 kernel calls per
 * layer on preallocated f32 arrays instead of ~40 ops that each build views, allocate outputs and
 * check the tape. At batch 1 a token costs its weights' bytes plus per-op overhead, and the second
 * was most of it (docs/performance.md, "Decode").
 *
 * Per layer: h = rms(x); q, k, v = proj(h); y = attention(rope(q), rope(k) → cache, v → cache);
 * x += o_proj(y); h = rms(x); x += down(silu(gate(h)) · up(h)). Each norm is fused with the
 * residual add before it. Projections run the layer's own weights: f32 (gemv) or ggml blocks
 * (the same kernel as quantizedMatmul, so the values are those of a batch-1 quantizedMatmul).
 *
 * The step declines (returns null, and the caller runs the ops) whenever it would not compute
 * exactly what the modules say: another backend, f64, an adapter (LoRA) on a layer, a layer of
 * another kind, a weight that is not dense, a token outside the vocabulary.
 */
import type { DecodeKernels } from '../backends/backend.js';
import { decodeKernels } from '../backends/dispatch.js';
import { numel } from '../shape.js';
import { Tensor } from '../tensor.js';
import type { KVCache } from '../nn/attention.js';
import { Linear } from '../nn/linear.js';
import { QuantizedLinear } from '../nn/quantized-linear.js';
import type { Llama } from './llama.js';

/** x [in] → y [out] through one layer (bias included). */
type Projection = (x: Float32Array, y: Float32Array) => void;

/** A tensor's elements as one f32 array (a view), or null when it is not dense f32. */
function dense(t: Tensor): Float32Array | null {
  if (t.dtype !== 'f32' || !t.isContiguous()) return null;
  return (t.storage as Float32Array).subarray(t.offset, t.offset + numel(t.shape));
}

function projection(layer: unknown, k: DecodeKernels): Projection | null {
  if (!(layer instanceof Linear || layer instanceof QuantizedLinear) || layer.adapter) return null;
  const bias = layer.bias ? dense(layer.bias) : null;
  if (layer.bias && !bias) return null;
  let product: Projection;
  if (layer instanceof QuantizedLinear) {
    const w = layer.weight;
    product = (x, y) => k.qgemv(x, w, y);
  } else {
    const w = layer.layout === 'out_in' ? dense(layer.weight) : null;
    if (!w) return null;
    const { outFeatures: N, inFeatures: K } = layer;
    product = (x, y) => k.gemv(x, w, N, K, y);
  }
  if (!bias) return product;
  return (x, y) => {
    product(x, y);
    for (let i = 0; i < bias.length; i++) y[i]! += bias[i]!;
  };
}

interface LayerPlan {
  q: Projection;
  k: Projection;
  v: Projection;
  o: Projection;
  gate: Projection;
  up: Projection;
  down: Projection;
  norm1: Float32Array;
  norm2: Float32Array;
  keys: Float32Array;
  values: Float32Array;
}

/** The arrays one step writes, per cache (so a step allocates only its logits). */
interface Workspace {
  x: Float32Array;
  h: Float32Array;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  y: Float32Array;
  o: Float32Array;
  gate: Float32Array;
  up: Float32Array;
}

const workspaces = new WeakMap<KVCache, Workspace>();

function workspaceFor(cache: KVCache, C: number, KD: number, F: number): Workspace {
  let ws = workspaces.get(cache);
  if (!ws || ws.x.length !== C || ws.k.length !== KD || ws.gate.length !== F) {
    const f = (n: number) => new Float32Array(n);
    ws = { x: f(C), h: f(C), q: f(C), k: f(KD), v: f(KD), y: f(C), o: f(C), gate: f(F), up: f(F) };
    workspaces.set(cache, ws);
  }
  return ws;
}

/** Every layer's kernels and arrays, or null when some layer is not one the step computes exactly. */
function planLayers(model: Llama, k: DecodeKernels, cache: KVCache): LayerPlan[] | null {
  const plans: LayerPlan[] = [];
  let i = 0;
  for (const layer of model.model.layers) {
    const a = layer.self_attn;
    const m = layer.mlp;
    const q = projection(a.q_proj, k);
    const kp = projection(a.k_proj, k);
    const v = projection(a.v_proj, k);
    const o = projection(a.o_proj, k);
    const gate = projection(m.gate_proj, k);
    const up = projection(m.up_proj, k);
    const down = projection(m.down_proj, k);
    const norm1 = dense(layer.input_layernorm.weight);
    const norm2 = dense(layer.post_attention_layernorm.weight);
    const keys = dense(cache.keys[i]!);
    const values = dense(cache.values[i]!);
    i++;
    if (!q || !kp || !v || !o || !gate || !up || !down || !norm1 || !norm2 || !keys || !values) return null;
    plans.push({ q, k: kp, v, o, gate, up, down, norm1, norm2, keys, values });
  }
  return plans;
}

/**
 * Logits [1, 1, V] of `token` at position cache.length (the caller advances the cache), with its
 * keys and values written to the cache; `rope` gives cos and sin [D] of that position. Null when
 * the step cannot run here (see the file comment): the caller then runs Llama's ops.
 */
export function llamaDecodeStep(
  model: Llama,
  token: number,
  cache: KVCache,
  rope: () => { cos: Tensor; sin: Tensor },
): Tensor | null {
  const k = decodeKernels();
  const c = model.config;
  const pos = cache.length;
  if (!k || model.dtype !== 'f32' || cache.batch !== 1 || pos >= cache.maxLength) return null;
  if (!Number.isInteger(token) || token < 0 || token >= c.vocab_size) return null;
  const embed = dense(model.model.embed_tokens.weight);
  const finalNorm = dense(model.model.norm.weight);
  const head = model.lm_head ? projection(model.lm_head, k) : null;
  if (!embed || !finalNorm || (model.lm_head && !head)) return null;
  const layers = planLayers(model, k, cache);
  const { cos, sin } = rope();
  const cosv = dense(cos);
  const sinv = dense(sin);
  if (!layers || !cosv || !sinv) return null;

  const C = c.hidden_size;
  const D = c.head_dim;
  const shape = {
    heads: c.num_attention_heads,
    kvHeads: c.num_key_value_heads,
    headDim: D,
    maxLength: cache.maxLength,
  };
  const eps = c.rms_norm_eps;
  const scale = 1 / Math.sqrt(D);
  const ws = workspaceFor(cache, C, shape.kvHeads * D, c.intermediate_size);
  ws.x.set(embed.subarray(token * C, (token + 1) * C));
  let residual: Float32Array | null = null; // what the next norm adds into x first
  for (const L of layers) {
    k.addRmsNorm(ws.x, residual, L.norm1, eps, ws.h);
    L.q(ws.h, ws.q);
    L.k(ws.h, ws.k);
    L.v(ws.h, ws.v);
    k.decodeAttention(ws.q, ws.k, ws.v, cosv, sinv, L.keys, L.values, shape, pos, scale, ws.y);
    L.o(ws.y, ws.o);
    k.addRmsNorm(ws.x, ws.o, L.norm2, eps, ws.h);
    L.gate(ws.h, ws.gate);
    L.up(ws.h, ws.up);
    k.swiglu(ws.gate, ws.up, ws.gate);
    L.down(ws.gate, ws.o);
    residual = ws.o;
  }
  k.addRmsNorm(ws.x, residual, finalNorm, eps, ws.h);
  const logits = new Float32Array(c.vocab_size);
  if (head) head(ws.h, logits);
  else k.gemv(ws.h, embed, c.vocab_size, C, logits); // tied: the embedding [V, C] is the head's W
  return new Tensor(logits, [1, 1, c.vocab_size], 'f32');
}
