/**
 * The safetensors validator on bytes in memory: a malformed-file corpus (each case rejected with
 * the right rule, or accepted where the spec says valid), truncation at every offset, byte flips,
 * huge header lengths, and the writer's header layout against upstream's documented bytes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FormatError } from '../src/errors.js';
import {
  MAX_HEADER_LENGTH,
  SAFETENSORS_DTYPES,
  SAFETENSORS_DTYPE_BITS,
  SAFETENSORS_RULES,
  encodeSafetensorsHeader,
  parseSafetensorsHeader,
  sortForWriting,
} from '../src/formats/safetensors-header.js';

const enc = new TextEncoder();

interface FileParts {
  /** Header text, or raw header bytes. Padded with `pad` to a multiple of 8 unless pad is ''. */
  header: string | Uint8Array;
  /** Buffer bytes after the header (a length means that many zero bytes). */
  data?: number | Uint8Array;
  /** Overrides the length field. */
  length?: bigint;
  pad?: string;
}

function file({ header, data = 0, length, pad = ' ' }: FileParts): Uint8Array {
  let h = typeof header === 'string' ? enc.encode(header) : header;
  if (pad !== '' && h.byteLength % 8 !== 0) {
    const padded = new Uint8Array(Math.ceil(h.byteLength / 8) * 8).fill(pad.charCodeAt(0));
    padded.set(h);
    h = padded;
  }
  const body = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + h.byteLength + body.byteLength);
  new DataView(out.buffer).setBigUint64(0, length ?? BigInt(h.byteLength), true);
  out.set(h, 8);
  out.set(body, 8 + h.byteLength);
  return out;
}

const entry = (dtype: string, shape: number[], begin: number, end: number) =>
  `{"dtype":"${dtype}","shape":[${shape.join(',')}],"data_offsets":[${begin},${end}]}`;

function parse(bytes: Uint8Array) {
  return parseSafetensorsHeader(bytes, bytes.byteLength);
}

function rejects(bytes: Uint8Array, rule: string, detail?: Record<string, unknown>) {
  assert.throws(
    () => parse(bytes),
    (err: unknown) => {
      assert.ok(err instanceof FormatError, `expected FormatError, got ${String(err)}`);
      assert.equal(err.rule, rule, err.message);
      assert.equal(err.code, 'E_FORMAT');
      assert.match(err.message, new RegExp(`\\(${rule}\\)`));
      for (const [k, v] of Object.entries(detail ?? {})) assert.deepEqual(err.details[k], v);
      return true;
    },
  );
}

const f32x2 = `{"a":${entry('F32', [2], 0, 8)}}`;

// ---- the corpus ------------------------------------------------------------------------------

