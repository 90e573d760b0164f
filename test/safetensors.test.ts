/**
 * safetensors files on disk: byte-for-byte round trips of every dtype, reading by range, the
 * atomic writer, and file-level failures (invalid files, missing files, truncation).
 */
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, open, readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { storageBytes } from '../src/dtype.js';
import { ArgumentError, FormatError, IOError } from '../src/errors.js';
import { arange, tensor } from '../src/ops/index.js';
import { Tensor } from '../src/tensor.js';
import {
  SAFETENSORS_DTYPES,
  SAFETENSORS_DTYPE_BITS,
  type SafetensorsDType,
} from '../src/formats/safetensors-header.js';
import {
  type RawTensor,
  type SafetensorsValue,
  isRawTensor,
  loadSafetensors,
  openSafetensors,
  readSafetensorsHeader,
  saveSafetensors,
} from '../src/formats/safetensors.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-st-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A raw tensor of `dtype` with 12 elements (whole bytes for 4-, 6- and 8-bit dtypes) and patterned bytes. */
function patterned(dtype: SafetensorsDType, seed: number): RawTensor {
  const shape = [3, 4];
  const bytes = Uint8Array.from(
    { length: (12 * SAFETENSORS_DTYPE_BITS[dtype]) / 8 },
    (_, i) => (i * 37 + seed * 11 + 5) & 0xff,
  );
  return { kind: 'raw', dtype, shape, bytes };
}

function bytesOf(v: SafetensorsValue): Uint8Array {
  return v instanceof Tensor ? storageBytes(v.contiguousStorage()) : v.bytes;
}

const KNOBS_OF: Partial<Record<SafetensorsDType, string>> = {
  F32: 'f32',
  F64: 'f64',
  F16: 'f16',
  BF16: 'bf16',
  I32: 'i32',
  I64: 'i64',
  U8: 'u8',
  I8: 'i8',
  BOOL: 'bool',
};

describe('safetensors round trips', () => {
  it('every dtype round-trips byte for byte; knobs dtypes load as Tensors, the rest as raw', async () => {
    const input = new Map<string, SafetensorsValue>(SAFETENSORS_DTYPES.map((d, i) => [`t.${d}`, patterned(d, i)]));
    const first = join(dir, 'all-dtypes.safetensors');
    await saveSafetensors(first, input, { format: 'pt', note: 'every dtype' });
    const loaded = await loadSafetensors(first);
    assert.equal(loaded.tensors.size, SAFETENSORS_DTYPES.length);
    for (const [name, original] of input) {
      const got = loaded.tensors.get(name)!;
      const dtype = (original as RawTensor).dtype;
      if (KNOBS_OF[dtype]) {
        assert.ok(got instanceof Tensor, name);
        assert.equal(got.dtype, KNOBS_OF[dtype]);
      } else {
        assert.ok(isRawTensor(got), name);
        assert.equal(got.dtype, dtype);
      }
      assert.deepEqual([...got.shape], [3, 4]);
      assert.deepEqual(bytesOf(got), (original as RawTensor).bytes, name);
    }
    assert.deepEqual(
      [...loaded.metadata!],
      [
        ['format', 'pt'],
        ['note', 'every dtype'],
      ],
    );
    const second = join(dir, 'all-dtypes-again.safetensors');
    await saveSafetensors(second, loaded.tensors, loaded.metadata);
    assert.deepEqual(await readFile(second), await readFile(first));
  });

  it('writes knobs tensors (non-contiguous too) and reads the same values', async () => {
    const path = join(dir, 'tensors.safetensors');
    const w = arange(6, undefined, 1, { dtype: 'f32' }).reshape([2, 3]);
    const tensors = {
      'w.T': w.transpose(0, 1),
      ids: tensor(
        [
          [1, -2],
          [3, 4],
        ],
        { dtype: 'i64' },
      ),
      mask: tensor([1, 0, 1], { dtype: 'bool' }),
      half: tensor([0.5, -2, 65504], { dtype: 'f16' }),
      brain: tensor([1.5, -3.25], { dtype: 'bf16' }),
      scalar: tensor(3.5, { dtype: 'f64' }),
      empty: tensor([], { dtype: 'f32' }).reshape([0, 4]),
    };
    await saveSafetensors(path, tensors);
    const { tensors: back, metadata } = await loadSafetensors(path);
    assert.equal(metadata, null);
    for (const [name, t] of Object.entries(tensors)) {
      const got = back.get(name) as Tensor;
      assert.equal(got.dtype, t.dtype, name);
      assert.deepEqual(got.shape, t.shape, name);
      assert.deepEqual(got.toFlatArray(), t.toFlatArray(), name);
    }
    assert.deepEqual((back.get('w.T') as Tensor).toArray(), [
      [0, 3],
      [1, 4],
      [2, 5],
    ]);
  });

  it('writes in upstream order (dtype by size, largest first, then name), header padded with spaces', async () => {
    const path = join(dir, 'order.safetensors');
    await saveSafetensors(
      path,
      new Map<string, SafetensorsValue>([
        ['b', patterned('U8', 1)],
        ['a', patterned('U8', 2)],
        ['h', patterned('F16', 3)],
        ['x', patterned('F4', 4)],
        ['d', patterned('F64', 5)],
      ]),
    );
    const header = await readSafetensorsHeader(path);
    assert.deepEqual([...header.entries.keys()], ['d', 'h', 'a', 'b', 'x']);
    assert.equal(header.dataStart % 8, 0);
    const raw = await readFile(path);
    const text = raw.subarray(8, header.dataStart).toString('utf8');
    assert.match(text, /^\{"d":\{"dtype":"F64","shape":\[3,4\],"data_offsets":\[0,96\]\},"h":/);
    assert.match(text, /\} *$/);
  });

  it('stores __proto__ and friends as ordinary tensor names and metadata keys', async () => {
    const path = join(dir, 'proto.safetensors');
    const tensors = new Map<string, SafetensorsValue>([
      ['__proto__', patterned('U8', 1)],
      ['constructor', patterned('I8', 2)],
      ['prototype', patterned('F32', 3)],
    ]);
    await saveSafetensors(path, tensors, new Map([['__proto__', 'polluted?']]));
    const loaded = await loadSafetensors(path);
    assert.deepEqual([...loaded.tensors.keys()].sort(), ['__proto__', 'constructor', 'prototype']);
    assert.equal(loaded.metadata!.get('__proto__'), 'polluted?');
    assert.equal(({} as Record<string, unknown>)['dtype'], undefined);
    assert.equal(Object.getPrototypeOf({}), Object.prototype);
  });

  it('accepts a record whose own key is __proto__', async () => {
    const path = join(dir, 'record-proto.safetensors');
    const record = JSON.parse('{"__proto__": 1}') as Record<string, unknown>;
    record['__proto__'] = patterned('U8', 9);
    await saveSafetensors(path, record as Record<string, SafetensorsValue>);
    assert.deepEqual([...(await readSafetensorsHeader(path)).entries.keys()], ['__proto__']);
  });

  it('writes and reads a file with no tensors', async () => {
    const path = join(dir, 'nothing.safetensors');
    await saveSafetensors(path, {});
    assert.deepEqual([...(await readFile(path))], [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]);
    assert.equal((await loadSafetensors(path)).tensors.size, 0);
  });
});

