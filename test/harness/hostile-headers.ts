/**
 * Generators for the safetensors headers that used to exhaust memory or time (issues 16 and 8):
 * each writes a whole file (length prefix, header, byte buffer) up to the 100 MB header limit.
 * Used by the reproducer script, the bounded-memory tests and the slow property test.
 */
import { writeFile } from 'node:fs/promises';

export type HostileKind = 'zero_dims' | 'long_number' | 'empty_tensors' | 'metadata_keys' | 'unit_dims';

export interface HostileCase {
  readonly kind: HostileKind;
  /** Dimensions, digits, tensors or keys, depending on the kind. */
  readonly count: number;
}

/** The rule knobs must report for the case, or 'ok' for a valid file. */
export function expectedOutcome(kind: HostileKind): string {
  switch (kind) {
    case 'zero_dims':
      return 'size_mismatch';
    case 'long_number':
      return 'integer_too_large';
    default:
      return 'ok';
  }
}

/** Repeats `unit` n times, joined by `sep`, without building an n-element array of strings. */
function repeatJoined(unit: string, sep: string, n: number): string {
  return n === 0 ? '' : `${`${unit}${sep}`.repeat(n - 1)}${unit}`;
}

/** The JSON text of the header and the buffer length the file needs. */
function headerText({ kind, count }: HostileCase): { json: string; data: number } {
  switch (kind) {
    // One shape of `count` zeros, but a 1-byte range: invalid (size_mismatch) after the whole scan.
    case 'zero_dims':
      return { json: `{"a":{"dtype":"U8","shape":[${repeatJoined('0', ',', count)}],"data_offsets":[0,1]}}`, data: 1 };
    // One dimension written with `count` digits: invalid (integer_too_large).
    case 'long_number':
      return { json: `{"a":{"dtype":"U8","shape":[1${'0'.repeat(count - 1)}],"data_offsets":[0,1]}}`, data: 1 };
    // `count` dimensions of 1: a valid scalar-sized tensor with a huge rank.
    case 'unit_dims':
      return { json: `{"a":{"dtype":"U8","shape":[${repeatJoined('1', ',', count)}],"data_offsets":[0,1]}}`, data: 1 };
    // `count` empty tensors, all at offset 0: valid.
    case 'empty_tensors': {
      const parts: string[] = [];
      for (let i = 0; i < count; i++)
        parts.push(`"t${i.toString(36)}":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}`);
      return { json: `{${parts.join(',')}}`, data: 0 };
    }
    // `count` metadata keys with empty values: valid.
    case 'metadata_keys': {
      const parts: string[] = [];
      for (let i = 0; i < count; i++) parts.push(`"${i.toString(36)}":""`);
      return { json: `{"__metadata__":{${parts.join(',')}}}`, data: 0 };
    }
  }
}

/** The whole file: u64 length, header padded with spaces to a multiple of 8, zero data bytes. */
export function hostileFile(c: HostileCase): Uint8Array {
  const { json, data } = headerText(c);
  const length = Math.ceil(Buffer.byteLength(json) / 8) * 8;
  const out = new Uint8Array(8 + length + data);
  new DataView(out.buffer).setBigUint64(0, BigInt(length), true);
  out.fill(0x20, 8, 8 + length);
  Buffer.from(out.buffer, out.byteOffset + 8, length).write(json, 'latin1');
  return out;
}

export async function writeHostileFile(path: string, c: HostileCase): Promise<number> {
  const bytes = hostileFile(c);
  await writeFile(path, bytes);
  return bytes.byteLength;
}