const INVALID: Array<[string, Uint8Array, string, Record<string, unknown>?]> = [
  ['empty file', new Uint8Array(0), 'file_too_small'],
  ['7-byte file', new Uint8Array(7), 'file_too_small'],
  ['header length 2^60', file({ header: '{}', length: 1n << 60n }), 'header_too_large'],
  ['header length 2^64 - 1', file({ header: '{}', length: (1n << 64n) - 1n }), 'header_too_large'],
  [
    'header length one over the limit',
    file({ header: '{}', length: BigInt(MAX_HEADER_LENGTH + 1) }),
    'header_too_large',
  ],
  ['header length past end of file', file({ header: '{}', length: 9n }), 'header_out_of_bounds'],
  [
    'header length just under the limit, tiny file',
    file({ header: '{}', length: BigInt(MAX_HEADER_LENGTH) }),
    'header_out_of_bounds',
  ],
  [
    'invalid UTF-8 byte',
    file({ header: Uint8Array.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]) }),
    'header_not_utf8',
  ],
  [
    'overlong UTF-8 encoding',
    file({ header: Uint8Array.from([0x7b, 0x22, 0xc0, 0xaf, 0x22, 0x3a, 0x31, 0x7d]) }),
    'header_not_utf8',
  ],
  [
    'UTF-8-encoded surrogate',
    file({ header: Uint8Array.from([0x7b, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x3a, 0x31, 0x7d]) }),
    'header_not_utf8',
  ],
  ['header is a JSON list', file({ header: '[]' }), 'header_not_object'],
  ['header is a JSON string', file({ header: '"{}"' }), 'header_not_object'],
  ['byte-order mark before {', file({ header: '\ufeff{}' }), 'header_not_object'],
  ['space before {', file({ header: ' {}' }), 'header_not_object'],
  ['header is all NUL bytes', file({ header: new Uint8Array(16) }), 'header_not_object'],
  ['JSON cut off', file({ header: '{"a":' }), 'header_not_json'],
  ['trailing comma', file({ header: `{"a":${entry('F32', [2], 0, 8)},}`, data: 8 }), 'header_not_json'],
  ['text after the object', file({ header: '{} x' }), 'header_not_json'],
  ['two objects', file({ header: '{}{}' }), 'header_not_json'],
  [
    'leading zero in a number',
    file({ header: `{"a":{"dtype":"F32","shape":[02],"data_offsets":[0,8]}}`, data: 8 }),
    'header_not_json',
  ],
  ['raw newline inside a string', file({ header: '{"a\nb":1}' }), 'header_not_json'],
  ['lone surrogate escape in a name', file({ header: `{"\\ud800":${entry('U8', [0], 0, 0)}}` }), 'header_not_json'],
  ['single-quoted key', file({ header: "{'a':1}" }), 'header_not_json'],
  ['NUL padding', file({ header: '{}', pad: '\0' }), 'nul_padding', { position: 2 }],
  ['NUL padding after spaces', file({ header: '{}   \0\0\0' }), 'nul_padding'],
  [
    'duplicate tensor name',
    file({ header: `{"a":${entry('U8', [1], 0, 1)},"a":${entry('U8', [1], 1, 2)}}`, data: 2 }),
    'duplicate_key',
  ],
  [
    'duplicate field in an entry',
    file({ header: `{"a":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}}`, data: 1 }),
    'duplicate_key',
  ],
  ['duplicate metadata key', file({ header: '{"__metadata__":{"k":"1","k":"2"}}' }), 'duplicate_key'],
  [
    'duplicate via escapes',
    file({ header: `{"a":${entry('U8', [0], 0, 0)},"\\u0061":${entry('U8', [0], 0, 0)}}` }),
    'duplicate_key',
  ],
  ['entry is a number', file({ header: '{"a":5}' }), 'header_invalid_entry'],
  ['entry is null', file({ header: '{"a":null}' }), 'header_invalid_entry'],
  ['missing data_offsets', file({ header: '{"a":{"dtype":"F32","shape":[2]}}', data: 8 }), 'header_invalid_entry'],
  ['missing dtype', file({ header: '{"a":{"shape":[2],"data_offsets":[0,8]}}', data: 8 }), 'header_invalid_entry'],
  [
    'three data_offsets',
    file({ header: '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}', data: 8 }),
    'header_invalid_entry',
  ],
  [
    'shape is a number',
    file({ header: '{"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}}', data: 8 }),
    'header_invalid_entry',
  ],
  [
    'negative dimension',
    file({ header: '{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', data: 8 }),
    'header_invalid_entry',
  ],
  [
    'fractional dimension',
    file({ header: '{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}', data: 8 }),
    'header_invalid_entry',
  ],
  [
    'exponent in an offset',
    file({ header: '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8e0]}}', data: 8 }),
    'header_invalid_entry',
  ],
  [
    'dimension as a string',
    file({ header: '{"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}}', data: 8 }),
    'header_invalid_entry',
  ],
  [
    'dtype is a number',
    file({ header: '{"a":{"dtype":32,"shape":[2],"data_offsets":[0,8]}}', data: 8 }),
    'header_invalid_entry',
  ],
  ['metadata is a list', file({ header: '{"__metadata__":["a"]}' }), 'header_invalid_entry'],
  ['nesting 10,000 deep', file({ header: `{"a":${'['.repeat(10_000)}${']'.repeat(10_000)}}` }), 'header_invalid_entry'],
  [
    'metadata value is a number',
    file({ header: '{"__metadata__":{"epoch":3}}' }),
    'metadata_not_string',
    { key: 'epoch' },
  ],
  ['metadata value is null', file({ header: '{"__metadata__":{"k":null}}' }), 'metadata_not_string'],
  ['metadata value is an object', file({ header: '{"__metadata__":{"k":{}}}' }), 'metadata_not_string'],
  [
    'unknown field in an entry',
    file({ header: '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"offset":0}}', data: 8 }),
    'unknown_field',
    { field: 'offset' },
  ],
  [
    'unknown dtype',
    file({ header: `{"a":${entry('F128', [1], 0, 16)}}`, data: 16 }),
    'unknown_dtype',
    { dtype: 'F128' },
  ],
  ['lower-case dtype', file({ header: `{"a":${entry('f32', [2], 0, 8)}}`, data: 8 }), 'unknown_dtype'],
  [
    'dimension 2^53',
    file({ header: `{"a":{"dtype":"U8","shape":[9007199254740992],"data_offsets":[0,1]}}`, data: 1 }),
    'integer_too_large',
  ],
  [
    'offset 2^64',
    file({ header: `{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,18446744073709551616]}}`, data: 1 }),
    'integer_too_large',
  ],
  [
    'offset 2^53 + 1 (would round)',
    file({ header: `{"a":{"dtype":"U8","shape":[0],"data_offsets":[9007199254740993,9007199254740993]}}` }),
    'integer_too_large',
  ],
  [
    'first tensor not at 0',
    file({ header: `{"a":${entry('U8', [4], 4, 8)}}`, data: 8 }),
    'offsets_misaligned',
    { problem: 'gap' },
  ],
  [
    'gap between tensors',
    file({ header: `{"a":${entry('U8', [4], 0, 4)},"b":${entry('U8', [4], 8, 12)}}`, data: 12 }),
    'offsets_misaligned',
    { problem: 'gap', tensor: 'b' },
  ],
  [
    'overlapping tensors',
    file({ header: `{"a":${entry('U8', [8], 0, 8)},"b":${entry('U8', [4], 4, 8)}}`, data: 8 }),
    'offsets_misaligned',
    { problem: 'overlap' },
  ],
  [
    'reversed offsets',
    file({ header: `{"a":${entry('U8', [8], 0, 8)},"b":${entry('U8', [4], 8, 4)}}`, data: 8 }),
    'offsets_misaligned',
    { problem: 'reversed' },
  ],
  [
    'shape overflows 64 bits',
    file({ header: `{"a":${entry('F32', [2 ** 40, 2 ** 40], 0, 8)}}`, data: 8 }),
    'shape_overflow',
  ],
  [
    'shape overflows before a zero',
    file({ header: `{"a":${entry('U8', [2 ** 50, 2 ** 50, 0], 0, 0)}}` }),
    'shape_overflow',
  ],
  [
    'shape x bits overflows 64 bits',
    file({ header: `{"a":${entry('F64', [2 ** 31, 2 ** 31], 0, 8)}}`, data: 8 }),
    'shape_overflow',
  ],
  ['F4 with an odd count', file({ header: `{"a":${entry('F4', [3], 0, 2)}}`, data: 2 }), 'subbyte_misaligned'],
  [
    'F6_E2M3 with two elements',
    file({ header: `{"a":${entry('F6_E2M3', [2], 0, 2)}}`, data: 2 }),
    'subbyte_misaligned',
  ],
  ['bytes do not match the shape', file({ header: `{"a":${entry('F32', [2], 0, 4)}}`, data: 4 }), 'size_mismatch'],
  [
    'huge shape, tiny range',
    file({ header: `{"a":${entry('F32', [2 ** 20, 2 ** 20], 0, 8)}}`, data: 8 }),
    'size_mismatch',
  ],
  ['buffer cut short', file({ header: f32x2, data: 7 }), 'truncated'],
  ['trailing bytes', file({ header: f32x2, data: 9 }), 'trailing_bytes'],
  ['no tensors, trailing bytes', file({ header: '{}', data: 1 }), 'trailing_bytes'],
];

