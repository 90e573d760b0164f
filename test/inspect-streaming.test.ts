/**
 * inspect and diff read tensors a chunk at a time (CHUNK_ELEMENTS values, src/inspect/blocks.ts):
 * tensors of more than one chunk, in safetensors (F32, BF16, F16) and in llama GGUF files (F32
 * and Q8_0, q rows in llama.cpp's permuted order), give the statistics of the whole tensor read
 * at once, and diff across formats as `same`. Chunks are whole blocks of BLOCK_ELEMENTS, so the
 * streamed statistics are bit for bit those of the tensor in memory.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { f32ToBF16Bits, f32ToF16Bits } from '../src/dtype.js';
import { GGML_TYPES, dequantizeGguf } from '../src/formats/gguf.js';
import { type GgufWriteTensor, encodeGgufTensorData, writeGguf } from '../src/formats/gguf-write.js';
import { type RawTensor, saveSafetensors } from '../src/formats/safetensors.js';
import { CHUNK_ELEMENTS, valueBlocks } from '../src/inspect/blocks.js';
import { diff } from '../src/inspect/diff.js';
import { inspect } from '../src/inspect/inspect.js';
import { tensorStats } from '../src/inspect/stats.js';
import { ggufTensorName, relayout, relayoutOf } from '../src/models/gguf/names.js';
import { seededRandom } from './harness/rng.js';

const HEADS = 10;
/** name, dtype, shape: every tensor over one chunk, none a whole number of chunks. */
const PLAN: Array<[string, 'F32' | 'BF16' | 'F16', [number, number]]> = [
  ['model.layers.0.self_attn.q_proj.weight', 'F32', [1280, 1024]],
  ['model.layers.0.mlp.up_proj.weight', 'BF16', [1100, 1024]],
  ['model.layers.0.mlp.down_proj.weight', 'F16', [1024, 1056]],
];

let dir: string;
/** Each tensor's values as f32 (what its dtype holds), by Hugging Face name. */
const values = new Map<string, Float32Array>();
let file: string;

function bytesOf(dtype: string, v: Float32Array): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(v.buffer.slice(0));
  const bits = Uint16Array.from(v, dtype === 'BF16' ? f32ToBF16Bits : f32ToF16Bits);
  return new Uint8Array(bits.buffer);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-inspect-streaming-'));
  const rng = seededRandom(10);
  const tensors = new Map<string, RawTensor>();
  for (const [name, dtype, shape] of PLAN) {
    const v = new Float32Array(shape[0] * shape[1]);
    for (let i = 0; i < v.length; i++) v[i] = (rng.next() - 0.5) * (1 + (i % 7));
    // Zeros, and a NaN and an infinity in the second chunk: counted there, not lost at the seam.
    for (let i = 0; i < v.length; i += 997) v[i] = 0;
    if (dtype !== 'F32') v[CHUNK_ELEMENTS + 5] = NaN;
    if (dtype === 'BF16') v[CHUNK_ELEMENTS + 9] = -Infinity;
    const bytes = bytesOf(dtype, v);
    tensors.set(name, { kind: 'raw', dtype, shape, bytes });
    // What the file holds, as f32 (exact for BF16 and F16).
    const held = new Float32Array(v.length);
    let i = 0;
    for (const block of valueBlocks(dtype, bytes)) for (const x of block) held[i++] = x;
    values.set(name, held);
  }
  file = join(dir, 'model.safetensors');
  await saveSafetensors(file, tensors);
});
after(() => rm(dir, { recursive: true, force: true }));

/** The statistics of values held whole in memory, for comparison with a streamed read. */
function statsInMemory(v: Float32Array) {
  const bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  return tensorStats({
    dtype: 'F32',
    numel: v.length,
    blocks: async function* () {
      yield* valueBlocks('F32', bytes);
    },
  });
}

/** A llama GGUF of the PLAN tensors as `type` (names and q rows as llama.cpp stores them). */
async function writeLlamaGguf(type: 'F32' | 'Q8_0', only?: string): Promise<string> {
  const tensors: GgufWriteTensor[] = [];
  for (const [name, , shape] of PLAN) {
    if (only !== undefined && name !== only) continue;
    const layout = relayoutOf('llama', name, { heads: HEADS, kvHeads: HEADS });
    const { data } = relayout(layout, values.get(name)!, shape, true);
    tensors.push({ name: ggufTensorName('llama', name)!, shape, data, type });
  }
  const path = join(dir, `model.${type}.gguf`);
  await writeGguf(path, {
    metadata: new Map([
      ['general.architecture', { type: 'string', value: 'llama' }],
      ['llama.attention.head_count', { type: 'u32', value: HEADS }],
      ['llama.attention.head_count_kv', { type: 'u32', value: HEADS }],
    ]),
    tensors,
  });
  return path;
}

