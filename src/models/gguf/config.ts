/**
 * Model hyperparameters between a GGUF file's metadata and a Hugging Face config.json, as
 * llama.cpp's converter writes them (TextModel.set_gguf_parameters, LlamaModel, GPT2Model) and
 * llama.cpp reads them (llama-model.cpp):
 *
 *   {arch}.context_length        max_position_embeddings (n_positions for gpt2)
 *   {arch}.embedding_length      hidden_size (n_embd)
 *   {arch}.block_count           num_hidden_layers (n_layer)
 *   {arch}.feed_forward_length   intermediate_size (gpt2: n_inner or 4·n_embd)
 *   {arch}.attention.head_count(_kv)              num_attention_heads, num_key_value_heads
 *   {arch}.attention.layer_norm_rms_epsilon       rms_norm_eps (gpt2: layer_norm_epsilon)
 *   {arch}.rope.freq_base        rope_theta;  {arch}.rope.dimension_count  head_dim
 *   {arch}.rope.scaling.type "linear" + .factor  rope_scaling linear
 *   rope_freqs.weight (tensor)   rope_scaling llama3 (per-frequency divisors)
 *   {arch}.vocab_size            vocab_size
 *
 * Reading builds a config.json object and hands it to the Hugging Face config parser, so a GGUF
 * model is checked by exactly the rules a model directory is.
 */
import { FormatError } from '../../errors.js';
import type { GgufFile } from '../../formats/gguf.js';
import type { HfModelConfig } from '../hf/config.js';
import { ropeInverseFrequencies } from '../llama.js';
import { gv, MetadataReader } from './metadata.js';
import type { GgufValue } from '../../formats/gguf.js';
import { GGUF_ARCHES, type GgufArch, ROPE_FREQS } from './names.js';

/** llama.cpp's LlamaFileType of a file whose big matrices are of this type. */
export const FILE_TYPE = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7, BF16: 32 } as const;

/** The architecture of a GGUF file, or a typed error naming what knobs supports. */
export function ggufArchOf(file: GgufFile, path: string): GgufArch {
  const arch = new MetadataReader(file.metadata, path).string('general.architecture');
  if (arch === null)
    throw new FormatError(
      'gguf_model_bad_metadata',
      `${path}: has no general.architecture; it is not a GGUF model file`,
      {
        path,
        key: 'general.architecture',
      },
    );
  if (!(GGUF_ARCHES as readonly string[]).includes(arch))
    throw new FormatError(
      'gguf_model_unsupported_arch',
      `${path}: general.architecture is '${arch}'; knobs runs GGUF models of architecture ${GGUF_ARCHES.join(', ')}`,
      { path, key: 'general.architecture', value: arch, supported: GGUF_ARCHES },
    );
  return arch as GgufArch;
}

/** The end-of-generation and begin ids llama.cpp would use (explicit keys; SentencePiece defaults 1 and 2). */
export function specialIdsOf(file: GgufFile, path: string): { bos: number | null; eos: number[] } {
  const m = new MetadataReader(file.metadata, path);
  const spm = m.string('tokenizer.ggml.model') === 'llama';
  const bos = m.intOrNull('tokenizer.ggml.bos_token_id') ?? (spm ? 1 : null);
  const eos = m.intOrNull('tokenizer.ggml.eos_token_id') ?? (spm ? 2 : null);
  const eot = m.intOrNull('tokenizer.ggml.eot_token_id');
  return { bos, eos: [...new Set([eos, eot].filter((id): id is number => id !== null))] };
}

