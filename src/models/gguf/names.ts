/**
 * Tensor names and layouts between Hugging Face checkpoints and GGUF files, as llama.cpp's
 * converter writes them (convert_hf_to_gguf.py and gguf-py/gguf/tensor_mapping.py of the
 * llama.cpp that node-llama-cpp 3.21.1 bundles; docs/gguf.md cites the commit).
 *
 *   Llama family (GGUF arch `llama` for llama and mistral, `qwen2` for qwen2):
 *     model.embed_tokens.weight ↔ token_embd.weight        model.norm.weight ↔ output_norm.weight
 *     lm_head.weight ↔ output.weight (absent when tied)      model.layers.{i}. ↔ blk.{i}.
 *       input_layernorm ↔ attn_norm, self_attn.{q,k,v,o}_proj ↔ attn_{q,k,v,output},
 *       post_attention_layernorm ↔ ffn_norm, mlp.{gate,up,down}_proj ↔ ffn_{gate,up,down}
 *   GPT-2 (arch `gpt2`; the canonical HF names carry no `transformer.` prefix):
 *     wte ↔ token_embd, wpe ↔ position_embd, ln_f ↔ output_norm, h.{i}. ↔ blk.{i}.
 *       ln_1 ↔ attn_norm, attn.c_attn ↔ attn_qkv (q, k, v stay merged, in that order),
 *       attn.c_proj ↔ attn_output, ln_2 ↔ ffn_norm, mlp.c_fc ↔ ffn_up, mlp.c_proj ↔ ffn_down
 *
 * Layouts: GGUF stores every matrix as nn.Linear does ([out, in] row-major, ggml dims reversed),
 * so GPT-2's Conv1D weights ([in, out]) are transposed. For arch `llama` the converter permutes
 * the rows of q_proj (by the head count) and k_proj (by the key/value head count) from the
 * "rotate half" order Hugging Face uses to the interleaved pairs ggml's RoPE rotates: within each
 * head, row j·D/2 + i moves to row 2i + j. Qwen2 (arch `qwen2`) is not permuted: llama.cpp runs
 * it with NEOX-style RoPE, which rotates halves as Hugging Face does.
 */
export type GgufArch = 'llama' | 'qwen2' | 'gpt2';
export const GGUF_ARCHES: readonly GgufArch[] = ['llama', 'qwen2', 'gpt2'];

/** Per-layer name pairs: Hugging Face suffix after the layer prefix ↔ GGUF suffix after `blk.{i}.`. */
const LLAMA_LAYER: readonly (readonly [string, string])[] = [
  ['input_layernorm.weight', 'attn_norm.weight'],
  ['self_attn.q_proj.weight', 'attn_q.weight'],
  ['self_attn.q_proj.bias', 'attn_q.bias'],
  ['self_attn.k_proj.weight', 'attn_k.weight'],
  ['self_attn.k_proj.bias', 'attn_k.bias'],
  ['self_attn.v_proj.weight', 'attn_v.weight'],
  ['self_attn.v_proj.bias', 'attn_v.bias'],
  ['self_attn.o_proj.weight', 'attn_output.weight'],
  ['post_attention_layernorm.weight', 'ffn_norm.weight'],
  ['mlp.gate_proj.weight', 'ffn_gate.weight'],
  ['mlp.up_proj.weight', 'ffn_up.weight'],
  ['mlp.down_proj.weight', 'ffn_down.weight'],
];
const LLAMA_GLOBAL: readonly (readonly [string, string])[] = [
  ['model.embed_tokens.weight', 'token_embd.weight'],
  ['model.norm.weight', 'output_norm.weight'],
  ['lm_head.weight', 'output.weight'],
];
const GPT2_LAYER: readonly (readonly [string, string])[] = [
  ['ln_1.weight', 'attn_norm.weight'],
  ['ln_1.bias', 'attn_norm.bias'],
  ['attn.c_attn.weight', 'attn_qkv.weight'],
  ['attn.c_attn.bias', 'attn_qkv.bias'],
  ['attn.c_proj.weight', 'attn_output.weight'],
  ['attn.c_proj.bias', 'attn_output.bias'],
  ['ln_2.weight', 'ffn_norm.weight'],
  ['ln_2.bias', 'ffn_norm.bias'],
  ['mlp.c_fc.weight', 'ffn_up.weight'],
  ['mlp.c_fc.bias', 'ffn_up.bias'],
  ['mlp.c_proj.weight', 'ffn_down.weight'],
  ['mlp.c_proj.bias', 'ffn_down.bias'],
];
const GPT2_GLOBAL: readonly (readonly [string, string])[] = [
  ['wte.weight', 'token_embd.weight'],
  ['wpe.weight', 'position_embd.weight'],
  ['ln_f.weight', 'output_norm.weight'],
  ['ln_f.bias', 'output_norm.bias'],
];

