/**
 * Pre-tokenizers: cut normalized text into pieces that BPE encodes one at a time (Hugging Face's
 * `pre_tokenizer` field). Supported: Sequence, Split, ByteLevel, Metaspace, Digits.
 *
 * A piece remembers whether it begins the input (`first`): Metaspace's prepend_scheme "first"
 * adds "▁" only there (Hugging Face checks that the piece's original offset is 0).
 */
import { bytesToChars } from './byte-level.js';
import { JsonReader, unsupportedComponent } from './errors.js';
import { patternRegExp } from './normalizers.js';
import { type RegexPiece, findMatches, literalRegExp, onigToRegExp } from './regex.js';

export interface Piece {
  text: string;
  first: boolean;
}

export type PreTokenizer = (piece: Piece) => Piece[];

/** GPT-2's pattern, which ByteLevel applies when use_regex is true. */
export const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

export type SplitBehavior = 'Removed' | 'Isolated' | 'MergedWithPrevious' | 'MergedWithNext' | 'Contiguous';
const BEHAVIORS: readonly SplitBehavior[] = [
  'Removed',
  'Isolated',
  'MergedWithPrevious',
  'MergedWithNext',
  'Contiguous',
];

export function parsePreTokenizer(json: unknown, r: JsonReader, at = 'pre_tokenizer'): PreTokenizer {
  const o = r.object(json, at);
  const type = r.string(o.type, `${at}.type`);
  switch (type) {
    case 'Sequence': {
      const steps = r
        .array(o.pretokenizers, `${at}.pretokenizers`)
        .map((p, i) => parsePreTokenizer(p, r, `${at}.pretokenizers[${i}]`));
      return (piece) => steps.reduce<Piece[]>((pieces, step) => pieces.flatMap(step), [piece]);
    }
    case 'Split': {
      const re = patternRegExp(o.pattern, r, `${at}.pattern`);
      const behavior = r.string(o.behavior, `${at}.behavior`) as SplitBehavior;
      if (!BEHAVIORS.includes(behavior))
        throw unsupportedComponent(
          r.source,
          `${at}.behavior`,
          `${JSON.stringify(behavior)} is not one of ${BEHAVIORS.join(', ')}`,
        );
      const invert = r.bool(o.invert, `${at}.invert`, false);
      return (piece) => splitPiece(piece, re, behavior, invert);
    }
    case 'ByteLevel': {
      const addPrefixSpace = r.bool(o.add_prefix_space, `${at}.add_prefix_space`, true);
      const re = r.bool(o.use_regex, `${at}.use_regex`, true) ? gpt2Regex(r.source) : null;
      return (piece) => {
        const text = addPrefixSpace && !piece.text.startsWith(' ') ? ` ${piece.text}` : piece.text;
        if (!re) return text ? [{ text: bytesToChars(text), first: piece.first }] : [];
        const out: Piece[] = [];
        for (const m of findMatches(re, text)) {
          if (m.end > m.start)
            out.push({ text: bytesToChars(text.slice(m.start, m.end)), first: piece.first && m.start === 0 });
        }
        return out;
      };
    }
    case 'Metaspace': {
      const replacement = r.string(o.replacement, `${at}.replacement`);
      if ([...replacement].length !== 1)
        throw unsupportedComponent(r.source, `${at}.replacement`, 'must be one character');
      const scheme = metaspaceScheme(o, r, at);
      const split = r.bool(o.split, `${at}.split`, true);
      const re = literalRegExp(replacement);
      return (piece) => {
        let text = piece.text.replaceAll(' ', replacement);
        if (!text.startsWith(replacement) && (scheme === 'always' || (scheme === 'first' && piece.first)))
          text = replacement + text;
        const p = { text, first: piece.first };
        return split ? splitPiece(p, re, 'MergedWithNext', false) : text ? [p] : [];
      };
    }
    case 'Digits': {
      const individual = r.bool(o.individual_digits, `${at}.individual_digits`, false);
      const re = individual ? /\p{N}/gu : /\p{N}+/gu; // Rust char::is_numeric
      return (piece) => splitPiece(piece, re, individual ? 'Isolated' : 'Contiguous', false);
    }
    default:
      throw unsupportedComponent(r.source, `${at} ${type}`, 'is not supported');
  }
}

export type PrependScheme = 'first' | 'always' | 'never';

/** prepend_scheme (default "always"), and the older add_prefix_space: false meaning "never". */
export function metaspaceScheme(o: Record<string, unknown>, r: JsonReader, at: string): PrependScheme {
  const scheme = o.prepend_scheme === undefined ? 'always' : r.string(o.prepend_scheme, `${at}.prepend_scheme`);
  if (scheme !== 'first' && scheme !== 'always' && scheme !== 'never')
    throw unsupportedComponent(
      r.source,
      `${at}.prepend_scheme`,
      `${JSON.stringify(scheme)} is not first, always or never`,
    );
  if (o.add_prefix_space === false) {
    if (scheme !== 'never' && o.prepend_scheme !== undefined)
      throw unsupportedComponent(r.source, `${at}.add_prefix_space`, 'false contradicts prepend_scheme');
    return 'never';
  }
  return scheme;
}

let gpt2: RegExp | null = null;
function gpt2Regex(source: string): RegExp {
  gpt2 ??= onigToRegExp(GPT2_PATTERN, source, 'ByteLevel');
  return gpt2;
}

/** Hugging Face's NormalizedString::split: regex matches and gaps, combined as `behavior` says; empty pieces dropped. */
export function splitPiece(piece: Piece, re: RegExp, behavior: SplitBehavior, invert: boolean): Piece[] {
  let matches: RegexPiece[] = findMatches(re, piece.text);
  if (invert) matches = matches.map((m) => ({ ...m, isMatch: !m.isMatch }));
  const spans = combine(matches, behavior);
  const out: Piece[] = [];
  for (const s of spans) {
    if (s.end > s.start) out.push({ text: piece.text.slice(s.start, s.end), first: piece.first && s.start === 0 });
  }
  return out;
}

function combine(matches: RegexPiece[], behavior: SplitBehavior): { start: number; end: number }[] {
  switch (behavior) {
    case 'Isolated':
      return matches;
    case 'Removed':
      return matches.filter((m) => !m.isMatch);
    case 'MergedWithPrevious':
    case 'Contiguous': {
      const out: { start: number; end: number }[] = [];
      let previousMatch = false;
      for (const m of matches) {
        const merge = behavior === 'Contiguous' ? m.isMatch === previousMatch : m.isMatch && !previousMatch;
        if (merge && out.length > 0) out[out.length - 1]!.end = m.end;
        else out.push({ start: m.start, end: m.end });
        previousMatch = m.isMatch;
      }
      return out;
    }
    case 'MergedWithNext': {
      const out: { start: number; end: number }[] = [];
      let previousMatch = false;
      for (let i = matches.length - 1; i >= 0; i--) {
        const m = matches[i]!;
        if (m.isMatch && !previousMatch && out.length > 0) out[out.length - 1]!.start = m.start;
        else out.push({ start: m.start, end: m.end });
        previousMatch = m.isMatch;
      }
      return out.reverse();
    }
  }
}
