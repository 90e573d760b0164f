/**
 * Typed access to GGUF metadata values, with errors that name the file and the key.
 */
import { FormatError } from '../../errors.js';
import type { GgufValue } from '../../formats/gguf.js';

export type GgufMetadata = ReadonlyMap<string, GgufValue>;

export class MetadataReader {
  constructor(
    readonly metadata: GgufMetadata,
    /** The file, for messages. */
    readonly path: string,
  ) {}

  has(key: string): boolean {
    return this.metadata.has(key);
  }

  private bad(key: string, expected: string): never {
    const v = this.metadata.get(key);
    const shown =
      v === undefined ? 'missing' : v.type === 'array' ? `an array of ${v.itemType}` : `${v.type} ${String(v.value)}`;
    throw new FormatError(
      'gguf_model_bad_metadata',
      `${this.path}: metadata key '${key}' is ${shown}; expected ${expected}`,
      {
        path: this.path,
        key,
        expected,
      },
    );
  }

  /** A non-negative integer of any integer type; `fallback` when absent (undefined: required). */
  int(key: string, fallback?: number): number {
    const v = this.metadata.get(key);
    if (v === undefined) {
      if (fallback !== undefined) return fallback;
      return this.bad(key, 'an integer');
    }
    const n = v.type === 'u64' || v.type === 'i64' ? Number(v.value) : v.type === 'array' ? NaN : v.value;
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0 || v.type === 'f32' || v.type === 'f64')
      return this.bad(key, 'a non-negative integer');
    return n;
  }

  intOrNull(key: string): number | null {
    return this.metadata.has(key) ? this.int(key) : null;
  }

  number(key: string, fallback?: number): number {
    const v = this.metadata.get(key);
    if (v === undefined) {
      if (fallback !== undefined) return fallback;
      return this.bad(key, 'a number');
    }
    if (v.type !== 'f32' && v.type !== 'f64') return this.bad(key, 'an f32');
    return v.value;
  }

  string(key: string): string | null {
    const v = this.metadata.get(key);
    if (v === undefined) return null;
    if (v.type !== 'string') return this.bad(key, 'a string');
    return v.value;
  }

  bool(key: string): boolean | null {
    const v = this.metadata.get(key);
    if (v === undefined) return null;
    if (v.type !== 'bool') return this.bad(key, 'a bool');
    return v.value;
  }

  strings(key: string): readonly string[] | null {
    const v = this.metadata.get(key);
    if (v === undefined) return null;
    if (v.type !== 'array' || v.itemType !== 'string') return this.bad(key, 'an array of strings');
    return v.value as readonly string[];
  }

  /** An array of numbers (f32 or any integer type up to 32 bits). */
  numbers(key: string): ArrayLike<number> | null {
    const v = this.metadata.get(key);
    if (v === undefined) return null;
    if (v.type !== 'array' || ['string', 'bool', 'u64', 'i64'].includes(v.itemType))
      return this.bad(key, 'an array of numbers');
    return v.value as ArrayLike<number>;
  }
}

/** Builders for metadata values, in the types llama.cpp's gguf-py writes. */
export const gv = {
  u32: (value: number): GgufValue => ({ type: 'u32', value }),
  i32: (value: number): GgufValue => ({ type: 'i32', value }),
  f32: (value: number): GgufValue => ({ type: 'f32', value }),
  bool: (value: boolean): GgufValue => ({ type: 'bool', value }),
  string: (value: string): GgufValue => ({ type: 'string', value }),
  strings: (value: readonly string[]): GgufValue => ({ type: 'array', itemType: 'string', value }),
  f32s: (value: ArrayLike<number>): GgufValue => ({ type: 'array', itemType: 'f32', value: Float32Array.from(value) }),
  i32s: (value: ArrayLike<number>): GgufValue => ({ type: 'array', itemType: 'i32', value: Int32Array.from(value) }),
};
