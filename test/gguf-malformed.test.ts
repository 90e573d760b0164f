/**
 * A malformed GGUF corpus, generated here: each file is refused with a FormatError of the expected
 * rule, before anything is allocated for the sizes it claims (a claimed 2^64-byte string or array in
 * a file of a few hundred bytes), and a valid file cut at every section boundary is refused too.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FormatError } from '../src/errors.js';
import { type ByteSource, memorySource } from '../src/io/byte-source.js';
import { GGUF_RULES, type GgufRule, readGguf } from '../src/formats/gguf.js';
import { GgufBytes } from './harness/gguf-bytes.js';

const U64_MAX = 2n ** 64n - 1n;
const F32 = 0;
const Q8_0 = 8;
const Q4_K = 12;
const Q5_K = 13;
const Q6_K = 14;

/** A header with one key/value before the given tensor infos. */
const withKv = (nTensors: number, kv: (g: GgufBytes) => GgufBytes): GgufBytes =>
  kv(new GgufBytes().header(nTensors, 1));

/** One tensor info then aligned data of `dataBytes` zeros. */
function oneTensor(dims: (number | bigint)[], type: number, offset: number | bigint, dataBytes = 128): Uint8Array {
  return new GgufBytes().header(1, 0).tensorInfo('t', dims, type, offset).pad().raw(new Uint8Array(dataBytes)).bytes();
}

/** Two F32 tensors of 8 elements (32 bytes each) at the given offsets. */
function twoTensors(names: [string, string], offsets: [number, number]): Uint8Array {
  return new GgufBytes()
    .header(2, 0)
    .tensorInfo(names[0], [8], F32, offsets[0])
    .tensorInfo(names[1], [8], F32, offsets[1])
    .pad()
    .raw(new Uint8Array(128))
    .bytes();
}

