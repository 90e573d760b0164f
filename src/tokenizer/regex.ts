/**
 * Oniguruma patterns (what Hugging Face tokenizers compiles a `Regex` with) as JavaScript RegExps.
 *
 * The two engines agree on alternation order, greedy quantifiers, backtracking and lookaround, so
 * most patterns carry over; these constructs mean something else in JavaScript and are rewritten:
 *   \s \S      Oniguruma: Unicode White_Space (includes U+0085, excludes U+FEFF) → \p{White_Space}
 *   \d \D      Unicode decimal digits → \p{Nd}
 *   \w         letters, marks, decimal digits, connector punctuation
 *   \p{Han}    a script name → \p{Script=Han}; \p{^L} → \P{L}
 *   \x{263A}   → \u{263A}
 *   .          any character but \n (JavaScript also stops at \r, U+2028, U+2029)
 *   ^ $        line anchors in Oniguruma's Ruby syntax
 *   (?i:…)     a case-insensitive group, expanded letter by letter with Unicode's case folding
 *              (Node 20 has no inline modifiers): s → [sSſ], k → [kKK]
 *   \'  \-  …  escaped punctuation (a syntax error under JavaScript's `u` flag) → \u{27}
 * Anything else JavaScript cannot express (possessive quantifiers, atomic groups, nested classes,
 * inline flags other than a case-insensitive group) is an `tokenizer_unsupported` error.
 */
import { unsupportedComponent } from './errors.js';

const WHITE = '\\p{White_Space}';
const NOT_WHITE = '\\P{White_Space}';
const WORD_PARTS = '\\p{L}\\p{M}\\p{Nd}\\p{Pc}';
/** Characters other than a letter's two cases that Unicode case folding maps onto it. */
const EXTRA_FOLDS: Record<string, string> = { s: '\u017f', k: '\u212a' };

export function onigToRegExp(pattern: string, source: string, component: string): RegExp {
  const fail = (what: string) => unsupportedComponent(source, component, `pattern ${JSON.stringify(pattern)}: ${what}`);
  let out = '';
  let inClass = false;
  /** One entry per open group: whether it is case-insensitive (inherited). */
  const groups: boolean[] = [];
  const caseless = () => groups.length > 0 && groups[groups.length - 1]!;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '\\') {
      const e = pattern[++i];
      if (e === undefined) throw fail('ends with a backslash');
      if (e === 'p' || e === 'P') {
        const close = pattern.indexOf('}', i);
        if (pattern[i + 1] !== '{' || close < 0) throw fail(`\\${e} without {name}`);
        let name = pattern.slice(i + 2, close);
        let negate = e === 'P';
        if (name.startsWith('^')) {
          negate = !negate;
          name = name.slice(1);
        }
        out += `\\${negate ? 'P' : 'p'}{${unicodeProperty(name, fail)}}`;
        i = close;
      } else if (e === 's') out += WHITE;
      else if (e === 'S') out += NOT_WHITE;
      else if (e === 'd') out += '\\p{Nd}';
      else if (e === 'D') out += '\\P{Nd}';
      else if (e === 'w') out += inClass ? WORD_PARTS : `[${WORD_PARTS}]`;
      else if (e === 'W') {
        if (inClass) throw fail('\\W inside a character class');
        out += `[^${WORD_PARTS}]`;
      } else if (e === 'x' && pattern[i + 1] === '{') {
        const close = pattern.indexOf('}', i);
        out += `\\u{${pattern.slice(i + 2, close)}}`;
        i = close;
      } else if (e === 'A' && !inClass) out += '(?<![\\s\\S])';
      else if (e === 'z' && !inClass) out += '(?![\\s\\S])';
      else if ('nrtfv0'.includes(e) || e === 'x' || e === 'u' || /[1-9]/.test(e)) out += `\\${e}`;
      else if (/[A-Za-z]/.test(e)) throw fail(`the escape \\${e}`);
      else out += `\\u{${e.codePointAt(0)!.toString(16)}}`;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      else if (c === '[') throw fail('a nested character class');
      else if (c === '&' && pattern[i + 1] === '&') throw fail('a class intersection (&&)');
      out += caseless() ? foldClass(c) : c;
      continue;
    }
    if (c === '[') {
      inClass = true;
      out += c;
      if (pattern[i + 1] === '^') out += pattern[++i];
      if (pattern[i + 1] === ']') out += `\\${pattern[++i]}`; // a leading ] is a literal in Oniguruma
    } else if (c === '(') {
      if (pattern[i + 1] !== '?') {
        groups.push(caseless());
        out += c;
      } else if (pattern.startsWith('(?i:', i)) {
        groups.push(true);
        out += '(?:';
        i += 3;
      } else if (/^\(\?(:|=|!|<=|<!|<[A-Za-z])/.test(pattern.slice(i, i + 4))) {
        groups.push(caseless());
        out += c;
      } else throw fail(`the group ${pattern.slice(i, i + 4)}…`);
    } else if (c === ')') {
      groups.pop();
      out += c;
    } else if (c === '.') out += '[^\\n]';
    else if (c === '^') out += '(?<![^\\n])';
    else if (c === '$') out += '(?![^\\n])';
    else out += caseless() ? foldLetter(c) : c;
  }
  try {
    return new RegExp(out, 'gu');
  } catch (err) {
    throw fail(`JavaScript cannot compile it (${(err as Error).message})`);
  }
}

function foldLetter(c: string): string {
  const lower = c.toLowerCase();
  const upper = c.toUpperCase();
  if (lower === upper) return c;
  return `[${lower}${upper}${EXTRA_FOLDS[lower] ?? ''}]`;
}

function foldClass(c: string): string {
  const lower = c.toLowerCase();
  const upper = c.toUpperCase();
  return lower === upper ? c : `${lower}${upper}${EXTRA_FOLDS[lower] ?? ''}`;
}

/** A property name as JavaScript spells it: general categories and binary properties as-is, scripts as Script=. */
function unicodeProperty(name: string, fail: (what: string) => Error): string {
  for (const candidate of [name, `Script=${name}`]) {
    try {
      new RegExp(`\\p{${candidate}}`, 'u');
      return candidate;
    } catch {
      // try the next spelling
    }
  }
  throw fail(`the Unicode property \\p{${name}}`);
}

export interface RegexPiece {
  start: number;
  end: number;
  isMatch: boolean;
}

/**
 * The matches of `re` in `text` and the gaps between them, covering the text in order — the
 * `find_matches` of Hugging Face's Pattern. An empty match is skipped past (no infinite loop).
 */
export function findMatches(re: RegExp, text: string): RegexPiece[] {
  if (text.length === 0) return [{ start: 0, end: 0, isMatch: false }];
  const out: RegexPiece[] = [];
  let prev = 0;
  re.lastIndex = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const start = m.index;
    const end = start + m[0].length;
    if (end === start) {
      re.lastIndex = start + (text.codePointAt(start)! > 0xffff ? 2 : 1);
      continue;
    }
    if (prev !== start) out.push({ start: prev, end: start, isMatch: false });
    out.push({ start, end, isMatch: true });
    prev = end;
  }
  if (prev !== text.length) out.push({ start: prev, end: text.length, isMatch: false });
  return out;
}

/** A literal string as a global RegExp. */
export function literalRegExp(text: string): RegExp {
  return new RegExp(text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&'), 'gu');
}
