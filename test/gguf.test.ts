/**
 * GGUF: write → read round trips (metadata of all 13 value types, F32/F16/Q8_0/Q4_0 tensors), a BF16
 * tensor built by hand, and Q8_0/Q4_0 blocks against examples computed by hand from ggml's
 * reference quantizers (quantize_row_q8_0_ref / quantize_row_q4_0_ref) and block layouts.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { f16BitsToF32, f32ToBF16Bits, f32ToF16Bits } from '../src/dtype.js';
import { ArgumentError, FormatError, IOError } from '../src/errors.js';
import { nodeWriteFs } from '../src/io/atomic.js';
import { type ByteSource, memorySource, openFileSource } from '../src/io/byte-source.js';
import { GGML_TYPES, type GgufValue, dequantizeGguf, readGguf, readGgufTensor } from '../src/formats/gguf.js';
import { encodeGguf, quantizeQ4_0, quantizeQ8_0, writeGguf } from '../src/formats/gguf-write.js';
import { GgufBytes } from './harness/gguf-bytes.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-gguf-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const Q8_0 = GGML_TYPES.get(8)!;
const Q4_0 = GGML_TYPES.get(2)!;

function concat(chunks: Iterable<Uint8Array>): Uint8Array {
  return new Uint8Array(Buffer.concat([...chunks]));
}

/** Deterministic values in (−scale, scale). */
function values(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s / 2 ** 32) * 2 - 1) * scale;
  }
  return out;
}

const METADATA = new Map<string, GgufValue>([
  ['general.architecture', { type: 'string', value: 'llama' }],
  ['test.u8', { type: 'u8', value: 255 }],
  ['test.i8', { type: 'i8', value: -128 }],
  ['test.u16', { type: 'u16', value: 65535 }],
  ['test.i16', { type: 'i16', value: -32768 }],
  ['test.u32', { type: 'u32', value: 4294967295 }],
  ['test.i32', { type: 'i32', value: -2147483648 }],
  ['test.f32', { type: 'f32', value: Math.fround(0.1) }],
  ['test.bool', { type: 'bool', value: true }],
  ['test.u64', { type: 'u64', value: 2n ** 64n - 1n }],
  ['test.i64', { type: 'i64', value: -(2n ** 63n) }],
  ['test.f64', { type: 'f64', value: 0.1 }],
  ['test.utf8', { type: 'string', value: 'héllo ✓ 日本' }],
  ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: ['<s>', '</s>', 'a', ''] }],
  ['tokenizer.ggml.scores', { type: 'array', itemType: 'f32', value: Float32Array.from([0, -1.5, 2]) }],
  ['tokenizer.ggml.token_type', { type: 'array', itemType: 'i32', value: Int32Array.from([3, 3, 1]) }],
  ['test.bools', { type: 'array', itemType: 'bool', value: [true, false, true] }],
  ['test.u64s', { type: 'array', itemType: 'u64', value: BigUint64Array.from([0n, 2n ** 64n - 1n]) }],
  ['test.empty', { type: 'array', itemType: 'u8', value: new Uint8Array(0) }],
]);