const CORPUS: [string, Uint8Array, GgufRule][] = [
  ['empty file', new Uint8Array(0), 'gguf_truncated'],
  ['wrong magic', Uint8Array.from([0x47, 0x47, 0x55, 0x58, 3, 0, 0, 0]), 'gguf_bad_magic'],
  ['a safetensors header', new GgufBytes().u64(2).raw([0x7b, 0x7d]).bytes(), 'gguf_bad_magic'],
  ['version 1', new GgufBytes().header(0, 0, 1).bytes(), 'gguf_unsupported_version'],
  ['version 4', new GgufBytes().header(0, 0, 4).bytes(), 'gguf_unsupported_version'],
  ['tensor count 2^64 − 1', new GgufBytes().header(U64_MAX, 0).bytes(), 'gguf_count_too_large'],
  ['key/value count 2^63', new GgufBytes().header(0, 2n ** 63n).bytes(), 'gguf_count_too_large'],
  [
    'key/value count one more than the file holds',
    new GgufBytes().header(0, 2).kvU32('a', 1).bytes(),
    'gguf_count_too_large',
  ],
  [
    'key length 2^64 − 1',
    new GgufBytes().header(0, 1).u64(U64_MAX).raw(new Uint8Array(16)).bytes(),
    'gguf_string_too_long',
  ],
  [
    'string value longer than the file',
    withKv(0, (g) =>
      g
        .str('k')
        .u32(8)
        .u64(1n << 40n)
        .raw(new Uint8Array(32)),
    ).bytes(),
    'gguf_string_too_long',
  ],
  [
    'u32 array of 2^62 items',
    withKv(0, (g) =>
      g
        .str('k')
        .u32(9)
        .u32(4)
        .u64(1n << 62n)
        .raw(new Uint8Array(64)),
    ).bytes(),
    'gguf_count_too_large',
  ],
  [
    'string array of 2^40 items',
    withKv(0, (g) =>
      g
        .str('k')
        .u32(9)
        .u32(8)
        .u64(1n << 40n)
        .raw(new Uint8Array(64)),
    ).bytes(),
    'gguf_count_too_large',
  ],
  [
    'string array item longer than the file',
    withKv(0, (g) => g.str('k').u32(9).u32(8).u64(2).str('a').u64(U64_MAX)).bytes(),
    'gguf_string_too_long',
  ],
  ['value type 13', withKv(0, (g) => g.str('k').u32(13).u32(0)).bytes(), 'gguf_unknown_value_type'],
  ['array item type 99', withKv(0, (g) => g.str('k').u32(9).u32(99).u64(0)).bytes(), 'gguf_unknown_value_type'],
  ['array of arrays', withKv(0, (g) => g.str('k').u32(9).u32(9).u64(1).u32(4).u64(0)).bytes(), 'gguf_nested_array'],
  ['bool of value 2', withKv(0, (g) => g.str('k').u32(7).u8(2)).bytes(), 'gguf_bad_bool'],
  ['bool array with a 7', withKv(0, (g) => g.str('k').u32(9).u32(7).u64(3).raw([1, 0, 7])).bytes(), 'gguf_bad_bool'],
  [
    'key of invalid UTF-8',
    withKv(0, (g) =>
      g
        .str(Uint8Array.from([0x61, 0xff, 0xfe]))
        .u32(4)
        .u32(0),
    ).bytes(),
    'gguf_bad_utf8',
  ],
  [
    'duplicate key',
    new GgufBytes().header(0, 2).kvU32('general.alignment', 32).kvU32('general.alignment', 32).bytes(),
    'gguf_duplicate_key',
  ],
  ['alignment 0', withKv(0, (g) => g.kvU32('general.alignment', 0)).bytes(), 'gguf_bad_alignment'],
  [
    'alignment 24 (not a power of two)',
    withKv(0, (g) => g.kvU32('general.alignment', 24)).bytes(),
    'gguf_bad_alignment',
  ],
  ['alignment as a string', withKv(0, (g) => g.kvString('general.alignment', '32')).bytes(), 'gguf_bad_alignment'],
  [
    'tensor name of 64 bytes',
    new GgufBytes().header(1, 0).tensorInfo('n'.repeat(64), [8], F32, 0).pad().raw(new Uint8Array(32)).bytes(),
    'gguf_name_too_long',
  ],
  ['5 dimensions', oneTensor([1, 1, 1, 1, 1], F32, 0), 'gguf_bad_rank'],
  [
    'n_dims 2^32 − 1',
    new GgufBytes().header(1, 0).str('t').u32(0xffffffff).raw(new Uint8Array(64)).bytes(),
    'gguf_bad_rank',
  ],
  ['dims whose product overflows', oneTensor([2n ** 32n, 2n ** 32n], F32, 0), 'gguf_dims_overflow'],
  ['dim 2^64 − 1 (−1 as int64)', oneTensor([U64_MAX], F32, 0), 'gguf_dims_overflow'],
  ['dim 2^64 − 1 times 0', oneTensor([U64_MAX, 0], F32, 0), 'gguf_dims_overflow'],
  ['unknown type 99', oneTensor([8], 99, 0), 'gguf_unknown_type'],
  ['removed type 4 (Q4_2)', oneTensor([32], 4, 0), 'gguf_unknown_type'],
  ['type 2^32 − 1', oneTensor([32], 0xffffffff, 0), 'gguf_unknown_type'],
  ['Q8_0 row of 31', oneTensor([31, 2], Q8_0, 0), 'gguf_block_mismatch'],
  ['offset 16 with alignment 32', oneTensor([8], F32, 16), 'gguf_offset_misaligned'],
  ['offset 2^64 − 32', oneTensor([8], F32, U64_MAX - 31n), 'gguf_offset_mismatch'],
  ['second tensor over the first', twoTensors(['a', 'b'], [0, 0]), 'gguf_tensors_overlap'],
  ['a gap between tensors', twoTensors(['a', 'b'], [0, 64]), 'gguf_offset_mismatch'],
  ['first tensor not at 0', oneTensor([8], F32, 32), 'gguf_offset_mismatch'],
  ['duplicate tensor name', twoTensors(['a', 'a'], [0, 32]), 'gguf_duplicate_tensor'],
  ['data past the end', oneTensor([64], F32, 0, 100), 'gguf_data_past_end'],
  ['a huge tensor in a small file', oneTensor([2n ** 20n, 2n ** 20n], F32, 0), 'gguf_data_past_end'],
  ['2^52 F32 elements: 2^54 bytes', oneTensor([2n ** 26n, 2n ** 26n], F32, 0), 'gguf_dims_overflow'],
  // K-quants: super-blocks of 256 values (Q4_K 144 bytes, Q5_K 176, Q6_K 210).
  ['Q4_K block cut short by one byte', oneTensor([256], Q4_K, 0, 143), 'gguf_data_past_end'],
  ['Q6_K second row cut short', oneTensor([256, 2], Q6_K, 0, 419), 'gguf_data_past_end'],
  ['Q5_K row of 255', oneTensor([255, 4], Q5_K, 0), 'gguf_block_mismatch'],
  ['Q4_K row of 32 (a Q4_0 block, not a super-block)', oneTensor([32], Q4_K, 0), 'gguf_block_mismatch'],
  ['Q6_K of 2^40 rows in a small file', oneTensor([256, 2n ** 40n], Q6_K, 0), 'gguf_data_past_end'],
  ['Q5_K of 2^53 elements', oneTensor([256, 2n ** 45n], Q5_K, 0), 'gguf_dims_overflow'],
];

