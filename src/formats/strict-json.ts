/**
 * A strict JSON reader for untrusted file headers, in two layers:
 *
 * - `JsonScanner` reads JSON tokens one at a time straight from UTF-8 bytes. It never builds
 *   more than the caller asks for: a number is scanned and classified (sign, digit count,
 *   fraction, exponent) without being converted, so a caller can refuse a 100-million-digit
 *   integer after counting its digits, and a reader that knows the document's shape (the
 *   safetensors header) validates while it scans instead of materialising a tree first.
 * - `parseStrictJson` builds a whole value from text, for documents small enough to hold.
 *
 * Why not JSON.parse: it keeps the last of two duplicate keys without a word, rounds integers
 * above 2^53 before anyone can see them, and builds plain objects in which a key named
 * `__proto__` is special. Here objects are `Map`s (any key is just a string), numbers keep their
 * source text, duplicate keys, lone-surrogate escapes and nesting deeper than a bound are
 * rejected, and errors say where the first problem is.
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
    /** Where the problem is: a UTF-16 index for parseStrictJson, a byte offset for JsonScanner. */
    readonly position: number,
    /** The message without its position, so a caller can restate where. */
    readonly reason: string = message,
  ) {
    super(message);
  }
}

export const enum Ch {
  Tab = 0x09,
  Newline = 0x0a,
  Return = 0x0d,
  Space = 0x20,
  Quote = 0x22,
  Comma = 0x2c,
  Minus = 0x2d,
  Dot = 0x2e,
  Digit0 = 0x30,
  Digit9 = 0x39,
  Colon = 0x3a,
  OpenBracket = 0x5b,
  Backslash = 0x5c,
  CloseBracket = 0x5d,
  LowerE = 0x65,
  UpperE = 0x45,
  Plus = 0x2b,
  OpenBrace = 0x7b,
  CloseBrace = 0x7d,
}

/** What `JsonScanner.scanNumber` learned about the number it passed over. */
export interface ScannedNumber {
  /** Byte range of the whole number in the scanned bytes. */
  start: number;
  end: number;
  negative: boolean;
  /** Digits before any fraction or exponent (leading zeros are a syntax error, so no padding). */
  integerDigits: number;
  hasFraction: boolean;
  hasExponent: boolean;
}

const isDigit = (c: number) => c >= Ch.Digit0 && c <= Ch.Digit9;
const UTF8 = new TextDecoder('utf-8', { ignoreBOM: true });

/**
 * Reads JSON tokens from UTF-8 bytes, left to right. The bytes must already be valid UTF-8 (the
 * caller checks that once for the whole document). Methods throw JsonParseError at the first
 * syntax problem, with `position` a byte offset into `bytes`.
 */
export class JsonScanner {
  pos = 0;
  constructor(readonly bytes: Uint8Array) {}

  get atEnd(): boolean {
    return this.pos >= this.bytes.length;
  }

  /** The byte at the cursor, or -1 at the end. */
  peek(): number {
    return this.pos < this.bytes.length ? this.bytes[this.pos]! : -1;
  }

  fail(reason: string, at = this.pos, problem: JsonProblem = 'syntax'): never {
    throw new JsonParseError(problem, `${reason} at byte ${at}`, at, reason);
  }

  skipWhitespace(): void {
    const b = this.bytes;
    let p = this.pos;
    while (p < b.length) {
      const c = b[p]!;
      if (c !== Ch.Space && c !== Ch.Newline && c !== Ch.Return && c !== Ch.Tab) break;
      p++;
    }
    this.pos = p;
  }

  /** Skips whitespace, then consumes `c` or fails saying what was expected. */
  expect(c: number, what: string): void {
    this.skipWhitespace();
    if (this.peek() !== c) this.fail(this.atEnd ? `unexpected end of text, expected ${what}` : `expected ${what}`);
    this.pos++;
  }

  /**
   * After an element of a list or object: skips whitespace and consumes ',' (returns true) or
   * `close` (returns false).
   */
  nextElement(close: number): boolean {
    this.skipWhitespace();
    const c = this.peek();
    if (c === Ch.Comma || c === close) {
      this.pos++;
      return c === Ch.Comma;
    }
    return this.fail(`expected ',' or '${String.fromCharCode(close)}'`);
  }

  /**
   * Consumes `open` at the cursor and the whitespace after it; when the container is empty,
   * consumes `close` too and returns false.
   */
  enter(open: number, close: number): boolean {
    if (this.peek() !== open) this.fail(`expected '${String.fromCharCode(open)}'`);
    this.pos++;
    this.skipWhitespace();
    if (this.peek() !== close) return true;
    this.pos++;
    return false;
  }

