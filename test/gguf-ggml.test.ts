/**
 * knobs' GGUF quantizers and dequantizers against ggml itself. The fixtures in test/fixtures/ggml/ were
 * made by scripts/gen_ggml_fixtures.mjs, which links scripts/ggml_quant_fixtures.c to node-llama-cpp
 * 3.21.1's prebuilt libggml-base.so / libllama.so (llama.cpp release v0.4.0; manifest.json records the
 * libraries' hashes): ggml's reference quantizers' blocks and dequantize_row_* values for rows.f32, and
 * a tiny Llama that llama_model_quantize turned into Q4_K_M, Q5_K_M and Q6_K, with a SHA-256 of every
 * tensor as ggml dequantizes it. The comparisons are bitwise (f32 bit patterns, not approximate values).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ArgumentError, FormatError } from '../src/errors.js';
import {
  GGML_TYPES,
  GGUF_DEQUANTIZABLE,
  dequantizeBlocks,
  dequantizeGguf,
  ggufRows,
  readGguf,
  readGgufRows,
  readGgufTensor,
} from '../src/formats/gguf.js';
import { quantizeQ4_0, quantizeQ8_0 } from '../src/formats/gguf-write.js';
import { type ByteSource, memorySource, openFileSource } from '../src/io/byte-source.js';
import { GgufBytes } from './harness/gguf-bytes.js';

const DIR = fileURLToPath(new URL('../../test/fixtures/ggml/', import.meta.url));
const manifest = JSON.parse(readFileSync(`${DIR}manifest.json`, 'utf8')) as {
  rows: { values: number; types: string[] };
  models: Record<
    string,
    { ftype: string; tensors: { name: string; type: string; elements: number; dequant_sha256: string }[] }
  >;
};
const file = (name: string): Uint8Array => new Uint8Array(readFileSync(`${DIR}${name}`));
const f32 = (bytes: Uint8Array): Float32Array => new Float32Array(bytes.slice().buffer);
const rows = f32(file('rows.f32'));
const typeNamed = (name: string) => [...GGML_TYPES.values()].find((t) => t.name === name)!;

/** Index of the first differing byte, or −1; a mismatch message names the block it falls in. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

function assertSameBits(got: Float32Array, want: Float32Array, what: string): void {
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  const i = firstDifference(
    new Uint8Array(g.buffer, g.byteOffset, g.byteLength),
    new Uint8Array(w.buffer, w.byteOffset, w.byteLength),
  );
  if (i === -1) return;
  const k = i >> 2;
  const bits = (a: Uint32Array) => `0x${a[k]!.toString(16).padStart(8, '0')}`;
  assert.fail(`${what}: value ${k} is ${got[k]} (${bits(g)}), ggml has ${want[k]} (${bits(w)})`);
}

describe("GGUF quantization against ggml's own library", () => {
  it('the fixtures cover every type the brief names, with edge cases and no NaN', () => {
    assert.equal(rows.length, manifest.rows.values);
    assert.deepEqual(manifest.rows.types, ['Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K']);
    assert.ok(rows.every(Number.isFinite));
    assert.ok(
      rows.subarray(0, 32).every((v) => v === 0),
      'an all-zero block comes first',
    );
    assert.ok(
      rows.some((v) => v !== 0 && Math.abs(v) < 1.2e-38),
      'f32 subnormals are in',
    );
  });

  for (const [name, quantize, blockBytes] of [
    ['Q8_0', quantizeQ8_0, 34],
    ['Q4_0', quantizeQ4_0, 18],
  ] as const) {
    it(`quantize${name} writes the blocks ggml's quantize_row_${name.toLowerCase()}_ref writes, bit for bit`, () => {
      const got = quantize(rows);
      const want = file(`${name}.blocks`);
      const i = firstDifference(got, want);
      assert.equal(
        i,
        -1,
        `block ${Math.floor(i / blockBytes)} (values from ${32 * Math.floor(i / blockBytes)}) differs at byte ${i % blockBytes}`,
      );
    });
  }

  for (const name of manifest.rows.types) {
    it(`${name} blocks decode to ggml's dequantize_row_${name.toLowerCase()} values, bit for bit`, () => {
      const type = typeNamed(name);
      const want = f32(file(`${name}.dequant.f32`));
      assertSameBits(dequantizeGguf(type, file(`${name}.blocks`), rows.length), want, name);
      // The values are close to the inputs: a wrong block layout would not be.
      const tolerance = { Q8_0: 0.01, Q4_0: 0.2, Q4_1: 0.2, Q5_0: 0.1, Q5_1: 0.1, Q4_K: 0.2, Q5_K: 0.1, Q6_K: 0.05 }[
        name
      ]!;
      let err = 0;
      let norm = 0;
      for (let i = 7 * 256; i < rows.length; i++) {
        err += (want[i]! - rows[i]!) ** 2;
        norm += rows[i]! ** 2;
      }
      assert.ok(Math.sqrt(err / norm) < tolerance, `${name}: relative error ${Math.sqrt(err / norm)}`);
    });
  }

  it('dequantizeBlocks decodes any block range into a caller buffer at an offset', () => {
    for (const name of ['Q4_0', 'Q4_K', 'Q6_K']) {
      const type = typeNamed(name);
      const blocks = file(`${name}.blocks`);
      const want = f32(file(`${name}.dequant.f32`));
      const out = new Float32Array(3 * type.blockSize + 5).fill(7);
      dequantizeBlocks(type, blocks.subarray(9 * type.typeSize, 12 * type.typeSize), out, 5);
      assert.deepEqual([...out.subarray(0, 5)], [7, 7, 7, 7, 7]);
      assertSameBits(out.subarray(5), want.subarray(9 * type.blockSize, 12 * type.blockSize), `${name} blocks 9..11`);
      assert.throws(() => dequantizeBlocks(type, blocks.subarray(0, type.typeSize + 1), out), ArgumentError);
      assert.throws(() => dequantizeBlocks(type, blocks.subarray(0, 4 * type.typeSize), out), ArgumentError);
    }
  });

  for (const [fileName, model] of Object.entries(manifest.models)) {
    it(`reads ${fileName} (llama_model_quantize ${model.ftype}) and decodes every tensor as ggml does`, async () => {
      const source = await openFileSource(`${DIR}${fileName}`);
      try {
        const gguf = await readGguf(source);
        assert.deepEqual(
          gguf.tensors.map((t) => [t.name, t.type.name.toLowerCase(), t.elements]),
          model.tensors.map((t) => [t.name, t.type.toLowerCase(), t.elements]),
        );
        for (const t of model.tensors) {
          const values = await readGgufTensor(source, gguf, t.name);
          const hash = createHash('sha256').update(new Uint8Array(values.buffer)).digest('hex');
          assert.equal(hash, t.dequant_sha256, `${fileName}: ${t.name} (${t.type}) decodes differently from ggml`);
        }
        const types = new Set(gguf.tensors.map((t) => t.type.name));
        for (const t of types) assert.ok(GGUF_DEQUANTIZABLE.includes(t));
      } finally {
        await source.close();
      }
    });
  }

  it('readGgufRows reads only the rows asked for, into the caller buffer, and equals the whole tensor', async () => {
    const bytes = file('tiny-llama-Q4_K_M.gguf');
    const reads: number[] = [];
    const inner = memorySource(bytes, 'q4km.gguf');
    const source = {
      ...inner,
      read: (offset: number, length: number) => (reads.push(length), inner.read(offset, length)),
    };
    const gguf = await readGguf(source);
    for (const [name, type, length] of [
      ['blk.0.attn_k.weight', 'Q4_K', 256],
      ['blk.0.ffn_down.weight', 'Q5_0', 160],
    ] as const) {
      const whole = await readGgufTensor(source, gguf, name);
      const info = gguf.tensors.find((t) => t.name === name)!;
      const { rows: n, rowLength, rowBytes } = ggufRows(info);
      assert.deepEqual([info.type.name, rowLength], [type, length]);
      const out = new Float32Array(2 * rowLength);
      reads.length = 0;
      for (let r = 0; r < n; r += 2) {
        await readGgufRows(source, gguf, name, r, 2, out);
        assertSameBits(out, whole.subarray(r * rowLength, (r + 2) * rowLength), `${name} rows ${r}..${r + 1}`);
      }
      assert.deepEqual(new Set(reads), new Set([2 * rowBytes]));
    }
    await assert.rejects(readGgufRows(source, gguf, 'blk.0.attn_k.weight', 63, 2), ArgumentError);
    await assert.rejects(readGgufRows(source, gguf, 'blk.0.attn_k.weight', 0, 2, new Float32Array(511)), ArgumentError);
  });

  it('a Q6_K tensor of 2^33 values is refused whole but read row by row in bounded memory', async () => {
    // 2^25 rows of 256: 7 GiB of data that is never there, and a source that refuses big reads.
    const header = new GgufBytes()
      .header(1, 0)
      .tensorInfo('huge', [256, 2 ** 25], 14, 0)
      .pad()
      .bytes();
    const block = file('Q6_K.blocks').subarray(0, 210);
    const reads: number[] = [];
    const source: ByteSource = {
      name: 'huge.gguf',
      size: header.length + 2 ** 25 * 210,
      read: async (offset, length) => {
        reads.push(length);
        if (length > 1 << 16) assert.fail(`read of ${length} bytes`);
        const out = new Uint8Array(length);
        if (offset < header.length) out.set(header.subarray(offset, offset + length));
        else for (let i = 0; i < length; i += 210) out.set(block, i);
        return out;
      },
      readInto: async () => assert.fail('no readInto'),
      close: async () => undefined,
    };
    const gguf = await readGguf(source);
    await assert.rejects(
      readGgufTensor(source, gguf, 'huge'),
      (err: unknown) =>
        err instanceof FormatError && err.rule === 'gguf_tensor_too_large' && /readGgufRows/.test(err.message),
    );
    const out = await readGgufRows(source, gguf, 'huge', 2 ** 25 - 3, 3);
    const want = f32(file('Q6_K.dequant.f32')).subarray(0, 256);
    for (let r = 0; r < 3; r++) assertSameBits(out.subarray(256 * r, 256 * (r + 1)), want, `row ${2 ** 25 - 3 + r}`);
    assert.equal(reads.at(-1), 3 * 210);
  });
});