describe('GGUF round trip', () => {
  it('writes and reads back metadata of every value type, dims in ggml order, and tensor values', async () => {
    const w = values(4 * 64, 1);
    const b = values(3, 2);
    const q8 = values(2 * 32, 3, 5);
    const q4 = values(2 * 64, 4, 0.1);
    const path = join(dir, 'round.gguf');
    await writeGguf(path, {
      metadata: METADATA,
      tensors: [
        { name: 'w', shape: [4, 64], data: w, type: 'F16' },
        { name: 'b', shape: [3], data: b, type: 'F32' },
        { name: 'q8', shape: [2, 32], data: q8, type: 'Q8_0' },
        { name: 'q4', shape: [2, 64], data: q4, type: 'Q4_0' },
      ],
    });
    const source = await openFileSource(path);
    try {
      const file = await readGguf(source);
      assert.equal(file.version, 3);
      assert.equal(file.alignment, 32);
      assert.deepEqual([...file.metadata.keys()], [...METADATA.keys()]);
      for (const [key, value] of METADATA) assert.deepEqual(file.metadata.get(key), value, key);
      assert.deepEqual(
        file.tensors.map((t) => [t.name, t.type.name, t.dims, t.shape]),
        [
          ['w', 'F16', [64, 4], [4, 64]],
          ['b', 'F32', [3], [3]],
          ['q8', 'Q8_0', [32, 2], [2, 32]],
          ['q4', 'Q4_0', [64, 2], [2, 64]],
        ],
      );
      for (const t of file.tensors) assert.equal((file.dataOffset + t.offset) % 32, 0, t.name);
      assert.deepEqual(await readGgufTensor(source, file, 'b'), b);
      assert.deepEqual(
        await readGgufTensor(source, file, 'w'),
        Float32Array.from(w, (v) => f16BitsToF32(f32ToF16Bits(v))),
      );
      assert.deepEqual(await readGgufTensor(source, file, 'q8'), dequantizeGguf(Q8_0, quantizeQ8_0(q8), q8.length));
      assert.deepEqual(await readGgufTensor(source, file, 'q4'), dequantizeGguf(Q4_0, quantizeQ4_0(q4), q4.length));
      // Quantization error within half a step of each block's scale.
      const got8 = await readGgufTensor(source, file, 'q8');
      for (let blk = 0; blk < 2; blk++) {
        const block = q8.subarray(32 * blk, 32 * blk + 32);
        const step = Math.max(...block.map(Math.abs)) / 127;
        for (let j = 0; j < 32; j++)
          assert.ok(Math.abs(got8[32 * blk + j]! - block[j]!) <= step * 0.51 + 1e-3 * step, `q8 ${blk}:${j}`);
      }
      const got4 = await readGgufTensor(source, file, 'q4');
      for (let blk = 0; blk < 4; blk++) {
        const block = q4.subarray(32 * blk, 32 * blk + 32);
        const step = Math.max(...block.map(Math.abs)) / 8;
        for (let j = 0; j < 32; j++)
          assert.ok(Math.abs(got4[32 * blk + j]! - block[j]!) <= step * 1.01, `q4 ${blk}:${j}`);
      }
    } finally {
      await source.close();
    }
    // Byte-identical when encoded again, and the file is whole (no temp files left).
    assert.deepEqual(
      new Uint8Array(await readFile(path)),
      concat(
        encodeGguf({
          metadata: METADATA,
          tensors: [
            { name: 'w', shape: [4, 64], data: w, type: 'F16' },
            { name: 'b', shape: [3], data: b, type: 'F32' },
            { name: 'q8', shape: [2, 32], data: q8, type: 'Q8_0' },
            { name: 'q4', shape: [2, 64], data: q4, type: 'Q4_0' },
          ],
        }),
      ),
    );
  });

  it('honours general.alignment', async () => {
    const metadata = new Map<string, GgufValue>([['general.alignment', { type: 'u32', value: 64 }]]);
    const bytes = concat(
      encodeGguf({
        metadata,
        tensors: [
          { name: 'a', shape: [3], data: Float32Array.from([1, 2, 3]), type: 'F32' },
          { name: 'b', shape: [2], data: Float32Array.from([4, 5]), type: 'F32' },
        ],
      }),
    );
    const source = memorySource(bytes);
    const file = await readGguf(source);
    assert.equal(file.alignment, 64);
    assert.equal(file.dataOffset % 64, 0);
    assert.deepEqual(
      file.tensors.map((t) => t.offset),
      [0, 64],
    );
    assert.deepEqual(await readGgufTensor(source, file, 'b'), Float32Array.from([4, 5]));
  });

  it('a header that outgrows the writer buffer at every kind of field reads back whole', async () => {
    // The header buffer starts at 1 KiB and doubles: numbers, strings and tensor infos each land
    // on a growth boundary somewhere in here (a number written into the old buffer was lost once).
    for (let pad = 0; pad < 16; pad++) {
      const metadata = new Map<string, GgufValue>([['k', { type: 'string', value: 'x'.repeat(1000 + pad) }]]);
      for (let i = 0; i < 40; i++)
        metadata.set(`n${i}`, { type: i % 2 ? 'u32' : 'u64', value: i % 2 ? i : BigInt(i) } as GgufValue);
      const tensors = Array.from({ length: 60 }, (_, i) => ({
        name: `t${i}`,
        shape: [2],
        data: Float32Array.from([i, -i]),
        type: 'F32' as const,
      }));
      const source = memorySource(concat(encodeGguf({ metadata, tensors })));
      const file = await readGguf(source);
      assert.deepEqual(file.metadata.get('n39'), { type: 'u32', value: 39 });
      assert.deepEqual(file.metadata.get('n38'), { type: 'u64', value: 38n });
      assert.deepEqual(await readGgufTensor(source, file, 't59'), Float32Array.from([59, -59]));
    }
  });

  it('reads a BF16 tensor and a version 2 file built by hand', async () => {
    const vals = [1.5, -2, 3.25, 0];
    const g = new GgufBytes().header(1, 0, 2).tensorInfo('x', [4], 30, 0).pad();
    for (const v of vals) g.u8(f32ToBF16Bits(v) & 0xff).u8(f32ToBF16Bits(v) >> 8);
    const source = memorySource(g.bytes());
    const file = await readGguf(source);
    assert.equal(file.version, 2);
    assert.deepEqual(await readGgufTensor(source, file, 'x'), Float32Array.from(vals));
  });

  it('refuses bad writer input with ArgumentError', () => {
    const bad = (tensors: Parameters<typeof encodeGguf>[0]['tensors']) =>
      assert.throws(() => encodeGguf({ metadata: new Map(), tensors }), ArgumentError);
    bad([{ name: 'q', shape: [2, 31], data: new Float32Array(62), type: 'Q8_0' }]);
    bad([{ name: 'a', shape: [2], data: new Float32Array(3), type: 'F32' }]);
    bad([
      { name: 'a', shape: [1], data: new Float32Array(1), type: 'F32' },
      { name: 'a', shape: [1], data: new Float32Array(1), type: 'F32' },
    ]);
    bad([{ name: 'n'.repeat(64), shape: [1], data: new Float32Array(1), type: 'F32' }]);
    bad([{ name: 'r', shape: [1, 1, 1, 1, 1], data: new Float32Array(1), type: 'F32' }]);
  });
});

