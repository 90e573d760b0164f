/**
 * LoRA adapters against PyTorch applying PEFT's rules: scripts/gen_lora_fixtures.py wrote adapters
 * in PEFT's exact layout onto the tiny Hugging Face fixtures (GPT-2 Conv1D with rsLoRA and a suffix
 * that selects two modules, Llama with GQA on q_proj/v_proj, a regex target with rank_pattern and
 * alpha_pattern) and the logits torch computes for base + adapter. knobs must load each one and
 * match (|a − b| ≤ 1e-4 + 1e-4·|b|) with the same greedy tokens; merging must not change the logits
 * (1e-5) and unmerging must restore the base; knobs' own writes must have the fixture's layout; and
 * training must move only lora_A / lora_B.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import * as k from '../src/index.js';
import { loadSafetensors, saveSafetensors } from '../src/formats/safetensors.js';
import {
  ADAPTER_CONFIG_NAME,
  ADAPTER_WEIGHTS_NAME,
  BASE_DIGEST_KEY,
  baseDigest,
  loadLoraAdapter,
  loraConfigDict,
  saveLoraAdapter,
} from '../src/finetune/adapter.js';
import { LORA_DEFAULTS, applyLora, isTargetModule, parseLoraConfig, planLora } from '../src/finetune/lora.js';
import { generateHfTokens } from '../src/models/hf/generate.js';
import { loadHfModel } from '../src/models/hf/load.js';
import { AdapterSet } from '../src/finetune/adapter-set.js';
import { BatchedGpt } from '../src/serve/batched-gpt.js';
import { BatchedLlama } from '../src/serve/batched-llama.js';
import { BatchEngine } from '../src/serve/engine.js';
import { trainEightSteps } from './harness/lora-adapter.js';
import { addon, skip as nativeSkip } from './harness/native.js';
import { repoRoot } from './harness/fixtures.js';

interface Expected {
  base: string;
  modules: string[];
  /** PEFT keys of the trained copies (modules_to_save, bias), when the case has any. */
  saved?: string[];
  prompt: number[];
  greedy: number[];
  logits_ids: number[];
  logits: number[][];
}

const ROOT = repoRoot();
const LORA_DIR = join(ROOT, 'test', 'fixtures', 'lora');
const HF_DIR = join(ROOT, 'test', 'fixtures', 'hf');
const cases = readdirSync(LORA_DIR, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort();
const expectedOf = (name: string): Expected =>
  JSON.parse(readFileSync(join(LORA_DIR, name, 'expected.json'), 'utf8')) as Expected;
const tmpDirs: string[] = [];
async function tmp(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'knobs-lora-'));
  tmpDirs.push(d);
  return d;
}
after(async () => {
  for (const d of tmpDirs) await rm(d, { recursive: true, force: true });
});

function logitsOf(model: k.Module & { forward(ids: k.Tensor): k.Tensor }, ids: readonly number[]): Float32Array {
  return k
    .noGrad(() => model.forward(k.fromArray(ids, [1, ids.length], { dtype: 'i32' })))
    .contiguousStorage() as Float32Array;
}