  /**
   * When the string at the cursor is written exactly as one of `words` (no escapes), consumes it
   * and returns the word's index; otherwise consumes nothing and returns -1. Saves building a
   * string for the keys and names a format expects.
   */
  matchWord(words: readonly string[]): number {
    const b = this.bytes;
    const p = this.pos + 1;
    next: for (let w = 0; w < words.length; w++) {
      const word = words[w]!;
      if (b[p + word.length] !== Ch.Quote) continue;
      for (let k = 0; k < word.length; k++) if (b[p + k] !== word.charCodeAt(k)) continue next;
      this.pos = p + word.length + 1;
      return w;
    }
    return -1;
  }

  /** Consumes `true`, `false` or `null` at the cursor. */
  readLiteral(): boolean | null {
    for (const [word, v] of LITERALS) {
      if (this.startsWith(word)) {
        this.pos += word.length;
        return v;
      }
    }
    return this.fail(this.atEnd ? 'unexpected end of text' : 'expected a value');
  }

  private startsWith(word: string): boolean {
    for (let i = 0; i < word.length; i++) if (this.bytes[this.pos + i] !== word.charCodeAt(i)) return false;
    return true;
  }

  /**
   * Passes over one number at the cursor, checking RFC 8259's grammar and describing it; the
   * digits are only counted, never converted. Reuses `into` so a long list allocates nothing.
   */
  scanNumber(into: ScannedNumber): ScannedNumber {
    const b = this.bytes;
    let p = this.pos;
    into.start = p;
    into.negative = b[p] === Ch.Minus;
    if (into.negative) p++;
    const intStart = p;
    if (b[p] === Ch.Digit0) p++;
    else if (p < b.length && isDigit(b[p]!)) while (p < b.length && isDigit(b[p]!)) p++;
    else this.fail('malformed number', into.start);
    into.integerDigits = p - intStart;
    into.hasFraction = b[p] === Ch.Dot;
    if (into.hasFraction) {
      p++;
      if (!(p < b.length && isDigit(b[p]!))) this.fail('malformed number', into.start);
      while (p < b.length && isDigit(b[p]!)) p++;
    }
    into.hasExponent = b[p] === Ch.LowerE || b[p] === Ch.UpperE;
    if (into.hasExponent) {
      p++;
      if (b[p] === Ch.Plus || b[p] === Ch.Minus) p++;
      if (!(p < b.length && isDigit(b[p]!))) this.fail('malformed number', into.start);
      while (p < b.length && isDigit(b[p]!)) p++;
    }
    into.end = p;
    this.pos = p;
    return into;
  }

  /** Consumes a string at the cursor (which must be at its opening quote) and decodes it. */
  readString(): string {
    const b = this.bytes;
    const start = this.pos;
    let p = start + 1;
    let runStart = p;
    let ascii = true;
    let out = '';
    for (;;) {
      if (p >= b.length) this.fail('unterminated string', start);
      const c = b[p]!;
      if (c === Ch.Quote) {
        this.pos = p + 1;
        return out + decodeRun(b, runStart, p, ascii);
      }
      if (c < 0x20) this.fail('raw control character in a string (escape it)', p);
      if (c !== Ch.Backslash) {
        if (c >= 0x80) ascii = false;
        p++;
        continue;
      }
      out += decodeRun(b, runStart, p, ascii);
      this.pos = p;
      out += this.escape();
      p = runStart = this.pos;
      ascii = true;
    }
  }

  /** Passes over a string without decoding it (escapes are still checked). */
  skipString(): void {
    const b = this.bytes;
    const start = this.pos;
    let p = start + 1;
    for (;;) {
      if (p >= b.length) this.fail('unterminated string', start);
      const c = b[p]!;
      if (c === Ch.Quote) {
        this.pos = p + 1;
        return;
      }
      if (c < 0x20) this.fail('raw control character in a string (escape it)', p);
      if (c === Ch.Backslash) {
        this.pos = p;
        this.escape();
        p = this.pos;
      } else {
        p++;
      }
    }
  }

