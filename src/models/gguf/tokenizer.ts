/**
 * Tokenizers in GGUF metadata, both ways, as llama.cpp writes (convert_hf_to_gguf.py, gguf-py's
 * SpecialVocab) and reads them (src/llama-vocab.cpp):
 *
 *   tokenizer.ggml.model        "gpt2" (byte-level BPE) | "llama" (SentencePiece) | "none"
 *   tokenizer.ggml.pre          the pre-tokenizer's name in llama.cpp (gpt2 models): "gpt-2",
 *                               "llama-bpe" (Llama 3), "qwen2"; each stands for one regex
 *   tokenizer.ggml.tokens       every token's text, by id
 *   tokenizer.ggml.token_type   1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte
 *   tokenizer.ggml.merges       "a b" strings, by rank (gpt2)
 *   tokenizer.ggml.scores       f32 per token (llama): SentencePiece merges the pair whose result
 *                               scores highest
 *   tokenizer.ggml.{bos,eos,unknown,padding}_token_id, add_bos_token, add_eos_token
 *   tokenizer.chat_template     Jinja source
 *
 * Going to GGUF starts from a Hugging Face tokenizer.json (+ tokenizer_config.json); coming back
 * builds a tokenizer.json object, which knobs' Tokenizer runs. A SentencePiece vocabulary in
 * GGUF has scores, not merges: the merges are rebuilt from the scores (every split of a token
 * into two tokens, ranked by the token's score), and going to GGUF, a token made by merge rank r
 * scores −r, so both directions keep the merge order.
 */
import { FormatError } from '../../errors.js';
import { type GgufFile, type GgufValue, readGguf } from '../../formats/gguf.js';
import { openFileSource } from '../../io/byte-source.js';
import { Tokenizer, checkTokenizerFitsVocab } from '../../tokenizer/tokenizer.js';
import type { TokenizerConfig } from '../../tokenizer/config.js';
import { gv, MetadataReader } from './metadata.js';

/** llama.cpp's pre-tokenizer names for the regexes knobs recognises (llama-vocab.cpp). */
const LLAMA3_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const SPLIT_PRE: Record<string, string> = { 'llama-bpe': LLAMA3_REGEX, qwen2: QWEN2_REGEX };
/** Other names llama.cpp accepts for the same pre-tokenizers. */
const PRE_ALIASES: Record<string, string> = { llama3: 'llama-bpe', 'llama-v3': 'llama-bpe', gpt2: 'gpt-2' };
export const KNOWN_PRE = ['gpt-2', 'llama-bpe', 'qwen2'] as const;

const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

type Json = Record<string, unknown>;

function invalid(path: string, key: string, message: string): never {
  throw new FormatError('gguf_tokenizer_invalid', `${path}: ${key} ${message}`, { path, key });
}

// ─── GGUF → tokenizer.json ────────────────────────────────────────────────────────────────

/** The knobs Tokenizer of a GGUF file's metadata; null when it has none ("none" or no key). */
export function tokenizerFromGguf(file: GgufFile, path: string, vocabSize: number): Tokenizer | null {
  const json = tokenizerJsonFromGguf(file, path);
  if (json === null) return null;
  const tokenizer = Tokenizer.fromJSON(json, `${path} (tokenizer metadata)`);
  checkTokenizerFitsVocab(tokenizer, vocabSize, path);
  return tokenizer;
}

/** The tokenizer of a GGUF file on disk, from its header alone; null when it has none. */
export async function loadGgufTokenizer(path: string): Promise<Tokenizer | null> {
  const source = await openFileSource(path);
  try {
    const json = tokenizerJsonFromGguf(await readGguf(source), path);
    return json === null ? null : Tokenizer.fromJSON(json, `${path} (tokenizer metadata)`);
  } finally {
    await source.close();
  }
}

