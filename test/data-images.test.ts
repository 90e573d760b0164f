/**
 * IDX files and the image loader: the real Fashion-MNIST files (Debian's dataset-fashion-mnist,
 * skipped when absent), malformed files (each rule by name), and the loader's determinism and
 * resumable position.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { FormatError } from '../src/errors.js';
import { IDX_RULES, parseIdx, readIdx, readIdxImages, readIdxLabels } from '../src/data/idx.js';
import {
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_DIR,
  type ImageDataset,
  ImageLoader,
  loadFashionMnist,
  loadIdxDataset,
} from '../src/data/images.js';
import { epochPermutation } from '../src/data/shuffle.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-idx-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** An IDX u8 file: header (magic 0x0000 08 rank, dims BE) + data. */
function idx(shape: number[], data: Uint8Array | number[], opts: { type?: number; magicHi?: number } = {}): Uint8Array {
  const head = new Uint8Array(4 + 4 * shape.length);
  const view = new DataView(head.buffer);
  view.setUint16(0, opts.magicHi ?? 0);
  head[2] = opts.type ?? 0x08;
  head[3] = shape.length;
  shape.forEach((d, i) => view.setUint32(4 + 4 * i, d));
  const out = new Uint8Array(head.byteLength + data.length);
  out.set(head);
  out.set(data, head.byteLength);
  return out;
}

async function put(name: string, bytes: Uint8Array): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, bytes);
  return path;
}

async function rejectsRule(p: Promise<unknown>, rule: string, path?: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof FormatError, `expected FormatError, got ${String(err)}`);
    assert.equal(err.rule, rule, err.message);
    assert.equal(err.code, 'E_FORMAT');
    if (path) assert.ok(err.message.includes(path), `message names the file: ${err.message}`);
    assert.ok((IDX_RULES as readonly string[]).includes(err.rule));
    return true;
  });
}

/** 5 images 2×3, pixel = 10·i + p, labels 0..4. */
function tiny(): { images: Uint8Array; labels: Uint8Array } {
  const px = Uint8Array.from({ length: 5 * 6 }, (_, k) => 10 * Math.floor(k / 6) + (k % 6));
  return { images: idx([5, 2, 3], px), labels: idx([5], [0, 1, 2, 3, 4]) };
}

const haveFashion = existsSync(join(FASHION_MNIST_DIR, 'train-images-idx3-ubyte.gz'));

