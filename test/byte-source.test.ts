/**
 * ByteSource: files and memory read the same bytes by range, refuse ranges past the end and reads
 * after close, and safetensors loads identically through either.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ArgumentError, FormatError } from '../src/errors.js';
import { type ByteSource, memorySource, openFileSource } from '../src/io/byte-source.js';
import { tensor } from '../src/ops/index.js';
import { Tensor } from '../src/tensor.js';
import { loadSafetensors, openSafetensors, saveSafetensors } from '../src/formats/safetensors.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-bytesource-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function sources(): Promise<[string, ByteSource][]> {
  const path = join(dir, 'w.safetensors');
  await saveSafetensors(path, {
    a: tensor([1, 2, 3]),
    b: tensor([
      [4, 5],
      [6, 7],
    ]).to('bf16'),
  });
  return [
    ['file', await openFileSource(path)],
    ['memory', memorySource(new Uint8Array(await readFile(path)), 'mem.safetensors')],
  ];
}

describe('ByteSource', () => {
  it('file and memory sources read the same ranges', async () => {
    const [[, file], [, memory]] = await sources();
    assert.equal(file.size, memory.size);
    for (const [offset, length] of [
      [0, 8],
      [3, 17],
      [file.size - 5, 5],
      [file.size, 0],
    ] as const) {
      assert.deepEqual(await file.read(offset, length), await memory.read(offset, length));
      const a = new Uint8Array(length);
      const b = new Uint8Array(length);
      await file.readInto(a, offset);
      await memory.readInto(b, offset);
      assert.deepEqual(a, b);
    }
    await file.close();
    await memory.close();
  });

  it('a range past the end, a negative offset and a read after close are ArgumentErrors', async () => {
    for (const [name, source] of await sources()) {
      await assert.rejects(
        source.read(source.size - 2, 3),
        (e: unknown) => e instanceof ArgumentError && e.message.includes(`${source.size} bytes`),
        name,
      );
      await assert.rejects(source.read(-1, 1), ArgumentError, name);
      await assert.rejects(source.readInto(new Uint8Array(source.size + 1), 0), ArgumentError, name);
      await source.close();
      await source.close();
      await assert.rejects(source.read(0, 1), /after close/, name);
    }
  });

  it('safetensors loads the same tensors from a file and from memory', async () => {
    const [[, file], [, memory]] = await sources();
    const a = await loadSafetensors(file);
    const b = await loadSafetensors(memory);
    assert.deepEqual([...a.tensors.keys()], [...b.tensors.keys()]);
    for (const [name, t] of a.tensors) {
      const u = b.tensors.get(name) as Tensor;
      assert.deepEqual((t as Tensor).toArray(), u.toArray());
      assert.equal((t as Tensor).dtype, u.dtype);
    }
  });

  it('readInto places a tensor straight into a target and checks its length', async () => {
    const [, [, memory]] = await sources();
    const st = await openSafetensors(memory);
    const target = new Float32Array(3);
    await st.readInto('a', new Uint8Array(target.buffer));
    assert.deepEqual([...target], [1, 2, 3]);
    await assert.rejects(st.readInto('a', new Uint8Array(8)), ArgumentError);
    await st.close();
    await assert.rejects(memory.read(0, 1), /after close/, 'closing the file closes its source');
  });

  it('an invalid header from memory is a FormatError naming the source', async () => {
    const bytes = new Uint8Array(16);
    new DataView(bytes.buffer).setBigUint64(0, 100n, true);
    await assert.rejects(
      openSafetensors(memorySource(bytes, 'sealed.safetensors')),
      (e: unknown) =>
        e instanceof FormatError && e.rule === 'header_out_of_bounds' && e.message.startsWith('sealed.safetensors: '),
    );
  });
});