describe('safetensors reading by range', () => {
  it('openSafetensors reads single tensors and reports entries, metadata, offsets', async () => {
    const path = join(dir, 'ranges.safetensors');
    await saveSafetensors(path, { a: tensor([1, 2, 3]), b: patterned('F8_E4M3', 1) }, { k: 'v' });
    const file = await openSafetensors(path);
    try {
      assert.deepEqual([...file.entries.keys()], ['a', 'b']);
      assert.deepEqual(file.entries.get('a')!.dataOffsets, [0, 12]);
      assert.equal(file.metadata!.get('k'), 'v');
      assert.deepEqual(((await file.read('a')) as Tensor).toFlatArray(), [1, 2, 3]);
      assert.deepEqual(await file.readBytes('b'), patterned('F8_E4M3', 1).bytes);
      await assert.rejects(
        file.read('missing'),
        (e: unknown) => e instanceof ArgumentError && /no tensor named "missing"/.test(e.message),
      );
    } finally {
      await file.close();
    }
    await assert.rejects(file.read('a'), ArgumentError);
    await file.close(); // closing twice is harmless
  });
});

describe('safetensors files over 2 GiB', () => {
  it('reads a tensor that lies past 3 GiB without reading the rest (sparse file)', async () => {
    const path = join(dir, 'big.safetensors');
    const big = 3 * 2 ** 30;
    const header = Buffer.from(
      `{"big":{"dtype":"U8","shape":[${big}],"data_offsets":[0,${big}]},"small":{"dtype":"F32","shape":[2],"data_offsets":[${big},${big + 8}]}}`,
    );
    const padded = Buffer.concat([header, Buffer.alloc((8 - (header.byteLength % 8)) % 8, 0x20)]);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(padded.byteLength));
    const dataStart = 8 + padded.byteLength;
    await writeFile(path, Buffer.concat([len, padded]));
    await truncate(path, dataStart + big); // a hole: no disk space, reads as zeros
    const fh = await open(path, 'r+');
    await fh.write(Buffer.from(new Float32Array([1.5, -2]).buffer), 0, 8, dataStart + big);
    await fh.close();
    const file = await openSafetensors(path);
    try {
      assert.equal(file.header.fileSize, dataStart + big + 8);
      assert.equal(file.entries.get('big')!.byteLength, big);
      assert.deepEqual(((await file.read('small')) as Tensor).toFlatArray(), [1.5, -2]);
    } finally {
      await file.close();
    }
  });
});

