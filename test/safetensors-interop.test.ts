/**
 * Interop with PyTorch, without needing Python at test time:
 * - torch_basic.safetensors was made from torch tensors by scripts/gen_safetensors_fixtures.py;
 *   knobs must read torch's exact values (torch_basic.expected.json) and re-write the same bytes.
 * - knobs_written.safetensors was written by knobs from knobs_written.recipe.json and checked by
 *   that script's --verify mode (recorded in provenance.json); knobs must still write exactly it.
 *   To regenerate: KNOBS_UPDATE_FIXTURES=1 node --test dist/test/safetensors-interop.test.js,
 *   then /usr/bin/python3 scripts/gen_safetensors_fixtures.py --verify test/fixtures/safetensors/knobs_written.safetensors
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { type DType, storageBytes } from '../src/dtype.js';
import { fromArray } from '../src/ops/index.js';
import { Tensor } from '../src/tensor.js';
import { type SafetensorsDType, knobsDTypeOf } from '../src/formats/safetensors-header.js';
import { type SafetensorsValue, loadSafetensors, saveSafetensors } from '../src/formats/safetensors.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/safetensors/', import.meta.url));
const fixture = (name: string) => join(FIXTURES, name);
const readJson = async <T>(name: string): Promise<T> => JSON.parse(await readFile(fixture(name), 'utf8')) as T;
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

type JsonScalar = number | string;
interface Expected {
  metadata: Record<string, string>;
  tensors: Record<string, { dtype: SafetensorsDType; shape: number[]; values: JsonScalar[]; sha256: string }>;
}
interface Recipe {
  metadata: Record<string, string>;
  tensors: Array<{ name: string; dtype: SafetensorsDType; shape: number[]; values?: JsonScalar[]; hex?: string }>;
}
interface Provenance {
  torch_version: string;
  files: Record<string, { sha256: string; verified_by?: string; verified_with_torch?: string }>;
}

/** The JSON encoding the script uses: non-finite floats by name, i64 as decimal strings. */
function decode(v: JsonScalar): number {
  if (v === 'nan') return NaN;
  if (v === 'inf') return Infinity;
  if (v === '-inf') return -Infinity;
  return Number(v);
}

function valuesOf(t: Tensor): JsonScalar[] {
  if (t.dtype === 'i64') return [...(t.contiguousStorage() as BigInt64Array)].map(String);
  return t.toFlatArray();
}

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-st-interop-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('safetensors files PyTorch produced', () => {
  it("read with torch's exact values, dtypes, shapes and bytes", async () => {
    const expected = await readJson<Expected>('torch_basic.expected.json');
    const { tensors, metadata } = await loadSafetensors(fixture('torch_basic.safetensors'));
    assert.deepEqual(Object.fromEntries(metadata!), expected.metadata);
    assert.deepEqual([...tensors.keys()].sort(), Object.keys(expected.tensors).sort());
    for (const [name, want] of Object.entries(expected.tensors)) {
      const got = tensors.get(name);
      assert.ok(got instanceof Tensor, name);
      assert.equal(got.dtype, knobsDTypeOf(want.dtype), name);
      assert.deepEqual(got.shape, want.shape, name);
      assert.equal(sha256(storageBytes(got.contiguousStorage())), want.sha256, name);
      const wantValues = got.dtype === 'i64' ? want.values : want.values.map(decode);
      assert.deepEqual(valuesOf(got), wantValues, name);
    }
  });

  it("re-write byte for byte (both follow upstream's layout)", async () => {
    const original = await readFile(fixture('torch_basic.safetensors'));
    const { tensors, metadata } = await loadSafetensors(fixture('torch_basic.safetensors'));
    const copy = join(dir, 'copy.safetensors');
    await saveSafetensors(copy, tensors, metadata);
    assert.deepEqual(await readFile(copy), original);
  });
});

function fromRecipe(recipe: Recipe): Map<string, SafetensorsValue> {
  const out = new Map<string, SafetensorsValue>();
  for (const t of recipe.tensors) {
    if (t.hex !== undefined) {
      out.set(t.name, {
        kind: 'raw',
        dtype: t.dtype,
        shape: t.shape,
        bytes: Uint8Array.from(Buffer.from(t.hex, 'hex')),
      });
      continue;
    }
    const dtype = knobsDTypeOf(t.dtype) as DType;
    const values = dtype === 'i64' ? t.values!.map((v) => BigInt(v)) : t.values!.map(decode);
    out.set(t.name, fromArray(values as ArrayLike<number>, t.shape, { dtype }));
  }
  return out;
}

describe('safetensors files knobs writes', () => {
  it('are exactly the bytes PyTorch verified', async () => {
    const recipe = await readJson<Recipe>('knobs_written.recipe.json');
    const committed = fixture('knobs_written.safetensors');
    const target = process.env['KNOBS_UPDATE_FIXTURES'] === '1' ? committed : join(dir, 'knobs_written.safetensors');
    await saveSafetensors(target, fromRecipe(recipe), new Map(Object.entries(recipe.metadata)));
    const written = await readFile(target);
    assert.deepEqual(written, await readFile(committed));
    const provenance = await readJson<Provenance>('provenance.json');
    const record = provenance.files['knobs_written.safetensors'];
    assert.ok(record?.verified_by, 'provenance.json records no --verify run for knobs_written.safetensors');
    assert.equal(
      record.sha256,
      sha256(written),
      'knobs_written.safetensors changed since it was verified; rerun --verify',
    );
  });

  it('the provenance names the torch version and matches the torch-made file', async () => {
    const provenance = await readJson<Provenance>('provenance.json');
    assert.match(provenance.torch_version, /^\d+\.\d+/);
    assert.equal(
      provenance.files['torch_basic.safetensors']!.sha256,
      sha256(await readFile(fixture('torch_basic.safetensors'))),
    );
  });
});