/** llama.cpp's llama3 rope scaling, stored as a tensor of per-frequency divisors (no HF counterpart). */
export const ROPE_FREQS = 'rope_freqs.weight';

function tables(arch: GgufArch): { layerPrefix: string; layer: typeof LLAMA_LAYER; global: typeof LLAMA_GLOBAL } {
  return arch === 'gpt2'
    ? { layerPrefix: 'h.', layer: GPT2_LAYER, global: GPT2_GLOBAL }
    : { layerPrefix: 'model.layers.', layer: LLAMA_LAYER, global: LLAMA_GLOBAL };
}

const HF_LAYER = /^(model\.layers\.|h\.)(\d+)\.(.+)$/;
const GGUF_LAYER = /^blk\.(\d+)\.(.+)$/;

/** The GGUF name of canonical Hugging Face tensor `name`, or null when the architecture has no such tensor. */
export function ggufTensorName(arch: GgufArch, name: string): string | null {
  const t = tables(arch);
  const m = HF_LAYER.exec(name);
  if (m) {
    if (m[1] !== t.layerPrefix) return null;
    const pair = t.layer.find(([hf]) => hf === m[3]);
    return pair ? `blk.${m[2]}.${pair[1]}` : null;
  }
  return t.global.find(([hf]) => hf === name)?.[1] ?? null;
}

/** The canonical Hugging Face name of GGUF tensor `name`, or null when it has none (rope_freqs, unknown names). */
export function hfTensorName(arch: GgufArch, name: string): string | null {
  const t = tables(arch);
  const m = GGUF_LAYER.exec(name);
  if (m) {
    const pair = t.layer.find(([, g]) => g === m[2]);
    return pair ? `${t.layerPrefix}${m[1]}.${pair[0]}` : null;
  }
  return t.global.find(([, g]) => g === name)?.[0] ?? null;
}

/** How a tensor's values differ between the two files: none, a transpose, or llama.cpp's q/k row permutation. */
export type Relayout = { kind: 'none' } | { kind: 'transpose' } | { kind: 'permute'; heads: number };

/** Head counts the permutation needs (arch `llama` only). */
export interface HeadCounts {
  heads: number;
  kvHeads: number;
}

/** What turns the canonical Hugging Face tensor `name` into its GGUF layout. */
export function relayoutOf(arch: GgufArch, name: string, heads: HeadCounts): Relayout {
  if (arch === 'gpt2') return /\.(?:c_attn|c_proj|c_fc)\.weight$/.test(name) ? { kind: 'transpose' } : { kind: 'none' };
  if (arch === 'llama') {
    if (/\.self_attn\.q_proj\.(?:weight|bias)$/.test(name)) return { kind: 'permute', heads: heads.heads };
    if (/\.self_attn\.k_proj\.(?:weight|bias)$/.test(name)) return { kind: 'permute', heads: heads.kvHeads };
  }
  return { kind: 'none' };
}

/**
 * Applies `relayout` to row-major `data` of Hugging Face shape `hfShape`, towards GGUF
 * (`toGguf`) or back. Returns the values and the shape in the destination.
 */
export function relayout(
  r: Relayout,
  data: Float32Array,
  shape: readonly number[],
  toGguf: boolean,
): { data: Float32Array; shape: number[] } {
  if (r.kind === 'none') return { data, shape: [...shape] };
  if (r.kind === 'transpose') {
    const [rows, cols] = shape as [number, number];
    const out = new Float32Array(data.length);
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = data[i * cols + j]!;
    return { data: out, shape: [cols, rows] };
  }
  // Rows of each head: Hugging Face row j·D/2 + i ↔ GGUF row 2i + j (D = rows per head).
  const rows = shape[0]!;
  const cols = shape.length > 1 ? shape[1]! : 1;
  const D = rows / r.heads;
  const half = D / 2;
  const out = new Float32Array(data.length);
  for (let h = 0; h < r.heads; h++) {
    for (let j = 0; j < 2; j++) {
      for (let i = 0; i < half; i++) {
        const hfRow = h * D + j * half + i;
        const ggRow = h * D + 2 * i + j;
        const [from, to] = toGguf ? [hfRow, ggRow] : [ggRow, hfRow];
        out.set(data.subarray(from * cols, (from + 1) * cols), to * cols);
      }
    }
  }
  return { data: out, shape: [...shape] };
}
