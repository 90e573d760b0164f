/**
 * `knobs train / eval / generate` with Llama-family recipes (model.type "llama" and "qwen2") on
 * real text (Genesis 1–4 of the KJV): the run directory is a Hugging Face model directory, and
 * recipes whose sizes cannot work fail with typed errors naming the field.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import * as k from '../src/index.js';
import { Llama, llamaConfigFromHF } from '../src/models/llama.js';
import { parseRecipe } from '../src/train/recipe.js';
import { loadRun } from '../src/train/run-dir.js';
import { cli } from './harness/cli.js';

const TEXT = fileURLToPath(new URL('../../test/fixtures/text/genesis-1-4.txt', import.meta.url));

const recipe = (model: Record<string, unknown>): Record<string, unknown> => ({
  name: 'e2e-llama',
  model: {
    type: 'llama',
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 32,
    ...model,
  },
  data: { type: 'text', path: TEXT, validation_fraction: 0.1 },
  optimizer: { type: 'adamw', lr: 0.003, betas: [0.9, 0.95], weight_decay: 0.1 },
  batch_size: 4,
  steps: 6,
  log_every: 3,
  eval_batches: 2,
});

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-train-llama-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('knobs train (llama, qwen2)', { concurrency: false }, () => {
  for (const [type, architecture] of [
    ['llama', 'LlamaForCausalLM'],
    ['qwen2', 'Qwen2ForCausalLM'],
  ] as const) {
    it(`${type}: trains into a Hugging Face ${architecture} directory that eval and generate read`, async () => {
      const path = join(dir, `${type}.json`);
      const extra =
        type === 'qwen2'
          ? { tie_word_embeddings: true, eos_token_id: [10, 46] }
          : { rope_scaling: { rope_type: 'linear', factor: 2 } };
      await writeFile(path, JSON.stringify(recipe({ type, ...extra })));
      const out = join(dir, type);
      const r = await cli(['train', path, '--out', out, '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout).step, 6);
      assert.deepEqual((await readdir(out)).sort(), [
        'checkpoints',
        'config.json',
        'generation_config.json',
        'metrics.jsonl',
        'model.safetensors',
        'recipe.json',
        'tokenizer.json',
        'tokenizer_config.json',
        'training-data.json',
      ]);
      const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
      assert.equal(config.model_type, type);
      assert.deepEqual(config.architectures, [architecture]);
      assert.equal(config.num_key_value_heads, 2);
      assert.equal(config.hidden_act, 'silu');
      const generation = JSON.parse(await readFile(join(out, 'generation_config.json'), 'utf8'));
      assert.deepEqual(generation.eos_token_id, type === 'qwen2' ? [10, 46] : null);

      const { model } = await loadRun(out);
      assert.ok(model instanceof Llama);
      assert.deepEqual(model.config, llamaConfigFromHF(config));
      const { tensors } = await k.loadSafetensors(join(out, 'model.safetensors'));
      assert.deepEqual([...tensors.keys()].sort(), [...model.stateDict().keys()].sort());
      assert.equal(tensors.has('lm_head.weight'), type === 'llama');

      const e = await cli(['eval', out, '--json']);
      assert.equal(e.code, 0, e.stderr);
      const scored = JSON.parse(e.stdout);
      assert.ok(scored.loss > 0 && scored.loss < 6, `loss ${scored.loss}`);
      const g = await cli([
        'generate',
        out,
        '--prompt',
        'And God said',
        '--max-tokens',
        '5',
        '--temperature',
        '0',
        '--json',
      ]);
      assert.equal(g.code, 0, g.stderr);
      const ids = JSON.parse(g.stdout).ids as number[];
      assert.deepEqual(ids, model.generate([...Buffer.from('And God said')], { greedy: true, maxNewTokens: 5 }).tokens);
    });
  }
});

describe('knobs train with a tokenizer.json', { concurrency: false }, () => {
  it('trains on token ids, copies the tokenizer into the run, and scores bits per byte of text', async () => {
    const tok = join(dir, 'tok.json');
    const t = await cli(['tokenizer', 'train', TEXT, '--vocab-size', '320', '--out', tok, '--json']);
    assert.equal(t.code, 0, t.stderr);
    const vocab = JSON.parse(t.stdout).vocab_size as number;
    const path = join(dir, 'bpe.json');
    await writeFile(path, JSON.stringify({ ...recipe({ vocab_size: vocab }), tokenizer: tok }));
    const out = join(dir, 'bpe');
    const r = await cli(['train', path, '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const saved = JSON.parse(await readFile(join(out, 'recipe.json'), 'utf8'));
    assert.equal(saved.tokenizer, tok);
    assert.deepEqual(
      JSON.parse(await readFile(join(out, 'tokenizer.json'), 'utf8')),
      JSON.parse(await readFile(tok, 'utf8')),
    );
    const e = JSON.parse((await cli(['eval', out, '--json'])).stdout);
    // A token covers several bytes, so bits per byte is below the loss in bits per token.
    assert.ok(e.bits_per_byte < e.loss / Math.LN2 / 1.5, JSON.stringify(e));
    const g = await cli([
      'generate',
      out,
      '--prompt',
      'And God said',
      '--max-tokens',
      '4',
      '--temperature',
      '0',
      '--json',
    ]);
    assert.equal(g.code, 0, g.stderr);
    const generated = JSON.parse(g.stdout);
    assert.equal(generated.ids.length, 4);
    assert.ok(
      generated.prompt_ids.length < 'And God said'.length,
      "the prompt is encoded with the run's tokenizer, not as bytes",
    );

    await writeFile(path, JSON.stringify({ ...recipe({ vocab_size: 256 }), tokenizer: tok }));
    const small = await cli(['train', path, '--out', join(dir, 'bpe-small')]);
    assert.equal(small.code, 1);
    assert.match(
      small.stderr,
      /\[E_FORMAT\].*produces token id \d+ but the recipe's model.vocab_size has vocab_size 256/,
    );
    await writeFile(path, JSON.stringify({ ...recipe({}), tokenizer: join(dir, 'missing.json') }));
    const missing = await cli(['train', path, '--out', join(dir, 'bpe-missing')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /\[E_IO\].*missing\.json.*recipe field tokenizer/);
  });
});

describe('llama recipes: bad sizes are typed errors naming the field', () => {
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ num_key_value_heads: 3 }, 'model.num_key_value_heads', /must divide num_attention_heads/],
    [{ head_dim: 16 }, 'model.head_dim', /must equal hidden_size \/ num_attention_heads/],
    [{ num_attention_heads: 5, num_key_value_heads: 5 }, 'model.num_attention_heads', /hidden_size must be divisible/],
    [{ rope_scaling: { rope_type: 'yarn', factor: 2 } }, 'model.rope_scaling.rope_type', /./],
    [{ rope_scaling: { rope_type: 'llama3', factor: 8 } }, 'model.rope_scaling.low_freq_factor', /./],
    [{ eos_token_id: 300 }, 'model.eos_token_id', /below vocab_size/],
    [{ vocab_size: 100 }, 'model.vocab_size', /vocab_size >= 256/],
    [{ hidden_act: 'gelu' }, 'model', /hidden_act/],
  ];
  for (const [change, field, message] of cases) {
    it(`${JSON.stringify(change)} → ${field}`, () => {
      assert.throws(
        () => parseRecipe(recipe(change), 'r.json'),
        (err: unknown) => {
          assert.ok(err instanceof k.FormatError, String(err));
          assert.equal(err.code, 'E_FORMAT');
          const issue = (err.details.issues as string[]).find((i) => i.startsWith(`${field}:`));
          assert.ok(issue, `an issue names ${field}: ${err.message}`);
          assert.match(issue, message);
          return true;
        },
      );
    });
  }

  it('context longer than max_position_embeddings, an empty tokenizer, a tokenizer for a classifier', () => {
    assert.throws(
      () => parseRecipe({ ...recipe({}), context: 64 }, 'r.json'),
      /context: context must be at most the model's positions/,
    );
    assert.throws(
      () => parseRecipe({ ...recipe({}), tokenizer: '' }, 'r.json'),
      /tokenizer: give "bytes" or the path of a tokenizer.json/,
    );
    const mlp = {
      name: 'm',
      model: { type: 'mlp', hidden: [8] },
      data: { type: 'idx', train_images: 'a', train_labels: 'b', test_images: 'c', test_labels: 'd' },
      optimizer: { type: 'sgd', lr: 0.1 },
      batch_size: 2,
      steps: 1,
    };
    assert.throws(() => parseRecipe({ ...mlp, tokenizer: 'tok.json' }, 'r.json'), /tokenizer: only language models/);
    assert.equal(parseRecipe(recipe({}), 'r.json').tokenizer, 'bytes');
  });
});
