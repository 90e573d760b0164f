/**
 * A strict JSON parser for untrusted file headers.
 *
 * Why not JSON.parse: it keeps the last of two duplicate keys without a word, rounds integers
 * above 2^53 before anyone can see them, and builds plain objects in which a key named
 * `__proto__` is special. This parser instead
 * - returns objects as `Map`s (any key is just a string),
 * - keeps every number as its source text (the caller decides what it may be),
 * - rejects duplicate keys, lone-surrogate escapes and nesting deeper than a bound,
 * - reports the character position of the first problem.
 * Grammar: RFC 8259, nothing more (no comments, no trailing commas).
 */

/** A number exactly as it was written, so no precision is lost before it is validated. */
export class JsonNumber {
  constructor(readonly text: string) {}
}

export type JsonValue = string | JsonNumber | boolean | null | JsonValue[] | JsonObject;
export type JsonObject = Map<string, JsonValue>;

export type JsonProblem = 'syntax' | 'duplicate_key' | 'too_deep' | 'trailing_text';

export class JsonParseError extends Error {
  constructor(
    readonly problem: JsonProblem,
    message: string,
    /** Index (UTF-16 code unit) in the parsed text. */
    readonly position: number,
  ) {
    super(message);
  }
}

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const HEX4 = /^[0-9a-fA-F]{4}$/;

const enum Ch {
  Tab = 0x09, Newline = 0x0a, Return = 0x0d, Space = 0x20, Quote = 0x22, Comma = 0x2c,
  Minus = 0x2d, Digit0 = 0x30, Digit9 = 0x39, Colon = 0x3a, OpenBracket = 0x5b, Backslash = 0x5c,
  CloseBracket = 0x5d, OpenBrace = 0x7b, CloseBrace = 0x7d,
}

/** Parses one JSON value that must fill `text` (surrounding JSON whitespace allowed). */
export function parseStrictJson(text: string, maxDepth: number): JsonValue {
  const parser = new Parser(text, maxDepth);
  parser.skipWhitespace();
  const value = parser.value(0);
  parser.skipWhitespace();
  if (parser.pos < text.length) {
    throw new JsonParseError('trailing_text', `unexpected text after the JSON value at character ${parser.pos}`, parser.pos);
  }
  return value;
}

class Parser {
  pos = 0;
  constructor(
    private readonly text: string,
    private readonly maxDepth: number,
  ) {}

  private fail(message: string, at = this.pos): never {
    throw new JsonParseError('syntax', `${message} at character ${at}`, at);
  }

  skipWhitespace(): void {
    const t = this.text;
    while (this.pos < t.length) {
      const c = t.charCodeAt(this.pos);
      if (c !== Ch.Space && c !== Ch.Newline && c !== Ch.Return && c !== Ch.Tab) return;
      this.pos++;
    }
  }

  value(depth: number): JsonValue {
    const c = this.text.charCodeAt(this.pos);
    if (c === Ch.OpenBrace || c === Ch.OpenBracket) {
      if (depth >= this.maxDepth) {
        throw new JsonParseError('too_deep', `nesting deeper than ${this.maxDepth} levels at character ${this.pos}`, this.pos);
      }
      return c === Ch.OpenBrace ? this.object(depth + 1) : this.array(depth + 1);
    }
    if (c === Ch.Quote) return this.string();
    if (c === Ch.Minus || (c >= Ch.Digit0 && c <= Ch.Digit9)) return this.number();
    for (const [word, v] of [['true', true], ['false', false], ['null', null]] as const) {
      if (this.text.startsWith(word, this.pos)) {
        this.pos += word.length;
        return v;
      }
    }
    return this.fail(this.pos >= this.text.length ? 'unexpected end of text' : 'expected a value');
  }

