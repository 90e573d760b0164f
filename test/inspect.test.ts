/**
 * inspect --stats and diff (src/inspect/): statistics against numpy's float64 values
 * (scripts/gen_inspect_fixtures.py), the same weights in two layouts diffing as all `same`, one
 * scaled tensor showing as the only change, and bad input.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { FormatError } from '../src/errors.js';
import { loadSafetensors, saveSafetensors, type SafetensorsValue } from '../src/formats/safetensors.js';
import { diff, inspect, type ModelDiff, type ModelInspection, type TensorStats } from '../src/index.js';
import { mul, tensor } from '../src/ops/index.js';
import { Tensor } from '../src/tensor.js';
import { cliInProcess } from './harness/cli.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const at = (rel: string): string => join(ROOT, rel);
const GPT2 = at('test/fixtures/hf/gpt2-tiny');
const NONFINITE = at('test/fixtures/inspect/nonfinite.safetensors');

type Expected = { stats: Record<keyof TensorStats, number | string | null>; histogram: number[] };
interface ExpectedFile {
  files: Record<string, Record<string, Expected>>;
}

/** numpy's non-finite numbers come as strings in the JSON. */
const numberOf = (v: number | string | null): number | null =>
  typeof v === 'string' ? Number(v.replace('inf', 'Infinity').replace('nan', 'NaN')) : v;

function assertClose(actual: number | null, expected: number | string | null, what: string): void {
  const e = numberOf(expected);
  if (e === null || actual === null) return assert.equal(actual, e, what);
  if (!Number.isFinite(e)) return assert.ok(Object.is(actual, e), `${what}: ${actual} vs ${e}`);
  assert.ok(Math.abs(actual - e) <= 1e-6 * Math.abs(e) + 1e-12, `${what}: ${actual} vs numpy ${e}`);
}

