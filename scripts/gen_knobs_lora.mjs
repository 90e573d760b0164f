#!/usr/bin/env node
// Writes adapters that knobs trained (test/fixtures/lora-knobs/<case>/: adapter_config.json,
// adapter_model.safetensors, and knobs_logits.json with the logits knobs computes for base +
// adapter), for the other direction of the PEFT check: `/usr/bin/python3
// scripts/gen_lora_fixtures.py --verify` applies them with PEFT's rules in torch and compares.
// Run after `npx tsc -p tsconfig.json`: `node scripts/gen_knobs_lora.mjs`.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as k from '../dist/src/index.js';
import { loadHfModel } from '../dist/src/models/hf/load.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const CASES = [
  // GPT-2 Conv1D, every linear layer, rsLoRA.
  ['gpt2-all-linear', 'gpt2-tiny', { r: 4, lora_alpha: 8, target_modules: 'all-linear', use_rslora: true }],
  // Llama GQA with a rank_pattern, an alpha_pattern and layers_to_transform.
  [
    'llama-rank-pattern',
    'llama-gqa-bf16-llama3',
    {
      r: 4,
      lora_alpha: 8,
      target_modules: ['q_proj', 'k_proj', 'v_proj', 'down_proj'],
      layers_to_transform: [1],
      rank_pattern: { k_proj: 2 },
      alpha_pattern: { down_proj: 3 },
    },
  ],
  // GPT-2 with ln_f trained whole (modules_to_save) and every bias (bias "all").
  [
    'gpt2-saved-bias-all',
    'gpt2-tiny',
    { r: 4, lora_alpha: 8, target_modules: ['c_attn'], modules_to_save: ['ln_f'], bias: 'all' },
  ],
];
const TEXT = [5, 9, 12, 5, 9, 12, 7, 3, 5, 9, 12, 5, 9, 12, 7, 3, 5, 9];
const IDS = [1, 7, 12, 3, 9, 20, 4, 4];

for (const [name, base, config] of CASES) {
  const loaded = await loadHfModel(`${root}test/fixtures/hf/${base}`);
  const model = loaded.model;
  const adapter = k.applyLora(
    model,
    k.parseLoraConfig({ ...config, base_model_name_or_path: `test/fixtures/hf/${base}` }),
    { generator: new k.Generator(7) },
  );
  const opt = new k.AdamW(model, { lr: 3e-2, weightDecay: 0 });
  const ids = k.fromArray(TEXT.slice(0, -1), [1, TEXT.length - 1], { dtype: 'i32' });
  const targets = k.fromArray(TEXT.slice(1), [1, TEXT.length - 1], { dtype: 'i32' });
  model.train();
  for (let step = 0; step < 10; step++) {
    opt.zeroGrad();
    model.loss(ids, targets).backward();
    opt.step();
  }
  model.eval();
  const logits = k.noGrad(() => model.forward(k.fromArray(IDS, [1, IDS.length], { dtype: 'i32' })));
  const dir = `${root}test/fixtures/lora-knobs/${name}`;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  await k.saveLoraAdapter(dir, model, adapter);
  const rows = logits.toArray()[0].map((row) => row.map((v) => Number(v.toPrecision(7))));
  writeFileSync(`${dir}/knobs_logits.json`, `${JSON.stringify({ base, ids: IDS, logits: rows })}\n`);
  console.log(
    `${name}: ${adapter.layers.size} modules, ${adapter.saved.length} trained copies, ${adapter.numParameters()} adapter parameters`,
  );
}