/** tokenizer.json's object for the file's tokenizer metadata, or null when it describes none. */
export function tokenizerJsonFromGguf(file: GgufFile, path: string): Json | null {
  const m = new MetadataReader(file.metadata, path);
  const model = m.string('tokenizer.ggml.model');
  if (model === null || model === 'none' || model === 'no_vocab') return null;
  if (model !== 'gpt2' && model !== 'llama')
    throw new FormatError(
      'gguf_tokenizer_unsupported',
      `${path}: tokenizer.ggml.model is '${model}'; knobs reads 'gpt2' (byte-level BPE) and 'llama' (SentencePiece) tokenizers`,
      { path, key: 'tokenizer.ggml.model', value: model },
    );
  const tokens = m.strings('tokenizer.ggml.tokens') ?? invalid(path, 'tokenizer.ggml.tokens', 'is missing');
  const types = m.numbers('tokenizer.ggml.token_type');
  if (types && types.length !== tokens.length)
    invalid(path, 'tokenizer.ggml.token_type', `has ${types.length} entries for ${tokens.length} tokens`);
  const typeOf = (id: number): number => types?.[id] ?? TOKEN_TYPE.NORMAL;
  const id = (key: string): number | null => {
    const v = m.intOrNull(key);
    if (v !== null && v >= tokens.length) invalid(path, key, `is ${v}, not a token id below ${tokens.length}`);
    return v;
  };
  const spm = model === 'llama';
  const bos = id('tokenizer.ggml.bos_token_id') ?? (spm ? 1 : null);
  const eos = id('tokenizer.ggml.eos_token_id') ?? (spm ? 2 : null);
  const unk = id('tokenizer.ggml.unknown_token_id') ?? (spm ? 0 : null);
  const pre = spm ? null : preName(m.string('tokenizer.ggml.pre'), path);
  // llama.cpp's defaults: SentencePiece and the Llama 3 pre-tokenizer add BOS; an explicit key wins.
  const addBos = m.bool('tokenizer.ggml.add_bos_token') ?? (spm || pre === 'llama-bpe');
  const addEos = m.bool('tokenizer.ggml.add_eos_token') ?? false;

  const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
  const added: Json[] = [];
  tokens.forEach((text, i) => {
    const t = typeOf(i);
    if (t === TOKEN_TYPE.CONTROL || t === TOKEN_TYPE.USER_DEFINED || (t === TOKEN_TYPE.UNKNOWN && !spm)) {
      added.push(addedToken(i, text, t !== TOKEN_TYPE.USER_DEFINED));
      return;
    }
    if (t === TOKEN_TYPE.UNKNOWN) added.push(addedToken(i, text, true));
    if (!(text in vocab)) vocab[text] = i;
  });
  // Special tokens named by id are special whatever their type says.
  for (const special of [bos, eos, unk]) {
    if (special !== null && !added.some((a) => a.id === special))
      added.push(addedToken(special, tokens[special]!, true));
  }
  added.sort((a, b) => (a.id as number) - (b.id as number));
  for (const a of added) vocab[a.content as string] ??= a.id as number;

  const post = postProcessor(tokens, addBos ? bos : null, addEos ? eos : null);
  if (spm) {
    const scores = m.numbers('tokenizer.ggml.scores');
    if (scores && scores.length !== tokens.length)
      invalid(path, 'tokenizer.ggml.scores', `has ${scores.length} entries for ${tokens.length} tokens`);
    return {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: {
        type: 'Sequence',
        normalizers: [
          { type: 'Prepend', prepend: '▁' },
          { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
        ],
      },
      pre_tokenizer: null,
      post_processor: post,
      decoder: {
        type: 'Sequence',
        decoders: [
          { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
          { type: 'ByteFallback' },
          { type: 'Fuse' },
          { type: 'Strip', content: ' ', start: 1, stop: 0 },
        ],
      },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: unk === null ? null : tokens[unk],
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: true,
        byte_fallback: tokens.some((_, i) => typeOf(i) === TOKEN_TYPE.BYTE),
        ignore_merges: false,
        vocab,
        merges: mergesFromScores(tokens, scores, typeOf),
      },
    };
  }
  const merges = (m.strings('tokenizer.ggml.merges') ?? invalid(path, 'tokenizer.ggml.merges', 'is missing')).map(
    (s, i) => {
      const at = s.indexOf(' ', 1);
      if (at < 0)
        invalid(path, `tokenizer.ggml.merges[${i}]`, `is ${JSON.stringify(s)}, not two tokens split by a space`);
      return [s.slice(0, at), s.slice(at + 1)];
    },
  );
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer:
      pre === 'gpt-2'
        ? { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true }
        : {
            type: 'Sequence',
            pretokenizers: [
              { type: 'Split', pattern: { Regex: SPLIT_PRE[pre!]! }, behavior: 'Isolated', invert: false },
              { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
            ],
          },
    post_processor: post,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: pre === 'llama-bpe',
      vocab,
      merges,
    },
  };
}