let expected: ExpectedFile;
let dir: string;
before(async () => {
  expected = JSON.parse(await readFile(at('test/fixtures/inspect/stats.expected.json'), 'utf8')) as ExpectedFile;
  dir = await mkdtemp(join(tmpdir(), 'knobs-inspect-diff-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function checkStats(report: ModelInspection, want: Record<string, Expected>, where: string): void {
  assert.equal(report.tensors.length, Object.keys(want).length, where);
  for (const t of report.tensors) {
    const e = want[t.sourceName ?? t.name];
    assert.ok(e, `${where}: ${t.name} has reference statistics`);
    for (const key of ['mean', 'std', 'min', 'max', 'zero_fraction', 'nonfinite'] as const) {
      assertClose(t.stats![key], e.stats[key], `${where} ${t.name} ${key}`);
    }
    assert.deepEqual(t.histogram, e.histogram, `${where} ${t.name} histogram`);
  }
}

describe('inspect --stats against numpy (float64)', () => {
  it('matches every tensor of every fixture file within 1e-6 relative, histograms exactly', async () => {
    let tensors = 0;
    for (const [rel, want] of Object.entries(expected.files)) {
      checkStats(await inspect(at(rel), { stats: true }), want, rel);
      tensors += Object.keys(want).length;
    }
    assert.ok(tensors > 90);
  });

  it('counts NaN and Inf and leaves them out of the other statistics; an all-NaN tensor is no crash', async () => {
    const r = await inspect(NONFINITE, { stats: true });
    const byName = new Map(r.tensors.map((t) => [t.name, t]));
    assert.deepEqual(byName.get('all_nan')!.stats, {
      mean: null,
      std: null,
      min: null,
      max: null,
      zero_fraction: 0,
      nonfinite: 32,
    });
    assert.equal(byName.get('mixed')!.stats!.nonfinite, 4);
    assert.ok(Number.isFinite(byName.get('mixed')!.stats!.mean!));
    // Over one 65,536-element block, around 1000 with a std of 0.01: no cancellation.
    assert.ok(Math.abs(byName.get('big.offset_f32')!.stats!.std! - 0.01) < 1e-3);
  });

  it('reads a sharded directory under canonical names, with the same statistics as its files', async () => {
    const shards = 'test/fixtures/hf/gpt2-prefix-f16-shards';
    const r = await inspect(at(shards), { stats: true });
    assert.equal(r.format, 'hf-directory');
    assert.equal(r.architecture, 'gpt2');
    assert.deepEqual(r.files, ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    assert.ok(r.tensors.every((t) => !t.name.startsWith('transformer.')));
    // lm_head.weight sits outside GPT2Model, so it never had the prefix.
    assert.deepEqual(
      r.tensors.filter((t) => t.sourceName !== `transformer.${t.name}`).map((t) => [t.name, t.sourceName]),
      [['lm_head.weight', undefined]],
    );
    for (const file of r.files) {
      const want = expected.files[`${shards}/${file}`]!;
      checkStats({ ...r, tensors: r.tensors.filter((t) => t.file === file) }, want, file);
    }
  });

  it('headers alone without stats: no stats fields, parameter count from shapes', async () => {
    const r = await inspect(GPT2);
    assert.equal(r.tensors[0]!.stats, undefined);
    assert.equal(
      r.parameterCount,
      r.tensors.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0),
    );
  });
});

/** The weights of gpt2-tiny as two shards with GPT-2's `transformer.` prefix, in `out`. */
async function writePrefixedShards(out: string, tensors: Map<string, SafetensorsValue>): Promise<void> {
  await mkdir(out, { recursive: true });
  const names = [...tensors.keys()];
  const half = Math.ceil(names.length / 2);
  const weightMap: Record<string, string> = {};
  for (const [i, part] of [names.slice(0, half), names.slice(half)].entries()) {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    await saveSafetensors(join(out, file), new Map(part.map((n) => [`transformer.${n}`, tensors.get(n)!])));
    for (const n of part) weightMap[`transformer.${n}`] = file;
  }
  await writeFile(join(out, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  await copyFile(join(GPT2, 'config.json'), join(out, 'config.json'));
}

describe('diff', () => {
  it('the same weights as one file and as two prefixed shards: every tensor same, nothing moved', async () => {
    const { tensors } = await loadSafetensors(join(GPT2, 'model.safetensors'));
    const shards = join(dir, 'shards');
    await writePrefixedShards(shards, tensors);
    const d = await diff(GPT2, shards);
    assert.equal(d.tensors.length, tensors.size);
    assert.ok(
      d.tensors.every((t) => t.status === 'same' && t.rel_l2 === 0 && t.max_abs === 0 && t.moved_fraction === 0),
    );
    assert.deepEqual(d.notes, []);
    assert.ok(d.layers.every((l) => l.rel_l2 === 0));
    // And the bare safetensors file (no config: the prefix is dropped all the same).
    const single = await diff(join(GPT2, 'model.safetensors'), shards);
    assert.ok(single.tensors.every((t) => t.status === 'same'));
  });

  it('one tensor scaled by 1.5: exactly that tensor changed, rel_l2 0.5, its layer first', async () => {
    const { tensors } = await loadSafetensors(join(GPT2, 'model.safetensors'));
    const target = 'h.1.mlp.c_fc.weight';
    const original = tensors.get(target) as Tensor;
    tensors.set(target, mul(original, 1.5));
    const scaled = join(dir, 'scaled');
    await mkdir(scaled);
    await saveSafetensors(join(scaled, 'model.safetensors'), tensors);
    await copyFile(join(GPT2, 'config.json'), join(scaled, 'config.json'));
    const d = await diff(GPT2, scaled);
    const changed = d.tensors.filter((t) => t.status !== 'same');
    assert.deepEqual(
      changed.map((t) => t.name),
      [target],
    );
    const row = changed[0]!;
    assert.ok(Math.abs(row.rel_l2! - 0.5) < 1e-6, `rel_l2 ${row.rel_l2}`);
    const values = [...(original.contiguousStorage() as Float32Array)];
    assert.equal(row.moved_fraction, values.filter((v) => v !== 0).length / values.length);
    assert.ok(Math.abs(row.max_abs! - 0.5 * Math.max(...values.map(Math.abs))) < 1e-6);
    assert.equal(d.layers[0]!.layer, 1);
    assert.equal(d.layers[0]!.changed, 1);
    assert.ok(d.layers.slice(1).every((l) => l.rel_l2 === 0));
    // A tolerance above the change: nothing moved, the norms still say how far.
    const loose = await diff(GPT2, scaled, { atol: 10 });
    assert.ok(loose.tensors.every((t) => t.status === 'same'));
    assert.ok(Math.abs(loose.tensors.find((t) => t.name === target)!.rel_l2! - 0.5) < 1e-6);
  });

  it('a Llama saved from the bare LlamaModel (no model. prefix) matches its LlamaForCausalLM copy', async () => {
    const llama = at('test/fixtures/hf/llama-gqa-bf16-llama3');
    const { tensors } = await loadSafetensors(join(llama, 'model.safetensors'));
    const bare = join(dir, 'llama-bare');
    await mkdir(bare);
    const renamed = new Map(
      [...tensors].filter(([n]) => n !== 'lm_head.weight').map(([n, t]) => [n.replace(/^model\./, ''), t]),
    );
    assert.ok(
      renamed.has('layers.0.self_attn.q_proj.weight') &&
        renamed.has('embed_tokens.weight') &&
        renamed.has('norm.weight'),
    );
    await saveSafetensors(join(bare, 'model.safetensors'), renamed);
    await copyFile(join(llama, 'config.json'), join(bare, 'config.json'));
    const d = await diff(llama, bare);
    assert.deepEqual(
      d.tensors.filter((t) => t.status !== 'same').map((t) => [t.name, t.status]),
      [['lm_head.weight', 'removed']],
    );
  });

  it('different architectures: says what does not match, compares what it can', async () => {
    const d = await diff(at('test/fixtures/hf/mistral-gqa-shards'), at('test/fixtures/hf/llama-gqa-bf16-llama3'));
    assert.match(d.notes[0]!, /architectures differ: a is mistral, b is llama/);
    const reshaped = d.tensors.filter((t) => t.status === 'reshaped');
    assert.equal(reshaped.length, 4);
    assert.deepEqual(reshaped[0]!.shape_b, [16, 32]);
    assert.equal(d.tensors.filter((t) => t.status === 'changed').length, 17);
    const other = await diff(GPT2, at('test/fixtures/hf/qwen2-bias-tied'));
    assert.ok(other.tensors.every((t) => t.status === 'added' || t.status === 'removed'));
    assert.ok(other.notes.some((n) => /only in a \(removed\)/.test(n)));
  });

  it('a knobs run directory reads as one (recipe.json), with the same tensors', async () => {
    const run = join(dir, 'run');
    await mkdir(run);
    for (const f of ['config.json', 'model.safetensors']) await copyFile(join(GPT2, f), join(run, f));
    await writeFile(join(run, 'recipe.json'), '{}');
    const r = await inspect(run);
    assert.equal(r.format, 'knobs-run');
    const d = await diff(run, GPT2);
    assert.ok(d.tensors.every((t) => t.status === 'same'));
  });
});

describe('inspect and diff: bad input', () => {
  let broken: string;
  before(async () => {
    broken = join(dir, 'broken.safetensors');
    const header = Buffer.from('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}    ');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.byteLength));
    await writeFile(broken, Buffer.concat([len, header, Buffer.alloc(4)]));
  });

  it("a file that fails validation gives the reader's error, from inspect, diff and the CLI", async () => {
    await assert.rejects(
      inspect(broken, { stats: true }),
      (e: unknown) => e instanceof FormatError && e.rule === 'truncated',
    );
    await assert.rejects(diff(GPT2, broken), (e: unknown) => e instanceof FormatError && e.rule === 'truncated');
    const r = await cliInProcess(['diff', broken, GPT2]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /E_FORMAT.*truncated/);
    assert.equal(r.stdout, '');
  });

  it('NaN and Inf in a diff: the same non-finite values have not moved, a new NaN has', async () => {
    const same = await diff(NONFINITE, NONFINITE);
    assert.ok(
      same.tensors.every((t) => t.status === 'same' && t.rel_l2 === 0),
      JSON.stringify(same.tensors.filter((t) => t.status !== 'same')),
    );
    const { tensors } = await loadSafetensors(NONFINITE);
    const mixed = tensors.get('mixed') as Tensor;
    const values = new Float32Array(mixed.contiguousStorage() as Float32Array);
    values[0] = NaN;
    tensors.set('mixed', Tensor.fromStorage(values, mixed.shape, 'f32'));
    const changed = join(dir, 'nan-added.safetensors');
    await saveSafetensors(changed, tensors);
    const d = await diff(NONFINITE, changed);
    const row = d.tensors.find((t) => t.name === 'mixed')!;
    assert.equal(row.status, 'changed');
    assert.equal(row.moved_fraction, 1 / 100);
    assert.ok(d.tensors.filter((t) => t.name !== 'mixed').every((t) => t.status === 'same'));
  });

  it('two tensors that map to one canonical name: a FormatError naming it', async () => {
    const twice = join(dir, 'twice.safetensors');
    await saveSafetensors(twice, { 'h.0.w': tensor([1, 2]), 'transformer.h.0.w': tensor([1, 2]) });
    await assert.rejects(
      inspect(twice),
      (e: unknown) =>
        e instanceof FormatError && e.rule === 'inspect_duplicate_name' && e.details['tensor'] === 'h.0.w',
    );
  });

  it('a missing path is an IOError; a bad --atol a usage error', async () => {
    const r = await cliInProcess(['inspect', join(dir, 'nope'), '--stats']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /E_IO/);
    const a = await cliInProcess(['diff', GPT2, GPT2, '--atol', 'x']);
    assert.equal(a.code, 2);
    assert.match(a.stderr, /--atol needs a number/);
  });
});

describe('knobs inspect --stats and knobs diff (CLI)', () => {
  it('inspect DIR --stats --json: one object with stats per tensor; the table has a histogram column', async () => {
    const j = await cliInProcess(['inspect', at('test/fixtures/hf/gpt2-prefix-f16-shards'), '--stats', '--json']);
    assert.equal(j.code, 0);
    const r = JSON.parse(j.stdout) as ModelInspection;
    assert.equal(r.tensors.length, 31);
    assert.deepEqual(Object.keys(r.tensors[0]!.stats!), ['mean', 'std', 'min', 'max', 'zero_fraction', 'nonfinite']);
    const t = await cliInProcess(['inspect', NONFINITE, '--stats']);
    assert.equal(t.code, 0);
    assert.match(t.stdout, /^all_nan +F32 +\[4, 8\] +128 +- +- +- +- +0 +32 +\|\s*\|$/m);
    assert.match(t.stdout, /histogram/);
  });

  it('diff --json is {a, b, atol, notes, tensors, layers}; the table lists statuses and layers', async () => {
    const j = await cliInProcess(['diff', GPT2, at('test/fixtures/hf/gpt2-prefix-f16-shards'), '--json']);
    assert.equal(j.code, 0);
    const d = JSON.parse(j.stdout) as ModelDiff;
    assert.deepEqual(Object.keys(d), ['a', 'b', 'atol', 'notes', 'tensors', 'layers']);
    assert.ok(d.tensors.some((t) => t.status === 'added'));
    const t = await cliInProcess(['diff', GPT2, GPT2]);
    assert.match(t.stdout, /^28 same \(atol 0\)$/m);
    assert.match(t.stdout, /layers, most moved first:/);
  });
});