/** A config.json object equivalent to the GGUF file's metadata (checked later by parseHfConfig). */
export function hfConfigJsonFromGguf(file: GgufFile, path: string): Record<string, unknown> {
  const arch = ggufArchOf(file, path);
  const m = new MetadataReader(file.metadata, path);
  const k = (key: string): string => `${arch}.${key}`;
  const embd = file.tensors.find((t) => t.name === 'token_embd.weight');
  const vocab = m.int(k('vocab_size'), embd?.shape[0] ?? m.strings('tokenizer.ggml.tokens')?.length);
  const { bos, eos } = specialIdsOf(file, path);
  const eosField = eos.length === 1 ? eos[0] : eos.length === 0 ? null : eos;
  const hidden = m.int(k('embedding_length'));
  const heads = m.int(k('attention.head_count'));
  const tied = !file.tensors.some((t) => t.name === 'output.weight');
  if (arch === 'gpt2') {
    if (!tied)
      throw new FormatError(
        'gguf_model_unsupported',
        `${path}: this gpt2 model has its own output.weight; knobs' GPT-2 ties the output head to token_embd (as GPT2LMHeadModel does)`,
        { path, tensor: 'output.weight' },
      );
    const ff = m.int(k('feed_forward_length'), 4 * hidden);
    return {
      model_type: 'gpt2',
      vocab_size: vocab,
      n_positions: m.int(k('context_length')),
      n_embd: hidden,
      n_layer: m.int(k('block_count')),
      n_head: heads,
      n_inner: ff === 4 * hidden ? null : ff,
      layer_norm_epsilon: m.number(k('attention.layer_norm_epsilon'), 1e-5),
      bos_token_id: bos,
      eos_token_id: eosField,
    };
  }
  const headDim = hidden / heads;
  for (const key of ['rope.dimension_count', 'attention.key_length', 'attention.value_length']) {
    if (m.has(k(key)) && m.int(k(key)) !== headDim)
      throw new FormatError(
        'gguf_model_unsupported',
        `${path}: ${k(key)} is ${m.int(k(key))}; knobs computes rotary embeddings over whole heads of embedding_length / head_count = ${headDim}`,
        { path, key: k(key) },
      );
  }
  const scaling = m.string(k('rope.scaling.type'));
  let ropeScaling: Record<string, unknown> | null = null;
  if (scaling === 'linear') ropeScaling = { type: 'linear', factor: m.number(k('rope.scaling.factor')) };
  else if (scaling !== null && scaling !== 'none')
    throw new FormatError(
      'gguf_model_unsupported',
      `${path}: ${k('rope.scaling.type')} is '${scaling}'; knobs supports none and linear (and llama3 as a ${ROPE_FREQS} tensor)`,
      { path, key: k('rope.scaling.type'), value: scaling },
    );
  return {
    model_type: arch,
    vocab_size: vocab,
    hidden_size: hidden,
    intermediate_size: m.int(k('feed_forward_length')),
    num_hidden_layers: m.int(k('block_count')),
    num_attention_heads: heads,
    num_key_value_heads: m.int(k('attention.head_count_kv'), heads),
    rms_norm_eps: m.number(k('attention.layer_norm_rms_epsilon')),
    rope_theta: m.number(k('rope.freq_base'), 10000),
    rope_scaling: ropeScaling,
    max_position_embeddings: m.int(k('context_length')),
    tie_word_embeddings: tied,
    bos_token_id: bos,
    eos_token_id: eosField,
  };
}

/** The GGUF architecture a Hugging Face model is written as (llama.cpp converts Mistral as `llama`). */
export function ggufArchFor(hf: HfModelConfig): GgufArch {
  return hf.kind === 'gpt2' ? 'gpt2' : hf.kind === 'qwen2' ? 'qwen2' : 'llama';
}

/** The model metadata llama.cpp's converter writes for `hf`, in its order. */
export function ggufModelMetadata(hf: HfModelConfig, name: string, fileType: number): [string, GgufValue][] {
  const arch = ggufArchFor(hf);
  const k = (key: string): string => `${arch}.${key}`;
  const out: [string, GgufValue][] = [
    ['general.architecture', gv.string(arch)],
    ['general.type', gv.string('model')],
    ['general.name', gv.string(name)],
  ];
  if (hf.kind === 'gpt2') {
    const c = hf.config;
    out.push(
      [k('block_count'), gv.u32(c.n_layer)],
      [k('context_length'), gv.u32(c.n_positions)],
      [k('embedding_length'), gv.u32(c.n_embd)],
      [k('feed_forward_length'), gv.u32(c.n_inner ?? 4 * c.n_embd)],
      [k('attention.head_count'), gv.u32(c.n_head)],
      [k('attention.layer_norm_epsilon'), gv.f32(c.layer_norm_epsilon)],
      [k('vocab_size'), gv.u32(c.vocab_size)],
      ['general.file_type', gv.u32(fileType)],
    );
    return out;
  }
  const c = hf.config;
  out.push(
    [k('block_count'), gv.u32(c.num_hidden_layers)],
    [k('context_length'), gv.u32(c.max_position_embeddings)],
    [k('embedding_length'), gv.u32(c.hidden_size)],
    [k('feed_forward_length'), gv.u32(c.intermediate_size)],
    [k('attention.head_count'), gv.u32(c.num_attention_heads)],
    [k('attention.head_count_kv'), gv.u32(c.num_key_value_heads)],
    [k('rope.freq_base'), gv.f32(c.rope_theta)],
    [k('attention.layer_norm_rms_epsilon'), gv.f32(c.rms_norm_eps)],
  );
  if (c.rope_scaling?.rope_type === 'linear')
    out.push([k('rope.scaling.type'), gv.string('linear')], [k('rope.scaling.factor'), gv.f32(c.rope_scaling.factor)]);
  out.push(
    ['general.file_type', gv.u32(fileType)],
    [k('vocab_size'), gv.u32(c.vocab_size)],
    [k('rope.dimension_count'), gv.u32(c.head_dim)],
  );
  return out;
}

/**
 * llama3 rope scaling as llama.cpp's converter stores it: per frequency, the divisor that turns
 * the plain inverse frequency into the scaled one (1 for high frequencies, `factor` for low).
 */
export function llama3RopeFactors(hf: HfModelConfig): Float32Array | null {
  if (hf.kind === 'gpt2') return null;
  const s = hf.config.rope_scaling;
  if (s?.rope_type !== 'llama3') return null;
  const plain = ropeInverseFrequencies({ ...hf.config, rope_scaling: null });
  const old = s.original_max_position_embeddings;
  return plain.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < old / s.high_freq_factor) return 1;
    if (wavelen > old / s.low_freq_factor) return s.factor;
    const smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    return 1 / ((1 - smooth) / s.factor + smooth);
  });
}
