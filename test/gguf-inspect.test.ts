/**
 * Issue 10's evidence for GGUF: the same weights as one safetensors file, as two shards with a
 * `transformer.` / `model.` prefix, and as an F32 GGUF file diff as `same` tensor for tensor
 * (but GPT-2's mask buffers and tied lm_head, which GGUF files do not carry)
 * (GGUF names mapped back, q/k un-permuted, Conv1D transposed back). Against their Q8_0 GGUF, each
 * tensor's rel_l2 and moved_fraction equal the quantization error computed here, independently,
 * from the definition of Q8_0 (ggml-common.h: blocks of 32 along a row, d = amax/127 stored as
 * f16, q = round(x/d)) and of F16 for the matrices llama.cpp keeps F16.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { f16BitsToF32, f32ToF16Bits } from '../src/dtype.js';
import { loadSafetensors, saveSafetensors } from '../src/formats/safetensors.js';
import { diff } from '../src/inspect/diff.js';
import { inspect } from '../src/inspect/inspect.js';
import { convertModel } from '../src/load/convert.js';
import { repoRoot } from './harness/fixtures.js';
import { fixtureWithTokenizer } from './harness/tiny-vocab.js';

const HF_DIR = join(repoRoot(), 'test', 'fixtures', 'hf');
let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'knobs-gguf-inspect-'));
});
after(() => rm(tmp, { recursive: true, force: true }));

/** The weights of a sharded fixture as one safetensors file, names as `rename` makes them. */
async function singleFile(fixture: string, rename: (n: string) => string): Promise<string> {
  const path = join(tmp, `${fixture}.safetensors`);
  const merged = new Map();
  for (const shard of ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']) {
    const { tensors } = await loadSafetensors(join(HF_DIR, fixture, shard));
    for (const [name, t] of tensors) merged.set(rename(name), t);
  }
  await saveSafetensors(path, merged);
  return path;
}

async function gguf(fixture: string, dtype: string): Promise<string> {
  const dir = join(tmp, `${fixture}-${dtype}`);
  await fixtureWithTokenizer(join(HF_DIR, fixture), dir);
  const out = join(tmp, `${fixture}.${dtype}.gguf`);
  await convertModel({ input: dir, format: 'gguf', dtype, out });
  return out;
}

const f16 = (x: number): number => f16BitsToF32(f32ToF16Bits(x));

/** Q8_0 of one row, by the definition: the scale is computed in f32, stored (and applied) as f16. */
function q8_0Row(row: Float32Array): Float32Array {
  const out = new Float32Array(row.length);
  for (let b = 0; b < row.length; b += 32) {
    const block = row.subarray(b, b + 32);
    const d = Math.fround(Math.max(...block.map(Math.abs)) / 127);
    const id = d === 0 ? 0 : Math.fround(1 / d);
    block.forEach((x, j) => {
      const q = Math.fround(x * id);
      out[b + j] = Math.sign(q) * Math.floor(Math.abs(q) + 0.5) * f16(d);
    });
  }
  return out;
}

describe('diff sees the same weights in safetensors, shards and GGUF', () => {
  it('GPT-2 (shards with transformer., one bare file, F32 GGUF) and Llama (shards with model., one file, F32 GGUF): all same', async () => {
    for (const [fixture, rename] of [
      ['gpt2-prefix-f16-shards', (n: string) => n.replace(/^transformer\./, '')],
      ['mistral-gqa-shards', (n: string) => n],
    ] as const) {
      const shards = join(HF_DIR, fixture);
      const one = await singleFile(fixture, rename);
      const f32 = await gguf(fixture, 'f32');
      for (const [a, b] of [
        [shards, one],
        [shards, f32],
        [one, f32],
      ]) {
        const d = await diff(a!, b!);
        // GPT-2's checkpoints also carry the attention-mask buffers and the tied lm_head, which
        // are not weights: llama.cpp's converter leaves them out of the GGUF file.
        const notInGguf =
          b!.endsWith('.gguf') && fixture.startsWith('gpt2')
            ? ['h.0.attn.bias', 'h.1.attn.bias', 'lm_head.weight']
            : [];
        const removed = d.tensors.filter((t) => t.status === 'removed').map((t) => t.name);
        assert.deepEqual(removed.sort(), notInGguf, `${a} vs ${b}`);
        const statuses = new Set(d.tensors.filter((t) => t.status !== 'removed').map((t) => t.status));
        assert.deepEqual(
          [...statuses],
          ['same'],
          `${a} vs ${b}: ${JSON.stringify(d.tensors.filter((t) => t.status !== 'same').slice(0, 2))}`,
        );
      }
    }
  });

  it("against the Q8_0 GGUF, each tensor's rel_l2 and moved_fraction are Q8_0's (or F16's) own error", async () => {
    const shards = join(HF_DIR, 'mistral-gqa-shards');
    const q8 = await gguf('mistral-gqa-shards', 'q8_0');
    const d = await diff(shards, q8);
    const report = await inspect(q8, {});
    const typeOf = new Map(report.tensors.map((t) => [t.name, t.dtype]));
    const original = new Map<string, { shape: readonly number[]; data: Float32Array }>();
    for (const shard of ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']) {
      const { tensors } = await loadSafetensors(join(shards, shard));
      for (const [name, t] of tensors) {
        const tensor = t as unknown as { shape: number[]; contiguousStorage(): Float32Array };
        original.set(name, { shape: tensor.shape, data: tensor.contiguousStorage() });
      }
    }
    const seen = new Set<string>();
    for (const t of d.tensors) {
      const { shape, data } = original.get(t.name)!;
      const type = typeOf.get(t.name);
      const cols = shape[shape.length - 1]!;
      const expected = new Float32Array(data.length);
      for (let r = 0; r < data.length; r += cols) {
        const row = data.subarray(r, r + cols);
        expected.set(type === 'Q8_0' ? q8_0Row(row) : type === 'F16' ? row.map(f16) : row, r);
      }
      let diffSq = 0;
      let aSq = 0;
      let moved = 0;
      data.forEach((a, i) => {
        const e = Math.abs(a - expected[i]!);
        diffSq += e * e;
        aSq += a * a;
        if (e > 1e-6 * Math.abs(a)) moved++;
      });
      seen.add(type!);
      assert.equal(t.status, moved === 0 ? 'same' : 'changed', t.name);
      assert.equal(t.moved_fraction, moved / data.length, `${t.name}: moved_fraction`);
      const relL2 = Math.sqrt(diffSq / aSq);
      assert.ok(Math.abs(t.rel_l2! - relL2) <= 1e-9 + 1e-6 * relL2, `${t.name}: rel_l2 ${t.rel_l2} vs ${relL2}`);
    }
    assert.deepEqual([...seen].sort(), ['F16', 'F32', 'Q8_0']);
  });
});
