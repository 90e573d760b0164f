/**
 * Added tokens (tokenizer.json's `added_tokens`): strings matched in the text before the model
 * runs, as Hugging Face's AddedVocabulary does it:
 *   - ids: a token already in the model's vocab keeps that id; others get ids from the model's
 *     vocab size upwards, in file order (the `id` field in the file is not what decides, there either);
 *   - matching: leftmost-longest over all tokens; tokens with normalized: false are matched in the
 *     raw text first, then the rest of the text is normalized and tokens with normalized: true are
 *     matched (by their normalized form) in it;
 *   - single_word: a match touching a word character (\w) on either side is dropped;
 *   - lstrip / rstrip: the match swallows the whitespace before / after it.
 */
import type { Normalizer } from './normalizers.js';

export interface AddedToken {
  content: string;
  special: boolean;
  singleWord: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
}

/** A stretch of the input: text still to encode, or an added token already resolved to an id. */
export interface Span {
  text: string;
  /** Whether the span begins the input (Metaspace prepend_scheme "first"). */
  first: boolean;
  id?: number;
}

/** Rust regex's Unicode \w and \s, tested one character at a time (scanning whole prefixes with a
 * regex made encoding quadratic in the number of added tokens in the text). */
const WORD_CHAR = /^[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]$/u;
const SPACE_CHAR = /^\p{White_Space}$/u; // all White_Space characters are in the BMP

function codePointBefore(text: string, i: number): string {
  const low = text.charCodeAt(i - 1);
  return low >= 0xdc00 && low < 0xe000 && i >= 2 ? text.slice(i - 2, i) : text[i - 1]!;
}

function codePointAt(text: string, i: number): string {
  return String.fromCodePoint(text.codePointAt(i)!);
}

/** Leftmost-longest matching of a set of strings, bucketed by first code unit. */
class Matcher {
  private readonly byFirst = new Map<string, { text: string; id: number }[]>();
  constructor(entries: { text: string; id: number }[]) {
    for (const e of entries) {
      if (e.text.length === 0) continue;
      const list = this.byFirst.get(e.text[0]!) ?? [];
      list.push(e);
      this.byFirst.set(e.text[0]!, list);
    }
    for (const list of this.byFirst.values()) list.sort((a, b) => b.text.length - a.text.length);
  }

  get empty(): boolean {
    return this.byFirst.size === 0;
  }

  /** Non-overlapping matches, scanning left to right and taking the longest at each start. */
  *matches(text: string): Generator<{ start: number; end: number; id: number }> {
    for (let i = 0; i < text.length;) {
      const hit = this.byFirst.get(text[i]!)?.find((e) => text.startsWith(e.text, i));
      if (hit) {
        yield { start: i, end: i + hit.text.length, id: hit.id };
        i += hit.text.length;
      } else i++;
    }
  }
}

export class AddedVocabulary {
  readonly byId = new Map<number, AddedToken>();
  readonly byContent = new Map<string, number>();
  private readonly raw: Matcher;
  private readonly normalizedMatcher: Matcher;

  constructor(tokens: AddedToken[], modelVocab: ReadonlyMap<string, number>, normalizer: Normalizer | null) {
    const raw: { text: string; id: number }[] = [];
    const normalized: { text: string; id: number }[] = [];
    for (const token of tokens) {
      if (token.content.length === 0) continue;
      const id = this.byContent.get(token.content) ?? modelVocab.get(token.content) ?? this.nextId(modelVocab.size);
      this.byContent.set(token.content, id);
      this.byId.set(id, token);
      if (token.normalized) normalized.push({ text: normalizer ? normalizer(token.content) : token.content, id });
      else raw.push({ text: token.content, id });
    }
    this.raw = new Matcher(raw);
    this.normalizedMatcher = new Matcher(normalized);
  }

  /** Hugging Face's next id: the model's vocab size, or one past the largest added id when that is larger. */
  private nextId(modelSize: number): number {
    let max = -1;
    for (const id of this.byId.keys()) max = Math.max(max, id);
    return max < 0 || (max < modelSize && modelSize > 0) ? modelSize : max + 1;
  }

  isSpecial(id: number): boolean {
    return this.byId.get(id)?.special === true;
  }

  /** Splits the input on added tokens, normalizing the text between them. */
  extractAndNormalize(text: string, normalizer: Normalizer | null): Span[] {
    const out: Span[] = [];
    for (const span of this.split({ text, first: true }, this.raw)) {
      if (span.id !== undefined) out.push(span);
      else {
        const normalizedText = normalizer ? normalizer(span.text) : span.text;
        for (const s of this.split({ text: normalizedText, first: span.first }, this.normalizedMatcher)) out.push(s);
      }
    }
    return out;
  }

  private split(span: Span, matcher: Matcher): Span[] {
    const text = span.text;
    if (text.length === 0) return [];
    if (matcher.empty) return [span];
    const out: Span[] = [];
    let offset = 0;
    const push = (start: number, end: number, id?: number) => {
      if (end > start)
        out.push({
          text: text.slice(start, end),
          first: span.first && start === 0,
          ...(id === undefined ? {} : { id }),
        });
    };
    for (const m of matcher.matches(text)) {
      let { start, end } = m;
      const token = this.byId.get(m.id)!;
      if (token.singleWord) {
        const wordBefore = start > 0 && WORD_CHAR.test(codePointBefore(text, start));
        const wordAfter = end < text.length && WORD_CHAR.test(codePointAt(text, end));
        if (wordBefore || wordAfter) continue;
      }
      if (token.lstrip) {
        // Not past the previous match, which may have taken these spaces already (rstrip).
        while (start > offset && SPACE_CHAR.test(text[start - 1]!)) start--;
      }
      if (token.rstrip) while (end < text.length && SPACE_CHAR.test(text[end]!)) end++;
      push(offset, start);
      push(start, end, m.id);
      offset = end;
    }
    push(offset, text.length);
    return out;
  }
}