describe('safetensors validator: malformed-file corpus', () => {
  it('has at least 25 invalid cases and covers every rule', () => {
    assert.ok(INVALID.length >= 25);
    const covered = new Set(INVALID.map(([, , rule]) => rule));
    for (const rule of SAFETENSORS_RULES) assert.ok(covered.has(rule), `no corpus case for ${rule}`);
  });
  for (const [name, bytes, rule, detail] of INVALID) {
    it(`${name} → ${rule}`, () => rejects(bytes, rule, detail));
  }
});

describe('safetensors validator: valid edge cases', () => {
  it('accepts an empty file-with-no-tensors ({} header)', () => {
    const h = parse(file({ header: '{}' }));
    assert.equal(h.entries.size, 0);
    assert.equal(h.metadata, null);
    assert.equal(h.headerLength, 8);
    assert.equal(h.dataStart, 16);
  });

  it('accepts empty tensors, several at the same offset, and scalars', () => {
    const h = parse(
      file({
        header: `{"e":${entry('F32', [0, 3], 0, 0)},"z":${entry('I64', [0], 0, 0)},"s":${entry('F32', [], 0, 4)}}`,
        data: 4,
      }),
    );
    assert.deepEqual([...h.entries.keys()], ['e', 'z', 's']);
    assert.deepEqual(h.entries.get('s'), {
      name: 's',
      dtype: 'F32',
      shape: [],
      dataOffsets: [0, 4],
      byteLength: 4,
      numel: 1,
    });
    assert.equal(h.entries.get('e')!.numel, 0);
  });

  it('accepts every upstream dtype and lists entries in file order', () => {
    let offset = 0;
    const parts: string[] = [];
    for (const d of [...SAFETENSORS_DTYPES].reverse()) {
      const n = 8; // 8 elements fill whole bytes for 4-, 6- and 8-bit dtypes alike
      const bytes = (n * SAFETENSORS_DTYPE_BITS[d]) / 8;
      parts.push(`"t_${d}":${entry(d, [2, 4], offset, offset + bytes)}`);
      offset += bytes;
    }
    const h = parse(file({ header: `{${parts.join(',')}}`, data: offset }));
    assert.equal(h.entries.size, SAFETENSORS_DTYPES.length);
    assert.deepEqual(
      [...h.entries.values()].map((e) => e.dtype),
      [...SAFETENSORS_DTYPES].reverse(),
    );
    assert.equal(h.entries.get('t_F4')!.byteLength, 4);
    assert.equal(h.entries.get('t_F6_E3M2')!.byteLength, 6);
    assert.equal(h.entries.get('t_C64')!.byteLength, 64);
  });

  it('sorts entries by offset whatever the header order', () => {
    const h = parse(file({ header: `{"b":${entry('U8', [2], 2, 4)},"a":${entry('U8', [2], 0, 2)}}`, data: 4 }));
    assert.deepEqual([...h.entries.keys()], ['a', 'b']);
  });

  it('keeps __proto__, constructor and prototype as plain names (no prototype pollution)', () => {
    const h = parse(
      file({
        header: `{"__metadata__":{"__proto__":"x","constructor":"y"},"__proto__":${entry('U8', [1], 0, 1)},"constructor":${entry('U8', [1], 1, 2)},"prototype":${entry('U8', [1], 2, 3)}}`,
        data: 3,
      }),
    );
    assert.deepEqual([...h.entries.keys()], ['__proto__', 'constructor', 'prototype']);
    assert.equal(h.entries.get('__proto__')!.dtype, 'U8');
    assert.equal(h.metadata!.get('__proto__'), 'x');
    assert.equal(({} as Record<string, unknown>)['dtype'], undefined);
    assert.equal(Object.getPrototypeOf({}), Object.prototype);
    assert.equal(typeof ({} as { constructor: unknown }).constructor, 'function');
  });

  it('reads metadata, and treats "__metadata__": null as none', () => {
    const h = parse(file({ header: '{"__metadata__":{"format":"pt","note":"é \\u00e9 \\n"}}' }));
    assert.deepEqual(
      [...h.metadata!],
      [
        ['format', 'pt'],
        ['note', 'é é \n'],
      ],
    );
    assert.equal(parse(file({ header: '{"__metadata__":null}' })).metadata, null);
    assert.equal(parse(file({ header: '{"__metadata__":{}}' })).metadata!.size, 0);
  });

  it('accepts JSON whitespace between tokens and as padding, and escaped names', () => {
    const h = parse(
      file({
        header: `{ "a\\u00e9\\ud83d\\ude00" : {"dtype" : "U8", "shape": [ 1 ], "data_offsets": [0, 1]} }\n\t`,
        data: 1,
      }),
    );
    assert.deepEqual([...h.entries.keys()], ['aé😀']);
  });

  it('accepts sub-byte tensors that fill whole bytes', () => {
    assert.equal(parse(file({ header: `{"a":${entry('F4', [2], 0, 1)}}`, data: 1 })).entries.get('a')!.numel, 2);
    assert.equal(parse(file({ header: `{"a":${entry('F6_E2M3', [4], 0, 3)}}`, data: 3 })).entries.get('a')!.numel, 4);
  });
});

