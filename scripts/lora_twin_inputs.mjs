#!/usr/bin/env node
/**
 * What the PyTorch twin of a `knobs tune` run (bench/lora_twin.py: a LoRA run, or a full fine-tune,
 * `trainable: ["**"]`) needs to start where knobs started and see what knobs saw:
 *
 *   node scripts/lora_twin_inputs.mjs TUNE_DIR OUT_DIR
 *
 * writes OUT_DIR/batches.json ({"batch_size", "context", "offsets": [[B window starts] per step]}:
 * the training windows, in order) and, for a LoRA run, OUT_DIR/adapter_config.json +
 * adapter_model.safetensors (the adapter as knobs initialised it, before step 1: lora_A from the
 * run's generator, lora_B zero).
 * It rebuilds them as the trainer does (src/train/trainer.ts, tune.ts, sources.ts): the model's
 * generator is mixSeed(seed, 1) and applyLora is its first use; the batcher's seed is mixSeed(seed, 2).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => import(join(ROOT, 'dist/src', p));
const { openLanguageModel } = await dist('load/language-model.js');
const { applyLora, planLora } = await dist('finetune/lora.js');
const { saveLoraAdapter, baseDigest } = await dist('finetune/adapter.js');
const { tuneLoraConfig } = await dist('train/tune-recipe.js');
const { Generator } = await dist('random.js');
const { mixSeed } = await dist('data/shuffle.js');
const { ByteTextCorpus, TextBatcher } = await dist('data/text.js');

const [tuneDir, outDir] = process.argv.slice(2);
if (!tuneDir || !outDir) {
  process.stderr.write('usage: node scripts/lora_twin_inputs.mjs TUNE_DIR OUT_DIR\n');
  process.exit(2);
}
const { base, recipe } = JSON.parse(readFileSync(join(tuneDir, 'tune.json'), 'utf8'));
const lora = recipe.lora !== undefined;
const fullFineTune = !lora && JSON.stringify(recipe.trainable) === '["**"]' && !recipe.frozen?.length;
if (!lora && !fullFineTune)
  throw new Error(`${tuneDir} is neither a LoRA run nor a full fine-tune (trainable ["**"], nothing frozen)`);
if ((recipe.grad_accum_steps ?? 1) !== 1) throw new Error('the twin takes one batch per step (grad_accum_steps 1)');
const seed = recipe.seed ?? 0;

mkdirSync(outDir, { recursive: true });
if (lora) {
  const { model } = await openLanguageModel(base);
  const digest = baseDigest(model);
  const plan = planLora(model, { ...tuneLoraConfig(recipe), base_model_name_or_path: base });
  const adapter = applyLora(model, plan, { generator: new Generator(mixSeed(seed, 1)) });
  await saveLoraAdapter(outDir, model, adapter, { baseDigest: digest });
}

const corpus = await ByteTextCorpus.open(recipe.data.path, { validationFraction: recipe.data.validation_fraction });
const batcher = new TextBatcher(corpus, {
  split: 'train',
  batchSize: recipe.batch_size,
  blockSize: recipe.context,
  seed: mixSeed(seed, 2),
});
const offsets = [];
for (let s = 0; s < recipe.steps; s++) offsets.push([...(await batcher.next()).offsets]);
await corpus.close();
writeFileSync(
  join(outDir, 'batches.json'),
  `${JSON.stringify({ batch_size: recipe.batch_size, context: recipe.context, offsets })}\n`,
);
process.stdout.write(`${JSON.stringify({ inputs: outDir, adapter: lora, steps: offsets.length })}\n`);
