/**
 * `knobs tune` end to end on a byte-level GPT base trained here on real text (Genesis 1–4 of the
 * KJV): a LoRA tune writes a PEFT adapter whose checkpoints hold only the LoRA tensors and their
 * optimizer state, and a run stopped with SIGINT resumes to a bitwise-identical adapter; a
 * freezing tune leaves every frozen weight bit-identical; generate/eval take --adapter (refused on
 * another base unless --allow-base-mismatch); several adapters on one base do not cross-talk; bad
 * recipes fail before anything is written.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { AdapterSet } from '../src/finetune/adapter-set.js';
import { loadTuneRecipe } from '../src/train/tune-recipe.js';
import { parseLoraConfig, planLora } from '../src/finetune/lora.js';
import { loadHfModel } from '../src/models/hf/load.js';
import { loadLoraAdapter } from '../src/finetune/adapter.js';
import { describeAdapter } from '../src/finetune/adapter-info.js';
import { dequantizeLayers } from '../src/finetune/quantized-base.js';
import { loadSafetensors } from '../src/formats/safetensors.js';
import { readGguf } from '../src/formats/gguf.js';
import { openFileSource } from '../src/io/byte-source.js';
import type { QuantizedLinear } from '../src/nn/quantized-linear.js';
import { openLanguageModel } from '../src/load/language-model.js';
import { loadGgufModel } from '../src/models/gguf/load.js';
import { fromArray } from '../src/ops/creation.js';
import type { Tensor } from '../src/tensor.js';
import { cli, cliInProcess, startCli } from './harness/cli.js';
import { convertModel } from '../src/load/convert.js';
import { Generator } from '../src/random.js';
import { repoRoot } from './harness/fixtures.js';
import { fixtureWithTokenizer } from './harness/tiny-vocab.js';

const HF_FIXTURES = join(repoRoot(), 'test', 'fixtures', 'hf');

const TEXT = fileURLToPath(new URL('../../test/fixtures/text/genesis-1-4.txt', import.meta.url));
const data = { type: 'text', path: TEXT, validation_fraction: 0.1 };
const BASE_RECIPE = {
  name: 'tune-base',
  model: { type: 'gpt', n_positions: 32, n_embd: 32, n_layer: 2, n_head: 2 },
  data,
  optimizer: { type: 'adamw', lr: 0.003 },
  batch_size: 8,
  steps: 30,
  log_every: 10,
  eval_batches: 2,
};
const LORA_RECIPE = {
  name: 'tune-lora',
  lora: { r: 4, lora_alpha: 8, lora_dropout: 0.1, target_modules: ['c_attn', 'c_proj'], use_rslora: true },
  data,
  optimizer: { type: 'adamw', lr: 0.01 },
  batch_size: 8,
  steps: 12,
  log_every: 2,
  eval_batches: 2,
  checkpoint_every: 4,
};
const FREEZE_RECIPE = {
  ...LORA_RECIPE,
  name: 'tune-freeze',
  lora: undefined,
  trainable: ['h.1.**', 'ln_f.*'],
  frozen: ['h.1.ln_*.*'],
};

let dir: string;
let base: string;
const path = (name: string): string => join(dir, name);
async function recipe(name: string, json: unknown): Promise<string> {
  await writeFile(path(name), JSON.stringify(json));
  return path(name);
}
async function tensors(file: string): Promise<Map<string, Tensor>> {
  return (await loadSafetensors(file)).tensors as Map<string, Tensor>;
}
const IDS = fromArray([65, 110, 100, 32, 71, 111, 100, 32, 115, 97, 105, 100], [1, 12], { dtype: 'i32' });
function logits(model: { forward(ids: Tensor): Tensor }): Float32Array {
  return model.forward(IDS).contiguousStorage() as Float32Array;
}
/** |a − b| ≤ 1e-5 + 1e-5·|b| everywhere (the merge tolerance). */
function assertLogitsMatch(got: Float32Array, want: Float32Array): void {
  for (let i = 0; i < want.length; i++)
    assert.ok(Math.abs(got[i]! - want[i]!) <= 1e-5 + 1e-5 * Math.abs(want[i]!), `logit ${i}: ${got[i]} vs ${want[i]}`);
}
function maxDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Drops the last checkpoint (step 8) of a finished 8-step tune and resumes: the same adapter, bit for bit. */
async function assertResumesFromStep4(out: string): Promise<void> {
  const reference = await readFile(join(out, 'adapter_model.safetensors'));
  await rm(join(out, 'checkpoints', 'step-8'), { recursive: true });
  const resumed = await cliInProcess(['tune', '--resume', '--out', out, '--json']);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.equal(JSON.parse(resumed.stdout).resumedFrom, 4);
  assert.ok((await readFile(join(out, 'adapter_model.safetensors'))).equals(reference));
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-tune-'));
  base = path('base');
  const r = await cliInProcess(['train', await recipe('base.json', BASE_RECIPE), '--out', base]);
  assert.equal(r.code, 0, r.stderr);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('knobs tune with LoRA', () => {
  let reference: Buffer;
  before(async () => {
    const r = await cliInProcess([
      'tune',
      base,
      await recipe('lora.json', LORA_RECIPE),
      '--out',
      path('lora'),
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.method, 'lora');
    assert.equal(result.step, 12);
    reference = await readFile(path('lora/adapter_model.safetensors'));
  });

  it('writes a PEFT adapter directory whose checkpoints hold only the LoRA tensors', async () => {
    const files = await readdir(path('lora'));
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'tune.json', 'metrics.jsonl', 'checkpoints'])
      assert.ok(files.includes(f), `${f} in ${files.join(', ')}`);
    assert.ok(!files.includes('model.safetensors') && !files.includes('recipe.json'));
    const config = JSON.parse(await readFile(path('lora/adapter_config.json'), 'utf8'));
    assert.equal(config.r, 4);
    assert.equal(config.use_rslora, true);
    assert.equal(config.fan_in_fan_out, true);
    const adapter = await tensors(path('lora/adapter_model.safetensors'));
    // c_attn and both c_proj (attn and mlp) in 2 blocks, A and B each
    assert.equal(adapter.size, 12);
    assert.deepEqual(adapter.get('base_model.model.transformer.h.1.mlp.c_proj.lora_A.weight')!.shape, [4, 128]);
    const b = adapter.get('base_model.model.transformer.h.0.attn.c_attn.lora_B.weight')!;
    assert.ok(maxDiff(b.contiguousStorage() as Float32Array, new Float32Array(b.size)) > 0, 'lora_B trained');
    const ck = path('lora/checkpoints/step-12');
    const weights = [...(await tensors(join(ck, 'model.safetensors'))).keys()];
    assert.equal(weights.length, 12);
    assert.ok(
      weights.every((n) => /\.lora_[AB]\.weight$/.test(n)),
      weights.join(', '),
    );
    const moments = [...(await tensors(join(ck, 'optimizer.safetensors'))).keys()];
    assert.ok(moments.length > 0 && moments.every((n) => /lora_[AB]/.test(n)), moments.join(', '));
  });

  it('SIGINT stops with a checkpoint; --resume (base and recipe from tune.json) gives the same adapter bit for bit', async () => {
    const out = path('lora-stopped');
    let sent = false;
    const { done } = startCli(['tune', base, path('lora.json'), '--out', out], (text, child) => {
      if (!sent && /step 4 loss/.test(text)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    const r = await done;
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stdout, /knobs tune --resume --out/);
    const resumed = await cli(['tune', '--resume', '--out', out, '--json']);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.ok(JSON.parse(resumed.stdout).resumedFrom >= 4);
    assert.ok((await readFile(join(out, 'adapter_model.safetensors'))).equals(reference));
  });

  it('generate and eval take --adapter; eval with it matches the library; another base needs --allow-base-mismatch', async () => {
    const plain = await cliInProcess(['eval', base, '--json']);
    const tuned = await cliInProcess(['eval', base, '--adapter', path('lora'), '--json']);
    assert.equal(tuned.code, 0, tuned.stderr);
    assert.notEqual(JSON.parse(tuned.stdout).loss, JSON.parse(plain.stdout).loss);
    const g = await cliInProcess([
      'generate',
      base,
      '--adapter',
      path('lora'),
      '--prompt',
      'And',
      '--max-tokens',
      '5',
      '--temperature',
      '0',
      '--json',
    ]);
    assert.equal(g.code, 0, g.stderr);
    assert.equal(JSON.parse(g.stdout).ids.length, 5);

    const other = path('other-base');
    const t = await cliInProcess(['train', path('base.json'), '--out', other, '--seed', '7', '--steps', '2']);
    assert.equal(t.code, 0, t.stderr);
    const refused = await cliInProcess(['generate', other, '--adapter', path('lora'), '--prompt', 'And']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /E_FORMAT.*trained on another base.*--allow-base-mismatch/);
    const allowed = await cliInProcess(['eval', other, '--adapter', path('lora'), '--allow-base-mismatch', '--json']);
    assert.equal(allowed.code, 0, allowed.stderr);
  });

  it('several adapters on one base, chosen per call, do not cross-talk', async () => {
    const second = { ...LORA_RECIPE, name: 'second', seed: 3, lora: { r: 2, target_modules: ['c_fc'] } };
    const r = await cliInProcess(['tune', base, await recipe('second.json', second), '--out', path('second')]);
    assert.equal(r.code, 0, r.stderr);
    const { model } = await openLanguageModel(base);
    const expected = new Map<string | null, Float32Array>();
    expected.set(null, logits(model));
    for (const name of ['lora', 'second']) {
      const alone = (await openLanguageModel(base, { adapters: [path(name)] })).model;
      expected.set(name, logits(alone));
    }
    assert.ok(maxDiff(expected.get('lora')!, expected.get('second')!) > 1e-4);
    const set = new AdapterSet(model);
    await set.load('lora', path('lora'));
    await set.load('second', path('second'));
    const order: (string | null)[] = ['second', null, 'lora', 'lora', null, 'second'];
    // Started together: the set runs them one at a time, each with only its own adapter.
    const got = await Promise.all(
      order.map((name) =>
        set.use(name, async () => {
          await new Promise((res) => setTimeout(res, 1));
          return logits(model);
        }),
      ),
    );
    order.forEach((name, i) => assert.equal(maxDiff(got[i]!, expected.get(name)!), 0, `call ${i} (${name})`));
    assert.equal(model.namedParameters().filter(([n]) => n.includes('lora_')).length, 0, 'the base is left bare');
  });
});

describe('knobs tune with LoRA+ (optimizer.loraplus_lr_ratio)', () => {
  const LORAPLUS_RECIPE = {
    ...LORA_RECIPE,
    name: 'tune-loraplus',
    lora: { r: 4, lora_alpha: 8, target_modules: ['c_attn'] },
    optimizer: { type: 'adamw', lr: 0.003, loraplus_lr_ratio: 16 },
    schedule: { type: 'cosine', warmup_steps: 2, min_lr: 0.0003 },
    steps: 8,
  };

  it('lora_B moves further than without it; a resume from a checkpoint gives the same adapter bit for bit', async () => {
    const run = async (name: string, json: unknown): Promise<string> => {
      const r = await cliInProcess(['tune', base, await recipe(`${name}.json`, json), '--out', path(name), '--json']);
      assert.equal(r.code, 0, r.stderr);
      return path(name);
    };
    const plus = await run('loraplus', LORAPLUS_RECIPE);
    const { loraplus_lr_ratio: _ratio, ...plainOptimizer } = LORAPLUS_RECIPE.optimizer;
    const plain = await run('loraplus-off', { ...LORAPLUS_RECIPE, optimizer: plainOptimizer });
    const absMean = (t: Tensor): number => {
      const s = t.contiguousStorage() as Float32Array;
      return s.reduce((a, x) => a + Math.abs(x), 0) / s.length;
    };
    const key = 'base_model.model.transformer.h.0.attn.c_attn';
    const [withPlus, without] = [
      await tensors(join(plus, 'adapter_model.safetensors')),
      await tensors(join(plain, 'adapter_model.safetensors')),
    ];
    // B starts at 0 and AdamW moves each element by about the lr per step: 16× the lr, several times the size.
    assert.ok(absMean(withPlus.get(`${key}.lora_B.weight`)!) > 4 * absMean(without.get(`${key}.lora_B.weight`)!));
    const config = JSON.parse(await readFile(join(plus, 'adapter_config.json'), 'utf8'));
    assert.ok(!('loraplus_lr_ratio' in config), 'the adapter format does not change');

    await assertResumesFromStep4(plus);
  });
});

describe('knobs tune with DoRA (lora.use_dora)', () => {
  it('writes lora_magnitude_vector as PEFT saves it; the adapter loads, merges and unmerges; resume is bitwise', async () => {
    const out = path('dora');
    const json = { ...LORA_RECIPE, name: 'tune-dora', lora: { ...LORA_RECIPE.lora, use_dora: true }, steps: 8 };
    const r = await cliInProcess(['tune', base, await recipe('dora.json', json), '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const config = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
    assert.equal(config.use_dora, true);
    const adapter = await tensors(join(out, 'adapter_model.safetensors'));
    const magnitude = adapter.get('base_model.model.transformer.h.0.attn.c_attn.lora_magnitude_vector');
    assert.deepEqual(magnitude?.shape, [96]);
    assert.equal(adapter.size, 18, 'A, B and the magnitude of 6 layers');
    const info = await describeAdapter(out);
    assert.equal(
      info.parameters,
      [...adapter.values()].reduce((n, t) => n + t.size, 0),
      'inspect counts the magnitudes',
    );
    const shown = await cliInProcess(['inspect', out]);
    assert.match(shown.stdout, /lora_dropout \S+ {2}use_dora true\n/, 'inspect names DoRA in its header');

    const { model } = await openLanguageModel(base);
    const bare = logits(model);
    const { adapter: loaded } = await loadLoraAdapter(out, model);
    const withAdapter = logits(model);
    assert.ok(maxDiff(withAdapter, bare) > 1e-3, 'the adapter changes the logits');
    const trained = [...loaded.layers.values()][0]!;
    assert.ok(
      maxDiff(
        trained.magnitude!.weight.contiguousStorage() as Float32Array,
        trained.weightNorm().contiguousStorage() as Float32Array,
      ) > 0,
      'the magnitude trained',
    );
    loaded.merge();
    assertLogitsMatch(logits(model), withAdapter);
    loaded.unmerge();
    loaded.detach();
    assertLogitsMatch(logits(model), bare);
    const merged = path('dora-merged');
    const m = await cliInProcess(['merge', base, out, '--out', merged]);
    assert.equal(m.code, 0, m.stderr);
    assert.ok(![...(await tensors(join(merged, 'model.safetensors'))).keys()].some((n) => n.includes('lora_')));
    assertLogitsMatch(logits((await openLanguageModel(merged)).model), withAdapter);

    await assertResumesFromStep4(out);
  });
});

describe('knobs tune with modules_to_save and bias (PEFT)', () => {
  it('trains and saves copies of ln_f and every bias; inspect, diff, merge and generate take it; resume is bitwise', async () => {
    const out = path('saved');
    const lora = { ...LORA_RECIPE.lora, lora_dropout: 0, modules_to_save: ['ln_f'], bias: 'all' };
    const json = { ...LORA_RECIPE, name: 'tune-saved', lora, steps: 8 };
    const r = await cliInProcess(['tune', base, await recipe('saved.json', json), '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const config = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
    assert.deepEqual([config.modules_to_save, config.bias], [['ln_f'], 'all']);
    const adapter = await tensors(join(out, 'adapter_model.safetensors'));
    const second = /\.(original_module|modules_to_save)\./; // PEFT's second names of ln_f's bias (bias "all")
    assert.deepEqual([...adapter.keys()].filter((key) => second.test(key)).sort(), [
      'base_model.model.transformer.ln_f.modules_to_save.bias',
      'base_model.model.transformer.ln_f.original_module.bias',
    ]);
    const copies = [...adapter.keys()].filter((key) => !key.includes('.lora_') && !second.test(key)).sort();
    assert.ok(copies.includes('base_model.model.transformer.ln_f.weight'), copies.join(', '));
    assert.ok(copies.includes('base_model.model.transformer.h.0.attn.c_attn.base_layer.bias'), 'a targeted bias');
    assert.ok(copies.includes('base_model.model.transformer.h.0.mlp.c_fc.bias'), 'an untargeted bias');
    assert.ok(copies.includes('base_model.model.transformer.h.1.ln_2.bias'), 'a norm bias');
    assert.ok(!copies.some((key) => key.endsWith('c_fc.weight')), 'no other weight');
    const checkpoint = await tensors(join(out, 'checkpoints', 'step-8', 'model.safetensors'));
    assert.ok(checkpoint.has('ln_f.weight') && checkpoint.has('h.0.mlp.c_fc.bias'), 'the checkpoint holds the copies');
    assert.ok(![...checkpoint.keys()].some((n) => n.endsWith('c_fc.weight')), 'and no frozen weight');

    const shown = await cliInProcess(['inspect', out]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /modules_to_save \["ln_f"\] {2}bias all\n/);
    assert.match(
      shown.stdout,
      new RegExp(`trained copies of base tensors \\(modules_to_save, bias\\): ${copies.length}\n`),
    );
    const diff = await cliInProcess(['diff', base, out, '--json']);
    assert.equal(diff.code, 0, diff.stderr);
    const moved = (JSON.parse(diff.stdout) as { modules: { module: string; rel_change: number }[] }).modules;
    const lnF = moved.find((m) => m.module === 'transformer.ln_f.weight');
    assert.ok(lnF && lnF.rel_change > 0, 'diff sets the trained ln_f against the base');

    const { model } = await openLanguageModel(base);
    const bare = logits(model);
    const { adapter: loaded } = await loadLoraAdapter(out, model);
    const withAdapter = logits(model);
    assert.ok(maxDiff(withAdapter, bare) > 1e-3, 'the adapter changes the logits');
    loaded.detach();
    assert.deepEqual(logits(model), bare, 'detached, the base is back bit for bit');
    const merged = path('saved-merged');
    const m = await cliInProcess(['merge', base, out, '--out', merged]);
    assert.equal(m.code, 0, m.stderr);
    assertLogitsMatch(logits((await openLanguageModel(merged)).model), withAdapter);
    const g = await cliInProcess([
      'generate',
      base,
      '--adapter',
      out,
      '--prompt',
      'And God',
      '--max-tokens',
      '4',
      '--json',
    ]);
    assert.equal(g.code, 0, g.stderr);
    assert.equal(typeof JSON.parse(g.stdout).text, 'string');

    await assertResumesFromStep4(out);
  });
});

describe('knobs tune with PiSSA (lora.init_lora_weights "pissa")', () => {
  it('saves the rank-2r conversion onto the original base (eval takes it without --allow-base-mismatch); resume is bitwise', async () => {
    const out = path('pissa');
    const json = {
      ...LORA_RECIPE,
      name: 'tune-pissa',
      lora: { ...LORA_RECIPE.lora, init_lora_weights: 'pissa' },
      steps: 8,
    };
    const r = await cliInProcess(['tune', base, await recipe('pissa.json', json), '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const config = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
    assert.deepEqual([config.r, config.init_lora_weights], [8, true]);
    const e = await cliInProcess(['eval', base, '--adapter', out, '--json']);
    assert.equal(e.code, 0, e.stderr);
    await assertResumesFromStep4(out);
  });
});

describe('knobs tune with frozen parameters', () => {
  it('trains only the unfrozen parameters; frozen ones stay bit-identical; the output is a run', async () => {
    const r = await cliInProcess([
      'tune',
      base,
      await recipe('freeze.json', FREEZE_RECIPE),
      '--out',
      path('freeze'),
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).method, 'freeze');
    const before = await tensors(join(base, 'model.safetensors'));
    const afterT = await tensors(path('freeze/model.safetensors'));
    const trains = (n: string): boolean => (n.startsWith('h.1.') && !n.startsWith('h.1.ln_')) || n.startsWith('ln_f.');
    for (const [name, t] of before) {
      const d = maxDiff(t.contiguousStorage() as Float32Array, afterT.get(name)!.contiguousStorage() as Float32Array);
      if (trains(name)) assert.ok(d > 0, `${name} trained`);
      else assert.equal(d, 0, `${name} frozen`);
    }
    const ck = await tensors(path('freeze/checkpoints/step-12/model.safetensors'));
    assert.ok([...ck.keys()].every(trains), [...ck.keys()].join(', '));
    const ev = await cliInProcess(['eval', path('freeze'), '--json']);
    assert.equal(ev.code, 0, ev.stderr);
  });
});

describe('knobs tune on a Hugging Face model directory', () => {
  it('tunes a LoRA adapter on an HF directory (made by knobs merge) and resumes a finished run without change', async () => {
    const hf = path('hf-base');
    const m = await cliInProcess(['merge', base, path('lora'), '--out', hf]);
    assert.equal(m.code, 0, m.stderr);
    assert.ok(!existsSync(join(hf, 'recipe.json')), 'a Hugging Face directory, not a run');
    const out = path('hf-lora');
    const r = await cliInProcess(['tune', hf, path('lora.json'), '--out', out, '--steps', '4', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const ev = await cliInProcess(['eval', hf, '--adapter', out, '--data', TEXT, '--context', '32', '--json']);
    assert.equal(ev.code, 0, ev.stderr);
    const again = await cliInProcess(['tune', '--resume', '--out', out, '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout).resumedFrom, 4);
  });
});

describe('knobs tune refuses bad input before writing anything', () => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    [
      'a model section',
      { ...LORA_RECIPE, model: { type: 'gpt' } },
      /E_FORMAT.*model: a tune recipe has no model section/,
    ],
    ['lora and trainable', { ...LORA_RECIPE, trainable: ['h.*'] }, /E_FORMAT.*either a "lora" section or "trainable"/],
    ['neither', { ...LORA_RECIPE, lora: undefined }, /E_FORMAT.*either a "lora" section/],
    ['an unsupported LoRA field', { ...LORA_RECIPE, lora: { lora_bias: true } }, /E_FORMAT.*lora\.lora_bias/],
    [
      'a target that matches nothing',
      { ...LORA_RECIPE, lora: { target_modules: ['q_proj'] } },
      /E_FORMAT.*matches no module/,
    ],
    [
      'a rank larger than the layer',
      { ...LORA_RECIPE, lora: { r: 64, target_modules: ['c_attn'] } },
      /E_FORMAT.*larger than the layer/,
    ],
    [
      'a LoRA+ ratio ≤ 0',
      { ...LORA_RECIPE, optimizer: { type: 'adamw', lr: 0.01, loraplus_lr_ratio: 0 } },
      /E_FORMAT.*optimizer\.loraplus_lr_ratio/,
    ],
    [
      'LoRA+ without LoRA',
      { ...FREEZE_RECIPE, optimizer: { type: 'adamw', lr: 0.01, loraplus_lr_ratio: 16 } },
      /E_FORMAT.*optimizer\.loraplus_lr_ratio: LoRA\+ scales the lr of lora_B matrices/,
    ],
    ['a glob that matches nothing', { ...FREEZE_RECIPE, trainable: ['h.9.**'] }, /E_ARGUMENT.*matches no parameter/],
    [
      'a freeze that leaves nothing',
      { ...FREEZE_RECIPE, trainable: undefined, frozen: ['**'] },
      /E_ARGUMENT.*no parameter to train/,
    ],
  ];
  for (const [what, json, message] of cases) {
    it(what, async () => {
      const out = path(`bad-${what.replace(/\W+/g, '-')}`);
      const r = await cliInProcess(['tune', base, await recipe('bad.json', json), '--out', out]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, message);
      assert.equal(r.stdout, '');
      assert.ok(!existsSync(out), `${out} was not created`);
    });
  }
});

describe('the adapter loads with the library as PEFT would', () => {
  it('loadLoraAdapter checks the digest of the base it was tuned on', async () => {
    const { model } = await openLanguageModel(base);
    const { recordedDigest } = await loadLoraAdapter(path('lora'), model);
    assert.match(recordedDigest!, /^sha256:[0-9a-f]{64}$/);
  });
});

describe('recipes/tune/', () => {
  it('every tune recipe validates, and the regex of lora-attn targets attention on GPT-2 and Llama', async () => {
    const root = fileURLToPath(new URL('../../recipes/tune/', import.meta.url));
    const names = (await readdir(root)).filter((n) => n.endsWith('.json'));
    assert.ok(names.length >= 2);
    for (const n of names) await loadTuneRecipe(join(root, n));
    // The base here holds 32 positions; the recipe's context is 128.
    const json = JSON.parse(await readFile(join(root, 'lora-attn.json'), 'utf8'));
    const lora = await recipe('lora-attn.json', { ...json, context: 32 });
    const r = await cliInProcess([
      'tune',
      base,
      lora,
      '--out',
      path('recipe-lora'),
      '--data',
      TEXT,
      '--steps',
      '2',
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const config = JSON.parse(await readFile(path('recipe-lora/adapter_config.json'), 'utf8'));
    assert.equal(config.r, 8);
    const adapter = await tensors(path('recipe-lora/adapter_model.safetensors'));
    assert.deepEqual([...adapter.keys()].filter((k) => k.includes('lora_A')).sort(), [
      'base_model.model.transformer.h.0.attn.c_attn.lora_A.weight',
      'base_model.model.transformer.h.1.attn.c_attn.lora_A.weight',
    ]);
    // lora-linear: every linear layer, Llama's own head included; GPT-2's head is its embedding.
    const linear = (await loadTuneRecipe(join(root, 'lora-linear.json'))).lora!;
    const paths = async (dir: string): Promise<string[]> =>
      planLora((await loadHfModel(join(HF_FIXTURES, dir))).model, parseLoraConfig(linear)).targets.map((t) => t.path);
    assert.equal((await paths('gpt2-tiny')).length, 8, 'c_attn, c_proj, c_fc, c_proj of two blocks');
    const llama = await paths('llama-gqa-bf16-llama3');
    assert.ok(llama.includes('lm_head') && llama.includes('model.layers.1.mlp.down_proj'), llama.join(', '));
  });
});

describe('knobs tune on a quantized base (QLoRA)', () => {
  /** merge of the QLoRA adapter into the q8_0 base with the targeted weights in f32 (exact logits). */
  const mergeQloraF32 = (out: string, ...flags: string[]): ReturnType<typeof cliInProcess> =>
    cliInProcess(['merge', base, path('qlora'), '--quantize', 'q8_0', '--dtype', 'f32', '--out', out, ...flags]);
  it('--quantize q8_0 trains an f32 adapter on the blocks; it records the quantized base; generate --quantize uses it; resume keeps the quantization', async () => {
    const out = path('qlora');
    const r = await cliInProcess([
      'tune',
      base,
      path('lora.json'),
      '--out',
      out,
      '--quantize',
      'q8_0',
      '--steps',
      '4',
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.method, 'lora');
    const adapter = await tensors(join(out, 'adapter_model.safetensors'));
    assert.equal(adapter.size, 12, 'the same PEFT keys as on the f32 base');
    assert.ok([...adapter.values()].every((t) => t.dtype === 'f32'));
    const tuneJson = JSON.parse(await readFile(join(out, 'tune.json'), 'utf8'));
    assert.equal(tuneJson.recipe.quantize, 'q8_0', 'tune.json records it for --resume');
    const digest = JSON.parse(await readFile(join(out, 'base_config.json'), 'utf8')).knobs_base_digest;
    const f32Digest = JSON.parse(await readFile(path('lora/base_config.json'), 'utf8')).knobs_base_digest;
    assert.notEqual(digest, f32Digest, 'the digest of the quantized base is not the f32 base’s');

    const g = await cliInProcess([
      'generate',
      base,
      '--quantize',
      'q8_0',
      '--adapter',
      out,
      '--prompt',
      'And',
      '--max-tokens',
      '4',
      '--temperature',
      '0',
      '--json',
    ]);
    assert.equal(g.code, 0, g.stderr);
    assert.equal(JSON.parse(g.stdout).weights.q8_0, 8);
    const refused = await cliInProcess(['eval', base, '--adapter', out, '--json']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /trained on another base/);
    // eval --quantize: the adapter finds its base; the loss is the f32 base's with the same adapter up to
    // the activation rounding, and not the quantized base's without it.
    const evalLoss = async (...args: string[]): Promise<number> => {
      const e = await cliInProcess(['eval', base, ...args, '--json']);
      assert.equal(e.code, 0, e.stderr);
      return JSON.parse(e.stdout).loss as number;
    };
    const quantized = await evalLoss('--quantize', 'q8_0', '--adapter', out);
    const float = await evalLoss('--adapter', out, '--allow-base-mismatch');
    const bare = await evalLoss('--quantize', 'q8_0');
    assert.ok(Math.abs(quantized - float) < 2e-2 * float && quantized !== float, `${quantized} vs ${float}`);
    assert.notEqual(quantized, bare);
    const badType = await cliInProcess(['eval', base, '--quantize', 'q5_k']);
    assert.equal(badType.code, 2);
    assert.match(badType.stderr, /--quantize must be one of q8_0, q4_0, got 'q5_k'/);

    const again = await cliInProcess(['tune', '--resume', '--out', out, '--steps', '6', '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout).resumedFrom, 4);
  });

  it('merge into the quantized base: targeted layers dequantized and written as f16 (or --dtype), stderr says so; logits equal the decoded base + adapter', async () => {
    const out = path('qmerged');
    const r = await cliInProcess(['merge', base, path('qlora'), '--quantize', 'q8_0', '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /base is quantized; targeted layers \(6 q8_0\) were dequantized, merged and written as f16; the other quantized layers \(2 q8_0\) were written dequantized as f32/,
    );
    const result = JSON.parse(r.stdout);
    assert.equal(result.dtype, 'f16');
    const { tensors: written } = await loadSafetensors(join(out, 'model.safetensors'));
    assert.equal((written.get('h.0.attn.c_attn.weight') as Tensor).dtype, 'f16');
    assert.equal((written.get('h.0.mlp.c_fc.weight') as Tensor).dtype, 'f32');
    const refused = await cliInProcess(['merge', base, path('qlora'), '--out', path('qmerged-f32base')]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /trained on another base/);
    assert.ok(!existsSync(path('qmerged-f32base')));

    const exact = path('qmerged-f32');
    const e = await mergeQloraF32(exact);
    assert.equal(e.code, 0, e.stderr);
    const merged = await openLanguageModel(exact);
    const reference = await openLanguageModel(base, { quantize: 'q8_0' });
    dequantizeLayers(reference.model);
    await loadLoraAdapter(path('qlora'), reference.model, { allowBaseMismatch: true });
    const [got, want] = [logits(merged.model), logits(reference.model)];
    assertLogitsMatch(got, want);
  });

  it('merge into the quantized base as GGUF: untargeted q8_0 blocks byte for byte, targeted as --dtype; logits equal the base + adapter', async () => {
    const out = path('qmerged.gguf');
    const r = await mergeQloraF32(out, '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /targeted layers \(6\) written as f32, dequantized from 6 q8_0; untargeted quantized layers kept their blocks \(2 q8_0\)/,
    );
    const result = JSON.parse(r.stdout);
    assert.deepEqual(result.kept, { q8_0: 2 }, 'c_attn and c_proj (attention and MLP) are targeted, c_fc is not');
    // The file's tensors: the reference is the base quantized as tune did, read back raw.
    const reference = await openLanguageModel(base, { quantize: 'q8_0' });
    const source = await openFileSource(out);
    try {
      const gguf = await readGguf(source);
      const types = new Map(gguf.tensors.map((t) => [t.name, t.type.name]));
      assert.equal(types.get('blk.0.attn_qkv.weight'), 'F32', 'targeted: --dtype');
      assert.equal(types.get('blk.0.ffn_up.weight'), 'Q8_0', 'untargeted: kept');
      for (const [ggufName, path] of [
        ['blk.0.ffn_up.weight', 'h.0.mlp.c_fc'],
        ['blk.1.ffn_up.weight', 'h.1.mlp.c_fc'],
      ] as const) {
        const info = gguf.tensors.find((t) => t.name === ggufName)!;
        const bytes = await source.read(gguf.dataOffset + info.offset, info.byteLength);
        const q = reference.model.getModule(path) as QuantizedLinear;
        assert.deepEqual(bytes, q.weight.blocks, `${ggufName}: the blocks byte for byte`);
      }
    } finally {
      await source.close();
    }
    // Logits: the GGUF (loaded on its blocks) vs the quantized base with only the targeted layers decoded, plus the adapter.
    const merged = await openLanguageModel(out);
    const targeted = [0, 1].flatMap((i) => ['attn.c_attn', 'attn.c_proj', 'mlp.c_proj'].map((m) => `h.${i}.${m}`));
    dequantizeLayers(reference.model, targeted);
    await loadLoraAdapter(path('qlora'), reference.model, { allowBaseMismatch: true });
    const [got, want] = [logits(merged.model), logits(reference.model)];
    assertLogitsMatch(got, want);
    const exists = await cliInProcess(['merge', base, path('qlora'), '--quantize', 'q8_0', '--out', out]);
    assert.equal(exists.code, 2);
    assert.match(exists.stderr, /already exists/);
  });

  it('the recipe field "quantize": "q4_0" does the same; with freezing, or an unknown type, it is refused before writing', async () => {
    const out = path('qlora4');
    const q4 = await recipe('q4.json', { ...LORA_RECIPE, quantize: 'q4_0', steps: 2 });
    const r = await cliInProcess(['tune', base, q4, '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(existsSync(join(out, 'adapter_model.safetensors')));
    const bad = await cliInProcess([
      'tune',
      base,
      await recipe('qf.json', { ...FREEZE_RECIPE, quantize: 'q8_0' }),
      '--out',
      path('qf'),
    ]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /E_FORMAT.*quantize.*LoRA adapters only/);
    const flag = await cliInProcess([
      'tune',
      base,
      await recipe('qf2.json', FREEZE_RECIPE),
      '--out',
      path('qf2'),
      '--quantize',
      'q8_0',
    ]);
    assert.equal(flag.code, 2, flag.stderr);
    assert.match(flag.stderr, /LoRA adapters only/);
    const type = await cliInProcess(['tune', base, path('lora.json'), '--out', path('qf3'), '--quantize', 'q5_0']);
    assert.match(type.stderr, /--quantize must be one of q8_0, q4_0/);
    for (const d of ['qf', 'qf2', 'qf3']) assert.ok(!existsSync(path(d)));
  });
});

describe('knobs tune on a GGUF base', () => {
  // The Mistral GQA fixture (Llama family, one KV head) with a tiny byte-level tokenizer, as GGUF (f32 and q8_0); text in its 64 characters.
  let hfDir: string;
  let tinyText: string;
  const ggufOf = async (dtype: string): Promise<string> => {
    const file = path(`llama.${dtype}.gguf`);
    if (!existsSync(file)) await convertModel({ input: hfDir, format: 'gguf', dtype, out: file });
    return file;
  };
  const ggufLora = {
    name: 'gguf-lora',
    lora: { r: 2, lora_alpha: 4, target_modules: ['q_proj', 'k_proj', 'v_proj'] },
    optimizer: { type: 'adamw', lr: 0.01 },
    batch_size: 4,
    context: 16,
    steps: 3,
    log_every: 1,
    eval_batches: 1,
  };
  before(async () => {
    hfDir = await fixtureWithTokenizer(join(HF_FIXTURES, 'mistral-gqa-shards'), path('llama-src'));
    const words = ['the', 'lord', 'said', 'And', 'light', 'was', 'good', 'day', 'night', 'God', 'saw', 'it'];
    const g = new Generator(11);
    let text = '';
    while (text.length < 4000)
      text += words[Math.floor(g.random() * words.length)] + (text.length % 70 < 6 ? '\n' : ' ');
    tinyText = path('tiny.txt');
    await writeFile(tinyText, text);
  });

  it('tokenizer from the file, adapter keys by Hugging Face paths (Q/K un-permuted): it applies to the HF export with the same logits', async () => {
    const gguf = await ggufOf('f32');
    const out = path('gguf-lora');
    const lora = await recipe('gguf-lora.json', {
      ...ggufLora,
      data: { type: 'text', path: tinyText, validation_fraction: 0.1 },
    });
    const r = await cliInProcess(['tune', gguf, lora, '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const adapter = await tensors(join(out, 'adapter_model.safetensors'));
    assert.ok(
      adapter.has('base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight'),
      [...adapter.keys()].join(', '),
    );
    const b = adapter.get('base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight')!;
    assert.ok(maxDiff(b.contiguousStorage() as Float32Array, new Float32Array(b.size)) > 0, 'lora_B trained');

    const exported = path('llama-export');
    await convertModel({ input: gguf, format: 'safetensors', dtype: 'f32', out: exported });
    const onGguf = await openLanguageModel(gguf, { adapters: [out] });
    // Same weights under the same names: the digest matches, no --allow-base-mismatch needed.
    const onHf = await openLanguageModel(exported, { adapters: [out] });
    const ids = fromArray([1, 5, 9, 20, 33, 7, 12, 40], [1, 8], { dtype: 'i32' });
    const want = (onHf.model as unknown as { forward(x: Tensor): Tensor })
      .forward(ids)
      .contiguousStorage() as Float32Array;
    const got = (onGguf.model as unknown as { forward(x: Tensor): Tensor })
      .forward(ids)
      .contiguousStorage() as Float32Array;
    assertLogitsMatch(got, want);
    const bare = await openLanguageModel(exported);
    const base0 = (bare.model as unknown as { forward(x: Tensor): Tensor })
      .forward(ids)
      .contiguousStorage() as Float32Array;
    assert.ok(maxDiff(base0, want) > 1e-4, 'the adapter changes the logits');
  });

  it('a q8_0 GGUF base tunes too (its quantized layers used as loaded), and the adapter loads back onto it', async () => {
    const gguf = await ggufOf('q8_0');
    const out = path('gguf-q8-lora');
    const lora = await recipe('gguf-q8.json', {
      ...ggufLora,
      data: { type: 'text', path: tinyText, validation_fraction: 0.1 },
      steps: 2,
    });
    const r = await cliInProcess(['tune', gguf, lora, '--out', out, '--quantize', 'q8_0', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const { adapters } = await openLanguageModel(gguf, { adapters: [out], quantize: 'q8_0' });
    assert.equal(adapters[0]!.layers.size, 6);
  });

  it('QLoRA on a q8_0 GGUF as loaded (no --quantize): the adapter records the blocks; generate, eval and merge (GGUF or directory) take it', async () => {
    const gguf = await ggufOf('q8_0');
    const out = path('gguf-qlora');
    const data = { type: 'text', path: tinyText, validation_fraction: 0.1 };
    const r = await cliInProcess(['tune', gguf, await recipe('gguf-qlora.json', { ...ggufLora, data }), '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    // The digest is the blocks' (tune trained on them): the same file decoded to f32 is another base.
    const { model: blocks } = await loadGgufModel(gguf);
    assert.equal((await loadLoraAdapter(out, blocks)).adapter.layers.size, 6);
    const { model: decoded } = await loadGgufModel(gguf, { weights: 'f32' });
    await assert.rejects(loadLoraAdapter(out, decoded), /trained on another base/);

    const g = await cliInProcess([
      'generate',
      gguf,
      '--adapter',
      out,
      '--prompt',
      'the ',
      '--max-tokens',
      '4',
      '--json',
    ]);
    assert.equal(g.code, 0, g.stderr);
    const plain = await cliInProcess(['eval', gguf, '--data', tinyText, '--json']);
    const tuned = await cliInProcess(['eval', gguf, '--adapter', out, '--data', tinyText, '--json']);
    assert.equal(tuned.code, 0, tuned.stderr);
    assert.ok(JSON.parse(tuned.stdout).loss < JSON.parse(plain.stdout).loss, 'the tune lowered the loss on its text');
    const merged = await cliInProcess(['merge', gguf, out, '--out', path('gguf-qmerged.gguf')]);
    assert.equal(merged.code, 0, merged.stderr);
    assert.match(
      merged.stderr,
      /targeted layers \(6\) written as f16, dequantized from 6 q8_0; .*kept their blocks \(7 q8_0\)/,
    );
    const dir = await cliInProcess(['merge', gguf, out, '--out', path('gguf-qmerged')]);
    assert.equal(dir.code, 0, dir.stderr);
    const fromDir = await cliInProcess(['eval', path('gguf-qmerged'), '--data', tinyText, '--json']);
    const fromGguf = await cliInProcess(['eval', path('gguf-qmerged.gguf'), '--data', tinyText, '--json']);
    const [a, b] = [JSON.parse(fromDir.stdout).loss, JSON.parse(fromGguf.stdout).loss];
    assert.ok(Math.abs(a - b) < 1e-3 && Math.abs(a - JSON.parse(tuned.stdout).loss) < 1e-2, `${a} ${b}`);
  });

  it('an adapter that trains the embedding and the final norm (modules_to_save) merges into the q8_0 GGUF', async () => {
    const gguf = await ggufOf('q8_0');
    const out = path('gguf-saved');
    const lora = await recipe('gguf-saved.json', {
      ...ggufLora,
      lora: { ...ggufLora.lora, modules_to_save: ['embed_tokens', 'model.norm'] },
      data: { type: 'text', path: tinyText, validation_fraction: 0.1 },
    });
    const r = await cliInProcess(['tune', gguf, lora, '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const adapter = await tensors(join(out, 'adapter_model.safetensors'));
    assert.ok(
      adapter.has('base_model.model.model.embed_tokens.weight') && adapter.has('base_model.model.model.norm.weight'),
    );
    const merged = path('gguf-saved.gguf');
    const m = await cliInProcess(['merge', gguf, out, '--out', merged]);
    assert.equal(m.code, 0, m.stderr);
    assert.match(m.stderr, /trained copies of 2 base tensors replace them \(as f16 where the file held blocks\)/);
    const source = await openFileSource(merged);
    try {
      const types = new Map((await readGguf(source)).tensors.map((t) => [t.name, t.type.name]));
      assert.equal(types.get('token_embd.weight'), 'F16', 'q8_0 in the base: the trained copy as --dtype');
      assert.equal(types.get('output_norm.weight'), 'F32', 'a float tensor keeps its type');
    } finally {
      await source.close();
    }
    const tuned = await cliInProcess(['eval', gguf, '--adapter', out, '--data', tinyText, '--json']);
    const fromMerged = await cliInProcess(['eval', merged, '--data', tinyText, '--json']);
    const [a, b] = [JSON.parse(tuned.stdout).loss, JSON.parse(fromMerged.stdout).loss];
    assert.ok(Math.abs(a - b) < 1e-2, `${a} vs ${b}: the merged file computes what base + adapter does`);
  });
});

describe('non-finite steps in knobs tune (the trainer loop: issue 11 item 6)', () => {
  it('a LoRA tune skips NaN steps as {"step","skipped":"nonfinite_grad"} and stops after max_nonfinite_steps in a row', async () => {
    const out = path('nonfinite-lora');
    const json = {
      ...LORA_RECIPE,
      lora: { r: 4, lora_alpha: 8, target_modules: ['c_attn'], init_lora_weights: false },
      optimizer: { type: 'sgd', lr: 1e30 },
      steps: 20,
      log_every: 1,
      checkpoint_every: 1,
      max_nonfinite_steps: 2,
    };
    const r = await cliInProcess(['tune', base, await recipe('nonfinite.json', json), '--out', out]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /max_nonfinite_steps = 2/);
    const rows = (await readFile(join(out, 'metrics.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(
      rows.filter((row) => row.skipped === 'nonfinite_grad').map((row) => row.step),
      [2, 3, 4],
    );
    assert.ok(existsSync(join(out, 'checkpoints', 'step-3')), 'the checkpoints before the stop are kept');
  });
});
