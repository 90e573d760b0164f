/**
 * Normalizers: string → string before pre-tokenization (Hugging Face's `normalizer` field).
 * Supported: Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip.
 */
import { JsonReader, unsupportedComponent } from './errors.js';
import { literalRegExp, onigToRegExp } from './regex.js';

export type Normalizer = (text: string) => string;

export function parseNormalizer(json: unknown, r: JsonReader, at = 'normalizer'): Normalizer {
  const o = r.object(json, at);
  const type = r.string(o.type, `${at}.type`);
  switch (type) {
    case 'Sequence': {
      const steps = r
        .array(o.normalizers, `${at}.normalizers`)
        .map((n, i) => parseNormalizer(n, r, `${at}.normalizers[${i}]`));
      return (text) => steps.reduce((t, step) => step(t), text);
    }
    case 'NFC':
    case 'NFD':
    case 'NFKC':
    case 'NFKD':
      return (text) => text.normalize(type);
    case 'Lowercase':
      return (text) => text.toLowerCase();
    case 'Prepend': {
      const prefix = r.string(o.prepend, `${at}.prepend`);
      return (text) => (text.length === 0 ? text : prefix + text);
    }
    case 'Replace': {
      const re = patternRegExp(o.pattern, r, `${at}.pattern`);
      const content = r.string(o.content, `${at}.content`);
      return (text) => text.replace(re, () => content);
    }
    case 'Strip': {
      const left = r.bool(o.strip_left, `${at}.strip_left`, true);
      const right = r.bool(o.strip_right, `${at}.strip_right`, true);
      return (text) => {
        let t = left ? text.replace(/^\p{White_Space}+/u, '') : text;
        if (right) t = t.replace(/\p{White_Space}+$/u, '');
        return t;
      };
    }
    default:
      throw unsupportedComponent(r.source, `${at} ${type}`, 'is not supported');
  }
}

/** A `{"String": s}` or `{"Regex": r}` pattern (Replace, Split) as a global RegExp. */
export function patternRegExp(json: unknown, r: JsonReader, at: string): RegExp {
  const o = r.object(json, at);
  if (typeof o.String === 'string') return literalRegExp(o.String);
  if (typeof o.Regex === 'string') return onigToRegExp(o.Regex, r.source, at);
  throw unsupportedComponent(r.source, at, 'must be {"String": …} or {"Regex": …}');
}
