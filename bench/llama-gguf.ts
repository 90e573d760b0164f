/**
 * A knobs Llama as a GGUF file that llama.cpp loads, for the decode bench's llama.cpp peer. This is
 * a stand-in until `knobs convert --format gguf` (the gguf-models work) is in main: replace
 * `writeLlamaGguf` by that command and delete this file.
 *
 * What llama.cpp needs, from its converter (convert_hf_to_gguf.py, LlamaModel) and loader
 * (llama-model.cpp, llama-vocab.cpp): `general.architecture = llama` and the `llama.*` hyper-
 * parameters; tensor names `token_embd`, `blk.N.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,
 * ffn_down,attn_norm,ffn_norm}`, `output_norm`, `output`; Q and K rows permuted from Hugging
 * Face's rotate-half order to ggml's interleaved pairs (`LlamaModel.permute`); norms kept F32.
 * The vocabulary is the model's own: ids 0–2 `<unk>`, `<s>`, `</s>`, then one SentencePiece byte
 * token `<0xNN>` per byte — the bench feeds token ids and never tokenizes text.
 */
import type * as k from '../src/index.js';
import { type GgufWriteTensor, type GgufWriteType, writeGguf } from '../src/formats/gguf-write.js';
import type { GgufValue } from '../src/formats/gguf.js';

/** HF [out, in] q/k rows → llama.cpp's order: per head, (2, D/2) → (D/2, 2). */
function permuteRows(w: Float32Array, heads: number, inFeatures: number): Float32Array {
  const out = new Float32Array(w.length);
  const D = w.length / inFeatures / heads;
  for (let h = 0; h < heads; h++) {
    for (let half = 0; half < 2; half++) {
      for (let i = 0; i < D / 2; i++) {
        const from = (h * D + half * (D / 2) + i) * inFeatures;
        const to = (h * D + i * 2 + half) * inFeatures;
        out.set(w.subarray(from, from + inFeatures), to);
      }
    }
  }
  return out;
}

function values(t: k.Tensor): Float32Array {
  return Float32Array.from(t.contiguous().toFlatArray());
}

/** Writes `model` as a llama GGUF: 2-D weights in `type` (the embedding too, as llama.cpp's quantizer does), 1-D in F32. */
export async function writeLlamaGguf(model: k.Llama, type: GgufWriteType, path: string): Promise<void> {
  const c = model.config;
  const V = c.vocab_size;
  if (V !== 259) throw new Error(`writeLlamaGguf: the bench's byte vocabulary has 259 ids, the model ${V}`);
  const u32 = (value: number): GgufValue => ({ type: 'u32', value });
  const f32 = (value: number): GgufValue => ({ type: 'f32', value });
  const str = (value: string): GgufValue => ({ type: 'string', value });
  const tokens = [
    '<unk>',
    '<s>',
    '</s>',
    ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`),
  ];
  const metadata = new Map<string, GgufValue>([
    ['general.architecture', str('llama')],
    ['general.name', str('knobs-bench-llama')],
    ['llama.context_length', u32(c.max_position_embeddings)],
    ['llama.embedding_length', u32(c.hidden_size)],
    ['llama.block_count', u32(c.num_hidden_layers)],
    ['llama.feed_forward_length', u32(c.intermediate_size)],
    ['llama.rope.dimension_count', u32(c.head_dim)],
    ['llama.attention.head_count', u32(c.num_attention_heads)],
    ['llama.attention.head_count_kv', u32(c.num_key_value_heads)],
    ['llama.attention.layer_norm_rms_epsilon', f32(c.rms_norm_eps)],
    ['llama.rope.freq_base', f32(c.rope_theta)],
    ['llama.vocab_size', u32(V)],
    ['tokenizer.ggml.model', str('llama')],
    ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: tokens }],
    ['tokenizer.ggml.scores', { type: 'array', itemType: 'f32', value: new Float32Array(V) }],
    [
      'tokenizer.ggml.token_type',
      { type: 'array', itemType: 'i32', value: Int32Array.from(tokens, (_, i) => (i === 0 ? 2 : i < 3 ? 3 : 6)) },
    ],
    ['tokenizer.ggml.bos_token_id', u32(1)],
    ['tokenizer.ggml.eos_token_id', u32(2)],
    ['tokenizer.ggml.unknown_token_id', u32(0)],
    ['tokenizer.ggml.add_bos_token', { type: 'bool', value: false }],
  ]);
  const state = model.stateDict();
  const tensor = (name: string, hf: string, opts: { permute?: number } = {}): GgufWriteTensor => {
    const t = state.get(hf);
    if (!t) throw new Error(`writeLlamaGguf: no ${hf}`);
    let data = values(t);
    if (opts.permute) data = permuteRows(data, opts.permute, t.shape[1]!);
    return { name, shape: t.shape, data, type: t.rank === 2 ? type : 'F32' };
  };
  const tensors: GgufWriteTensor[] = [tensor('token_embd.weight', 'model.embed_tokens.weight')];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `model.layers.${i}.`;
    tensors.push(
      tensor(`blk.${i}.attn_norm.weight`, `${p}input_layernorm.weight`),
      tensor(`blk.${i}.attn_q.weight`, `${p}self_attn.q_proj.weight`, { permute: c.num_attention_heads }),
      tensor(`blk.${i}.attn_k.weight`, `${p}self_attn.k_proj.weight`, { permute: c.num_key_value_heads }),
      tensor(`blk.${i}.attn_v.weight`, `${p}self_attn.v_proj.weight`),
      tensor(`blk.${i}.attn_output.weight`, `${p}self_attn.o_proj.weight`),
      tensor(`blk.${i}.ffn_norm.weight`, `${p}post_attention_layernorm.weight`),
      tensor(`blk.${i}.ffn_gate.weight`, `${p}mlp.gate_proj.weight`),
      tensor(`blk.${i}.ffn_up.weight`, `${p}mlp.up_proj.weight`),
      tensor(`blk.${i}.ffn_down.weight`, `${p}mlp.down_proj.weight`),
    );
  }
  tensors.push(tensor('output_norm.weight', 'model.norm.weight'), tensor('output.weight', 'lm_head.weight'));
  await writeGguf(path, { metadata, tensors });
}