describe('safetensors file errors', () => {
  it('an invalid file fails with E_FORMAT, the rule and the path, and yields nothing', async () => {
    const path = join(dir, 'bad.safetensors');
    const header = Buffer.from('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}    ');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.byteLength));
    await writeFile(path, Buffer.concat([len, header, Buffer.alloc(9)]));
    for (const attempt of [loadSafetensors, openSafetensors, readSafetensorsHeader]) {
      await assert.rejects(attempt(path), (e: unknown) => {
        assert.ok(e instanceof FormatError);
        assert.equal(e.rule, 'trailing_bytes');
        assert.equal(e.details['path'], path);
        assert.ok(e.message.startsWith(`${path}: invalid safetensors file (trailing_bytes)`));
        return true;
      });
    }
  });

  it('every truncation of a written file is a FormatError', async () => {
    const whole = join(dir, 'whole.safetensors');
    await saveSafetensors(
      whole,
      {
        w: tensor([
          [1, 2],
          [3, 4],
        ]),
        n: patterned('F4', 1),
      },
      { format: 'pt' },
    );
    const bytes = await readFile(whole);
    const cut = join(dir, 'cut.safetensors');
    for (let k = 0; k < bytes.byteLength; k++) {
      await writeFile(cut, bytes.subarray(0, k));
      await assert.rejects(loadSafetensors(cut), FormatError, `cut at ${k}`);
    }
  });

  it('a huge header length is refused from an 16-byte file', async () => {
    const path = join(dir, 'huge-header.safetensors');
    const bytes = Buffer.alloc(16, 0x20);
    bytes.writeBigUInt64LE(1n << 60n);
    await writeFile(path, bytes);
    const before = process.memoryUsage().arrayBuffers;
    await assert.rejects(
      readSafetensorsHeader(path),
      (e: unknown) => e instanceof FormatError && e.rule === 'header_too_large',
    );
    assert.ok(process.memoryUsage().arrayBuffers - before < 1 << 20);
  });

  it('a file that shrinks after open reads as truncated', async () => {
    const path = join(dir, 'shrinks.safetensors');
    await saveSafetensors(path, { a: tensor([1, 2, 3, 4]) });
    const file = await openSafetensors(path);
    try {
      await truncate(path, file.header.dataStart + 4);
      await assert.rejects(file.read('a'), (e: unknown) => e instanceof FormatError && e.rule === 'truncated');
    } finally {
      await file.close();
    }
  });

  it('a missing file is E_IO with the path', async () => {
    const path = join(dir, 'nope.safetensors');
    await assert.rejects(
      loadSafetensors(path),
      (e: unknown) => e instanceof IOError && e.code === 'E_IO' && e.message.includes(path),
    );
  });
});

describe('safetensors writer safety', () => {
  async function leftovers(): Promise<string[]> {
    return (await readdir(dir)).filter((f) => f.endsWith('.tmp'));
  }

  it('rejects bad input before touching an existing file', async () => {
    const path = join(dir, 'keep.safetensors');
    await saveSafetensors(path, { a: tensor([1]) });
    const original = await readFile(path);
    const bad: Array<[string, unknown, unknown?]> = [
      ['wrong byte count', { a: { kind: 'raw', dtype: 'F32', shape: [2], bytes: new Uint8Array(7) } }],
      ['sub-byte misaligned', { a: { kind: 'raw', dtype: 'F4', shape: [3], bytes: new Uint8Array(2) } }],
      ['unknown dtype', { a: { kind: 'raw', dtype: 'F128', shape: [1], bytes: new Uint8Array(16) } }],
      ['negative dimension', { a: { kind: 'raw', dtype: 'U8', shape: [-1], bytes: new Uint8Array(0) } }],
      ['not a tensor', { a: [1, 2, 3] }],
      ['reserved name', { __metadata__: tensor([1]) }],
      ['lone surrogate in a name', { '\ud800': tensor([1]) }],
      ['non-string metadata', { a: tensor([1]) }, { epoch: 3 }],
    ];
    for (const [what, tensors, metadata] of bad) {
      await assert.rejects(
        saveSafetensors(
          path,
          tensors as Record<string, SafetensorsValue>,
          metadata as Record<string, string> | undefined,
        ),
        ArgumentError,
        what,
      );
    }
    assert.deepEqual(await readFile(path), original);
    assert.deepEqual(await leftovers(), []);
  });

  it('removes its temporary file when the final rename fails, leaving the target as it was', async () => {
    const target = join(dir, 'occupied');
    await mkdir(target);
    await writeFile(join(target, 'inside'), 'x');
    await assert.rejects(saveSafetensors(target, { a: tensor([1]) }), IOError);
    assert.deepEqual(await readdir(target), ['inside']);
    assert.deepEqual(await leftovers(), []);
  });

  it('fails with E_IO when the directory does not exist', async () => {
    await assert.rejects(saveSafetensors(join(dir, 'no', 'such', 'dir.safetensors'), { a: tensor([1]) }), IOError);
  });

  it('replaces an existing file in one step', async () => {
    const path = join(dir, 'replace.safetensors');
    await saveSafetensors(path, { a: tensor([1]) });
    await saveSafetensors(path, { b: tensor([2, 3]) });
    assert.deepEqual([...(await readSafetensorsHeader(path)).entries.keys()], ['b']);
    assert.deepEqual(await leftovers(), []);
  });
});
