/**
 * A Hugging Face `tokenizer.json`, read and run as the Rust `tokenizers` library runs it:
 *
 *   text → added tokens split out (raw ones, then normalizer, then normalized ones)
 *        → pre_tokenizer → BPE per piece → post_processor (special tokens) → ids
 *   ids  → tokens (skipping special ones if asked) → decoder → text
 *
 * Components knobs does not implement are `tokenizer_unsupported` errors naming them; docs/tokenizers.md
 * lists what is supported. The judges in test/tokenizer-*.test.ts are the Rust library itself
 * (@anush008/tokenizers) and sentencepiece.
 */
import { readFile } from 'node:fs/promises';
import { FormatError } from '../errors.js';
import { asIOError } from '../io/atomic.js';
import { type AddedToken, AddedVocabulary } from './added-tokens.js';
import { BpeModel, type Encoded } from './bpe.js';
import { type Decoder, parseDecoder } from './decoders.js';
import { JsonReader, invalidTokenizer, unsupportedComponent } from './errors.js';
import { type Normalizer, parseNormalizer } from './normalizers.js';
import { type PostProcessor, parsePostProcessor, postProcessorIds } from './post-processors.js';
import { type PreTokenizer, parsePreTokenizer } from './pre-tokenizers.js';

export interface EncodeOptions {
  /** Apply the post-processor (BOS/EOS and the like). Default true, as in Hugging Face. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Leave out tokens marked special in added_tokens. Default false. */
  skipSpecialTokens?: boolean;
}

/** tokenizer.json files above this size are refused before parsing (real ones are a few MB). */
export const MAX_TOKENIZER_JSON_BYTES = 256 * 1024 * 1024;

export class Tokenizer {
  private readonly json: Record<string, unknown>;
  private readonly model: BpeModel;
  private readonly normalizer: Normalizer | null;
  private readonly preTokenizer: PreTokenizer | null;
  private readonly postProcessor: PostProcessor | null;
  private readonly decoder: Decoder | null;
  private readonly added: AddedVocabulary;
  /** Where the tokenizer came from, for messages. */
  readonly source: string;

  private constructor(json: Record<string, unknown>, source: string) {
    const r = new JsonReader(source);
    this.json = json;
    this.source = source;
    if (json.version !== undefined && json.version !== '1.0')
      throw unsupportedComponent(source, 'version', `${JSON.stringify(json.version)} is not "1.0"`);
    for (const field of ['truncation', 'padding'] as const) {
      if (json[field] !== undefined && json[field] !== null)
        throw unsupportedComponent(
          source,
          field,
          'is set; knobs encodes one sequence without truncation or padding (set it to null)',
        );
    }
    const model = r.object(json.model, 'model');
    const modelType = model.type === undefined ? 'BPE' : r.string(model.type, 'model.type');
    if (modelType !== 'BPE')
      throw unsupportedComponent(source, `model ${modelType}`, 'is not supported (knobs reads BPE models)');
    this.model = BpeModel.fromJSON(model, r);
    this.normalizer = json.normalizer == null ? null : parseNormalizer(json.normalizer, r);
    this.preTokenizer = json.pre_tokenizer == null ? null : parsePreTokenizer(json.pre_tokenizer, r);
    this.postProcessor = json.post_processor == null ? null : parsePostProcessor(json.post_processor, r);
    this.decoder = json.decoder == null ? null : parseDecoder(json.decoder, r);
    const added = r
      .array(json.added_tokens ?? [], 'added_tokens')
      .map((t, i) => parseAddedToken(t, r, `added_tokens[${i}]`));
    this.added = new AddedVocabulary(added, this.model.vocab, this.normalizer);
  }

  /** A tokenizer from the parsed (or raw) JSON of a tokenizer.json; `source` names it in errors. */
  static fromJSON(json: unknown, source = 'tokenizer.json'): Tokenizer {
    const parsed = typeof json === 'string' ? parseJson(json, source) : json;
    return new Tokenizer(new JsonReader(source).object(parsed, '(top level)'), source);
  }

