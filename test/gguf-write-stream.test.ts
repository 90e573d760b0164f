/**
 * The GGUF writer streams (src/formats/gguf-write.ts): the header is sized from shapes and types,
 * then each tensor is made, encoded and written before the next one is made, into a temporary file
 * renamed at the end. The files are byte for byte the ones the in-memory writer made before.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ArgumentError } from '../src/errors.js';
import { type GgufWriteTensor, writeGguf } from '../src/formats/gguf-write.js';
import { type WritableFile, nodeWriteFs } from '../src/io/atomic.js';
import { convertModel } from '../src/load/convert.js';
import { repoRoot } from './harness/fixtures.js';
import { fixtureWithTokenizer } from './harness/tiny-vocab.js';

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'knobs-gguf-stream-'));
});
after(() => rm(tmp, { recursive: true, force: true }));

/**
 * SHA-256 of `knobs convert` outputs made by the writer before it streamed (commit b427844, which
 * built the whole file in memory), from the fixtures with the tiny tokenizer, each in a directory
 * named as the fixture (general.name).
 */
const BEFORE: Record<string, Partial<Record<string, string>>> = {
  'gpt2-tiny': {
    f32: '490f3ff2bd042744fadcb373de80fef5adf6a9ec3a15249888be954b4a6f7e4a',
    q8_0: '1c75bb40f85cc76ba3d00f8e178b5b6aa1aedc17195678d639f662a1eceb1b38',
    q4_0: '3bafe2f021f03a23fb932a6a1bfcaa0bbce5eebdb464beeea038b4d05f668e3c',
  },
  'llama-gqa-bf16-llama3': {
    f16: 'fef66a9cac51f90308551a49e264c7fcef9afd0815e11626b2572dc58bb0423e',
    bf16: 'e4a46aa40a469e078eb07dceb596fcfa64430b916d43655fd13e196e5fcd4392',
    q8_0: 'cb74e5b3063b5cac921bee80f15145b429dc180410b285ff33446ba882d88106',
    q4_0: '418a2a9e6791150110866bc899626e43339a271ff070f96386e9992011fa1709',
  },
  'qwen2-bias-tied': {
    f32: 'ed7372cfc2556fedc55994747b6736853841652d6f3ce1f337401e319411f890',
    q8_0: '3cb07d27fe48a8071853827ff03096e22c8fde845fc6a27995cc21d65127a166',
  },
};

describe('the GGUF writer streams', () => {
  it('knobs convert writes the same bytes as the in-memory writer did', async () => {
    for (const [name, hashes] of Object.entries(BEFORE)) {
      const dir = await fixtureWithTokenizer(join(repoRoot(), 'test', 'fixtures', 'hf', name), join(tmp, 'src', name));
      for (const [dtype, hash] of Object.entries(hashes)) {
        const out = join(tmp, `${name}.${dtype}.gguf`);
        await convertModel({ input: dir, format: 'gguf', dtype, out });
        assert.equal(createHash('sha256').update(readFileSync(out)).digest('hex'), hash, `${name} ${dtype}`);
      }
    }
  });

  it('makes each tensor only once the previous one is written, and a failure leaves no file', async () => {
    const written: number[] = []; // bytes on disk when each tensor's values were asked for
    let onDisk = 0;
    const fs = {
      ...nodeWriteFs,
      create: async (p: string): Promise<WritableFile> => {
        const file = await nodeWriteFs.create(p);
        return {
          write: async (buffer, offset, length, position) => {
            const r = await file.write(buffer, offset, length, position);
            onDisk = Math.max(onDisk, position + r.bytesWritten);
            return r;
          },
          sync: () => file.sync(),
          close: () => file.close(),
        };
      },
    };
    const tensor = (name: string, n: number, type: GgufWriteTensor['type']): GgufWriteTensor => ({
      name,
      shape: [n, 64],
      type,
      data: () => {
        written.push(onDisk);
        return Float32Array.from({ length: n * 64 }, (_, i) => Math.sin(i));
      },
    });
    const path = join(tmp, 'streamed.gguf');
    await writeGguf(
      path,
      { metadata: new Map(), tensors: [tensor('a', 64, 'F32'), tensor('b', 32, 'Q8_0'), tensor('c', 16, 'F16')] },
      { fs },
    );
    const size = (await readFile(path)).length;
    const [a, b, c] = [64 * 64 * 4, 32 * 2 * 34, 16 * 64 * 2]; // each a multiple of the alignment
    const header = size - a - b - c;
    assert.deepEqual(written, [header, header + a, header + a + b]);
    // A tensor whose values do not fit its shape fails the write; nothing is left behind.
    const bad = { ...tensor('d', 4, 'F32'), data: () => new Float32Array(3) };
    await assert.rejects(
      writeGguf(join(tmp, 'bad.gguf'), { metadata: new Map(), tensors: [tensor('a', 64, 'F32'), bad] }),
      (err: unknown) => err instanceof ArgumentError && /'d' has shape \[4, 64\] but 3 values/.test(err.message),
    );
    assert.deepEqual(
      (await readdir(tmp)).filter((f) => f.includes('bad')),
      [],
    );
  });
});
