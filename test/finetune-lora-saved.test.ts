/**
 * What a LoRA adapter trains besides its deltas (PEFT's `modules_to_save` and `bias`): training only
 * the copies, the base untouched, the PEFT layout written and read back, the rules that select them
 * and the configurations that are refused. PEFT's own files with these fields are the fixtures of
 * finetune-lora.test.ts (scripts/gen_lora_fixtures.py).
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import * as k from '../src/index.js';
import { ADAPTER_WEIGHTS_NAME, baseDigest, loadLoraAdapter, saveLoraAdapter } from '../src/finetune/adapter.js';
import { AdapterSet } from '../src/finetune/adapter-set.js';
import { applyLora, parseLoraConfig, planLora } from '../src/finetune/lora.js';
import { quantizeBase } from '../src/finetune/quantized-base.js';
import { loadSafetensors, saveSafetensors } from '../src/formats/safetensors.js';
import { openLanguageModel } from '../src/load/language-model.js';
import { loadHfModel } from '../src/models/hf/load.js';
import { openBatchEngine } from '../src/serve/open.js';
import { makeServedModelDir } from './harness/api-server.js';
import { trainEightSteps } from './harness/lora-adapter.js';
import { repoRoot } from './harness/fixtures.js';

const HF_DIR = join(repoRoot(), 'test', 'fixtures', 'hf');
const GPT2 = join(HF_DIR, 'gpt2-tiny');
const tmpDirs: string[] = [];
after(async () => {
  for (const d of tmpDirs) await rm(d, { recursive: true, force: true });
});
async function tmp(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'knobs-lora-saved-'));
  tmpDirs.push(d);
  return d;
}

const IDS = [5, 9, 12, 5, 9, 12, 7, 3, 5, 9, 12, 5, 9, 12, 7, 3, 5, 9];
type Lm = k.Module & { forward(ids: k.Tensor): k.Tensor };
const logitsOf = (model: Lm): Float32Array =>
  Float32Array.from(
    k
      .noGrad(() => model.forward(k.fromArray(IDS, [1, IDS.length], { dtype: 'i32' })))
      .contiguousStorage() as Float32Array,
  );
const snapshot = (model: k.Module): Map<string, Float32Array> =>
  new Map([...model.stateDict()].map(([n, t]) => [n, Float32Array.from(t.contiguousStorage() as Float32Array)]));
const refused = (field: string, pattern: RegExp) => (e: k.KnobsError) =>
  (e as k.FormatError).rule === 'lora_invalid_config' && e.details.field === field && pattern.test(e.message);

const SAVED_CONFIG = { r: 4, lora_alpha: 8, target_modules: ['c_attn'], modules_to_save: ['ln_f'], bias: 'lora_only' };

describe('LoRA with modules_to_save and bias: training', () => {
  it('only the deltas and the copies train; the base stays bit-identical; the file round-trips', async () => {
    const model = (await loadHfModel(GPT2)).model as Lm & k.GPT;
    const before = snapshot(model);
    const digest = baseDigest(model);
    const adapter = applyLora(model, parseLoraConfig(SAVED_CONFIG), { generator: new k.Generator(1) });
    assert.deepEqual(adapter.saved.map((s) => s.target.key).sort(), [
      'transformer.h.0.attn.c_attn.base_layer.bias',
      'transformer.h.1.attn.c_attn.base_layer.bias',
      'transformer.ln_f.bias',
      'transformer.ln_f.weight',
    ]);
    const copies = new Set(['h.0.attn.c_attn.bias', 'h.1.attn.c_attn.bias', 'ln_f.bias', 'ln_f.weight']);
    const trains = (n: string): boolean => /\.lora_[AB]\.weight$/.test(n) || copies.has(n);
    model.train();
    const { losses, opt } = trainEightSteps(model, trains);
    assert.ok(losses.at(-1)! < losses[0]! - 0.1, `loss ${losses[0]} → ${losses.at(-1)}`);
    const state = new Set([...opt.stateDict().tensors.keys()].map((n) => n.replace(/\.(exp_avg|exp_avg_sq|m|v)$/, '')));
    assert.ok(
      [...copies].every((n) => [...state].some((s) => s.includes(n))),
      [...state].join(', '),
    );
    for (const s of adapter.saved)
      assert.notDeepEqual(s.value.contiguousStorage(), s.target.original.contiguousStorage(), `${s.target.key} moved`);
    assert.equal(baseDigest(model), digest, 'an attached copy hashes as the base it stands for');

    model.eval();
    const tuned = logitsOf(model);
    const out = join(await tmp(), 'adapter');
    await saveLoraAdapter(out, model, adapter, { baseDigest: digest });
    const file = await loadSafetensors(join(out, ADAPTER_WEIGHTS_NAME));
    assert.deepEqual(
      [...file.tensors.keys()].filter((key) => !key.includes('.lora_')).sort(),
      adapter.saved.map((s) => `base_model.model.${s.target.key}`).sort(),
      'the copies under PEFT keys',
    );

    adapter.detach();
    for (const [n, w] of before) assert.deepEqual(model.stateDict().get(n)!.contiguousStorage(), w, `${n} is the base`);
    assert.ok(
      model.namedParameters().every(([, p]) => !p.requiresGrad),
      'the base is frozen again',
    );
    adapter.attach();
    assert.deepEqual(logitsOf(model), tuned, 'attached again');

    const fresh = (await loadHfModel(GPT2)).model as Lm;
    fresh.eval();
    const base = logitsOf(fresh);
    await loadLoraAdapter(out, fresh);
    assert.deepEqual(logitsOf(fresh), tuned, 'read back');
    assert.notDeepEqual(tuned, base);
  });

  it('an AdapterSet swaps the copies per call: the base and the adapter never see each other', async () => {
    const model = (await loadHfModel(GPT2)).model as Lm;
    const adapter = applyLora(model, parseLoraConfig(SAVED_CONFIG), { generator: new k.Generator(2) });
    for (const s of adapter.saved) (s.value.storage as Float32Array).fill(0.5);
    const out = join(await tmp(), 'adapter');
    await saveLoraAdapter(out, model, adapter);
    model.eval();
    const tuned = logitsOf(model);
    adapter.detach();
    const base = logitsOf(model);

    const served = (await loadHfModel(GPT2)).model as Lm;
    served.eval();
    const set = new AdapterSet(served);
    await set.load('a', out);
    assert.deepEqual(await set.use(null, () => logitsOf(served)), base);
    assert.deepEqual(await set.use('a', () => logitsOf(served)), tuned);
    assert.deepEqual(await set.use(null, () => logitsOf(served)), base);
  });

  it("an adapter does not attach over another one's copy of the same tensor", async () => {
    const model = (await loadHfModel(GPT2)).model as Lm;
    model.eval();
    const first = applyLora(model, parseLoraConfig({ target_modules: ['c_attn'], modules_to_save: ['ln_f'] }));
    first.detach();
    const base = logitsOf(model);
    const second = applyLora(model, parseLoraConfig({ target_modules: ['c_fc'], modules_to_save: ['ln_f'] }));
    for (const s of second.saved) (s.value.storage as Float32Array).fill(0.25);
    const withSecond = logitsOf(model);
    assert.throws(
      () => first.attach(),
      (e: k.KnobsError) => (e as k.FormatError).rule === 'lora_already_applied' && /ln_f/.test(e.message),
    );
    assert.deepEqual(logitsOf(model), withSecond, 'nothing of the first attached');
    second.detach();
    assert.deepEqual(logitsOf(model), base);
  });

  it('the batching engine serves such an adapter: its copies per row, as the model with it attached', async () => {
    const made = await makeServedModelDir(256);
    tmpDirs.push(made.tmp);
    const opened = await openLanguageModel(made.dir);
    const adapter = applyLora(
      opened.model,
      parseLoraConfig({ target_modules: ['q_proj'], modules_to_save: ['model.norm'] }),
    );
    for (const s of adapter.saved) (s.value.storage as Float32Array).fill(0.5);
    const out = join(await tmp(), 'adapter');
    await saveLoraAdapter(out, opened.model, adapter);
    adapter.detach();
    const set = new AdapterSet(opened.model);
    await set.load('tuned-norms', out);
    const { engine, reason } = openBatchEngine(opened, { kvCacheMb: 4, adapters: set });
    assert.equal(reason, null);
    const prompt = [5, 9, 12, 7];
    const logits = async (name: string | null): Promise<Float32Array> => {
      let first: Float32Array | null = null;
      await engine!.submit({
        prompt,
        maxTokens: 1,
        sampling: { greedy: true },
        seed: 0,
        eos: new Set(),
        adapter: name,
        onToken: (_, l) => void (first ??= l.slice()),
      });
      return first!;
    };
    const [tuned, base] = [await logits('tuned-norms'), await logits(null)];
    const lm = opened.model as Lm;
    const want = await set.use('tuned-norms', () =>
      k.noGrad(() => lm.forward(k.fromArray(prompt, [1, prompt.length], { dtype: 'i32' }))).contiguousStorage(),
    );
    const lastRow = (want as Float32Array).subarray(want.length - tuned.length);
    const diff = Math.max(...tuned.map((v, i) => Math.abs(v - lastRow[i]!)));
    assert.ok(diff < 1e-4, `engine vs model with the adapter: ${diff}`);
    assert.ok(Math.max(...tuned.map((v, i) => Math.abs(v - base[i]!))) > 1e-2, 'the copy changed the logits');

    // a copy of a tensor the engine does not read (none of today's models has one: a stand-in) turns batching off
    const copies = set.get('tuned-norms').saved as unknown as { target: { original: k.Tensor; key: string } }[];
    copies.push({ target: { original: k.zeros([4]), key: 'model.extra.weight' } });
    assert.throws(
      () =>
        engine!.submit({
          prompt,
          maxTokens: 1,
          sampling: { greedy: true },
          seed: 0,
          eos: new Set(),
          adapter: 'tuned-norms',
        }),
      /adapter "tuned-norms" trains a copy of model\.extra\.weight, which batched decoding does not read/,
    );
    const refused = openBatchEngine(opened, { kvCacheMb: 4, adapters: set });
    assert.equal(refused.engine, null);
    assert.match(
      refused.reason!,
      /"tuned-norms" trains a copy of model\.extra\.weight, which the batching engine does not read/,
    );
  });
});

describe('LoRA with modules_to_save and bias: rules and refusals', () => {
  it("a second adapter does not plan over the first one's copy; detaching in either order restores the base", async () => {
    const model = (await loadHfModel(GPT2)).model as Lm;
    model.eval();
    const base = logitsOf(model);
    const first = applyLora(model, parseLoraConfig({ target_modules: ['c_attn'], modules_to_save: ['ln_f'] }));
    for (const s of first.saved) (s.value.storage as Float32Array).fill(0.5);
    assert.throws(
      () => planLora(model, parseLoraConfig({ target_modules: ['c_fc'], modules_to_save: ['ln_f'] })),
      (e: k.KnobsError) => (e as k.FormatError).rule === 'lora_already_applied' && /ln_f/.test(e.message),
    );
    assert.throws(
      () => planLora(model, parseLoraConfig({ target_modules: ['c_fc'], modules_to_save: ['lora_A'] })),
      refused('modules_to_save', /matches no module/),
      "another adapter's lora_A is not the base's to save",
    );
    const second = applyLora(model, parseLoraConfig({ target_modules: ['c_fc'], bias: 'lora_only' }));
    first.detach();
    second.detach();
    assert.deepEqual(logitsOf(model), base);
  });

  it('reading PEFT files: an entry that matches nothing is ignored; a missing "lora_only" bias keeps the base', async () => {
    const model = (await loadHfModel(GPT2)).model as Lm;
    const adapter = applyLora(model, parseLoraConfig({ target_modules: ['c_attn'], bias: 'lora_only' }));
    const out = join(await tmp(), 'adapter');
    await saveLoraAdapter(out, model, adapter);
    adapter.detach();
    // PEFT before #3490 wrote no bias for "lora_only"; an entry such as "score" matches nothing in a causal LM.
    const file = join(out, ADAPTER_WEIGHTS_NAME);
    const { tensors } = await loadSafetensors(file);
    const kept = new Map([...tensors].filter(([key]) => !key.endsWith('base_layer.bias'))) as Map<string, k.Tensor>;
    await saveSafetensors(file, kept, { format: 'pt' });
    const configFile = join(out, 'adapter_config.json');
    const config = JSON.parse(await readFile(configFile, 'utf8')) as Record<string, unknown>;
    await writeFile(configFile, JSON.stringify({ ...config, modules_to_save: ['score'] }));
    model.eval();
    const base = logitsOf(model);
    const loaded = await loadLoraAdapter(out, model);
    assert.equal(loaded.adapter.saved.length, 2, 'the biases of the two targeted layers, at the base values');
    for (const s of loaded.adapter.saved)
      assert.deepEqual(s.value.contiguousStorage(), s.target.original.contiguousStorage(), s.target.key);
    assert.deepEqual(logitsOf(model), base, 'lora_B is zero: nothing changed');
    loaded.adapter.detach();
    // Only a lora_only bias may be missing: a module to save without its tensors is an incomplete file.
    await writeFile(configFile, JSON.stringify({ ...config, modules_to_save: ['ln_f'] }));
    await assert.rejects(
      loadLoraAdapter(out, model),
      (e: k.KnobsError) => (e as k.FormatError).rule === 'lora_missing_tensor' && /ln_f/.test(e.message),
    );
  });

  it('LoRA skips a module to save; bias "all" takes every bias, a targeted one under base_layer', async () => {
    const model = (await loadHfModel(GPT2)).model;
    const plan = planLora(
      model,
      parseLoraConfig({ target_modules: 'all-linear', modules_to_save: ['c_fc'], bias: 'all', r: 2 }),
    );
    const targets = plan.targets.map((t) => t.path);
    assert.ok(targets.length > 0 && targets.every((p) => !p.endsWith('c_fc')), targets.join(', '));
    const keys = plan.saved.map((s) => s.key);
    assert.ok(keys.includes('transformer.h.0.mlp.c_fc.weight') && keys.includes('transformer.h.0.mlp.c_fc.bias'));
    assert.ok(keys.includes('transformer.h.0.attn.c_attn.base_layer.bias'), 'a targeted bias');
    assert.ok(keys.includes('transformer.h.0.ln_1.bias'), 'a norm bias');
    assert.equal(new Set(keys).size, keys.length, 'each tensor once');
  });

  it('bad modules_to_save and bias values are errors naming the field; the model is untouched', async () => {
    const gpt = (await loadHfModel(GPT2)).model;
    const before = snapshot(gpt);
    const plan = (extra: Record<string, unknown>) => () =>
      planLora(gpt, parseLoraConfig({ target_modules: ['c_attn'], ...extra }));
    assert.throws(plan({ modules_to_save: ['score'] }), refused('modules_to_save', /matches no module/));
    assert.throws(plan({ modules_to_save: ['lm_head'] }), refused('modules_to_save', /one tensor/));
    assert.throws(plan({ modules_to_save: ['wte'] }), refused('modules_to_save', /one tensor/));
    assert.throws(
      plan({ modules_to_save: ['h.0', 'ln_1'] }),
      refused('modules_to_save', /both transformer\.h\.0 and transformer\.h\.0\.ln_1 inside it/),
    );
    // "_attn" ends c_attn's name, a LoRA target: LoRA skips only modules a whole name segment names.
    assert.throws(plan({ modules_to_save: ['_attn'] }), refused('modules_to_save', /c_attn is a LoRA target/));
    assert.throws(
      plan({ modules_to_save: 'ln_f' }),
      (e: k.KnobsError) => e.details.field === 'modules_to_save' && /must be a list/.test(e.message),
    );
    assert.throws(
      () => parseLoraConfig({ modules_to_save: ['(unclosed'] }),
      (e: k.KnobsError) => e.details.field === 'modules_to_save',
    );
    assert.throws(
      () => parseLoraConfig({ bias: 'boft_only' }),
      (e: k.KnobsError) => e.details.field === 'bias' && /"none".*"all".*"lora_only"/.test(e.message),
    );
    for (const [n, w] of before) assert.deepEqual(gpt.stateDict().get(n)!.contiguousStorage(), w, n);

    const qwen = (await loadHfModel(join(HF_DIR, 'qwen2-bias-tied'))).model;
    assert.throws(
      () => planLora(qwen, parseLoraConfig({ target_modules: ['q_proj'], modules_to_save: ['embed_tokens'] })),
      refused('modules_to_save', /model\.embed_tokens/),
    );
    // "attn" ends every self_attn's name, and q_proj inside it stays a LoRA target.
    assert.throws(
      () => planLora(qwen, parseLoraConfig({ target_modules: ['q_proj'], modules_to_save: ['attn'] })),
      refused('modules_to_save', /self_attn holds model\.layers\.0\.self_attn\.q_proj/),
    );
    quantizeBase(gpt, 'q8_0');
    assert.throws(plan({ modules_to_save: ['c_fc'] }), refused('modules_to_save', /quantized/));
    assert.throws(plan({ modules_to_save: ['h.0'] }), refused('modules_to_save', /h\.0\.attn\.c_attn is quantized/));
  });
});