  static async fromFile(path: string): Promise<Tokenizer> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw asIOError(err, path, 'read');
    }
    if (text.length > MAX_TOKENIZER_JSON_BYTES)
      throw new FormatError(
        'too_large',
        `${path} is larger than ${MAX_TOKENIZER_JSON_BYTES} bytes; is it a tokenizer.json?`,
        { file: path },
      );
    return Tokenizer.fromJSON(parseJson(text, path), path);
  }

  /** Number of distinct ids: one past the largest id of the model or the added tokens. */
  get vocabSize(): number {
    let max = -1;
    for (const id of this.model.vocabR.keys()) max = Math.max(max, id);
    for (const id of this.added.byId.keys()) max = Math.max(max, id);
    return max + 1;
  }

  tokenToId(token: string): number | undefined {
    return this.added.byContent.get(token) ?? this.model.vocab.get(token);
  }

  idToToken(id: number): string | undefined {
    return this.added.byId.get(id)?.content ?? this.model.vocabR.get(id);
  }

  /** Whether `id` is an added token marked special. */
  isSpecial(id: number): boolean {
    return this.added.isSpecial(id);
  }

  encode(text: string, opts: EncodeOptions = {}): Encoded {
    const out: Encoded = { ids: [], tokens: [] };
    for (const span of this.added.extractAndNormalize(text, this.normalizer)) {
      if (span.id !== undefined) {
        out.ids.push(span.id);
        out.tokens.push(span.text);
        continue;
      }
      const pieces = this.preTokenizer ? this.preTokenizer({ text: span.text, first: span.first }) : [span];
      for (const piece of pieces) this.model.encodeWord(piece.text, out);
    }
    return opts.addSpecialTokens === false || !this.postProcessor ? out : this.postProcessor(out);
  }

  /** The pieces BPE would see for `text` (normalizer and pre-tokenizer, no added tokens): for inspection and tests. */
  preTokenize(text: string): string[] {
    const normalized = this.normalizer ? this.normalizer(text) : text;
    const span = { text: normalized, first: true };
    if (normalized.length === 0) return [];
    return (this.preTokenizer ? this.preTokenizer(span) : [span]).map((p) => p.text);
  }

  /** Text of `ids`; ids the tokenizer does not know are skipped, as Hugging Face skips them. */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    const tokens: string[] = [];
    for (const id of ids) {
      const token = this.idToToken(id);
      if (token === undefined || (opts.skipSpecialTokens && this.added.isSpecial(id))) continue;
      tokens.push(token);
    }
    return this.decoder ? this.decoder(tokens).join('') : tokens.join(' ');
  }

  /** A decoder for generation: feed ids one by one, get text that never ends inside a character. */
  decodeStream(opts: DecodeOptions = {}): DecodeStream {
    return new DecodeStream(this, opts);
  }

  /** The tokenizer.json this tokenizer was read from (a copy). */
  toJSON(): Record<string, unknown> {
    return structuredClone(this.json);
  }

  /** Every id the tokenizer can produce, for checking it against a model's vocabulary. */
  maxId(): number {
    return Math.max(this.vocabSize - 1, ...postProcessorIds(this.json.post_processor));
  }
}

/**
 * Checks that every id the tokenizer can produce is below `vocabSize`, the model's embedding rows;
 * otherwise a `tokenizer_vocab_mismatch` error naming both.
 */
export function checkTokenizerFitsVocab(tokenizer: Tokenizer, vocabSize: number, modelSource: string): void {
  const max = tokenizer.maxId();
  if (max >= vocabSize) {
    throw new FormatError(
      'tokenizer_vocab_mismatch',
      `${tokenizer.source} produces token id ${max} but ${modelSource} has vocab_size ${vocabSize}; use the tokenizer that belongs to this model`,
      {
        file: tokenizer.source,
        model: modelSource,
        maxId: max,
        vocabSize,
      },
    );
  }
}

/**
 * Hugging Face's DecodeStream: decodes the ids since a moving prefix and returns only what is new,
 * holding back text while it ends in U+FFFD (a character whose bytes have not all arrived).
 */
export class DecodeStream {
  private ids: number[] = [];
  private prefix = '';
  private prefixIndex = 0;
  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly opts: DecodeOptions,
  ) {}

  /** The new text after `id`, or '' when nothing printable is complete yet. */
  step(id: number): string {
    if (this.prefix === '' && this.ids.length > 0) {
      const p = this.tokenizer.decode(this.ids, this.opts);
      if (!p.endsWith('\ufffd')) {
        this.prefix = p;
        this.prefixIndex = this.ids.length;
      }
    }
    this.ids.push(id);
    const text = this.tokenizer.decode(this.ids, this.opts);
    if (text.length <= this.prefix.length || text.endsWith('\ufffd') || !text.startsWith(this.prefix)) return '';
    const fresh = text.slice(this.prefix.length);
    const newPrefixIndex = this.ids.length - this.prefixIndex;
    this.ids = this.ids.slice(this.prefixIndex);
    this.prefix = this.tokenizer.decode(this.ids, this.opts);
    this.prefixIndex = newPrefixIndex;
    return fresh;
  }
}

function parseAddedToken(json: unknown, r: JsonReader, at: string): AddedToken {
  const o = r.object(json, at);
  const special = r.bool(o.special, `${at}.special`, false);
  return {
    content: r.string(o.content, `${at}.content`),
    special,
    singleWord: r.bool(o.single_word, `${at}.single_word`, false),
    lstrip: r.bool(o.lstrip, `${at}.lstrip`, false),
    rstrip: r.bool(o.rstrip, `${at}.rstrip`, false),
    normalized: r.bool(o.normalized, `${at}.normalized`, !special),
  };
}

function parseJson(text: string, source: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw invalidTokenizer(source, '(file)', `is not JSON: ${(err as Error).message}`);
  }
}