// ---- properties ------------------------------------------------------------------------------

function validFile(): Uint8Array {
  const header = `{"__metadata__":{"format":"pt"},"w":${entry('F32', [2, 2], 0, 16)},"b":${entry('BF16', [3], 16, 22)},"n":${entry('F4', [4], 22, 24)}}`;
  return file({ header, data: Uint8Array.from({ length: 24 }, (_, i) => i * 7) });
}

describe('safetensors validator: properties', () => {
  it('truncating a valid file at every offset is a FormatError with the expected rule', () => {
    const whole = validFile();
    const dataStart = parse(whole).dataStart;
    for (let k = 0; k < whole.byteLength; k++) {
      const expected = k < 8 ? 'file_too_small' : k < dataStart ? 'header_out_of_bounds' : 'truncated';
      rejects(whole.subarray(0, k), expected);
    }
  });

  it('flipping any header byte yields a valid header or a FormatError, never another error', () => {
    const whole = validFile();
    const dataStart = parse(whole).dataStart;
    for (let i = 0; i < dataStart; i++) {
      for (const mask of [0x01, 0x20, 0x80, 0xff]) {
        const bytes = whole.slice();
        bytes[i]! ^= mask;
        try {
          parse(bytes);
        } catch (err) {
          assert.ok(err instanceof FormatError, `byte ${i} ^ ${mask}: ${String(err)}`);
          assert.ok((SAFETENSORS_RULES as readonly string[]).includes(err.rule));
        }
      }
    }
  });

  it('rejects header length 2^60 without allocating for it', () => {
    const bytes = file({ header: '{}', length: 1n << 60n });
    const before = process.memoryUsage().arrayBuffers;
    rejects(bytes, 'header_too_large');
    // The length prefix is judged before any buffer is sized from it.
    assert.ok(process.memoryUsage().arrayBuffers - before < 1 << 20);
  });

  it('rejects a header length that fits the limit but not the file, before allocating', () => {
    const bytes = file({ header: '{}', length: BigInt(MAX_HEADER_LENGTH) });
    const before = process.memoryUsage().arrayBuffers;
    rejects(bytes, 'header_out_of_bounds');
    assert.ok(process.memoryUsage().arrayBuffers - before < 1 << 20);
  });
});