describe(
  'Fashion-MNIST (real files)',
  { skip: haveFashion ? false : `${FASHION_MNIST_DIR} is not installed (apt install dataset-fashion-mnist)` },
  () => {
    let train: ImageDataset;
    let test: ImageDataset;
    before(async () => {
      [train, test] = await Promise.all([loadFashionMnist('train'), loadFashionMnist('test')]);
    });

    it('has 60000 train and 10000 test images of 28×28 with labels 0..9', () => {
      assert.equal(train.count, 60000);
      assert.equal(test.count, 10000);
      for (const d of [train, test]) {
        assert.equal(d.height, 28);
        assert.equal(d.width, 28);
        assert.equal(d.pixels.length, d.count * 784);
        const seen = new Set(d.labels);
        assert.deepEqual(
          [...seen].sort((a, b) => a - b),
          [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        );
      }
      // Balanced: 6000 / 1000 per class.
      const perClass = new Array(10).fill(0);
      for (const l of train.labels) perClass[l]++;
      assert.deepEqual(perClass, new Array(10).fill(6000));
    });

    it('starts with an ankle boot (label 9) in both splits', () => {
      assert.equal(train.labels[0], 9);
      assert.equal(FASHION_MNIST_CLASSES[train.labels[0]!], 'Ankle boot');
      assert.equal(test.labels[0], 9);
    });

    it('gives normalised f32 batches [B, 784] and [B, 1, 28, 28] with i32 labels', () => {
      const loader = new ImageLoader(train, { batchSize: 32, shuffle: false });
      const batch = loader.next();
      assert.deepEqual(batch.inputs.shape, [32, 784]);
      assert.equal(batch.inputs.dtype, 'f32');
      assert.deepEqual(batch.labels.shape, [32]);
      assert.equal(batch.labels.dtype, 'i32');
      const x = batch.inputs.storage as Float32Array;
      for (let p = 0; p < 784; p++) assert.equal(x[p], Math.fround(train.pixels[p]! / 255));
      assert.equal((batch.labels.storage as Int32Array)[0], 9);
      const nchw = new ImageLoader(test, { batchSize: 7, layout: 'nchw', normalize: { mean: 0.5, std: 0.5 } }).next();
      assert.deepEqual(nchw.inputs.shape, [7, 1, 28, 28]);
      const v = nchw.inputs.storage as Float32Array;
      assert.ok(v.every((e) => e >= -1 && e <= 1));
    });

    it('reads the same data from the raw (gunzipped) files', async () => {
      const { gunzipSync } = await import('node:zlib');
      const { readFile } = await import('node:fs/promises');
      const raw = await put(
        't10k-labels-idx1-ubyte',
        gunzipSync(await readFile(join(FASHION_MNIST_DIR, 't10k-labels-idx1-ubyte.gz'))),
      );
      assert.deepEqual(await readIdxLabels(raw), test.labels);
    });
  },
);

describe('IDX reader: malformed files', () => {
  it('reads a well-formed raw and gzip file alike', async () => {
    const { images, labels } = tiny();
    const raw = await readIdx(await put('ok-images', images));
    const gz = await readIdx(await put('ok-images.gz', gzipSync(images)));
    assert.deepEqual(raw.shape, [5, 2, 3]);
    assert.deepEqual(gz, raw);
    assert.deepEqual(parseIdx(images), raw);
    assert.deepEqual([...(await readIdxLabels(await put('ok-labels', labels)))], [0, 1, 2, 3, 4]);
  });

  it('rejects a bad magic number', async () => {
    const path = await put('bad-magic', idx([2], [0, 1], { magicHi: 0x1234 }));
    await rejectsRule(readIdx(path), 'bad_magic', path);
    await rejectsRule(readIdx(await put('text.gz', gzipSync(new TextEncoder().encode('hello world')))), 'bad_magic');
  });

  it('rejects element types other than u8, by name', async () => {
    const path = await put('f32', idx([1], [0, 0, 0, 0], { type: 0x0d }));
    await assert.rejects(readIdx(path), /0x0d \(f32\)/);
    await rejectsRule(readIdx(path), 'unsupported_type', path);
  });

  it('rejects rank 0 and ranks over the limit', async () => {
    await rejectsRule(readIdx(await put('rank0', idx([], []))), 'bad_rank');
    const r = idx([1], [1]);
    r[3] = 200;
    await rejectsRule(readIdx(await put('rank200', r)), 'bad_rank');
  });

  it('rejects files shorter or longer than their dims (raw and gzip)', async () => {
    const full = idx([4, 2, 2], new Uint8Array(16).fill(7));
    for (const [name, bytes, rule] of [
      ['short', full.subarray(0, full.length - 1), 'truncated'],
      ['long', Uint8Array.from([...full, 0]), 'trailing_bytes'],
      ['header-cut', full.subarray(0, 9), 'truncated'],
      ['three-bytes', full.subarray(0, 3), 'truncated'],
    ] as const) {
      const raw = await put(name, bytes);
      await rejectsRule(readIdx(raw), rule, raw);
      const gz = await put(`${name}.gz`, gzipSync(bytes));
      await rejectsRule(readIdx(gz), rule, gz);
      assert.throws(
        () => parseIdx(bytes, name),
        (e: unknown) => e instanceof FormatError && e.rule === rule,
      );
    }
  });

  it('rejects empty files, raw and gzip', async () => {
    await rejectsRule(readIdx(await put('empty', new Uint8Array(0))), 'empty');
    await rejectsRule(readIdx(await put('empty.gz', gzipSync(new Uint8Array(0)))), 'empty');
  });

  it('rejects a truncated or corrupt gzip stream', async () => {
    const gz = gzipSync(
      idx(
        [100, 10, 10],
        Uint8Array.from({ length: 10000 }, (_, i) => (i * 31) & 0xff),
      ),
    );
    await rejectsRule(readIdx(await put('cut.gz', gz.subarray(0, gz.length - 100))), 'truncated');
    const flipped = Uint8Array.from(gz);
    flipped[gz.length >> 1] ^= 0xff;
    await assert.rejects(
      readIdx(await put('flip.gz', flipped)),
      (e: unknown) => e instanceof FormatError && ['gzip_corrupt', 'truncated', 'trailing_bytes'].includes(e.rule),
    );
  });

  it('checks declared sizes before allocating: huge dims in a tiny file', async () => {
    // 4 GiB − 1 × 65535 × 65535 declared: over the limit, refused before any allocation.
    const huge = idx([0xffffffff, 0xffff, 0xffff], [1, 2, 3]);
    await rejectsRule(readIdx(await put('huge', huge)), 'too_large');
    await rejectsRule(readIdx(await put('huge.gz', gzipSync(huge))), 'too_large');
    // Under the limit but larger than the file: truncated, before allocation.
    const big = idx([1000, 1000, 100], [1, 2, 3]);
    await rejectsRule(readIdx(await put('big', big)), 'truncated');
    // A 100 MB claim in a ~40-byte gzip cannot be true (deflate inflates at most ~1032×).
    await rejectsRule(readIdx(await put('big.gz', gzipSync(big))), 'truncated');
    await rejectsRule(
      readIdx(await put('small-limit', idx([10, 10], new Uint8Array(100))), { maxBytes: 99 }),
      'too_large',
    );
  });

  it('tells image and label files apart, and checks labels against the images', async () => {
    const { images, labels } = tiny();
    const img = await put('i', images);
    const lab = await put('l', labels);
    await rejectsRule(readIdxImages(lab), 'wrong_rank', lab);
    await rejectsRule(readIdxLabels(img), 'wrong_rank', img);
    const ds = await loadIdxDataset(img, lab, { numClasses: 5 });
    assert.equal(ds.count, 5);
    const fewer = await put('l4', idx([4], [0, 1, 2, 3]));
    await rejectsRule(loadIdxDataset(img, fewer), 'count_mismatch', fewer);
    await rejectsRule(loadIdxDataset(img, lab, { numClasses: 4 }), 'label_out_of_range', lab);
    await rejectsRule(loadIdxDataset(await put('i0', idx([0, 2, 3], [])), await put('l0', idx([0], []))), 'empty');
  });

  it('reports a missing file as IOError', async () => {
    await assert.rejects(readIdx(join(dir, 'nope')), { code: 'E_IO' });
  });
});

describe('ImageLoader', () => {
  /** 10 images 1×2 whose pixels encode the index; label = index % 3. */
  const ds: ImageDataset = {
    count: 10,
    height: 1,
    width: 2,
    numClasses: 3,
    pixels: Uint8Array.from({ length: 20 }, (_, k) => Math.floor(k / 2) * 20 + (k % 2)),
    labels: Uint8Array.from({ length: 10 }, (_, i) => i % 3),
  };

  it('permutations are deterministic given (seed, epoch) and differ across epochs and seeds', () => {
    const a = epochPermutation(1000, 7, 3);
    assert.deepEqual(a, epochPermutation(1000, 7, 3));
    assert.notDeepEqual(a, epochPermutation(1000, 7, 4));
    assert.notDeepEqual(a, epochPermutation(1000, 8, 3));
    assert.deepEqual(
      [...a].sort((x, y) => x - y),
      Array.from({ length: 1000 }, (_, i) => i),
    );
  });

  it('covers every image once per epoch, with a short last batch, then moves to the next epoch', () => {
    const loader = new ImageLoader(ds, { batchSize: 4, seed: 1 });
    assert.equal(loader.batchesPerEpoch, 3);
    const sizes: number[] = [];
    const seen: number[] = [];
    for (const b of loader.epoch()) {
      sizes.push(b.labels.shape[0]!);
      seen.push(...b.indices);
      assert.equal(b.epoch, 0);
      // Each row holds its own image and label.
      const x = b.inputs.storage as Float32Array;
      const y = b.labels.storage as Int32Array;
      b.indices.forEach((i, r) => {
        assert.equal(x[2 * r], Math.fround((i * 20) / 255));
        assert.equal(y[r], i % 3);
      });
    }
    assert.deepEqual(sizes, [4, 4, 2]);
    assert.deepEqual(
      seen.sort((a, b) => a - b),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    assert.deepEqual(loader.position, { epoch: 0, index: 10 });
    assert.equal(loader.next().epoch, 1);
  });

  it('dropLast drops the partial batch', () => {
    const loader = new ImageLoader(ds, { batchSize: 4, dropLast: true });
    assert.deepEqual(
      [...loader.epoch()].map((b) => b.indices.length),
      [4, 4],
    );
    assert.deepEqual(loader.next().index, 0);
  });

  it('resumes from a saved state exactly', () => {
    const a = new ImageLoader(ds, { batchSize: 3, seed: 42 });
    for (let i = 0; i < 5; i++) a.next(); // into epoch 1
    const state = JSON.parse(JSON.stringify(a.getState()));
    const expected = Array.from({ length: 9 }, () => [...a.next().indices]);
    const b = new ImageLoader(ds, { batchSize: 3, seed: 42 });
    b.setState(state);
    assert.deepEqual(
      Array.from({ length: 9 }, () => [...b.next().indices]),
      expected,
    );
    assert.throws(() => new ImageLoader(ds, { batchSize: 3, seed: 43 }).setState(state), { code: 'E_ARGUMENT' });
    assert.throws(() => b.setPosition({ epoch: 0, index: 11 }), { code: 'E_ARGUMENT' });
  });

  it('shuffle: false keeps file order', () => {
    const loader = new ImageLoader(ds, { batchSize: 10, shuffle: false });
    assert.deepEqual([...loader.next().indices], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });
});