describe('inspect and diff stream tensors of several chunks', () => {
  it('safetensors F32, BF16, F16: the statistics of each tensor read whole, bit for bit', async () => {
    const r = await inspect(file, { stats: true });
    for (const t of r.tensors) {
      const whole = await statsInMemory(values.get(t.name)!);
      assert.deepEqual({ stats: t.stats, histogram: t.histogram }, whole, t.name);
    }
    const byName = new Map(r.tensors.map((t) => [t.name, t.stats!]));
    assert.equal(byName.get('model.layers.0.mlp.up_proj.weight')!.nonfinite, 2);
    assert.equal(byName.get('model.layers.0.mlp.down_proj.weight')!.nonfinite, 1);
  });

  it('one tensor scaled by 2: exactly that tensor changed, rel_l2 1, every nonzero finite value moved', async () => {
    const scaledName = 'model.layers.0.self_attn.q_proj.weight';
    const tensors = new Map<string, RawTensor>();
    for (const [name, dtype, shape] of PLAN) {
      const v = values.get(name)!;
      tensors.set(name, {
        kind: 'raw',
        dtype,
        shape,
        bytes: bytesOf(dtype, name === scaledName ? v.map((x) => 2 * x) : v),
      });
    }
    const scaled = join(dir, 'scaled.safetensors');
    await saveSafetensors(scaled, tensors);
    const d = await diff(file, scaled);
    assert.deepEqual(
      d.tensors.map((t) => [t.name, t.status]),
      PLAN.map(([name]) => [name, name === scaledName ? 'changed' : 'same']),
    );
    const row = d.tensors.find((t) => t.name === scaledName)!;
    assert.ok(Math.abs(row.rel_l2! - 1) < 1e-12, `rel_l2 ${row.rel_l2}`);
    const v = values.get(scaledName)!;
    assert.equal(row.moved_fraction, v.filter((x) => x !== 0).length / v.length);
  });

  it('an F32 GGUF of the same weights (q rows permuted): diff all same; statistics equal up to summation order', async () => {
    const gguf = await writeLlamaGguf('F32');
    const d = await diff(file, gguf);
    assert.deepEqual(
      d.tensors.map((t) => t.status),
      PLAN.map(() => 'same'),
    );
    const a = await inspect(file, { stats: true });
    const b = await inspect(gguf, { stats: true });
    assert.deepEqual(
      b.tensors.map((t) => t.name),
      a.tensors.map((t) => t.name),
    );
    for (const [i, tb] of b.tensors.entries()) {
      const sa = a.tensors[i]!.stats!;
      const sb = tb.stats!;
      // Read in llama.cpp's row order, q's blocks sum in another order: the mean and std may
      // differ in their last bits, nothing else may.
      assert.ok(Math.abs(sb.mean! - sa.mean!) <= 1e-12 * sa.std!, `${tb.name} mean`);
      assert.ok(Math.abs(sb.std! - sa.std!) <= 1e-12 * sa.std!, `${tb.name} std`);
      assert.deepEqual({ ...sb, mean: 0, std: 0 }, { ...sa, mean: 0, std: 0 }, tb.name);
      assert.deepEqual(tb.histogram, a.tensors[i]!.histogram, tb.name);
    }
  });

  it('a Q8_0 GGUF: statistics of the tensor dequantized whole, bit for bit', async () => {
    const name = 'model.layers.0.self_attn.q_proj.weight';
    const gguf = await writeLlamaGguf('Q8_0', name);
    const [t] = (await inspect(gguf, { stats: true })).tensors;
    // Dequantized in the file's (permuted) row order, as inspect reads it.
    const q8 = [...GGML_TYPES.values()].find((x) => x.name === 'Q8_0')!;
    const { data } = relayout({ kind: 'permute', heads: HEADS }, values.get(name)!, PLAN[0]![2], true);
    const whole = dequantizeGguf(q8, encodeGgufTensorData('Q8_0', data), data.length);
    assert.deepEqual({ stats: t!.stats, histogram: t!.histogram }, await statsInMemory(whole));
  });
});