/** A ByteSource that records the largest single read, to show that claimed sizes are never requested. */
function recording(bytes: Uint8Array): { source: ByteSource; largest: () => number } {
  const inner = memorySource(bytes, 'corpus.gguf');
  let largest = 0;
  const source: ByteSource = {
    name: inner.name,
    size: inner.size,
    read: (offset, length) => {
      largest = Math.max(largest, length);
      return inner.read(offset, length);
    },
    readInto: (target, offset) => inner.readInto(target, offset),
    close: () => inner.close(),
  };
  return { source, largest: () => largest };
}

async function rejection(bytes: Uint8Array): Promise<{ error: FormatError; largestRead: number }> {
  const { source, largest } = recording(bytes);
  try {
    await readGguf(source);
  } catch (err) {
    assert.ok(err instanceof FormatError, `not a FormatError: ${String(err)}`);
    assert.ok((GGUF_RULES as readonly string[]).includes(err.rule), err.rule);
    assert.equal(err.details.path, 'corpus.gguf');
    assert.ok(err.message.startsWith('corpus.gguf: '), err.message);
    return { error: err, largestRead: largest() };
  }
  return assert.fail('expected a FormatError');
}

describe('malformed GGUF corpus', () => {
  it('has at least 20 files reaching most rules', () => {
    assert.ok(CORPUS.length >= 20);
    const reached = new Set(CORPUS.map(([, , rule]) => rule));
    const unreached = GGUF_RULES.filter((r) => !reached.has(r));
    // The read-time rules (a type not decoded, a tensor too large to decode) are tested in gguf.test.ts.
    assert.deepEqual(unreached, ['gguf_unsupported_type', 'gguf_tensor_too_large']);
  });
  for (const [label, bytes, rule] of CORPUS) {
    it(`${label} → ${rule}`, async () => {
      const { error, largestRead } = await rejection(bytes);
      assert.equal(error.rule, rule, error.message);
      assert.ok(largestRead <= bytes.length, `read ${largestRead} bytes of a ${bytes.length}-byte file`);
    });
  }
});

describe('truncated GGUF', () => {
  // key/value, array, tensor infos, padding and data: a cut anywhere must be refused.
  const whole = new GgufBytes()
    .header(3, 2)
    .kvString('general.architecture', 'llama')
    .str('tokenizer.ggml.tokens')
    .u32(9)
    .u32(8)
    .u64(2)
    .str('a')
    .str('bc')
    .tensorInfo('a', [8], F32, 0)
    .tensorInfo('b', [32, 2], Q8_0, 32)
    .tensorInfo('c', [256], Q4_K, 128)
    .pad()
    .raw(new Uint8Array(32 + 96 + 144))
    .bytes();
  /** The rules a cut-short file may meet: each one's message says the file may be truncated. */
  const ENDS_EARLY = new Set(['gguf_truncated', 'gguf_count_too_large', 'gguf_string_too_long', 'gguf_data_past_end']);

  it('the whole file reads', async () => {
    const file = await readGguf(memorySource(whole));
    assert.deepEqual(
      file.tensors.map((t) => t.name),
      ['a', 'b', 'c'],
    );
  });
  it('is refused when cut at any byte, with a rule that says it ended early', async () => {
    const seen = new Set<string>();
    for (let cut = 0; cut < whole.length; cut++) {
      const { error } = await rejection(whole.subarray(0, cut));
      assert.ok(ENDS_EARLY.has(error.rule), `cut at ${cut}: ${error.rule}: ${error.message}`);
      seen.add(error.rule);
    }
    assert.deepEqual([...seen].sort(), [...ENDS_EARLY].sort());
  });
});