function preName(pre: string | null, path: string): (typeof KNOWN_PRE)[number] {
  // A missing or 'default' pre means llama.cpp's own DEFAULT regexes, which no tokenizer.json has.
  const name = pre === null ? 'default' : (PRE_ALIASES[pre] ?? pre);
  if (!(KNOWN_PRE as readonly string[]).includes(name))
    throw new FormatError(
      'gguf_tokenizer_unknown_pre',
      `${path}: tokenizer.ggml.pre is ${pre === null ? 'missing' : `'${pre}'`}; knobs knows the pre-tokenizers ${KNOWN_PRE.join(', ')} (GPT-2, Llama 3, Qwen2)`,
      { path, key: 'tokenizer.ggml.pre', value: pre, supported: KNOWN_PRE },
    );
  return name as (typeof KNOWN_PRE)[number];
}

function addedToken(id: number, content: string, special: boolean): Json {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: !special, special };
}

function postProcessor(tokens: readonly string[], bos: number | null, eos: number | null): Json | null {
  if (bos === null && eos === null) return null;
  const spec = (id: number, typeId: number) => ({ SpecialToken: { id: tokens[id], type_id: typeId } });
  const seq = (name: string, typeId: number) => ({ Sequence: { id: name, type_id: typeId } });
  const around = (name: string, typeId: number) => [
    ...(bos !== null ? [spec(bos, typeId)] : []),
    seq(name, typeId),
    ...(eos !== null ? [spec(eos, typeId)] : []),
  ];
  const special: Json = {};
  for (const id of [bos, eos])
    if (id !== null) special[tokens[id]!] = { id: tokens[id], ids: [id], tokens: [tokens[id]] };
  return {
    type: 'TemplateProcessing',
    single: around('A', 0),
    pair: [...around('A', 0), ...around('B', 1)],
    special_tokens: special,
  };
}

/** SentencePiece BPE as ranked merges: each normal token split every way into two tokens, best score first. */
function mergesFromScores(
  tokens: readonly string[],
  scores: ArrayLike<number> | null,
  typeOf: (id: number) => number,
): [string, string][] {
  const ids = new Map<string, number>();
  tokens.forEach((t, i) => {
    if (typeOf(i) === TOKEN_TYPE.NORMAL && !ids.has(t)) ids.set(t, i);
  });
  const found: { a: string; b: string; score: number; id: number; left: number }[] = [];
  for (const [piece, id] of ids) {
    const chars = [...piece];
    for (let k = 1; k < chars.length; k++) {
      const a = chars.slice(0, k).join('');
      const b = chars.slice(k).join('');
      const left = ids.get(a);
      if (left !== undefined && ids.has(b)) found.push({ a, b, score: scores?.[id] ?? -id, id, left });
    }
  }
  found.sort((x, y) => y.score - x.score || x.id - y.id || x.left - y.left);
  return found.map((f) => [f.a, f.b]);
}

// ─── tokenizer.json → GGUF ────────────────────────────────────────────────────────────────