// ---- writer layout ---------------------------------------------------------------------------

describe('safetensors header encoding', () => {
  // Byte layouts from the reference implementation's own serialization tests.
  it('matches upstream bytes for one F32 tensor', () => {
    const out = encodeSafetensorsHeader([{ name: 'attn.0', dtype: 'F32', shape: [1, 2, 3], byteLength: 24 }], null);
    assert.equal(new DataView(out.buffer).getBigUint64(0, true), 64n);
    assert.equal(
      new TextDecoder().decode(out.subarray(8)),
      '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}',
    );
  });

  it('pads with spaces to a multiple of 8', () => {
    const out = encodeSafetensorsHeader([{ name: 'attn0', dtype: 'F32', shape: [1, 1, 2, 3], byteLength: 24 }], null);
    assert.equal(out.byteLength, 8 + 72);
    assert.match(new TextDecoder().decode(out.subarray(8)), /\}\} {7}$/);
  });

  it('matches upstream bytes for no tensors, with and without metadata', () => {
    assert.deepEqual(
      [...encodeSafetensorsHeader([], null)],
      [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32],
    );
    const withMeta = encodeSafetensorsHeader([], new Map([['framework', 'pt']]));
    assert.equal(withMeta[0], 40);
    assert.equal(new TextDecoder().decode(withMeta.subarray(8)), '{"__metadata__":{"framework":"pt"}}     ');
  });

  it('orders by dtype (largest alignment first), then by UTF-8 bytes of the name', () => {
    const e = (name: string, dtype: (typeof SAFETENSORS_DTYPES)[number]) => ({
      name,
      dtype,
      shape: [0],
      byteLength: 0,
    });
    const order = sortForWriting([
      e('b', 'U8'),
      e('a', 'F16'),
      e('\uffff', 'F32'),
      e('😀', 'F32'),
      e('z', 'U64'),
      e('a', 'U8'),
      e('c', 'F4'),
    ]);
    // U+1F600 sorts after U+FFFF in UTF-8, though its UTF-16 surrogates sort before it.
    assert.deepEqual(
      order.map((x) => `${x.dtype}:${x.name}`),
      ['U64:z', 'F32:\uffff', 'F32:😀', 'F16:a', 'U8:a', 'U8:b', 'F4:c'],
    );
  });

  it('round-trips through the validator', () => {
    const entries = [
      { name: '__proto__', dtype: 'F32' as const, shape: [2], byteLength: 8 },
      { name: 'q"\\\n', dtype: 'U8' as const, shape: [], byteLength: 1 },
    ];
    const head = encodeSafetensorsHeader(entries, new Map([['k', 'v\u0000']]));
    const whole = new Uint8Array(head.byteLength + 9);
    whole.set(head);
    const h = parse(whole);
    assert.deepEqual([...h.entries.keys()], ['__proto__', 'q"\\\n']);
    assert.equal(h.metadata!.get('k'), 'v\u0000');
  });
});