  /** Decodes one escape starting at the backslash; surrogates must come in valid pairs. */
  private escape(): string {
    const b = this.bytes;
    const at = this.pos;
    const e = b[at + 1];
    this.pos += 2;
    switch (e) {
      case 0x22:
        return '"';
      case 0x5c:
        return '\\';
      case 0x2f:
        return '/';
      case 0x62:
        return '\b';
      case 0x66:
        return '\f';
      case 0x6e:
        return '\n';
      case 0x72:
        return '\r';
      case 0x74:
        return '\t';
      case 0x75: {
        // u
        const hi = this.hex4(at);
        if (hi >= 0xdc00 && hi <= 0xdfff) this.fail('lone low surrogate escape', at);
        if (hi < 0xd800 || hi > 0xdbff) return String.fromCharCode(hi);
        if (b[this.pos] !== Ch.Backslash || b[this.pos + 1] !== 0x75) this.fail('lone high surrogate escape', at);
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
    let v = 0;
    for (let i = 0; i < 4; i++) {
      const c = this.bytes[this.pos + i] ?? -1;
      const d = isDigit(c) ? c - Ch.Digit0 : (c | 0x20) >= 0x61 && (c | 0x20) <= 0x66 ? (c | 0x20) - 0x61 + 10 : -1;
      if (d < 0) this.fail('invalid \\u escape', at);
      v = v * 16 + d;
    }
    this.pos += 4;
    return v;
  }

  /** Builds any value at the cursor (objects as Maps, numbers as JsonNumber). */
  value(depth: number, maxDepth: number): JsonValue {
    this.skipWhitespace();
    const c = this.peek();
    if (c === Ch.OpenBrace || c === Ch.OpenBracket) {
      if (depth >= maxDepth) this.fail(`nesting deeper than ${maxDepth} levels`, this.pos, 'too_deep');
      return c === Ch.OpenBrace ? this.object(depth + 1, maxDepth) : this.array(depth + 1, maxDepth);
    }
    if (c === Ch.Quote) return this.readString();
    if (c === Ch.Minus || isDigit(c)) {
      const n = this.scanNumber(scratchNumber());
      return new JsonNumber(decodeRun(this.bytes, n.start, n.end, true));
    }
    return this.readLiteral();
  }

  private object(depth: number, maxDepth: number): JsonObject {
    const out: JsonObject = new Map();
    if (!this.enter(Ch.OpenBrace, Ch.CloseBrace)) return out;
    do {
      this.skipWhitespace();
      if (this.peek() !== Ch.Quote) this.fail('expected a string key');
      const keyAt = this.pos;
      const key = this.readString();
      if (out.has(key)) this.fail(`duplicate key ${JSON.stringify(clip(key))}`, keyAt, 'duplicate_key');
      this.expect(Ch.Colon, "':'");
      out.set(key, this.value(depth, maxDepth));
    } while (this.nextElement(Ch.CloseBrace));
    return out;
  }

  private array(depth: number, maxDepth: number): JsonValue[] {
    const out: JsonValue[] = [];
    if (!this.enter(Ch.OpenBracket, Ch.CloseBracket)) return out;
    do out.push(this.value(depth, maxDepth));
    while (this.nextElement(Ch.CloseBracket));
    return out;
  }
}

const LITERALS = [
  ['true', true],
  ['false', false],
  ['null', null],
] as const;

export function scratchNumber(): ScannedNumber {
  return { start: 0, end: 0, negative: false, integerDigits: 0, hasFraction: false, hasExponent: false };
}

/**
 * Decodes bytes [start, end) of valid UTF-8. Short ASCII runs (most names and keys) are built
 * directly, which is several times faster than a TextDecoder call per string; strings of up
 * to 12 characters are flat in V8, so concatenation builds no rope.
 */
function decodeRun(b: Uint8Array, start: number, end: number, ascii: boolean): string {
  if (start === end) return '';
  if (ascii && end - start <= 12) {
    let s = '';
    for (let i = start; i < end; i++) s += String.fromCharCode(b[i]!);
    return s;
  }
  return UTF8.decode(b.subarray(start, end));
}

const ENCODER = new TextEncoder();
const LONE_SURROGATE = /\p{Surrogate}/u;

/** Parses one JSON value that must fill `text` (surrounding JSON whitespace allowed). */
export function parseStrictJson(text: string, maxDepth: number): JsonValue {
  // UTF-8 would silently turn a raw lone surrogate into U+FFFD; refuse it as the old reader did
  // for escaped ones.
  const lone = LONE_SURROGATE.exec(text);
  if (lone) throw new JsonParseError('syntax', `lone surrogate in the text at character ${lone.index}`, lone.index);
  const bytes = ENCODER.encode(text);
  const scanner = new JsonScanner(bytes);
  try {
    const value = scanner.value(0, maxDepth);
    scanner.skipWhitespace();
    if (!scanner.atEnd) scanner.fail('unexpected text after the JSON value', scanner.pos, 'trailing_text');
    return value;
  } catch (err) {
    if (!(err instanceof JsonParseError)) throw err;
    // Report positions in the caller's units: UTF-16 code units of `text`.
    const at = UTF8.decode(bytes.subarray(0, err.position)).length;
    throw new JsonParseError(err.problem, `${err.reason} at character ${at}`, at, err.reason);
  }
}

/** Keeps messages readable when a key is enormous. */
export function clip(s: string, max = 120): string {
  return s.length <= max ? s : `${s.slice(0, max)}…`;
}