/** The tokenizer metadata llama.cpp's converter writes for a Hugging Face tokenizer, in its order. */
export function ggufTokenizerMetadata(
  tokenizer: Tokenizer,
  config: TokenizerConfig | null,
  vocabSize: number,
  source: string,
  /** config.json's bos/eos ids, used when neither tokenizer file names them (as gguf-py's SpecialVocab does). */
  fallback: { bos?: number | null; eos?: number | null } = {},
): [string, GgufValue][] {
  const json = tokenizer.toJSON();
  const model = json.model as Json;
  const vocab = model.vocab as Record<string, number>;
  const merges = (model.merges as (string | [string, string])[]).map((mm) =>
    typeof mm === 'string' ? mm : mm.join(' '),
  );
  const added = (json.added_tokens as Json[] | undefined) ?? [];
  const spm = isSentencePiece(json);
  const tokens: string[] = Array.from({ length: vocabSize }, (_, i) => `[PAD${i}]`);
  const types: number[] = new Array<number>(vocabSize).fill(TOKEN_TYPE.UNUSED);
  for (const [text, id] of Object.entries(vocab)) {
    if (id >= vocabSize) continue;
    tokens[id] = text;
    types[id] = spm && /^<0x[0-9A-F]{2}>$/.test(text) ? TOKEN_TYPE.BYTE : TOKEN_TYPE.NORMAL;
  }
  for (const a of added) {
    const id = a.id as number;
    if (id >= vocabSize) continue;
    tokens[id] = a.content as string;
    types[id] = a.special ? TOKEN_TYPE.CONTROL : TOKEN_TYPE.USER_DEFINED;
  }
  const unkToken = typeof model.unk_token === 'string' ? model.unk_token : null;
  const out: [string, GgufValue][] = [];
  if (spm) {
    // A token made by merge rank r scores −r; tokens no merge makes score −1e9 (never a merge result).
    const scores = new Float32Array(vocabSize).fill(-1e9);
    merges.forEach((mm, rank) => {
      const id = vocab[mm.replace(' ', '')];
      if (id !== undefined && id < vocabSize && scores[id] === -1e9) scores[id] = -rank;
    });
    const unk = unkToken === null ? undefined : vocab[unkToken];
    if (unk !== undefined && unk < vocabSize) types[unk] = TOKEN_TYPE.UNKNOWN;
    out.push(
      ['tokenizer.ggml.model', gv.string('llama')],
      ['tokenizer.ggml.pre', gv.string('default')],
      ['tokenizer.ggml.tokens', gv.strings(tokens)],
      ['tokenizer.ggml.scores', gv.f32s(scores)],
      ['tokenizer.ggml.token_type', gv.i32s(types)],
    );
  } else {
    out.push(
      ['tokenizer.ggml.model', gv.string('gpt2')],
      ['tokenizer.ggml.pre', gv.string(preOf(json, source))],
      ['tokenizer.ggml.tokens', gv.strings(tokens)],
      ['tokenizer.ggml.token_type', gv.i32s(types)],
      ['tokenizer.ggml.merges', gv.strings(merges)],
    );
  }
  const idOf = (text: string | null): number | undefined => {
    if (text === null) return undefined;
    const id = tokenizer.tokenToId(text);
    return id !== undefined && id < vocabSize ? id : undefined;
  };
  const post = postProcessorSpecials(json);
  const specials: [string, number | undefined][] = [
    ['bos', idOf(config?.bosToken ?? null) ?? post.bos ?? fallback.bos ?? undefined],
    ['eos', idOf(config?.eosToken ?? null) ?? post.eos ?? fallback.eos ?? undefined],
    ['unknown', idOf(config?.unkToken ?? unkToken)],
    ['padding', idOf(config?.padToken ?? null)],
  ];
  for (const [name, id] of specials) if (id !== undefined) out.push([`tokenizer.ggml.${name}_token_id`, gv.u32(id)]);
  out.push(['tokenizer.ggml.add_bos_token', gv.bool(config?.addBosToken ?? post.bos !== undefined)]);
  out.push(['tokenizer.ggml.add_eos_token', gv.bool(config?.addEosToken ?? post.eos !== undefined)]);
  if (config?.chatTemplate) out.push(['tokenizer.chat_template', gv.string(config.chatTemplate)]);
  return out;
}

/** A SentencePiece-style BPE: Metaspace (as a pre-tokenizer or Prepend/Replace normalizers) with byte fallback. */
function isSentencePiece(json: Json): boolean {
  const text = JSON.stringify([json.normalizer, json.pre_tokenizer]);
  return text.includes('▁') && !text.includes('ByteLevel');
}

function preOf(json: Json, source: string): string {
  const text = JSON.stringify(json.pre_tokenizer ?? null);
  if (!text.includes('ByteLevel'))
    throw new FormatError(
      'gguf_tokenizer_unknown_pre',
      `${source}: the pre_tokenizer ${text.slice(0, 200)} is neither byte-level nor SentencePiece; knobs writes GGUF tokenizers for ${KNOWN_PRE.join(', ')} and SentencePiece`,
      { path: source, key: 'pre_tokenizer' },
    );
  const split = /"Regex":("(?:[^"\\]|\\.)*")/.exec(text);
  if (split === null) return 'gpt-2';
  const pattern = JSON.parse(split[1]!) as string;
  const name = Object.entries(SPLIT_PRE).find(([, re]) => re === pattern)?.[0];
  if (name === undefined)
    throw new FormatError(
      'gguf_tokenizer_unknown_pre',
      `${source}: the pre-tokenizer regex ${JSON.stringify(pattern)} is not one llama.cpp knows by a name knobs maps (${KNOWN_PRE.join(', ')}); llama.cpp would tokenize differently`,
      { path: source, key: 'pre_tokenizer', pattern, supported: KNOWN_PRE },
    );
  return name;
}

/** The BOS/EOS ids a TemplateProcessing post-processor puts around a single sequence. */
function postProcessorSpecials(json: Json): { bos?: number; eos?: number } {
  const post = json.post_processor as Json | null | undefined;
  if (!post || post.type !== 'TemplateProcessing') return {};
  const single = post.single as Json[];
  const specials = post.special_tokens as Record<string, { ids: number[] }>;
  const idAt = (item: Json | undefined): number | undefined => {
    const s = item?.SpecialToken as { id: string } | undefined;
    return s ? specials[s.id]?.ids[0] : undefined;
  };
  return { bos: idAt(single[0]), eos: single.length > 1 ? idAt(single[single.length - 1]) : undefined };
}