function assertClose(got: Float32Array, want: ArrayLike<number>, atol: number, rtol: number, label: string): void {
  assert.equal(got.length, want.length, label);
  for (let i = 0; i < got.length; i++) {
    const b = want[i]!;
    assert.ok(Math.abs(got[i]! - b) <= atol + rtol * Math.abs(b), `${label}: element ${i} is ${got[i]}, expected ${b}`);
  }
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

describe('PEFT adapters written by PyTorch load in knobs', () => {
  it('the fixtures cover GPT-2 Conv1D, Llama GQA, a regex target, a rank_pattern, modules_to_save and bias', () => {
    const configs = cases.map(
      (c) => JSON.parse(readFileSync(join(LORA_DIR, c, ADAPTER_CONFIG_NAME), 'utf8')) as Record<string, unknown>,
    );
    assert.ok(configs.some((c) => c.fan_in_fan_out === true));
    assert.ok(configs.some((c) => typeof c.target_modules === 'string'));
    assert.ok(configs.some((c) => Object.keys(c.rank_pattern as object).length > 0));
    assert.ok(cases.some((c) => expectedOf(c).base.startsWith('llama-gqa')));
    assert.ok(configs.some((c) => Array.isArray(c.modules_to_save)));
    assert.ok(configs.some((c) => c.bias === 'all') && configs.some((c) => c.bias === 'lora_only'));
  });

  for (const name of cases) {
    const expected = expectedOf(name);
    for (const backend of k.backends()) {
      it(`${name} on ${backend}: logits and greedy tokens equal torch's`, async () => {
        const loaded = await loadHfModel(join(HF_DIR, expected.base));
        const { adapter, recordedDigest } = await loadLoraAdapter(join(LORA_DIR, name), loaded.model);
        assert.equal(recordedDigest, null, 'PEFT files carry no knobs digest');
        assert.deepEqual([...adapter.layers.keys()], expected.modules, 'targeted modules');
        assert.deepEqual(adapter.saved.map((s) => s.target.key).sort(), expected.saved ?? [], 'trained copies');
        loaded.model.eval();
        k.withBackend(backend, () => {
          assertClose(
            logitsOf(loaded.model, expected.logits_ids),
            expected.logits.flat(),
            1e-4,
            1e-4,
            `${name}/${backend}`,
          );
          const result = generateHfTokens(loaded, expected.prompt, { greedy: true, maxNewTokens: 8 });
          assert.deepEqual(result.tokens, expected.greedy);
        });
      });
    }

    it(`${name} on the batching engine, beside the base: torch's greedy tokens`, { skip: nativeSkip }, async () => {
      const loaded = await loadHfModel(join(HF_DIR, expected.base));
      const model = loaded.model;
      model.eval();
      const adapters = new AdapterSet(model);
      await adapters.load(name, join(LORA_DIR, name));
      const batched =
        model instanceof k.GPT ? new BatchedGpt(model, addon!) : new BatchedLlama(model as k.Llama, addon!);
      const engine = new BatchEngine(batched, { kvCacheBytes: 2 ** 20, adapters });
      const run = (adapter: string | null) =>
        engine.submit({
          prompt: expected.prompt,
          maxTokens: expected.greedy.length,
          sampling: { greedy: true },
          seed: 0,
          eos: new Set(),
          adapter,
        });
      const [tuned, base] = await Promise.all([run(name), run(null)]); // one batch: a row each
      assert.deepEqual(tuned.tokens, expected.greedy);
      const alone = k.noGrad(() =>
        model.generate(expected.prompt, { maxNewTokens: expected.greedy.length, temperature: 0, eosTokenId: null }),
      );
      assert.deepEqual(base.tokens, alone.tokens, 'the base row, as the base alone');
    });

    it(`${name}: merged logits equal base + adapter; unmerge restores the base`, async () => {
      const loaded = await loadHfModel(join(HF_DIR, expected.base));
      const before = new Map(
        [...loaded.model.stateDict()].map(([n, t]) => [n, Float32Array.from(t.contiguousStorage() as Float32Array)]),
      );
      const { adapter } = await loadLoraAdapter(join(LORA_DIR, name), loaded.model);
      loaded.model.eval();
      const live = logitsOf(loaded.model, expected.logits_ids);
      adapter.merge();
      assertClose(logitsOf(loaded.model, expected.logits_ids), live, 1e-5, 1e-5, `${name} merged`);
      let moved = 0;
      for (const [n, t] of loaded.model.stateDict())
        if (
          before.has(n) &&
          maxAbs(t.sub(k.fromArray(before.get(n)!, t.shape)).contiguousStorage() as Float32Array) > 0
        )
          moved++;
      const saved = expected.saved?.length ?? 0;
      assert.equal(moved, expected.modules.length + saved, 'merging moves exactly the targeted weights (and copies)');
      adapter.unmerge();
      assertClose(logitsOf(loaded.model, expected.logits_ids), live, 1e-5, 1e-5, `${name} unmerged`);
      adapter.detach(); // the trained copies go back to the base's own tensors
      for (const [n, w] of before) {
        const now = loaded.model.stateDict().get(n)!.contiguousStorage() as Float32Array;
        let worst = 0;
        for (let i = 0; i < w.length; i++) worst = Math.max(worst, Math.abs(now[i]! - w[i]!));
        assert.ok(worst <= 1e-6 * maxAbs(w), `${n}: max |W' − W| = ${worst} after unmerge`);
      }
    });

    it(`${name}: knobs writes it back in the fixture's layout and reads its own file`, async () => {
      const loaded = await loadHfModel(join(HF_DIR, expected.base));
      const { adapter } = await loadLoraAdapter(join(LORA_DIR, name), loaded.model);
      const out = join(await tmp(), 'adapter');
      await saveLoraAdapter(out, loaded.model, adapter);
      const theirs = await loadSafetensors(join(LORA_DIR, name, ADAPTER_WEIGHTS_NAME));
      const ours = await loadSafetensors(join(out, ADAPTER_WEIGHTS_NAME));
      assert.deepEqual([...ours.tensors.keys()].sort(), [...theirs.tensors.keys()].sort());
      for (const [key, t] of theirs.tensors) {
        const mine = ours.tensors.get(key) as k.Tensor;
        assert.equal(mine.dtype, 'f32', key);
        assert.deepEqual(mine.shape, (t as k.Tensor).shape, key);
        assert.deepEqual(mine.toArray(), (t as k.Tensor).toArray(), key);
      }
      assert.equal(ours.metadata?.get('format'), 'pt');
      assert.equal(
        ours.metadata?.get(BASE_DIGEST_KEY),
        baseDigest((await loadHfModel(join(HF_DIR, expected.base))).model),
      );
      const theirConfig = JSON.parse(readFileSync(join(LORA_DIR, name, ADAPTER_CONFIG_NAME), 'utf8')) as Record<
        string,
        unknown
      >;
      const ourConfig = JSON.parse(readFileSync(join(out, ADAPTER_CONFIG_NAME), 'utf8')) as Record<string, unknown>;
      assert.deepEqual(
        Object.keys(ourConfig).sort(),
        Object.keys(theirConfig).sort(),
        'every field LoraConfig.to_dict() emits',
      );
      for (const f of [
        'r',
        'lora_alpha',
        'target_modules',
        'fan_in_fan_out',
        'use_rslora',
        'rank_pattern',
        'alpha_pattern',
        'task_type',
        'peft_type',
        'bias',
        'modules_to_save',
      ]) {
        assert.deepEqual(ourConfig[f], theirConfig[f], f);
      }
      const again = await loadHfModel(join(HF_DIR, expected.base));
      await loadLoraAdapter(out, again.model);
      again.model.eval();
      assertClose(logitsOf(again.model, expected.logits_ids), expected.logits.flat(), 1e-4, 1e-4, `${name} re-read`);
    });
  }
});

describe("adapters knobs wrote, applied by PyTorch with PEFT's rules", () => {
  // scripts/gen_knobs_lora.mjs trained and wrote them; scripts/gen_lora_fixtures.py --verify applied
  // them in torch and recorded the agreement in verified.json. Here: knobs still reads them to the
  // logits it wrote then, so a change to the writer or the reader shows up against torch's check.
  const KNOBS_DIR = join(ROOT, 'test', 'fixtures', 'lora-knobs');
  const verified = JSON.parse(readFileSync(join(KNOBS_DIR, 'verified.json'), 'utf8')) as {
    cases: Record<string, { max_abs_diff: number }>;
  };
  const written = readdirSync(KNOBS_DIR, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();

  it('every case was verified by the script within 1e-4', () => {
    assert.deepEqual(Object.keys(verified.cases).sort(), written);
    for (const c of written) assert.ok(verified.cases[c]!.max_abs_diff <= 1e-4, c);
  });

  for (const name of written) {
    it(`${name}: knobs reads its own adapter to the logits torch verified`, async () => {
      const knobs = JSON.parse(readFileSync(join(KNOBS_DIR, name, 'knobs_logits.json'), 'utf8')) as {
        base: string;
        ids: number[];
        logits: number[][];
      };
      const loaded = await loadHfModel(join(HF_DIR, knobs.base));
      await loadLoraAdapter(join(KNOBS_DIR, name), loaded.model);
      loaded.model.eval();
      assertClose(logitsOf(loaded.model, knobs.ids), knobs.logits.flat(), 1e-5, 1e-5, name);
    });
  }
});

describe('LoRA rules', () => {
  const config = (over: Record<string, unknown>): ReturnType<typeof parseLoraConfig> => parseLoraConfig(over);

  it('target matching follows check_target_module_exists', () => {
    const suffix = config({ target_modules: ['c_proj'] });
    assert.ok(isTargetModule(suffix, 'transformer.h.0.attn.c_proj'));
    assert.ok(isTargetModule(suffix, 'transformer.h.0.mlp.c_proj'));
    assert.ok(isTargetModule(suffix, 'c_proj'));
    assert.ok(!isTargetModule(suffix, 'transformer.h.0.attn.xc_proj'));
    const regex = config({ target_modules: String.raw`.*\.q_proj` });
    assert.ok(isTargetModule(regex, 'model.layers.0.self_attn.q_proj'));
    assert.ok(!isTargetModule(regex, 'model.layers.0.self_attn.q_proj_x'), 'fullmatch, not search');
    const layers = config({ target_modules: ['q_proj'], layers_to_transform: [1] });
    assert.ok(!isTargetModule(layers, 'model.layers.0.self_attn.q_proj'));
    assert.ok(isTargetModule(layers, 'model.layers.1.self_attn.q_proj'));
    const pattern = config({ target_modules: ['c_attn'], layers_to_transform: 0, layers_pattern: 'h' });
    assert.ok(isTargetModule(pattern, 'transformer.h.0.attn.c_attn'));
    assert.ok(!isTargetModule(pattern, 'transformer.h.1.attn.c_attn'));
    const excluded = config({
      target_modules: ['q_proj', 'v_proj'],
      exclude_modules: ['model.layers.0.self_attn.v_proj'],
    });
    assert.ok(!isTargetModule(excluded, 'model.layers.0.self_attn.v_proj'));
    assert.ok(isTargetModule(excluded, 'model.layers.1.self_attn.v_proj'));
  });

  it("all-linear takes every Linear/Conv1D but the output head; null takes PEFT's default list", async () => {
    const llama = (await loadHfModel(join(HF_DIR, 'llama-gqa-bf16-llama3'))).model;
    const plan = planLora(llama, config({ target_modules: 'all-linear' }));
    assert.equal(plan.targets.length, 2 * 7);
    assert.ok(!plan.targets.some((t) => t.path === 'lm_head'));
    assert.deepEqual(
      planLora(llama, config({})).targets.map((t) => t.path),
      [
        'model.layers.0.self_attn.q_proj',
        'model.layers.0.self_attn.v_proj',
        'model.layers.1.self_attn.q_proj',
        'model.layers.1.self_attn.v_proj',
      ],
    );
    const gpt = (await loadHfModel(join(HF_DIR, 'gpt2-tiny'))).model;
    const gptPlan = planLora(gpt, config({ target_modules: 'all-linear' }));
    assert.equal(gptPlan.targets.length, 2 * 4);
    assert.equal(gptPlan.config.fan_in_fan_out, true, 'Conv1D layers set fan_in_fan_out, as PEFT does');
  });

  it('scaling is alpha/r, or alpha/√r with use_rslora; rank_pattern and alpha_pattern pick per module', async () => {
    const gpt = (await loadHfModel(join(HF_DIR, 'gpt2-tiny'))).model;
    const a = applyLora(
      gpt,
      config({
        r: 4,
        lora_alpha: 8,
        target_modules: ['c_attn', 'c_fc'],
        rank_pattern: { c_fc: 2 },
        alpha_pattern: { 'h.1.mlp.c_fc': 6 },
      }),
    );
    assert.equal(a.layers.get('transformer.h.0.attn.c_attn')!.scaling, 2);
    assert.equal(a.layers.get('transformer.h.0.mlp.c_fc')!.r, 2);
    assert.equal(a.layers.get('transformer.h.0.mlp.c_fc')!.scaling, 4);
    assert.equal(a.layers.get('transformer.h.1.mlp.c_fc')!.scaling, 3);
    const llama = (await loadHfModel(join(HF_DIR, 'llama-gqa-bf16-llama3'))).model;
    const b = applyLora(llama, config({ r: 4, lora_alpha: 8, use_rslora: true, target_modules: ['q_proj'] }));
    assert.equal(b.layers.get('model.layers.0.self_attn.q_proj')!.scaling, 8 / 2);
  });

  it('an untrained adapter changes nothing; lora_A has kaiming-uniform(a=√5) bounds', async () => {
    const loaded = await loadHfModel(join(HF_DIR, 'llama-gqa-bf16-llama3'));
    const ids = [1, 7, 12, 3];
    const base = logitsOf(loaded.model, ids);
    const adapter = applyLora(loaded.model, config({ r: 4, target_modules: 'all-linear' }), {
      generator: new k.Generator(5),
    });
    loaded.model.eval();
    assert.deepEqual(logitsOf(loaded.model, ids), base);
    for (const l of adapter.layers.values()) {
      const a = l.lora_A.weight.contiguousStorage() as Float32Array;
      const bound = 1 / Math.sqrt(l.layer.inFeatures);
      assert.ok(maxAbs(a) <= bound && maxAbs(a) > bound / 2, l.path);
      assert.equal(maxAbs(l.lora_B.weight.contiguousStorage() as Float32Array), 0);
    }
  });

  it('fields knobs does not implement are errors naming the field', () => {
    for (const [field, value] of [
      ['use_dora', 'yes'],
      ['modules_to_save', 'lm_head'],
      ['lora_bias', true],
      ['bias', 'boft_only'],
      ['init_lora_weights', 'loftq'],
      ['some_future_field', 3],
      ['task_type', 'SEQ_CLS'],
    ] as const) {
      assert.throws(
        () => parseLoraConfig({ target_modules: ['q_proj'], [field]: value }),
        (e: k.KnobsError) => e.code === 'E_FORMAT' && e.details.field === field && e.message.includes(field),
        field,
      );
    }
    assert.throws(
      () => parseLoraConfig({ r: 0 }),
      (e: k.KnobsError) => e.details.field === 'r',
    );
    assert.throws(
      () => parseLoraConfig({ target_modules: '.*q', layers_to_transform: [0] }),
      (e: k.KnobsError) => e.details.field === 'layers_to_transform',
    );
    assert.throws(
      () => parseLoraConfig({ target_modules: '(?P<x>q)' }),
      (e: k.KnobsError) => e.details.field === 'target_modules',
    );
    assert.equal(
      parseLoraConfig({
        use_dora: false,
        modules_to_save: null,
        loftq_config: {},
        runtime_config: { ephemeral_gpu_offload: false },
      }).r,
      LORA_DEFAULTS.r,
    );
  });

  it('a target that matches nothing, a non-linear target, or a rank larger than the layer is an error', async () => {
    const gpt = (await loadHfModel(join(HF_DIR, 'gpt2-tiny'))).model;
    assert.throws(
      () => planLora(gpt, config({ target_modules: ['q_proj'] })),
      (e: k.KnobsError) => (e as k.FormatError).rule === 'lora_no_target' && /c_attn/.test(e.message),
    );
    assert.throws(
      () => planLora(gpt, config({ target_modules: ['attn'] })),
      (e: k.KnobsError) =>
        (e as k.FormatError).rule === 'lora_unsupported_module' && e.details.module === 'transformer.h.0.attn',
    );
    assert.throws(
      () => planLora(gpt, config({ r: 33, target_modules: ['c_attn'] })),
      (e: k.KnobsError) =>
        (e as k.FormatError).rule === 'lora_rank_too_large' && e.details.module === 'transformer.h.0.attn.c_attn',
    );
  });
});

describe('adapter files: bad input', () => {
  const name = 'llama-gqa-qv';
  const base = join(HF_DIR, 'llama-gqa-bf16-llama3');
  async function copyFixture(): Promise<string> {
    const d = join(await tmp(), name);
    await cp(join(LORA_DIR, name), d, { recursive: true });
    return d;
  }
  const rule =
    (r: string) =>
    (e: k.KnobsError): boolean =>
      (e as k.FormatError).rule === r;

  it('an adapter made on another base is refused unless allowed', async () => {
    const loaded = await loadHfModel(base);
    const { adapter } = await loadLoraAdapter(join(LORA_DIR, name), loaded.model);
    const out = join(await tmp(), 'a');
    await saveLoraAdapter(out, loaded.model, adapter);
    const other = await loadHfModel(base);
    const w = other.model.stateDict().get('model.norm.weight')!;
    (w.storage as Float32Array)[0]! += 1;
    await assert.rejects(loadLoraAdapter(out, other.model), rule('lora_base_mismatch'));
    assert.equal(
      other.model.namedParameters().some(([n]) => n.includes('lora_')),
      false,
      'nothing attached after a refusal',
    );
    await loadLoraAdapter(out, other.model, { allowBaseMismatch: true });
  });

  it('missing, extra, misshapen or corrupt tensors and a missing config are typed errors; the model is untouched', async () => {
    const d = await copyFixture();
    const { tensors, metadata } = await loadSafetensors(join(d, ADAPTER_WEIGHTS_NAME));
    const write = (m: Map<string, unknown>): Promise<void> =>
      saveSafetensors(join(d, ADAPTER_WEIGHTS_NAME), m as Map<string, k.Tensor>, metadata);
    const first = [...tensors.keys()][0]!;
    const check = async (r: string): Promise<void> => {
      const model = (await loadHfModel(base)).model;
      await assert.rejects(loadLoraAdapter(d, model), rule(r));
      assert.equal(
        model.namedParameters().some(([n]) => n.includes('lora_')),
        false,
        r,
      );
    };
    await write(new Map([...tensors].slice(1)));
    await check('lora_missing_tensor');
    await write(new Map([...tensors, ['base_model.model.lm_head.lora_A.weight', k.zeros([4, 32])]]));
    await check('lora_unexpected_tensor');
    await write(new Map([...tensors].map(([n, t]) => [n, n === first ? k.zeros([3, 32]) : t])));
    await check('lora_shape_mismatch');
    await writeFile(join(d, ADAPTER_WEIGHTS_NAME), new Uint8Array([1, 2, 3]));
    const model = (await loadHfModel(base)).model;
    await assert.rejects(loadLoraAdapter(d, model), (e: k.KnobsError) => e.code === 'E_FORMAT');
    await writeFile(join(d, ADAPTER_CONFIG_NAME), '{"r": 4, "target_modules": ["q_proj"], "use_qalora": true}');
    await assert.rejects(
      loadLoraAdapter(d, model),
      (e: k.KnobsError) => e.details.field === 'use_qalora' && e.message.includes(ADAPTER_CONFIG_NAME),
    );
    await rm(join(d, ADAPTER_CONFIG_NAME));
    await assert.rejects(loadLoraAdapter(d, model), rule('lora_no_config'));
  });

  it('a new adapter directory appears whole; a failed write leaves nothing behind', async () => {
    const loaded = await loadHfModel(base);
    const adapter = applyLora(loaded.model, parseLoraConfig({ r: 2, target_modules: ['q_proj'] }));
    const parent = await tmp();
    await saveLoraAdapter(join(parent, 'a'), loaded.model, adapter);
    assert.deepEqual(readdirSync(parent), ['a']);
    assert.deepEqual(readdirSync(join(parent, 'a')).sort(), [ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME]);
    await saveLoraAdapter(join(parent, 'a'), loaded.model, adapter); // over an existing one: files replaced
    assert.deepEqual(readdirSync(join(parent, 'a')).sort(), [ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME]);
    await writeFile(join(parent, 'file'), 'x');
    await assert.rejects(
      saveLoraAdapter(join(parent, 'file', 'b'), loaded.model, adapter),
      (e: k.KnobsError) => e.code === 'E_IO',
    );
    assert.deepEqual(readdirSync(parent).sort(), ['a', 'file']);
  });

  it('loraConfigDict emits the fields PEFT emits', () => {
    const fixture = JSON.parse(readFileSync(join(LORA_DIR, name, ADAPTER_CONFIG_NAME), 'utf8')) as Record<
      string,
      unknown
    >;
    assert.deepEqual(Object.keys(loraConfigDict(LORA_DEFAULTS)).sort(), Object.keys(fixture).sort());
  });
});

describe('training LoRA', () => {
  it('a few steps reduce the loss; only lora_A / lora_B get gradients and optimizer state; the base stays bit-identical', async () => {
    const loaded = await loadHfModel(join(HF_DIR, 'gpt2-tiny'));
    const model = loaded.model;
    const before = new Map(
      [...model.stateDict()].map(([n, t]) => [n, Float32Array.from(t.contiguousStorage() as Float32Array)]),
    );
    const adapter = applyLora(
      model,
      parseLoraConfig({ r: 4, lora_alpha: 8, lora_dropout: 0.1, target_modules: ['c_attn', 'c_proj'] }),
      {
        generator: new k.Generator(1),
      },
    );
    model.train();
    const trainable = model
      .namedParameters()
      .filter(([, p]) => p.requiresGrad)
      .map(([n]) => n);
    assert.ok(trainable.length > 0 && trainable.every((n) => /\.lora_[AB]\.weight$/.test(n)), trainable.join(', '));
    const { losses, opt } = trainEightSteps(model, (n) => /\.lora_[AB]\.weight$/.test(n));
    assert.ok(losses.at(-1)! < losses[0]! - 0.1, `loss ${losses[0]} → ${losses.at(-1)}`);
    const state = [...opt.stateDict().tensors.keys()];
    assert.ok(state.length > 0 && state.every((n) => n.includes('.lora_')), state.join(', '));
    for (const [n, w] of before) assert.deepEqual(model.stateDict().get(n)!.contiguousStorage(), w, `${n} unchanged`);
    assert.ok(adapter.numParameters() < 0.2 * model.numParameters());
  });
});
