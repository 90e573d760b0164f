/**
 * Decoders (tokenizer.json's `decoder`): token strings → text. Each step maps the list of tokens
 * to a new list, and the result is joined — Hugging Face's decode_chain. Supported: ByteLevel,
 * Metaspace, ByteFallback, Fuse, Strip, Replace, Sequence.
 */
import { charsToBytes } from './byte-level.js';
import { JsonReader, unsupportedComponent } from './errors.js';
import { patternRegExp } from './normalizers.js';
import { metaspaceScheme } from './pre-tokenizers.js';
import { findMatches } from './regex.js';

export type Decoder = (tokens: string[]) => string[];

const utf8 = new TextDecoder('utf-8', { ignoreBOM: true }); // keep a leading U+FEFF: it is text here
const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;

export function parseDecoder(json: unknown, r: JsonReader, at = 'decoder'): Decoder {
  const o = r.object(json, at);
  const type = r.string(o.type, `${at}.type`);
  switch (type) {
    case 'Sequence': {
      const steps = r.array(o.decoders, `${at}.decoders`).map((d, i) => parseDecoder(d, r, `${at}.decoders[${i}]`));
      return (tokens) => steps.reduce((acc, step) => step(acc), tokens);
    }
    case 'ByteLevel':
      return (tokens) => {
        const bytes: number[] = [];
        for (const t of tokens) {
          const b = charsToBytes(t);
          for (const byte of b ?? new TextEncoder().encode(t)) bytes.push(byte);
        }
        return [utf8.decode(new Uint8Array(bytes))];
      };
    case 'Metaspace': {
      const replacement = r.string(o.replacement, `${at}.replacement`);
      const scheme = metaspaceScheme(o, r, at);
      return (tokens) =>
        tokens.map((t, i) => {
          // Every replacement character of the first token goes when a prefix may have been added.
          const swap = i === 0 && scheme !== 'never' ? '' : ' ';
          return t.split(replacement).join(swap);
        });
    }
    case 'ByteFallback':
      return byteFallback;
    case 'Fuse':
      return (tokens) => [tokens.join('')];
    case 'Strip': {
      const content = r.string(o.content, `${at}.content`);
      const start = r.uint(o.start, `${at}.start`);
      const stop = r.uint(o.stop, `${at}.stop`);
      return (tokens) =>
        tokens.map((t) => {
          const chars = Array.from(t);
          let from = 0;
          while (from < Math.min(start, chars.length) && chars[from] === content) from++;
          let to = chars.length;
          for (let i = 0; i < stop && to > from && chars[to - 1] === content; i++) to--;
          return chars.slice(from, to).join('');
        });
    }
    case 'Replace': {
      const re = patternRegExp(o.pattern, r, `${at}.pattern`);
      const content = r.string(o.content, `${at}.content`);
      return (tokens) =>
        tokens.map((t) =>
          findMatches(re, t)
            .map((m) => (m.isMatch ? content : t.slice(m.start, m.end)))
            .join(''),
        );
    }
    default:
      throw unsupportedComponent(r.source, `${at} ${type}`, 'is not supported');
  }
}

/** Runs of <0xNN> tokens become the string their bytes spell, or one U+FFFD per byte when not valid UTF-8. */
function byteFallback(tokens: string[]): string[] {
  const out: string[] = [];
  let pending: number[] = [];
  const flush = () => {
    if (pending.length === 0) return;
    try {
      out.push(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(new Uint8Array(pending)));
    } catch {
      for (let i = 0; i < pending.length; i++) out.push('\ufffd');
    }
    pending = [];
  };
  for (const t of tokens) {
    const m = BYTE_TOKEN.exec(t);
    if (m && t.length === 6) pending.push(parseInt(m[1]!, 16));
    else {
      flush();
      out.push(t);
    }
  }
  flush();
  return out;
}