  private object(depth: number): JsonObject {
    const out: JsonObject = new Map();
    this.pos++; // {
    this.skipWhitespace();
    if (this.text.charCodeAt(this.pos) === Ch.CloseBrace) {
      this.pos++;
      return out;
    }
    for (;;) {
      this.skipWhitespace();
      if (this.text.charCodeAt(this.pos) !== Ch.Quote) this.fail('expected a string key');
      const keyAt = this.pos;
      const key = this.string();
      if (out.has(key)) {
        throw new JsonParseError('duplicate_key', `duplicate key ${JSON.stringify(clip(key))} at character ${keyAt}`, keyAt);
      }
      this.skipWhitespace();
      if (this.text.charCodeAt(this.pos) !== Ch.Colon) this.fail("expected ':'");
      this.pos++;
      this.skipWhitespace();
      out.set(key, this.value(depth));
      this.skipWhitespace();
      const c = this.text.charCodeAt(this.pos);
      this.pos++;
      if (c === Ch.CloseBrace) return out;
      if (c !== Ch.Comma) this.fail("expected ',' or '}'", this.pos - 1);
    }
  }

  private array(depth: number): JsonValue[] {
    const out: JsonValue[] = [];
    this.pos++; // [
    this.skipWhitespace();
    if (this.text.charCodeAt(this.pos) === Ch.CloseBracket) {
      this.pos++;
      return out;
    }
    for (;;) {
      this.skipWhitespace();
      out.push(this.value(depth));
      this.skipWhitespace();
      const c = this.text.charCodeAt(this.pos);
      this.pos++;
      if (c === Ch.CloseBracket) return out;
      if (c !== Ch.Comma) this.fail("expected ',' or ']'", this.pos - 1);
    }
  }

  private number(): JsonNumber {
    NUMBER.lastIndex = this.pos;
    const m = NUMBER.exec(this.text);
    if (!m) this.fail('malformed number');
    this.pos += m[0].length;
    return new JsonNumber(m[0]);
  }

  private string(): string {
    const t = this.text;
    const start = this.pos;
    this.pos++; // opening quote
    let out = '';
    let runStart = this.pos;
    for (;;) {
      if (this.pos >= t.length) this.fail('unterminated string', start);
      const c = t.charCodeAt(this.pos);
      if (c === Ch.Quote) {
        out += t.slice(runStart, this.pos);
        this.pos++;
        return out;
      }
      if (c < 0x20) this.fail('raw control character in a string (escape it)');
      if (c !== Ch.Backslash) {
        this.pos++;
        continue;
      }
      out += t.slice(runStart, this.pos);
      out += this.escape();
      runStart = this.pos;
    }
  }

  /** Decodes one escape starting at the backslash; surrogates must come in valid pairs. */
  private escape(): string {
    const t = this.text;
    const at = this.pos;
    const e = t[this.pos + 1];
    this.pos += 2;
    switch (e) {
      case '"': return '"';
      case '\\': return '\\';
      case '/': return '/';
      case 'b': return '\b';
      case 'f': return '\f';
      case 'n': return '\n';
      case 'r': return '\r';
      case 't': return '\t';
      case 'u': {
        const hi = this.hex4(at);
        if (hi >= 0xdc00 && hi <= 0xdfff) this.fail('lone low surrogate escape', at);
        if (hi < 0xd800 || hi > 0xdbff) return String.fromCharCode(hi);
        if (t[this.pos] !== '\\' || t[this.pos + 1] !== 'u') this.fail('lone high surrogate escape', at);
        this.pos += 2;
        const lo = this.hex4(at);
        if (lo < 0xdc00 || lo > 0xdfff) this.fail('high surrogate escape not followed by a low one', at);
        return String.fromCharCode(hi, lo);
      }
      default:
        return this.fail('invalid escape', at);
    }
  }

  private hex4(at: number): number {
    const digits = this.text.slice(this.pos, this.pos + 4);
    if (!HEX4.test(digits)) this.fail('invalid \\u escape', at);
    this.pos += 4;
    return parseInt(digits, 16);
  }
}

/** Keeps messages readable when a key is enormous. */
export function clip(s: string, max = 120): string {
  return s.length <= max ? s : `${s.slice(0, max)}…`;
}
