/**
 * Byte-level text data: the train/validation split, seeded random windows, resuming from the
 * generator state, streaming (reading windows by offset) giving exactly the in-memory batches,
 * and the errors for empty or too-short text. Uses a few chapters of the KJV from `bible`
 * (Debian bible-kjv) when installed, else a short inline text.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  BYTE_VOCAB_SIZE,
  ByteTextCorpus,
  TextBatcher,
  decodeBytes,
  encodeBytes,
  sequentialTextBatches,
} from '../src/data/text.js';
import { FormatError } from '../src/errors.js';

const FALLBACK =
  'In the beginning God created the heaven and the earth.\n' +
  'And the earth was without form, and void; and darkness was upon the face of the deep.\n' +
  'And the Spirit of God moved upon the face of the waters. And God said, Let there be light: and there was light. ' +
  'Ünïcödé bytes too: “quotes” — and 🌍.\n';

function sampleText(): string {
  try {
    const text = execFileSync('bible', ['Gen1:1-Gen3:24'], {
      encoding: 'utf8',
      timeout: 5000,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    if (text.length > 1000) return text;
  } catch {
    // bible-kjv not installed
  }
  return FALLBACK.repeat(40);
}

let dir: string;
let path: string;
let text: string;
let bytes: Uint8Array;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-text-'));
  text = sampleText();
  bytes = new TextEncoder().encode(text);
  path = join(dir, 'sample.txt');
  await writeFile(path, bytes);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('ByteTextCorpus', () => {
  it('splits off the last fraction for validation, the same way every time', async () => {
    const c = await ByteTextCorpus.open(path, { validationFraction: 0.1 });
    assert.equal(c.size, bytes.length);
    assert.equal(c.streaming, false);
    const v = Math.floor(bytes.length * 0.1);
    assert.deepEqual(c.train, { start: 0, end: bytes.length - v });
    assert.deepEqual(c.validation, { start: bytes.length - v, end: bytes.length });
    assert.deepEqual(await c.read(c.validation.start, 5), bytes.subarray(c.validation.start, c.validation.start + 5));
    const none = ByteTextCorpus.fromBytes(bytes, { validationFraction: 0 });
    assert.equal(none.validation.end - none.validation.start, 0);
    assert.throws(
      () => new TextBatcher(none, { split: 'validation', batchSize: 1, blockSize: 8 }),
      /validation split .* has 0 bytes/,
    );
  });

  it('rejects an empty file with a clear FormatError, and bad options', async () => {
    const empty = join(dir, 'empty.txt');
    await writeFile(empty, '');
    await assert.rejects(
      ByteTextCorpus.open(empty),
      (e: unknown) =>
        e instanceof FormatError && e.rule === 'empty' && e.message.includes(empty) && /is empty/.test(e.message),
    );
    assert.throws(() => ByteTextCorpus.fromBytes(''), { code: 'E_FORMAT' });
    await assert.rejects(ByteTextCorpus.open(join(dir, 'missing.txt')), { code: 'E_IO' });
    await assert.rejects(ByteTextCorpus.open(path, { validationFraction: 1 }), { code: 'E_ARGUMENT' });
  });

  it('a text shorter than blockSize + 1 is refused with the numbers', () => {
    const c = ByteTextCorpus.fromBytes('short', { validationFraction: 0 });
    assert.throws(
      () => new TextBatcher(c, { batchSize: 2, blockSize: 5 }),
      /has 5 bytes; a window needs blockSize \+ 1 = 6/,
    );
    new TextBatcher(c, { batchSize: 2, blockSize: 4 }); // exactly one window fits
    assert.throws(() => new TextBatcher(c, { batchSize: 2, blockSize: 4, seed: 1.5 }), { code: 'E_ARGUMENT' });
    assert.throws(() => new TextBatcher(c, { batchSize: 0, blockSize: 4 }), { code: 'E_ARGUMENT' });
    assert.throws(() => new TextBatcher(c, { batchSize: 1, blockSize: 4, split: 'test' as 'train' }), /split must be/);
  });
});

describe('TextBatcher', () => {
  it('gives i32 [B, T] inputs and targets shifted by one, from the right split', async () => {
    const c = await ByteTextCorpus.open(path);
    const batcher = new TextBatcher(c, { batchSize: 8, blockSize: 32, seed: 1 });
    for (let k = 0; k < 20; k++) {
      const { inputs, targets, offsets } = await batcher.next();
      assert.deepEqual(inputs.shape, [8, 32]);
      assert.equal(inputs.dtype, 'i32');
      const x = inputs.storage as Int32Array;
      const y = targets.storage as Int32Array;
      offsets.forEach((o, b) => {
        assert.ok(o >= c.train.start && o + 33 <= c.train.end, 'window inside the train split');
        for (let t = 0; t < 32; t++) {
          assert.equal(x[b * 32 + t], bytes[o + t]);
          assert.equal(y[b * 32 + t], bytes[o + t + 1]);
        }
      });
      assert.ok(x.every((v) => v >= 0 && v < BYTE_VOCAB_SIZE));
    }
    const val = new TextBatcher(c, { split: 'validation', batchSize: 4, blockSize: 16, seed: 1 });
    for (const o of (await val.next()).offsets) assert.ok(o >= c.validation.start && o + 17 <= c.validation.end);
  });

  it('is deterministic given the seed, differs across seeds, and resumes from getState()', async () => {
    const c = await ByteTextCorpus.open(path);
    const run = async (seed: number, n: number) => {
      const b = new TextBatcher(c, { batchSize: 4, blockSize: 16, seed });
      const out: number[][] = [];
      for (let i = 0; i < n; i++) out.push([...(await b.next()).offsets]);
      return out;
    };
    assert.deepEqual(await run(7, 5), await run(7, 5));
    assert.notDeepEqual(await run(7, 5), await run(8, 5));

    const a = new TextBatcher(c, { batchSize: 4, blockSize: 16, seed: 7 });
    for (let i = 0; i < 3; i++) await a.next();
    const state = JSON.parse(JSON.stringify(a.getState()));
    const rest = [];
    for (let i = 0; i < 4; i++) rest.push([...(await a.next()).offsets]);
    const b = new TextBatcher(c, { batchSize: 4, blockSize: 16, seed: 12345 });
    b.setState(state);
    const resumed = [];
    for (let i = 0; i < 4; i++) resumed.push([...(await b.next()).offsets]);
    assert.deepEqual(resumed, rest);
  });

  it('streaming (windows read by offset) gives exactly the in-memory batches', async () => {
    const mem = await ByteTextCorpus.open(path);
    const disk = await ByteTextCorpus.open(path, { inMemoryLimit: 1024 });
    try {
      assert.equal(disk.streaming, true);
      assert.deepEqual(disk.train, mem.train);
      const a = new TextBatcher(mem, { batchSize: 6, blockSize: 64, seed: 3 });
      const b = new TextBatcher(disk, { batchSize: 6, blockSize: 64, seed: 3 });
      for (let i = 0; i < 10; i++) {
        const [x, y] = [await a.next(), await b.next()];
        assert.deepEqual(y.inputs.storage, x.inputs.storage);
        assert.deepEqual(y.targets.storage, x.targets.storage);
      }
      await disk.close();
      await assert.rejects(disk.read(0, 1), /after close/);
    } finally {
      await disk.close();
    }
  });

  it('sequential evaluation batches cover the split once, in order', async () => {
    const c = ByteTextCorpus.fromBytes(
      Uint8Array.from({ length: 1001 }, (_, i) => i & 0xff),
      { validationFraction: 0.5 },
    );
    const seen: number[] = [];
    let batches = 0;
    for await (const b of sequentialTextBatches(c, { batchSize: 3, blockSize: 10 })) {
      batches++;
      seen.push(...b.offsets);
      const x = b.inputs.storage as Int32Array;
      assert.equal(x[0], b.offsets[0]! & 0xff);
    }
    // Validation is [501, 1001): 500 bytes → 49 windows of 10 (+1 target byte), 17 batches of ≤ 3.
    assert.equal(seen.length, 49);
    assert.equal(batches, 17);
    assert.deepEqual(
      seen,
      Array.from({ length: 49 }, (_, k) => 501 + 10 * k),
    );
    let limited = 0;
    for await (const _ of sequentialTextBatches(c, { batchSize: 3, blockSize: 10, maxBatches: 2 })) limited++;
    assert.equal(limited, 2);
  });

  it('encodes and decodes bytes', () => {
    const t = 'Let there be light — 🌍';
    const tokens = encodeBytes(t);
    assert.equal(tokens.length, new TextEncoder().encode(t).length);
    assert.equal(decodeBytes(tokens), t);
    assert.equal(decodeBytes([0xf0, 0x9f]), '\ufffd');
    assert.throws(() => decodeBytes([256]), { code: 'E_ARGUMENT' });
  });
});