/** Block bytes: the f16 scale (little-endian) then the quants. */
function block(scaleBits: number, quants: number[]): Uint8Array {
  return Uint8Array.from([scaleBits & 0xff, scaleBits >> 8, ...quants.map((q) => q & 0xff)]);
}

describe('F16 decoding', () => {
  it('decodes every one of the 65536 bit patterns as f16BitsToF32 does (±0, subnormals, ±Inf, NaN)', () => {
    const bits = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const got = dequantizeGguf(GGML_TYPES.get(1)!, new Uint8Array(bits.buffer), 65536);
    for (let i = 0; i < 65536; i++)
      assert.ok(Object.is(got[i], Math.fround(f16BitsToF32(i))), `bits 0x${i.toString(16)}`);
  });
});

describe('Q8_0 blocks (quantize_row_q8_0_ref)', () => {
  it('amax 127: d = 1 (f16 0x3C00), q = roundf(x), halves away from zero', () => {
    const x = new Float32Array(32);
    x.set([127, -2.5, 2.5, 0.5, -0.5, Math.fround(1.4999999), -127, 0.49, 100.6]);
    const want = new Array<number>(32).fill(0);
    want.splice(0, 9, 127, -3, 3, 1, -1, 1, -127, 0, 101);
    assert.deepEqual(quantizeQ8_0(x), block(0x3c00, want));
    assert.deepEqual(dequantizeGguf(Q8_0, block(0x3c00, want), 32), Float32Array.from(want));
  });
  it('amax 63.5: d = 0.5 (0x3800), 1/d = 2; an all-zero block has d = 0 and q = 0', () => {
    const x = new Float32Array(64);
    x.set([63.5, 0.25, -0.25, -10, 0.2]);
    const want = new Array<number>(32).fill(0);
    want.splice(0, 5, 127, 1, -1, -20, 0);
    assert.deepEqual(
      quantizeQ8_0(x),
      Uint8Array.from([...block(0x3800, want), ...block(0, new Array<number>(32).fill(0))]),
    );
    assert.deepEqual(
      dequantizeGguf(Q8_0, quantizeQ8_0(x), 64).subarray(0, 5),
      Float32Array.from([63.5, 0.5, -0.5, -10, 0]),
    );
  });
});

