/**
 * The tokenizer's typed errors. All are FormatErrors (code E_FORMAT) whose `rule` says which kind:
 *   tokenizer_invalid      a field with the wrong type or a missing required field (`details.field`)
 *   tokenizer_unsupported  a component or option knobs does not implement (`details.component`)
 *   tokenizer_vocab_mismatch  a tokenizer whose ids do not fit a model's vocabulary
 */
import { FormatError } from '../errors.js';

export function invalidTokenizer(source: string, field: string, what: string): FormatError {
  return new FormatError('tokenizer_invalid', `${source}: ${field} ${what}`, { file: source, field });
}

export function unsupportedComponent(source: string, component: string, what: string): FormatError {
  return new FormatError(
    'tokenizer_unsupported',
    `${source}: ${component} ${what}; knobs reads the components listed in docs/tokenizers.md`,
    {
      file: source,
      component,
    },
  );
}

/** Field readers for the JSON objects of tokenizer.json; `at` is the field path for messages. */
export class JsonReader {
  constructor(readonly source: string) {}

  object(value: unknown, at: string): Record<string, unknown> {
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      throw invalidTokenizer(this.source, at, `must be an object, got ${describe(value)}`);
    return value as Record<string, unknown>;
  }

  array(value: unknown, at: string): unknown[] {
    if (!Array.isArray(value)) throw invalidTokenizer(this.source, at, `must be an array, got ${describe(value)}`);
    return value;
  }

  string(value: unknown, at: string): string {
    if (typeof value !== 'string') throw invalidTokenizer(this.source, at, `must be a string, got ${describe(value)}`);
    return value;
  }

  bool(value: unknown, at: string, fallback?: boolean): boolean {
    if (value === undefined && fallback !== undefined) return fallback;
    if (typeof value !== 'boolean')
      throw invalidTokenizer(this.source, at, `must be true or false, got ${describe(value)}`);
    return value;
  }

  /** A non-negative integer (token ids, counts). */
  uint(value: unknown, at: string): number {
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0)
      throw invalidTokenizer(this.source, at, `must be a non-negative integer, got ${describe(value)}`);
    return value;
  }

  optionalString(value: unknown, at: string): string | null {
    return value === undefined || value === null ? null : this.string(value, at);
  }
}

function describe(value: unknown): string {
  const text = JSON.stringify(value);
  return text === undefined ? String(value) : text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
