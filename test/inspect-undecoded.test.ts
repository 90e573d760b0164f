/**
 * Bad input to inspect and diff beyond safetensors validation: tensors of a dtype knobs lists but
 * does not decode (safetensors F8_E4M3, GGUF Q2_K) are shown without statistics and left
 * uncompared — the rest of the model still is — and a GGUF file that fails validation gives its
 * reader's error from inspect, diff and the command line.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FormatError } from '../src/errors.js';
import { saveSafetensors } from '../src/formats/safetensors.js';
import { diff } from '../src/inspect/diff.js';
import { inspect } from '../src/inspect/inspect.js';
import { tensor } from '../src/ops/index.js';
import { cliInProcess } from './harness/cli.js';
import { GgufBytes } from './harness/gguf-bytes.js';

const GGML_F32 = 0;
const GGML_Q2_K = 10;

let dir: string;
let st: string;
let gguf: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-inspect-undecoded-'));
  st = join(dir, 'f8.safetensors');
  await saveSafetensors(st, {
    'h.0.w': tensor([1, 2, 0, -4]),
    'h.0.f8': { kind: 'raw', dtype: 'F8_E4M3', shape: [4], bytes: new Uint8Array([1, 2, 3, 4]) },
  });
  gguf = join(dir, 'q2k.gguf');
  const norm = new Float32Array([1, 2, 0, -4]);
  await writeFile(
    gguf,
    new GgufBytes()
      .header(2, 1)
      .kvString('general.architecture', 'llama')
      .tensorInfo('blk.0.ffn_down.weight', [256], GGML_Q2_K, 0)
      .tensorInfo('output_norm.weight', [4], GGML_F32, 96) // Q2_K: 256 values in 84 bytes, padded to 32
      .pad()
      .raw(new Uint8Array(96))
      .raw(new Uint8Array(norm.buffer))
      .bytes(),
  );
});
after(() => rm(dir, { recursive: true, force: true }));

describe('tensors knobs does not decode', () => {
  for (const [kind, undecoded, decoded] of [
    ['safetensors F8_E4M3', 'h.0.f8', 'h.0.w'],
    ['GGUF Q2_K', 'model.layers.0.mlp.down_proj.weight', 'model.norm.weight'],
  ] as const) {
    it(`${kind}: listed without statistics, uncompared by diff; the rest is read and compared`, async () => {
      const path = kind.startsWith('GGUF') ? gguf : st;
      const r = await inspect(path, { stats: true });
      const byName = new Map(r.tensors.map((t) => [t.name, t]));
      assert.equal(byName.get(undecoded)!.stats, null);
      assert.equal(byName.get(undecoded)!.histogram, undefined);
      assert.deepEqual(byName.get(decoded)!.stats, {
        mean: -0.25,
        std: Math.sqrt(5.1875),
        min: -4,
        max: 2,
        zero_fraction: 0.25,
        nonfinite: 0,
      });
      const d = await diff(path, path);
      assert.deepEqual(
        d.tensors.map((t) => [t.name, t.status]).sort(),
        [
          [decoded, 'same'],
          [undecoded, 'uncompared'],
        ].sort(),
      );
      assert.ok(d.notes.some((n) => /1 tensor has a dtype knobs does not decode/.test(n)));
      const cli = await cliInProcess(['inspect', path, '--stats']);
      assert.equal(cli.code, 0);
      assert.match(cli.stdout, new RegExp(`^${undecoded.replace(/\./g, '\\.')} .*\\(not decoded\\)$`, 'm'));
    });
  }
});

describe('a GGUF file that fails validation', () => {
  it("gives the reader's error from inspect, diff and the CLI (exit 1, E_FORMAT, nothing on stdout)", async () => {
    const truncated = join(dir, 'truncated.gguf');
    // The header promises a tensor whose data the file does not hold.
    await writeFile(
      truncated,
      new GgufBytes()
        .header(1, 0)
        .tensorInfo('output_norm.weight', [1024], GGML_F32, 0)
        .pad()
        .raw(new Uint8Array(8))
        .bytes(),
    );
    const isReaderError = (e: unknown): boolean => e instanceof FormatError && e.rule === 'gguf_data_past_end';
    await assert.rejects(inspect(truncated), isReaderError);
    await assert.rejects(diff(gguf, truncated), isReaderError);
    const cli = await cliInProcess(['inspect', truncated, '--stats']);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /E_FORMAT.*truncated\.gguf.*past the end of the file/);
    assert.equal(cli.stdout, '');
  });
});