describe('Q4_0 blocks (quantize_row_q4_0_ref)', () => {
  it('max −8 first: d = 1 (0x3C00), q = min(15, trunc(x + 8.5)); low nibbles hold elements 0..15', () => {
    const x = new Float32Array(32);
    x.set([-8, 7, 8, 0.5, -0.5, 0.49, -3]); // elements 0..6
    x.set([1, -1], 16); // elements 16, 17 (high nibbles of bytes 0, 1)
    const q = [0, 15, 15, 9, 8, 8, 5, 8, 8, 8, 8, 8, 8, 8, 8, 8]; // elements 0..15 (0 → 8.5 → 8)
    const hi = [9, 7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8];
    assert.deepEqual(
      quantizeQ4_0(x),
      block(
        0x3c00,
        q.map((lo, j) => lo | (hi[j]! << 4)),
      ),
    );
    const back = dequantizeGguf(Q4_0, quantizeQ4_0(x), 32);
    assert.deepEqual([...back.subarray(0, 7)], [-8, 7, 7, 1, 0, 0, -3]);
    assert.deepEqual([...back.subarray(16, 18)], [1, -1]);
  });
  it('the first value of largest magnitude sets the sign of d: max 16 gives d = −2 and clamps −16 to 15', () => {
    const x = new Float32Array(32);
    x.set([16, -16, 4]);
    const q = new Array<number>(16).fill(8 | (8 << 4));
    // 16·(−0.5) + 8.5 = 0.5 → 0; −16·(−0.5) + 8.5 = 16.5 → 16 → 15; 4·(−0.5) + 8.5 = 6.5 → 6.
    q.splice(0, 3, 0 | (8 << 4), 15 | (8 << 4), 6 | (8 << 4));
    assert.deepEqual(quantizeQ4_0(x), block(0xc000, q));
    assert.deepEqual([...dequantizeGguf(Q4_0, quantizeQ4_0(x), 32).subarray(0, 3)], [16, -14, 4]);
    const flipped = Float32Array.from(x, (v) => v); // −16 before 16: d = +2
    flipped.set([-16, 16]);
    assert.equal(new DataView(quantizeQ4_0(flipped).buffer).getUint16(0, true), 0x4000);
  });
});

describe('GGUF files', () => {
  it('a failed write leaves the old file whole and no temporary file', async () => {
    const sub = await mkdtemp(join(dir, 'atomic-'));
    const path = join(sub, 'm.gguf');
    await writeFile(path, 'old');
    const full = {
      ...nodeWriteFs,
      create: async (p: string) => {
        const file = await nodeWriteFs.create(p);
        return {
          ...file,
          write: async () => Promise.reject(Object.assign(new Error('no space'), { code: 'ENOSPC' })),
          sync: () => file.sync(),
          close: () => file.close(),
        };
      },
    };
    const input = {
      metadata: new Map<string, GgufValue>(),
      tensors: [{ name: 'a', shape: [1], data: Float32Array.from([1]), type: 'F32' as const }],
    };
    await assert.rejects(writeGguf(path, input, { fs: full }), IOError);
    assert.equal(await readFile(path, 'utf8'), 'old');
    assert.deepEqual(await readdir(sub), ['m.gguf']);
  });

  it('a tensor of a type knobs lays out but does not decode (Q2_K) is named in a gguf_unsupported_type error', async () => {
    const g = new GgufBytes()
      .header(1, 0)
      .tensorInfo('blk.0.ffn_down.weight', [256], 10, 0)
      .pad()
      .raw(new Uint8Array(84));
    const source = memorySource(g.bytes(), 'k.gguf');
    const file = await readGguf(source);
    assert.equal(file.tensors[0]!.type.name, 'Q2_K');
    assert.equal(file.tensors[0]!.byteLength, 84);
    await assert.rejects(readGgufTensor(source, file, 'blk.0.ffn_down.weight'), (err: unknown) => {
      assert.ok(err instanceof FormatError);
      assert.equal(err.rule, 'gguf_unsupported_type');
      assert.match(err.message, /k\.gguf: tensor 'blk\.0\.ffn_down\.weight' is Q2_K; .*Q6_K/);
      return true;
    });
    await assert.rejects(readGgufTensor(source, file, 'missing'), ArgumentError);
  });

  it('a valid tensor of more than 2^32 elements is refused before any read, not with a RangeError', async () => {
    const header = new GgufBytes()
      .header(1, 0)
      .tensorInfo('big', [2 ** 16, 2 ** 16, 2], 1, 0)
      .pad()
      .bytes();
    const reads: number[] = [];
    // 16 GiB of F16 data that is never there: only the header's bytes can be read.
    const source: ByteSource = {
      name: 'sparse.gguf',
      size: header.length + 2 ** 34,
      read: async (offset, length) => {
        reads.push(length);
        if (length > 1 << 16) assert.fail(`read of ${length} bytes`);
        const out = new Uint8Array(length);
        out.set(header.subarray(offset, offset + length));
        return out;
      },
      readInto: async () => assert.fail('no readInto'),
      close: async () => undefined,
    };
    const file = await readGguf(source);
    await assert.rejects(
      readGgufTensor(source, file, 'big'),
      (err: unknown) => err instanceof FormatError && err.rule === 'gguf_tensor_too_large',
    );
    assert.ok(reads.length > 0);
  });
});
